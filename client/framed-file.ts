/**
 * The layout of subfed's own binary files (client-state.bin, model.sparse),
 * little-endian:
 *   8 bytes  magic, naming the kind of file
 *   4 bytes  u32 header length H
 *   H bytes  UTF-8 JSON header, with a `formatVersion`
 *   payload  what the header describes
 * Decoding checks the magic, the header's JSON, its schema and its version;
 * every failure goes to `fail` with the reason, which names the file.
 */
import type { z } from 'zod';
import { formatZodIssues } from '../proto/zod-issues.js';

export function encodeFramed<H extends { formatVersion: number }>(
  magic: Buffer,
  header: H,
  payload: readonly Uint8Array[],
): Buffer {
  const headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32LE(headerBytes.length, 0);
  return Buffer.concat([magic, length, headerBytes, ...payload]);
}

export interface FramedFileKind<T extends { formatVersion: number }> {
  readonly magic: Buffer;
  /** What the file is, for "not <what> (bad magic bytes)". */
  readonly what: string;
  readonly schema: z.ZodType<T>;
  /** The one version this build reads. */
  readonly version: number;
}

export function decodeFramed<T extends { formatVersion: number }>(
  bytes: Uint8Array,
  kind: FramedFileKind<T>,
  fail: (reason: string) => never,
): { header: T; payload: Buffer } {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const { magic } = kind;
  if (buffer.length < magic.length + 4 || !buffer.subarray(0, magic.length).equals(magic)) {
    fail(`not ${kind.what} (bad magic bytes)`);
  }
  const headerLength = buffer.readUInt32LE(magic.length);
  const start = magic.length + 4;
  if (start + headerLength > buffer.length) fail('truncated header');
  let raw: unknown;
  try {
    raw = JSON.parse(buffer.subarray(start, start + headerLength).toString('utf8'));
  } catch (err) {
    fail(`header is not valid JSON (${(err as Error).message})`);
  }
  const parsed = kind.schema.safeParse(raw);
  if (!parsed.success) fail(`invalid header: ${formatZodIssues(parsed.error).join('; ')}`);
  const header = parsed.data;
  if (header.formatVersion !== kind.version) {
    fail(`format version ${header.formatVersion} is not supported (this build reads version ${kind.version})`);
  }
  return { header, payload: buffer.subarray(start + headerLength) };
}
