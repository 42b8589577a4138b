import { afterAll, describe, expect, it } from 'vitest';
import { readCifar10 } from '../../client/data/cifar10.js';
import { DataFileError } from '../../client/data/errors.js';
import { cifarBatch, gzip, tempDir } from '../fixtures/data-files.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

describe('readCifar10', () => {
  it('reads batches in order and converts CHW records to NHWC', async () => {
    const a = tmp.write('data_batch_1.bin', cifarBatch([3, 9]));
    const b = tmp.write('data_batch_2.bin', gzip(cifarBatch([0], (_r, c, p) => (c === 1 ? 200 : p % 5))));
    const ds = await readCifar10([a, b]);
    expect([ds.count, ds.height, ds.width, ds.channels, ds.numClasses]).toEqual([3, 32, 32, 3, 10]);
    expect([...ds.labels]).toEqual([3, 9, 0]);
    const pixel = (n: number, y: number, x: number, c: number): number => ds.images[((n * 32 + y) * 32 + x) * 3 + c];
    // Record 1, red/green/blue at position p = y*32+x come from planes 0/1/2 of the record.
    for (const [y, x] of [
      [0, 0],
      [5, 7],
      [31, 31],
    ]) {
      const p = y * 32 + x;
      for (let c = 0; c < 3; c++) expect(pixel(1, y, x, c)).toBe((1 * 7 + c * 50 + p) % 256);
    }
    expect(pixel(2, 4, 4, 1)).toBe(200);
    expect(pixel(2, 4, 4, 2)).toBe((4 * 32 + 4) % 5);
  });

  it('rejects a length that is not a whole number of records', async () => {
    const file = tmp.write('short.bin', cifarBatch([1, 2]).subarray(0, 3073 + 100));
    const err = await readCifar10([file]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataFileError);
    expect((err as DataFileError).problem).toBe('bad-length');
    expect((err as Error).message).toMatch(
      new RegExp(
        `^${file}: length 3173 is not a positive multiple of the 3073-byte CIFAR-10 record \\(1 whole records and 100 bytes left over\\)`,
      ),
    );
  });

  it('rejects an empty file', async () => {
    const file = tmp.write('empty.bin', new Uint8Array(0));
    await expect(readCifar10([file])).rejects.toThrow(`${file}: length 0 is not a positive multiple`);
  });

  it('rejects a label above 9 with its record and offset', async () => {
    const file = tmp.write('label.bin', cifarBatch([1, 2, 10]));
    const err = (await readCifar10([file]).catch((e: unknown) => e)) as DataFileError;
    expect(err.problem).toBe('label-out-of-range');
    expect(err.message).toBe(
      `${file}: record 2 (byte offset 6146) has label 10; CIFAR-10 labels must be 0..9 (CIFAR-100 binaries have 2 label bytes and are not supported)`,
    );
  });

  it('names the bad file among several', async () => {
    const good = tmp.write('good.bin', cifarBatch([1]));
    const bad = tmp.write('garbage.bin', new TextEncoder().encode('not cifar at all'));
    await expect(readCifar10([good, bad])).rejects.toThrow(`${bad}: length 16`);
  });

  it('rejects an empty path list', async () => {
    await expect(readCifar10([])).rejects.toThrow(/no batch files given/);
  });
});
