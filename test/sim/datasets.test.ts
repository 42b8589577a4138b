import { existsSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { KNOWN_NORMALIZATION, labelCounts, subset } from '../../client/data/dataset.js';
import { DataFileError, DatasetNotFoundError } from '../../client/data/errors.js';
import {
  FASHION_MNIST_SYSTEM_DIR,
  embeddedFashionMnistDir,
  isDatasetName,
  loadDataset,
  stratifiedSplit,
} from '../../sim/datasets.js';
import { findPackageRoot, packageRoot } from '../../proto/package-root.js';
import { cifarBatch, idxImages, idxLabels, tempDir } from '../fixtures/data-files.js';

const tmp = tempDir('subfed-datasets-');
afterAll(() => tmp.cleanup());
const IDX_NAMES = ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'];
const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b));

describe('loadDataset: fashion-mnist', () => {
  it('reads the full set from the system package when no data dir is given', async () => {
    const d = await loadDataset('fashion-mnist');
    expect(d.embedded).toBe(false);
    expect([d.train.count, d.test.count]).toEqual([60_000, 10_000]);
    expect(labelCounts(d.train)).toEqual(new Array(10).fill(6000));
    expect(d.source).toContain(FASHION_MNIST_SYSTEM_DIR);
    // Its standardisation travels with the data, through subsets, to the training loop.
    expect(d.train.normalization).toEqual(KNOWN_NORMALIZATION['fashion-mnist']);
    expect(subset(d.test, [0, 1], 'client 3 test').normalization).toEqual(KNOWN_NORMALIZATION['fashion-mnist']);
  });

  it('falls back to the embedded test split, split by seed, and says so', async () => {
    const missing = join(tmp.dir, 'no-such-dir');
    const d = await loadDataset('fashion-mnist', { systemDir: missing, seed: 5 });
    expect(d.embedded).toBe(true);
    expect([d.train.count, d.test.count]).toEqual([8000, 2000]);
    expect(labelCounts(d.train)).toEqual(new Array(10).fill(800));
    expect(labelCounts(d.test)).toEqual(new Array(10).fill(200));
    expect(d.source).toContain('embedded Fashion-MNIST test split');
    expect(d.source).toContain('seed 5');
    expect(d.source).toContain(`${missing} does not exist`);

    const again = await loadDataset('fashion-mnist', { systemDir: missing, seed: 5 });
    expect(sameBytes(again.train.images, d.train.images)).toBe(true);
    const other = await loadDataset('fashion-mnist', { systemDir: missing, seed: 6 });
    expect(sameBytes(other.train.labels, d.train.labels) && sameBytes(other.train.images, d.train.images)).toBe(false);
  });

  it('falls back when the system directory is incomplete, naming what it lacks', async () => {
    const partial = join(tmp.dir, 'partial');
    mkdirSync(partial);
    symlinkSync(join(FASHION_MNIST_SYSTEM_DIR, 't10k-images-idx3-ubyte.gz'), join(partial, 't10k-images-idx3-ubyte.gz'));
    const d = await loadDataset('fashion-mnist', { systemDir: partial });
    expect(d.embedded).toBe(true);
    expect(d.source).toContain(
      `${partial} lacks train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]`,
    );
  });

  it('reads an explicit data dir with raw (uncompressed) file names', async () => {
    const dir = join(tmp.dir, 'raw-fmnist');
    mkdirSync(dir);
    // Tiny IDX files without .gz: the loader must find them by their raw names.
    tmp.write('raw-fmnist/train-images-idx3-ubyte', idxImages(4, 3, 3));
    tmp.write('raw-fmnist/train-labels-idx1-ubyte', idxLabels([0, 1, 2, 3]));
    tmp.write('raw-fmnist/t10k-images-idx3-ubyte', idxImages(2, 3, 3));
    tmp.write('raw-fmnist/t10k-labels-idx1-ubyte', idxLabels([5, 6]));
    const d = await loadDataset('fashion-mnist', { data: dir });
    expect(d.embedded).toBe(false);
    expect([d.train.count, d.test.count, d.train.height]).toEqual([4, 2, 3]);
    expect([...d.test.labels]).toEqual([5, 6]);
    expect(d.source).toBe(`fashion-mnist from ${dir} (4 train, 2 test)`);
  });

  it('never falls back when an explicit data dir lacks the files', async () => {
    const empty = join(tmp.dir, 'empty');
    mkdirSync(empty);
    await expect(loadDataset('fashion-mnist', { data: empty })).rejects.toThrow(
      `fashion-mnist: ${empty} has none of the expected files train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]`,
    );
    const missing = join(tmp.dir, 'absent');
    const err = await loadDataset('fashion-mnist', { data: missing }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DatasetNotFoundError);
    expect((err as DatasetNotFoundError).path).toBe(missing);
    expect((err as Error).message).toContain(`--data ${missing} does not exist`);
  });

  it('passes on a damaged file as a DataFileError naming it', async () => {
    const dir = join(tmp.dir, 'damaged');
    mkdirSync(dir);
    tmp.write('damaged/train-images-idx3-ubyte', idxImages(4, 3, 3).subarray(0, 30));
    tmp.write('damaged/train-labels-idx1-ubyte', idxLabels([0, 1, 2, 3]));
    tmp.write('damaged/t10k-images-idx3-ubyte', idxImages(2, 3, 3));
    tmp.write('damaged/t10k-labels-idx1-ubyte', idxLabels([5, 6]));
    const err = await loadDataset('fashion-mnist', { data: dir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataFileError);
    expect((err as Error).message).toBe(
      `${join(dir, 'train-images-idx3-ubyte')}: truncated: header says 4 images of 3x3 (36 bytes) but only 14 follow`,
    );
  });
});

describe('loadDataset: mnist and cifar10', () => {
  it('mnist requires a data dir and names the files it expects', async () => {
    await expect(loadDataset('mnist')).rejects.toThrow(
      'mnist: needs --data, a directory holding train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]',
    );
  });

  it('mnist reads the standard file names from the data dir', async () => {
    const dir = join(tmp.dir, 'mnist');
    mkdirSync(dir);
    for (const name of IDX_NAMES) symlinkSync(join(FASHION_MNIST_SYSTEM_DIR, `${name}.gz`), join(dir, `${name}.gz`));
    const d = await loadDataset('mnist', { data: dir });
    expect([d.train.count, d.test.count, d.train.name]).toEqual([60_000, 10_000, 'mnist/train']);
  });

  it('mnist names the missing files of a partial dir', async () => {
    const dir = join(tmp.dir, 'mnist-partial');
    mkdirSync(dir);
    symlinkSync(join(FASHION_MNIST_SYSTEM_DIR, 't10k-images-idx3-ubyte.gz'), join(dir, 't10k-images-idx3-ubyte.gz'));
    await expect(loadDataset('mnist', { data: dir })).rejects.toThrow(
      `mnist: ${dir} is missing train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] (of `,
    );
  });

  it('cifar10 reads the binary batches, also from the archive subdirectory', async () => {
    for (const root of ['cifar-flat', 'cifar-nested']) {
      const rel = root === 'cifar-flat' ? root : join(root, 'cifar-10-batches-bin');
      const dir = join(tmp.dir, rel);
      mkdirSync(dir, { recursive: true });
      for (let i = 1; i <= 5; i++) tmp.write(join(rel, `data_batch_${i}.bin`), cifarBatch([i, i]));
      tmp.write(join(rel, 'test_batch.bin'), cifarBatch([7]));
      const d = await loadDataset('cifar10', { data: join(tmp.dir, root) });
      expect([d.train.count, d.test.count, d.train.channels, d.train.height]).toEqual([10, 1, 3, 32]);
      expect([...d.train.labels]).toEqual([1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
      expect(d.source).toBe(`cifar10 from ${dir} (10 train, 1 test)`);
    }
  });

  it('cifar10 names the missing batches', async () => {
    const dir = join(tmp.dir, 'cifar-partial');
    mkdirSync(dir);
    tmp.write('cifar-partial/test_batch.bin', cifarBatch([1]));
    tmp.write('cifar-partial/data_batch_1.bin', cifarBatch([1]));
    await expect(loadDataset('cifar10', { data: dir })).rejects.toThrow(
      `cifar10: ${dir} is missing data_batch_2.bin, data_batch_3.bin, data_batch_4.bin, data_batch_5.bin (of `,
    );
    await expect(loadDataset('cifar10')).rejects.toThrow(/cifar10: needs --data/);
  });
});

describe('loadDataset: synthetic', () => {
  it('is deterministic by seed, balanced, with disjoint train and test draws', async () => {
    const a = await loadDataset('synthetic', { seed: 2, synthetic: { train: 300, test: 100, height: 8, width: 8 } });
    const b = await loadDataset('synthetic', { seed: 2, synthetic: { train: 300, test: 100, height: 8, width: 8 } });
    expect(sameBytes(a.train.images, b.train.images)).toBe(true);
    expect([a.train.count, a.test.count, a.train.height]).toEqual([300, 100, 8]);
    expect(labelCounts(a.train)).toEqual(new Array(10).fill(30));
    expect(labelCounts(a.test)).toEqual(new Array(10).fill(10));
    expect(sameBytes(a.train.images.subarray(0, 6400), a.test.images)).toBe(false);
    expect(a.embedded).toBe(false);
    expect(a.source).toBe('synthetic (seed 2): 10 classes of 8x8x1, 300 train / 100 test');
  });
});

describe('helpers', () => {
  it('stratifiedSplit keeps class balance, is disjoint and covers everything', () => {
    const labels = Uint8Array.from({ length: 103 }, (_, i) => i % 3);
    const { trainIdx, testIdx } = stratifiedSplit(labels, 3, 0.8, 1);
    const all = [...trainIdx, ...testIdx].sort((a, b) => a - b);
    expect(all).toEqual(Array.from({ length: 103 }, (_, i) => i));
    const perClass = (idx: Int32Array): number[] => [0, 1, 2].map((c) => [...idx].filter((i) => labels[i] === c).length);
    expect(perClass(trainIdx)).toEqual([28, 27, 27]);
    expect(() => stratifiedSplit(labels, 3, 1.5, 1)).toThrow(/trainFraction must be in \[0, 1\], got 1.5/);
  });

  it('finds the package root and the embedded data from the sources', () => {
    expect(existsSync(join(packageRoot(), 'package.json'))).toBe(true);
    expect(existsSync(join(embeddedFashionMnistDir(), 't10k-images-idx3-ubyte.gz'))).toBe(true);
  });

  it('finds the package root from a built layout (dist/sim) and skips foreign package.json files', () => {
    const root = join(tmp.dir, 'pkg');
    mkdirSync(join(root, 'dist', 'sim'), { recursive: true });
    tmp.write('pkg/package.json', new TextEncoder().encode(JSON.stringify({ name: 'subfed' })));
    tmp.write('pkg/dist/package.json', new TextEncoder().encode('{ not json'));
    tmp.write('pkg/dist/sim/package.json', new TextEncoder().encode(JSON.stringify({ name: 'other' })));
    expect(findPackageRoot(join(root, 'dist', 'sim'))).toBe(root);
    expect(() => findPackageRoot(join(tmp.dir, 'pkg-less'))).toThrow(
      /cannot find subfed's package.json in .*pkg-less or any directory above it/,
    );
  });

  it('recognises dataset names', () => {
    expect(isDatasetName('cifar10')).toBe(true);
    expect(isDatasetName('cifar100')).toBe(false);
  });
});
