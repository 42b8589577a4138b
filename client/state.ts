/**
 * A client's personal state on disk, so a `subfed client` process can stop and
 * resume: its identity, the round and mask version it last reached, its mask,
 * its weights, its BatchNorm running statistics (which never leave the
 * device), and what its algorithm keeps besides (Ditto's personal model,
 * LotteryFL's initial weights; the `algorithmState` section, absent in older files).
 *
 * File layout (`client-state.bin`, little-endian):
 *   8 bytes  magic "SUBFEDCS"
 *   4 bytes  u32 header length H
 *   H bytes  UTF-8 JSON header (format version, identity, tensor directory,
 *            payload length and SHA-256)
 *   payload  the tensors back to back (float32; masks one 0/1 byte per element), as listed
 * Writes are atomic: a temporary file in the same folder is written, fsynced and
 * renamed over the old one, so a crash leaves either the old or the new state.
 */
import { createHash } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { CodecError } from '../proto/codec.js';
import { elementCount } from '../proto/shape.js';
import { Mask } from '../proto/mask.js';
import { decodeFramed, encodeFramed } from './framed-file.js';
import type { MaskMap, TensorMap } from './prune.js';
import type { InputEncoding } from './export/portable.js';

export const STATE_FORMAT_VERSION = 1;
export const STATE_FILE_NAME = 'client-state.bin';
const MAGIC = Buffer.from('SUBFEDCS', 'ascii');

/** Who the coordinator knows this client as: what a restart needs to resume without joining. */
export interface CoordinatorIdentity {
  readonly clientId: string;
  readonly clientToken: string;
}

export interface ClientState {
  /** Absent before the first join, after leaving, and for an algorithm that never communicates. */
  identity: CoordinatorIdentity | undefined;
  /** Last round this client finished (0 before any). */
  round: number;
  /** Version of `masks`; the coordinator names the version it holds for us. */
  maskVersion: number;
  algorithm: string;
  model: string;
  weights: TensorMap;
  masks: MaskMap;
  /** BatchNorm running statistics: personal, never uploaded. */
  personal: TensorMap;
  /** The algorithm's own tensors (client/algorithms: exportState); empty for most algorithms. */
  algorithmState: TensorMap;
  /**
   * The input standardisation the weights were trained with, so that an export
   * of the model needs no data; undefined in files written before it was recorded.
   */
  input?: InputEncoding | undefined;
}

/** A state file that cannot be used: unreadable, corrupt, or for another setup. */
export class StateFileError extends Error {
  constructor(
    readonly file: string,
    reason: string,
  ) {
    super(`client state file ${file}: ${reason}`);
    this.name = 'StateFileError';
  }
}

type Section = 'weights' | 'masks' | 'personal' | 'algorithmState';
const SECTIONS: readonly Section[] = ['weights', 'masks', 'personal', 'algorithmState'];

const headerSchema = z.object({
  formatVersion: z.number().int(),
  clientId: z.string(),
  clientToken: z.string(),
  round: z.number().int().nonnegative(),
  maskVersion: z.number().int().nonnegative(),
  algorithm: z.string(),
  model: z.string(),
  payloadBytes: z.number().int().nonnegative(),
  payloadSha256: z.string().regex(/^[0-9a-f]{64}$/),
  // Optional within format 1: older files lack it, and older readers ignore it.
  input: z
    .discriminatedUnion('kind', [
      z.object({ kind: z.literal('images'), mean: z.array(z.number()), std: z.array(z.number().positive()) }),
      z.object({ kind: z.literal('features'), mean: z.array(z.number()), std: z.array(z.number().positive()) }),
    ])
    .optional(),
  tensors: z.array(
    z.object({
      section: z.enum(SECTIONS),
      name: z.string().min(1),
      length: z.number().int().nonnegative(),
      offset: z.number().int().nonnegative(),
    }),
  ),
});

const STATE_FILE = {
  magic: MAGIC,
  what: 'a subfed client state file',
  schema: headerSchema,
  version: STATE_FORMAT_VERSION,
} as const;

export function stateFilePath(dir: string): string {
  return join(dir, STATE_FILE_NAME);
}

function bytesPerElement(section: Section): number {
  return section === 'masks' ? 1 : 4;
}

/** Serialise a state to the bytes of a state file. */
export function encodeState(state: ClientState): Buffer {
  const tensors: z.infer<typeof headerSchema>['tensors'] = [];
  const pieces: Buffer[] = [];
  let offset = 0;
  for (const section of SECTIONS) {
    const entries: Iterable<[string, Float32Array | Uint8Array]> =
      section === 'masks' ? [...state.masks].map(([name, mask]) => [name, mask.toBytes()]) : state[section];
    for (const [name, values] of entries) {
      const bytes = Buffer.from(values.buffer, values.byteOffset, values.byteLength);
      tensors.push({ section, name, length: values.length, offset });
      pieces.push(bytes);
      offset += bytes.length;
    }
  }
  const payload = Buffer.concat(pieces, offset);
  const header = {
    formatVersion: STATE_FORMAT_VERSION,
    // Format 1 spells "no identity" as two empty strings; readers of every build understand it.
    clientId: state.identity?.clientId ?? '',
    clientToken: state.identity?.clientToken ?? '',
    round: state.round,
    maskVersion: state.maskVersion,
    algorithm: state.algorithm,
    model: state.model,
    payloadBytes: payload.length,
    payloadSha256: createHash('sha256').update(payload).digest('hex'),
    ...(state.input !== undefined ? { input: state.input } : {}),
    tensors,
  };
  return encodeFramed(MAGIC, header, [payload]);
}

/** Parse the bytes of a state file; `file` only names it in errors. */
export function decodeState(bytes: Buffer, file: string): ClientState {
  const fail = (reason: string): never => {
    throw new StateFileError(file, reason);
  };
  const { header, payload } = decodeFramed(bytes, STATE_FILE, fail);
  if (payload.length !== header.payloadBytes) {
    fail(`payload is ${payload.length} bytes, header says ${header.payloadBytes} (truncated or padded file)`);
  }
  if (createHash('sha256').update(payload).digest('hex') !== header.payloadSha256) {
    fail('payload checksum mismatch (file is corrupt)');
  }
  const masks = new Map<string, Mask>();
  const state: ClientState = {
    identity: identityOf(header, fail),
    round: header.round,
    maskVersion: header.maskVersion,
    algorithm: header.algorithm,
    model: header.model,
    weights: new Map(),
    masks,
    personal: new Map(),
    algorithmState: new Map(),
    ...(header.input !== undefined ? { input: header.input } : {}),
  };
  for (const t of header.tensors) {
    const byteLength = t.length * bytesPerElement(t.section);
    if (t.offset + byteLength > payload.length) fail(`tensor ${t.section}/${t.name} runs past the end of the payload`);
    if (state[t.section].has(t.name)) fail(`tensor ${t.section}/${t.name} is listed twice`);
    const bytes = payload.subarray(t.offset, t.offset + byteLength);
    if (t.section === 'masks') {
      try {
        masks.set(t.name, Mask.fromBytes(bytes));
      } catch (err) {
        if (err instanceof CodecError) fail(`tensor masks/${t.name}: ${err.message}`);
        throw err;
      }
    } else {
      // Copy out: the Float32Array view needs 4-byte alignment the file does not promise.
      state[t.section].set(t.name, new Float32Array(new Uint8Array(bytes).buffer, 0, t.length));
    }
  }
  for (const [name, mask] of state.masks) {
    const w = state.weights.get(name);
    if (w !== undefined && w.length !== mask.length) fail(`mask of '${name}' has ${mask.length} entries, weights ${w.length}`);
  }
  return state;
}

function identityOf(
  header: { clientId: string; clientToken: string },
  fail: (reason: string) => never,
): CoordinatorIdentity | undefined {
  const { clientId, clientToken } = header;
  if (clientId === '' && clientToken === '') return undefined;
  if (clientId === '' || clientToken === '')
    fail(`header holds half an identity (client id '${clientId}', ${clientToken === '' ? 'no' : 'a'} token)`);
  return { clientId, clientToken };
}

/** Write the state atomically into `dir` (created if needed); returns the file path. */
export async function saveState(dir: string, state: ClientState): Promise<string> {
  await mkdir(dir, { recursive: true });
  const file = stateFilePath(dir);
  const temp = `${file}.tmp-${process.pid}-${Date.now()}`;
  const handle = await open(temp, 'w');
  try {
    await handle.writeFile(encodeState(state));
    await handle.sync();
  } catch (err) {
    await handle.close();
    await rm(temp, { force: true });
    throw err;
  }
  await handle.close();
  await rename(temp, file);
  return file;
}

/** What the loaded state must match; a mismatch is an error naming the file. */
export interface StateExpectation {
  algorithm?: string;
  model?: string;
  /** Tensor names and lengths of the model's manifest. */
  manifest?: readonly { name: string; shape: readonly number[] }[];
}

/** Load the state from `dir`, or undefined when there is none yet. */
export async function loadState(dir: string, expect: StateExpectation = {}): Promise<ClientState | undefined> {
  const file = stateFilePath(dir);
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new StateFileError(file, `cannot be read (${(err as Error).message})`);
  }
  const state = decodeState(bytes, file);
  assertStateMatches(state, expect, file);
  return state;
}

/** Throws a StateFileError naming `file` when the state does not fit the expectation. */
export function assertStateMatches(state: ClientState, expect: StateExpectation, file: string): void {
  if (expect.algorithm !== undefined && state.algorithm !== expect.algorithm) {
    throw new StateFileError(file, `was written by algorithm '${state.algorithm}', this client runs '${expect.algorithm}'`);
  }
  if (expect.model !== undefined && state.model !== expect.model) {
    throw new StateFileError(file, `holds model '${state.model}', this client runs '${expect.model}'`);
  }
  if (expect.manifest !== undefined) {
    for (const spec of expect.manifest) {
      const length = elementCount(spec.shape);
      for (const section of ['weights', 'masks'] as const) {
        const t = state[section].get(spec.name);
        if (t === undefined) throw new StateFileError(file, `has no ${section} for tensor '${spec.name}'`);
        if (t.length !== length) {
          throw new StateFileError(file, `${section} of '${spec.name}' has ${t.length} entries, the model needs ${length}`);
        }
      }
    }
    if (state.weights.size !== expect.manifest.length) {
      throw new StateFileError(file, `holds ${state.weights.size} weight tensors, the model has ${expect.manifest.length}`);
    }
  }
}
