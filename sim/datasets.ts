import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { KNOWN_NORMALIZATION, subset, type ImageDataset } from '../client/data/dataset.js';
import { DatasetNotFoundError } from '../client/data/errors.js';
import { readIdx } from '../client/data/idx.js';
import { readCifar10 } from '../client/data/cifar10.js';
import { syntheticDataset } from '../client/data/synthetic.js';
import { SeededRandom, deriveSeed } from '../proto/random.js';
import { packageRoot } from '../proto/package-root.js';

export const DATASET_NAMES = ['fashion-mnist', 'mnist', 'cifar10', 'synthetic'] as const;
export type DatasetName = (typeof DATASET_NAMES)[number];

/**
 * The images of each dataset, [height, width, channels], so that a config can
 * be checked against its model before any file is read; null for synthetic,
 * which is generated in the shape of the model that trains on it.
 */
export const DATASET_IMAGE_SHAPES: Record<DatasetName, readonly [number, number, number] | null> = {
  'fashion-mnist': [28, 28, 1],
  mnist: [28, 28, 1],
  cifar10: [32, 32, 3],
  synthetic: null,
};

/** Where Debian's dataset-fashion-mnist package installs the full set. */
export const FASHION_MNIST_SYSTEM_DIR = '/usr/share/datasets/fashion-mnist';
/** Share of each class of the embedded 10,000-image split that becomes training data. */
export const EMBEDDED_TRAIN_FRACTION = 0.8;

export interface SyntheticSizes {
  train?: number;
  test?: number;
  classes?: number;
  height?: number;
  width?: number;
  channels?: number;
  noise?: number;
}

export interface LoadDatasetOptions {
  /** Folder holding the dataset's standard files (the simulator's `data`, `--data`). */
  data?: string | undefined;
  /** Seeds the embedded train/test split and the synthetic data. Default 0. */
  seed?: number;
  /** Where to look for Fashion-MNIST when no `data` folder is given; default FASHION_MNIST_SYSTEM_DIR. */
  systemDir?: string;
  /** Sizes for 'synthetic' (default 2000 train, 500 test, 10 classes of 28x28x1). */
  synthetic?: SyntheticSizes;
}

export interface LoadedDataset {
  train: ImageDataset;
  test: ImageDataset;
  /** Human-readable: where the data came from and how it was split. */
  source: string;
  /** True when the data is the copy shipped in the repository, not a full dataset. */
  embedded: boolean;
}

const IDX_FILES = {
  trainImages: 'train-images-idx3-ubyte',
  trainLabels: 'train-labels-idx1-ubyte',
  testImages: 't10k-images-idx3-ubyte',
  testLabels: 't10k-labels-idx1-ubyte',
} as const;
const CIFAR_TRAIN_FILES = [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`);
const CIFAR_TEST_FILE = 'test_batch.bin';
const CIFAR_SUBDIR = 'cifar-10-batches-bin';

export function isDatasetName(name: string): name is DatasetName {
  return (DATASET_NAMES as readonly string[]).includes(name);
}

/**
 * Finds and reads a dataset. Fashion-MNIST comes from `data`, else the system
 * directory, else the embedded test split (split into train/test by seed);
 * MNIST and CIFAR-10 come from `data` only.
 */
export async function loadDataset(name: DatasetName, opts: LoadDatasetOptions = {}): Promise<LoadedDataset> {
  const loaded = await readDataset(name, opts);
  if (name === 'synthetic') return loaded;
  const normalization = KNOWN_NORMALIZATION[name];
  return { ...loaded, train: { ...loaded.train, normalization }, test: { ...loaded.test, normalization } };
}

async function readDataset(name: DatasetName, opts: LoadDatasetOptions): Promise<LoadedDataset> {
  const seed = opts.seed ?? 0;
  switch (name) {
    case 'fashion-mnist':
      return loadFashionMnist(opts, seed);
    case 'mnist': {
      const dir = requireDataDir(
        'mnist',
        opts.data,
        Object.values(IDX_FILES).map((f) => `${f}[.gz]`),
      );
      return { ...(await loadIdxDir('mnist', dir)), embedded: false };
    }
    case 'cifar10':
      return loadCifar10Dir(requireDataDir('cifar10', opts.data, [...CIFAR_TRAIN_FILES, CIFAR_TEST_FILE]));
    case 'synthetic':
      return loadSynthetic(opts.synthetic ?? {}, seed);
    default: {
      const unknown: never = name;
      throw new RangeError(`unknown dataset '${String(unknown)}'; choose one of ${DATASET_NAMES.join(', ')}`);
    }
  }
}

async function loadFashionMnist(opts: LoadDatasetOptions, seed: number): Promise<LoadedDataset> {
  const wanted = Object.values(IDX_FILES).map((f) => `${f}[.gz]`);
  if (opts.data !== undefined) {
    return { ...(await loadIdxDir('fashion-mnist', requireDataDir('fashion-mnist', opts.data, wanted))), embedded: false };
  }
  const systemDir = opts.systemDir ?? FASHION_MNIST_SYSTEM_DIR;
  const missing = missingIdxFiles(systemDir);
  if (missing.length === 0) return { ...(await loadIdxDir('fashion-mnist', systemDir)), embedded: false };

  const embeddedDir = embeddedFashionMnistDir();
  const all = await readIdx(
    join(embeddedDir, findIdx(embeddedDir, IDX_FILES.testImages)),
    join(embeddedDir, findIdx(embeddedDir, IDX_FILES.testLabels)),
    { name: 'fashion-mnist/embedded' },
  );
  const { trainIdx, testIdx } = stratifiedSplit(all.labels, all.numClasses, EMBEDDED_TRAIN_FRACTION, deriveSeed(seed, 0xe5b));
  const why = existsSync(systemDir) ? `${systemDir} lacks ${missing.join(', ')}` : `${systemDir} does not exist`;
  return {
    train: subset(all, trainIdx, 'fashion-mnist/embedded-train'),
    test: subset(all, testIdx, 'fashion-mnist/embedded-test'),
    source:
      `embedded Fashion-MNIST test split (${embeddedDir}, ${all.count} images), split by seed ${seed} into ` +
      `${trainIdx.length} train / ${testIdx.length} test, ${Math.round(EMBEDDED_TRAIN_FRACTION * 100)}% of each class to train; ` +
      `the full set was not found (${why}; install dataset-fashion-mnist or pass --data)`,
    embedded: true,
  };
}

async function loadIdxDir(name: 'mnist' | 'fashion-mnist', dir: string): Promise<Omit<LoadedDataset, 'embedded'>> {
  const missing = missingIdxFiles(dir);
  if (missing.length > 0) {
    throw new DatasetNotFoundError(
      dir,
      `${name}: ${dir} ${describeMissing(
        missing,
        Object.values(IDX_FILES).map((f) => `${f}[.gz]`),
      )}`,
    );
  }
  const path = (f: string): string => join(dir, findIdx(dir, f));
  const [train, test] = await Promise.all([
    readIdx(path(IDX_FILES.trainImages), path(IDX_FILES.trainLabels), { name: `${name}/train` }),
    readIdx(path(IDX_FILES.testImages), path(IDX_FILES.testLabels), { name: `${name}/test` }),
  ]);
  return { train, test, source: `${name} from ${dir} (${train.count} train, ${test.count} test)` };
}

async function loadCifar10Dir(dataDir: string): Promise<LoadedDataset> {
  // The official archive unpacks into cifar-10-batches-bin/; accept that folder or its parent.
  const nested = join(dataDir, CIFAR_SUBDIR);
  const dir = existsSync(join(nested, CIFAR_TEST_FILE)) ? nested : dataDir;
  const wanted = [...CIFAR_TRAIN_FILES, CIFAR_TEST_FILE];
  const missing = wanted.filter((f) => !existsSync(join(dir, f)));
  if (missing.length > 0) {
    throw new DatasetNotFoundError(
      dir,
      `cifar10: ${dir} ${describeMissing(missing, wanted)}; the binary version is expected, ` +
        `in that directory or its ${CIFAR_SUBDIR}/ subdirectory`,
    );
  }
  const [train, test] = await Promise.all([
    readCifar10(
      CIFAR_TRAIN_FILES.map((f) => join(dir, f)),
      'cifar10/train',
    ),
    readCifar10([join(dir, CIFAR_TEST_FILE)], 'cifar10/test'),
  ]);
  return { train, test, source: `cifar10 from ${dir} (${train.count} train, ${test.count} test)`, embedded: false };
}

function loadSynthetic(sizes: SyntheticSizes, seed: number): LoadedDataset {
  const trainCount = sizes.train ?? 2000;
  const testCount = sizes.test ?? 500;
  const geometry = {
    classes: sizes.classes ?? 10,
    height: sizes.height ?? 28,
    width: sizes.width ?? 28,
    channels: sizes.channels ?? 1,
    noise: sizes.noise,
  };
  // Same seed, so the same class patterns; different sample streams, so no shared examples.
  return {
    train: syntheticDataset({ ...geometry, count: trainCount, seed, sampleStream: 0, name: 'synthetic/train' }),
    test: syntheticDataset({ ...geometry, count: testCount, seed, sampleStream: 1, name: 'synthetic/test' }),
    source:
      `synthetic (seed ${seed}): ${geometry.classes} classes of ${geometry.height}x${geometry.width}x${geometry.channels}, ` +
      `${trainCount} train / ${testCount} test`,
    embedded: false,
  };
}

/**
 * Indices of a per-class split: each class's examples are shuffled and the
 * first round(fraction*n) go to train, so both halves keep the class balance.
 */
export function stratifiedSplit(
  labels: Uint8Array,
  numClasses: number,
  trainFraction: number,
  seed: number,
): { trainIdx: Int32Array; testIdx: Int32Array } {
  if (!(trainFraction >= 0 && trainFraction <= 1)) {
    throw new RangeError(`stratifiedSplit: trainFraction must be in [0, 1], got ${trainFraction}`);
  }
  const rng = new SeededRandom(seed);
  const train: number[] = [];
  const test: number[] = [];
  for (let c = 0; c < numClasses; c++) {
    const members: number[] = [];
    for (let i = 0; i < labels.length; i++) if (labels[i] === c) members.push(i);
    rng.shuffle(members);
    const k = Math.round(trainFraction * members.length);
    train.push(...members.slice(0, k));
    test.push(...members.slice(k));
  }
  const sorted = (a: number[]): Int32Array => Int32Array.from(a).sort();
  return { trainIdx: sorted(train), testIdx: sorted(test) };
}

/** The embedded Fashion-MNIST directory, found from the package root so it works from sources and dist/. */
export function embeddedFashionMnistDir(): string {
  return join(packageRoot(), 'data', 'fashion-mnist-test');
}

function requireDataDir(name: DatasetName, dataDir: string | undefined, expected: string[]): string {
  if (dataDir === undefined) {
    throw new DatasetNotFoundError('', `${name}: needs --data, a directory holding ${expected.join(', ')}`);
  }
  if (!existsSync(dataDir)) {
    throw new DatasetNotFoundError(
      dataDir,
      `${name}: --data ${dataDir} does not exist (expected a directory holding ${expected.join(', ')})`,
    );
  }
  if (!statSync(dataDir).isDirectory()) {
    throw new DatasetNotFoundError(
      dataDir,
      `${name}: --data ${dataDir} is not a directory (expected one holding ${expected.join(', ')})`,
    );
  }
  return dataDir;
}

function describeMissing(missing: string[], expected: string[]): string {
  return missing.length === expected.length
    ? `has none of the expected files ${expected.join(', ')}`
    : `is missing ${missing.join(', ')} (of ${expected.join(', ')})`;
}

/** The file name present for an IDX base name: gzip-named first, then raw. */
function findIdx(dir: string, base: string): string {
  return existsSync(join(dir, `${base}.gz`)) ? `${base}.gz` : base;
}

function missingIdxFiles(dir: string): string[] {
  return Object.values(IDX_FILES)
    .filter((f) => !existsSync(join(dir, `${f}.gz`)) && !existsSync(join(dir, f)))
    .map((f) => `${f}[.gz]`);
}
