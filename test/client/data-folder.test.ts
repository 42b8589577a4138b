import { afterAll, describe, expect, it } from 'vitest';
import type { Dataset } from '../../client/data/dataset.js';
import { DataFileError, DataFolderError, type DataFolderProblem } from '../../client/data/errors.js';
import { POOLED_TEST_FRACTION, detectDataFolder, isDocumentName, loadClientData } from '../../client/data/folder.js';
import { cifarBatch, idxImages, idxLabels, tempDir } from '../fixtures/data-files.js';

const tmp = tempDir('subfed-folder-');
afterAll(() => tmp.cleanup());

/** An IDX pair of `count` 2x2 images, labels 0..count-1 mod 10, under `folder`. */
function writeIdx(folder: string, count: number, firstLabel = 0): void {
  tmp.write(`${folder}/images-idx3-ubyte`, idxImages(count, 2, 2));
  tmp.write(`${folder}/labels-idx1-ubyte`, idxLabels(Array.from({ length: count }, (_, i) => (firstLabel + i) % 10)));
}

async function problemOf(read: Promise<unknown>): Promise<{ problem: DataFolderProblem; message: string }> {
  const err = await read.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(DataFolderError);
  const e = err as DataFolderError;
  return { problem: e.problem, message: e.message };
}

describe('client data folder', () => {
  it('reads train/ and test/ subfolders as the two splits', async () => {
    writeIdx('split/train', 6);
    tmp.write('split/test/batch.bin', cifarBatch([3, 4]));
    writeIdx('split/test-unused', 1); // neither train/ nor test/: ignored
    const folder = `${tmp.dir}/split`;
    const layout = await detectDataFolder(folder);
    expect(layout).toEqual({
      kind: 'split',
      folder,
      train: {
        kind: 'binary',
        folder: `${folder}/train`,
        files: [`${folder}/train/images-idx3-ubyte`, `${folder}/train/labels-idx1-ubyte`],
      },
      test: { kind: 'binary', folder: `${folder}/test`, files: [`${folder}/test/batch.bin`] },
    });
    // train/ and test/ must agree on the example size: a 2x2 IDX train split and CIFAR-10 test are refused
    expect(await problemOf(loadClientData(folder, 1))).toEqual({
      problem: 'mixed-formats',
      message: `'${folder}': train/ holds 2x2 images but test/ holds 32x32 images`,
    });
    tmp.write('split/test/batch.bin', idxImages(2, 2, 2));
    tmp.write('split/test/labels', idxLabels([3, 4]));
    const { train, test } = await loadClientData(folder, 1);
    expect(train.kind === 'images' && [train.count, train.height, train.name]).toEqual([6, 2, `${folder}/train`]);
    expect(test.kind === 'images' && [test.count, test.channels, test.name]).toEqual([2, 1, `${folder}/test`]);
  });

  it('holds out a seeded share of a pooled folder as the test split, the same for the same seed', async () => {
    writeIdx('pooled', 20);
    tmp.write('pooled/.DS_Store', new Uint8Array([1, 2, 3])); // hidden files are not data
    tmp.write('pooled/LICENSE', new TextEncoder().encode('MIT')); // nor are a data set's documents
    tmp.write('pooled/README.md', new TextEncoder().encode('# data'));
    const folder = `${tmp.dir}/pooled`;
    expect(await detectDataFolder(folder)).toMatchObject({
      kind: 'pooled',
      source: { kind: 'binary', files: [expect.stringMatching(/images/), expect.stringMatching(/labels/)] },
    });
    const a = await loadClientData(folder, 7);
    expect([a.train.count, a.test.count]).toEqual([20 * (1 - POOLED_TEST_FRACTION), 20 * POOLED_TEST_FRACTION]);
    // every example lands in exactly one split
    expect([...a.train.labels, ...a.test.labels].sort()).toEqual([...Array.from({ length: 20 }, (_, i) => i % 10)].sort());
    const again = await loadClientData(folder, 7);
    expect([...again.test.labels]).toEqual([...a.test.labels]);
    const other = await loadClientData(folder, 8);
    const pixels = (ds: Dataset): number[] => (ds.kind === 'images' ? [...ds.images] : []);
    expect(pixels(other.test)).not.toEqual(pixels(a.test));
  });

  it('names the folder and the problem when the layout cannot be used', async () => {
    const missing = `${tmp.dir}/missing`;
    expect(await problemOf(detectDataFolder(missing))).toEqual({
      problem: 'not-a-folder',
      message: `'${missing}' is not a folder`,
    });
    const file = tmp.write('just-a-file', new Uint8Array([0]));
    expect((await problemOf(detectDataFolder(file))).problem).toBe('not-a-folder');

    tmp.write('empty/.hidden', new Uint8Array([0]));
    expect(await problemOf(detectDataFolder(`${tmp.dir}/empty`))).toEqual({
      problem: 'no-data-files',
      message: `'${tmp.dir}/empty' holds no data files (nor train/ and test/ folders)`,
    });

    writeIdx('half/train', 4);
    expect(await problemOf(detectDataFolder(`${tmp.dir}/half`))).toEqual({
      problem: 'half-split',
      message: `'${tmp.dir}/half' has a train/ folder but no test/ folder`,
    });

    writeIdx('empty-test/train', 4);
    tmp.write('empty-test/test/.keep', new Uint8Array([0]));
    expect(await problemOf(detectDataFolder(`${tmp.dir}/empty-test`))).toEqual({
      problem: 'no-data-files',
      message: `'${tmp.dir}/empty-test/test' holds no data files`,
    });

    writeIdx('single', 1);
    expect(await problemOf(loadClientData(`${tmp.dir}/single`, 0))).toEqual({
      problem: 'too-few-examples',
      message: `'${tmp.dir}/single' holds 1 example(s); at least 2 are needed`,
    });
  });

  it('tells documents from data by name, and refuses an IDX folder with a third data file, naming the files', async () => {
    expect(
      ['LICENSE', 'licence.txt', 'README', 'README.md', 'NOTICE', 'notes.txt', 'COPYING'].filter(isDocumentName),
    ).toHaveLength(7);
    expect(['train-images-idx3-ubyte', 'labels.gz', 'data_batch_1.bin', 'license-plates.csv'].filter(isDocumentName)).toEqual([]);
    writeIdx('three', 4);
    tmp.write('three/extra-idx1-ubyte', idxLabels([1, 2, 3, 4]));
    const err = await loadClientData(`${tmp.dir}/three`, 1).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DataFileError);
    expect(err).toMatchObject({ problem: 'wrong-file-count' });
    expect((err as Error).message).toContain('IDX data needs exactly 2 files (images and labels), got 3');
    expect((err as Error).message).toContain(`${tmp.dir}/three/extra-idx1-ubyte`);
  });
});
