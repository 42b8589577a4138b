import { afterAll, describe, expect, it } from 'vitest';
import { readDatasetFiles } from '../../client/data/detect.js';
import { DataFileError } from '../../client/data/errors.js';
import { cifarBatch, gzip, idxImages, idxLabels, tempDir } from '../fixtures/data-files.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

describe('readDatasetFiles', () => {
  it('reads an IDX pair in either order, gzip or raw', async () => {
    const images = tmp.write('local-images', gzip(idxImages(2, 2, 3)));
    const labels = tmp.write('local-labels', idxLabels([1, 7]));
    for (const paths of [
      [images, labels],
      [labels, images],
    ]) {
      const ds = await readDatasetFiles(paths, { name: 'device' });
      expect([ds.count, ds.height, ds.width, ds.channels, ds.name]).toEqual([2, 2, 3, 1, 'device']);
      expect([...ds.labels]).toEqual([1, 7]);
    }
  });

  it('reads CIFAR-10 batches', async () => {
    const ds = await readDatasetFiles([tmp.write('b1', cifarBatch([2])), tmp.write('b2', gzip(cifarBatch([4, 5])))]);
    expect([ds.count, ds.channels, ds.height]).toEqual([3, 3, 32]);
    expect([...ds.labels]).toEqual([2, 4, 5]);
  });

  it('names a file whose format it cannot tell', async () => {
    const junk = tmp.write('notes.txt', new TextEncoder().encode('hello'));
    const err = (await readDatasetFiles([junk]).catch((e: unknown) => e)) as DataFileError;
    expect(err).toBeInstanceOf(DataFileError);
    expect(err.problem).toBe('unknown-format');
    expect(err.message).toBe(
      `${junk}: cannot tell the data format: not IDX (first 4 bytes 0x68656c6c, expected 0x00000803 or 0x00000801) and not CIFAR-10 binary (5 bytes is not a positive multiple of 3073)`,
    );
  });

  it('passes the reader errors through, and checks the file count for IDX', async () => {
    const images = tmp.write('imgs', idxImages(2, 2, 2));
    const badLabels = tmp.write('bad-labels', idxLabels([1, 12]));
    await expect(readDatasetFiles([images, badLabels])).rejects.toThrow(`${badLabels}: label 12 at index 1 is out of range`);
    await expect(readDatasetFiles([images])).rejects.toThrow(/IDX data needs exactly 2 files \(images and labels\), got 1/);
    await expect(readDatasetFiles([images, badLabels], { format: 'cifar10' })).rejects.toThrow(
      `${images}: length 24 is not a positive multiple`,
    );
  });
});
