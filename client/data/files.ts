import { readFile } from 'node:fs/promises';
import { gunzip } from 'node:zlib';
import { promisify } from 'node:util';
import { DataFileError } from './errors.js';

const gunzipAsync = promisify(gunzip);

/** A file's name (for messages) and its inflated content. */
export interface FileBytes {
  file: string;
  bytes: Uint8Array;
}

/** True when the bytes start with the gzip magic 1f 8b. */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

/**
 * Reads a file and inflates it when its content is gzip, whatever its name:
 * people rename and re-compress dataset files, so the name is not evidence.
 */
export async function readMaybeGzip(path: string): Promise<Uint8Array> {
  let raw: Buffer;
  try {
    raw = await readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'file not found' : code === 'EISDIR' ? 'is a directory, not a file' : String(err);
    throw new DataFileError(path, 'unreadable', `cannot read: ${why}`);
  }
  if (!isGzip(raw)) return new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength);
  try {
    const inflated = await gunzipAsync(raw);
    return new Uint8Array(inflated.buffer, inflated.byteOffset, inflated.byteLength);
  } catch (err) {
    throw new DataFileError(
      path,
      'bad-gzip',
      `starts with the gzip magic but does not inflate (${(err as Error).message}); the download may be truncated or corrupt`,
    );
  }
}
