import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  StateFileError,
  decodeState,
  encodeState,
  loadState,
  saveState,
  stateFilePath,
  type ClientState,
} from '../../client/state.js';
import { Mask } from '../../proto/mask.js';

function sampleState(): ClientState {
  return {
    identity: { clientId: 'c-7', clientToken: 'tok' },
    round: 12,
    maskVersion: 3,
    algorithm: 'subfedavg-un',
    model: 'mlp',
    algorithmState: new Map([['init/dense1/kernel', Float32Array.from([1, 2, 3, 4])]]),
    weights: new Map([
      ['dense1/kernel', Float32Array.from([0.5, -1.25, 0, 3])],
      ['dense1/bias', Float32Array.from([0.1, 0.2])],
    ]),
    masks: new Map([
      ['dense1/kernel', Mask.fromBytes([1, 1, 0, 1])],
      ['dense1/bias', Mask.full(2)],
    ]),
    personal: new Map([['bn1/movingMean', Float32Array.from([0.25, 7])]]),
  };
}

function headerOf(bytes: Buffer): Record<string, unknown> {
  return JSON.parse(bytes.subarray(12, 12 + bytes.readUInt32LE(8)).toString('utf8')) as Record<string, unknown>;
}

/** The same file with its JSON header rewritten (payload and checksum untouched). */
function withHeader(bytes: Buffer, edit: (header: Record<string, unknown>) => Record<string, unknown>): Buffer {
  const h = Buffer.from(JSON.stringify(edit(headerOf(bytes))));
  const lenBuf = Buffer.alloc(4);
  lenBuf.writeUInt32LE(h.length);
  return Buffer.concat([bytes.subarray(0, 8), lenBuf, h, bytes.subarray(12 + bytes.readUInt32LE(8))]);
}

describe('client state', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'subfed-state-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('round-trips through disk exactly and leaves no temporary file', async () => {
    const state = sampleState();
    const file = await saveState(dir, state);
    expect(file).toBe(stateFilePath(dir));
    expect(await readdir(dir)).toEqual(['client-state.bin']);
    const back = await loadState(dir, { algorithm: 'subfedavg-un', model: 'mlp' });
    expect(back).toEqual(state);
  });

  it('overwrites an older state', async () => {
    await saveState(dir, sampleState());
    const next = { ...sampleState(), round: 13, maskVersion: 4 };
    await saveState(dir, next);
    expect((await loadState(dir))!.round).toBe(13);
  });

  it('returns undefined when no state exists yet', async () => {
    expect(await loadState(dir)).toBeUndefined();
  });

  it('a flipped payload byte is a checksum error naming the file', async () => {
    const file = await saveState(dir, sampleState());
    const bytes = await readFile(file);
    bytes[bytes.length - 3] ^= 0xff;
    await writeFile(file, bytes);
    await expect(loadState(dir)).rejects.toThrow(StateFileError);
    await expect(loadState(dir)).rejects.toThrow(new RegExp(`${file.replace(/[/.]/g, '\\$&')}.*checksum`));
  });

  it('truncated files, garbage and bad headers are clear errors', () => {
    const good = encodeState(sampleState());
    expect(() => decodeState(good.subarray(0, good.length - 1), 'f.bin')).toThrow(/f\.bin.*truncated/);
    expect(() => decodeState(Buffer.from('hello world, not a state'), 'f.bin')).toThrow(/magic/);
    const badJson = Buffer.concat([good.subarray(0, 8), Buffer.from([3, 0, 0, 0]), Buffer.from('{x}')]);
    expect(() => decodeState(badJson, 'f.bin')).toThrow(/not valid JSON/);
  });

  it('a future format version is rejected with the version named', () => {
    const bytes = withHeader(encodeState(sampleState()), (header) => ({ ...header, formatVersion: 99 }));
    expect(() => decodeState(bytes, 'f.bin')).toThrow(/format version 99/);
  });

  it('a state without an identity round-trips as undefined, written as format 1 always spelled it', () => {
    const state = { ...sampleState(), identity: undefined };
    const bytes = encodeState(state);
    expect(headerOf(bytes)).toMatchObject({ formatVersion: 1, clientId: '', clientToken: '' });
    expect(decodeState(bytes, 'f.bin')).toEqual(state);
  });

  it('reads files of earlier builds: empty ids are no identity; half an identity is an error', () => {
    // Earlier builds wrote the identity as two header strings, '' for none; the format is unchanged.
    const written = (clientId: string, clientToken: string) =>
      withHeader(encodeState(sampleState()), (header) => ({ ...header, clientId, clientToken }));
    expect(decodeState(written('', ''), 'f.bin').identity).toBeUndefined();
    expect(decodeState(written('c-9', 'secret'), 'f.bin').identity).toEqual({ clientId: 'c-9', clientToken: 'secret' });
    expect(() => decodeState(written('c-9', ''), 'f.bin')).toThrow(
      /f\.bin: header holds half an identity \(client id 'c-9', no token\)/,
    );
    expect(() => decodeState(written('', 'secret'), 'f.bin')).toThrow(StateFileError);
  });

  it('a mask entry other than 0 or 1 is refused, naming the tensor', () => {
    const good = encodeState(sampleState());
    const len = good.readUInt32LE(8);
    const header = JSON.parse(good.subarray(12, 12 + len).toString('utf8')) as {
      payloadSha256: string;
      tensors: { section: string; name: string; offset: number }[];
    };
    const payload = Buffer.from(good.subarray(12 + len));
    const entry = header.tensors.find((t) => t.section === 'masks' && t.name === 'dense1/kernel')!;
    payload[entry.offset + 2] = 2;
    header.payloadSha256 = createHash('sha256').update(payload).digest('hex');
    const h = Buffer.from(JSON.stringify(header));
    const lenBuf = Buffer.alloc(4);
    lenBuf.writeUInt32LE(h.length);
    const bytes = Buffer.concat([good.subarray(0, 8), lenBuf, h, payload]);
    expect(() => decodeState(bytes, 'f.bin')).toThrow(StateFileError);
    expect(() => decodeState(bytes, 'f.bin')).toThrow(/f\.bin: tensor masks\/dense1\/kernel: mask entry 2 is 2/);
  });

  it('a state for another algorithm, model or manifest is refused', async () => {
    await saveState(dir, sampleState());
    await expect(loadState(dir, { algorithm: 'fedavg' })).rejects.toThrow(/algorithm 'subfedavg-un'.*'fedavg'/);
    await expect(loadState(dir, { model: 'lenet5-mnist' })).rejects.toThrow(/model 'mlp'/);
    await expect(
      loadState(dir, {
        manifest: [
          { name: 'dense1/kernel', shape: [2, 3] },
          { name: 'dense1/bias', shape: [2] },
        ],
      }),
    ).rejects.toThrow(/dense1\/kernel.*6/);
  });
});
