/**
 * A client's own data folder (`subfed client --data <dir>`), read in two steps:
 * tell the folder's layout from what it holds, then read that layout. Within a
 * split, readDatasetFiles tells the file format (IDX, CIFAR-10 binary) from the
 * content. A new layout (a folder of images per class, a CSV) is one more
 * DataFolderLayout variant, one more branch in each step.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { SeededRandom, deriveSeed } from '../../proto/random.js';
import { subset, type Dataset } from './dataset.js';
import { readDatasetFiles } from './detect.js';
import { DataFolderError } from './errors.js';

export type DataFolderLayout =
  /** `<dir>/train/` and `<dir>/test/`, each holding the files of one split. */
  | { readonly kind: 'split'; readonly folder: string; readonly train: readonly string[]; readonly test: readonly string[] }
  /** The data files directly in `<dir>`; a seeded share is held out as the test split. */
  | { readonly kind: 'pooled'; readonly folder: string; readonly files: readonly string[] };

/** Share of a pooled folder's examples held out as the client's test split. */
export const POOLED_TEST_FRACTION = 0.2;

export interface ClientDataSplits {
  readonly layout: DataFolderLayout;
  readonly train: Dataset;
  readonly test: Dataset;
}

/** Reads `<dir>/train` + `<dir>/test`, or the files of `<dir>` with a seeded test hold-out. */
export async function loadClientData(folder: string, seed: number): Promise<ClientDataSplits> {
  return readDataFolder(await detectDataFolder(folder), seed);
}

/** Which layout `folder` holds, with the files of each split (sorted, hidden files left out). */
export async function detectDataFolder(folder: string): Promise<DataFolderLayout> {
  if (!(await isFolder(folder))) throw new DataFolderError(folder, 'not-a-folder', `'${folder}' is not a folder`);
  const [hasTrain, hasTest] = [await isFolder(join(folder, 'train')), await isFolder(join(folder, 'test'))];
  if (hasTrain && hasTest) {
    return {
      kind: 'split',
      folder,
      train: await dataFilesIn(join(folder, 'train')),
      test: await dataFilesIn(join(folder, 'test')),
    };
  }
  if (hasTrain !== hasTest) {
    // Half a split is a mistake, not a pooled folder: the files of the other half are missing.
    const [present, absent] = hasTrain ? ['train', 'test'] : ['test', 'train'];
    throw new DataFolderError(folder, 'half-split', `'${folder}' has a ${present}/ folder but no ${absent}/ folder`);
  }
  const files = await filesIn(folder);
  if (files.length === 0) {
    throw new DataFolderError(folder, 'no-data-files', `'${folder}' holds no data files (nor train/ and test/ folders)`);
  }
  return { kind: 'pooled', folder, files };
}

/** Reads the datasets of a layout; `seed` picks a pooled folder's test hold-out. */
export async function readDataFolder(layout: DataFolderLayout, seed: number): Promise<ClientDataSplits> {
  switch (layout.kind) {
    case 'split': {
      const train = await readDatasetFiles(layout.train, { name: `${layout.folder}/train` });
      const test = await readDatasetFiles(layout.test, { name: `${layout.folder}/test` });
      return { layout, train, test };
    }
    case 'pooled': {
      const all = await readDatasetFiles(layout.files, { name: layout.folder });
      if (all.count < 2) {
        throw new DataFolderError(
          layout.folder,
          'too-few-examples',
          `'${layout.folder}' holds ${all.count} example(s); at least 2 are needed`,
        );
      }
      const order = new SeededRandom(deriveSeed(seed, 0x7e57)).permutation(all.count);
      const testCount = Math.max(1, Math.round(all.count * POOLED_TEST_FRACTION));
      return {
        layout,
        train: subset(all, order.subarray(testCount), `${layout.folder}[train]`),
        test: subset(all, order.subarray(0, testCount), `${layout.folder}[test]`),
      };
    }
  }
}

async function isFolder(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() === true;
}

async function filesIn(folder: string): Promise<string[]> {
  const entries = await readdir(folder, { withFileTypes: true });
  return entries
    .filter((e) => e.isFile() && !e.name.startsWith('.'))
    .map((e) => join(folder, e.name))
    .sort();
}

/** The files of one split folder; an empty one is an error naming it. */
async function dataFilesIn(folder: string): Promise<string[]> {
  const files = await filesIn(folder);
  if (files.length === 0) throw new DataFolderError(folder, 'no-data-files', `'${folder}' holds no data files`);
  return files;
}
