/**
 * A client's own data folder (`subfed client --data <dir>`), read in two steps:
 * tell the folder's layout and each split's source from what it holds, then
 * read them.
 *
 * Layout: `<dir>/train/` and `<dir>/test/` (one source each), or one source
 * directly in `<dir>`, of which a seeded share is held out as the test split.
 * Source, told from a folder's entries (hidden files and documents such as
 * LICENSE or README.md left out):
 * - files ending in `.csv`: CSV (client/data/csv.ts);
 * - other files: IDX or CIFAR-10 binaries, the format told from the content
 *   (client/data/detect.ts);
 * - only folders: one folder of PNG images per class (client/data/png.ts).
 *   Folders named by numbers are those labels; otherwise the names, sorted,
 *   give labels 0, 1, ... (over train/ and test/ together).
 *
 * Every label is a class number below FOLDER_CLASSES (the zoo's models have 10
 * outputs). Features are standardised with the training split's statistics.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { SeededRandom, deriveSeed } from '../../proto/random.js';
import { exampleShape, featureStatistics, subset, type Dataset, type ExampleShape } from './dataset.js';
import { DEFAULT_LABEL_COLUMN, readCsvFiles } from './csv.js';
import { readDatasetFiles } from './detect.js';
import { DataFolderError } from './errors.js';
import { readImageClasses, type ImageClass } from './png.js';

/** Labels of a data folder are below this: the zoo's models have 10 outputs. */
export const FOLDER_CLASSES = 10;

/** What one split's data is. */
export type DataSource =
  /** IDX or CIFAR-10 binary files; the format is told from their content. */
  | { readonly kind: 'binary'; readonly folder: string; readonly files: readonly string[] }
  /** One folder of PNG images per class. */
  | { readonly kind: 'png-classes'; readonly folder: string; readonly classes: readonly ImageClass[] }
  /** CSV files with one header: numeric features and a label column. */
  | { readonly kind: 'csv'; readonly folder: string; readonly files: readonly string[] };

export type DataFormat = DataSource['kind'];

export type DataFolderLayout =
  /** `<dir>/train/` and `<dir>/test/`, each holding the data of one split. */
  | { readonly kind: 'split'; readonly folder: string; readonly train: DataSource; readonly test: DataSource }
  /** The data directly in `<dir>`; a seeded share is held out as the test split. */
  | { readonly kind: 'pooled'; readonly folder: string; readonly source: DataSource };

/** Share of a pooled folder's examples held out as the client's test split. */
export const POOLED_TEST_FRACTION = 0.2;

export interface DataFolderOptions {
  /** A CSV's label column; default `label`. */
  readonly labelColumn?: string | undefined;
}

export interface ClientDataSplits {
  readonly layout: DataFolderLayout;
  readonly train: Dataset;
  readonly test: Dataset;
}

/** Reads `<dir>/train` + `<dir>/test`, or the data of `<dir>` with a seeded test hold-out. */
export async function loadClientData(folder: string, seed: number, opts: DataFolderOptions = {}): Promise<ClientDataSplits> {
  return readDataFolder(await detectDataFolder(folder), seed, opts);
}

/** The format of a layout (both splits have the same). */
export function layoutFormat(layout: DataFolderLayout): DataFormat {
  return layout.kind === 'split' ? layout.train.kind : layout.source.kind;
}

/** Which layout `folder` holds, with each split's source (files sorted, hidden entries left out). */
export async function detectDataFolder(folder: string): Promise<DataFolderLayout> {
  if (!(await isFolder(folder))) throw new DataFolderError(folder, 'not-a-folder', `'${folder}' is not a folder`);
  const [hasTrain, hasTest] = [await isFolder(join(folder, 'train')), await isFolder(join(folder, 'test'))];
  if (hasTrain && hasTest) {
    const [train, test] = [await detectSource(join(folder, 'train')), await detectSource(join(folder, 'test'))];
    if (train.kind !== test.kind) {
      throw new DataFolderError(
        folder,
        'mixed-formats',
        `'${folder}': train/ holds ${FORMAT_NAMES[train.kind]} but test/ holds ${FORMAT_NAMES[test.kind]}`,
      );
    }
    if (train.kind === 'png-classes' && test.kind === 'png-classes') {
      const labelled = labelClasses(folder, [train, test]);
      return { kind: 'split', folder, train: labelled[0], test: labelled[1] };
    }
    return { kind: 'split', folder, train, test };
  }
  if (hasTrain !== hasTest) {
    // Half a split is a mistake, not a pooled folder: the files of the other half are missing.
    const [present, absent] = hasTrain ? ['train', 'test'] : ['test', 'train'];
    throw new DataFolderError(folder, 'half-split', `'${folder}' has a ${present}/ folder but no ${absent}/ folder`);
  }
  const source = await detectSource(folder, '(nor train/ and test/ folders)');
  return { kind: 'pooled', folder, source: source.kind === 'png-classes' ? labelClasses(folder, [source])[0] : source };
}

const FORMAT_NAMES: Record<DataFormat, string> = {
  binary: 'IDX or CIFAR-10 files',
  'png-classes': 'class folders of PNG images',
  csv: 'CSV files',
};

/** Reads the datasets of a layout; `seed` picks a pooled folder's test hold-out. */
export async function readDataFolder(
  layout: DataFolderLayout,
  seed: number,
  opts: DataFolderOptions = {},
): Promise<ClientDataSplits> {
  switch (layout.kind) {
    case 'split': {
      const train = await readSource(layout.train, `${layout.folder}/train`, opts);
      const test = await readSource(layout.test, `${layout.folder}/test`, opts);
      checkSameShape(layout.folder, exampleShape(train), exampleShape(test));
      return { layout, ...standardiseFeatures(train, test) };
    }
    case 'pooled': {
      const all = await readSource(layout.source, layout.folder, opts);
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
        ...standardiseFeatures(
          subset(all, order.subarray(testCount), `${layout.folder}[train]`),
          subset(all, order.subarray(0, testCount), `${layout.folder}[test]`),
        ),
      };
    }
  }
}

async function readSource(source: DataSource, name: string, opts: DataFolderOptions): Promise<Dataset> {
  switch (source.kind) {
    case 'binary':
      return readDatasetFiles(source.files, { name, numClasses: FOLDER_CLASSES });
    case 'png-classes': {
      const ds = await readImageClasses(source.classes, { numClasses: FOLDER_CLASSES, name });
      if (ds.count === 0) throw new DataFolderError(source.folder, 'no-data-files', `'${source.folder}': every class folder is empty`);
      return ds;
    }
    case 'csv':
      return readCsvFiles(source.files, {
        labelColumn: opts.labelColumn ?? DEFAULT_LABEL_COLUMN,
        numClasses: FOLDER_CLASSES,
        name,
      });
  }
}

/** Both splits' features standardised with the training split's statistics (the test split is unseen data). */
function standardiseFeatures(train: Dataset, test: Dataset): { train: Dataset; test: Dataset } {
  if (train.kind !== 'features' || test.kind !== 'features') return { train, test };
  const normalization = featureStatistics(train);
  return { train: { ...train, normalization }, test: { ...test, normalization } };
}

/** train/ and test/ must hold examples of one size (channels may differ: the session converts PNG colour). */
function checkSameShape(folder: string, train: ExampleShape, test: ExampleShape): void {
  const size = (s: ExampleShape): string => (s.kind === 'images' ? `${s.height}x${s.width} images` : `${s.features} features`);
  if (size(train) !== size(test)) {
    throw new DataFolderError(folder, 'mixed-formats', `'${folder}': train/ holds ${size(train)} but test/ holds ${size(test)}`);
  }
}

/**
 * What a folder holds: CSV files, other data files, or (only folders) one
 * folder of images per class, labelled later by labelClasses.
 */
async function detectSource(folder: string, noneHint?: string): Promise<DataSource> {
  const { files, folders } = await entriesOf(folder);
  if (files.length > 0) {
    const csv = files.filter(isCsvName);
    if (csv.length === 0) return { kind: 'binary', folder, files };
    const other = files.find((f) => !isCsvName(f));
    if (other !== undefined) {
      throw new DataFolderError(
        folder,
        'mixed-formats',
        `'${folder}' holds CSV files (${csv[0]}) and other files (${other}): keep one format per folder`,
      );
    }
    return { kind: 'csv', folder, files: csv };
  }
  if (folders.length > 0) {
    const classes: ImageClass[] = [];
    for (const name of folders) {
      const classFolder = join(folder, name);
      const inside = await entriesOf(classFolder);
      if (inside.folders.length > 0) {
        throw new DataFolderError(
          classFolder,
          'bad-class-folder',
          `'${classFolder}' holds a folder (${inside.folders[0]}): a class folder holds only its PNG images`,
        );
      }
      classes.push({ name, label: -1, files: inside.files });
    }
    return { kind: 'png-classes', folder, classes };
  }
  const hint = noneHint === undefined ? '' : ` ${noneHint}`;
  throw new DataFolderError(folder, 'no-data-files', `'${folder}' holds no data files${hint}`);
}

/**
 * Labels class folders: all names numbers -> those numbers; otherwise the
 * names of every split together, sorted, -> 0, 1, ... Either way each label
 * must be below FOLDER_CLASSES.
 */
function labelClasses(
  folder: string,
  sources: readonly Extract<DataSource, { kind: 'png-classes' }>[],
): Extract<DataSource, { kind: 'png-classes' }>[] {
  const names = [...new Set(sources.flatMap((s) => s.classes.map((c) => c.name)))].sort();
  const numeric = names.every((n) => /^\d+$/.test(n));
  const labels = new Map<string, number>();
  if (numeric) {
    const byLabel = new Map<number, string>();
    for (const name of names) {
      const label = Number(name);
      const twin = byLabel.get(label);
      if (twin !== undefined) {
        throw new DataFolderError(folder, 'bad-class-folder', `'${folder}': class folders ${twin} and ${name} are both label ${label}`);
      }
      if (label >= FOLDER_CLASSES) {
        const where = sources.find((s) => s.classes.some((c) => c.name === name))!.folder;
        throw new DataFolderError(
          folder,
          'bad-class-folder',
          `'${join(where, name)}': label ${label} is out of range: class folders named by number must be 0..${FOLDER_CLASSES - 1}`,
        );
      }
      byLabel.set(label, name);
      labels.set(name, label);
    }
  } else {
    if (names.length > FOLDER_CLASSES) {
      throw new DataFolderError(
        folder,
        'bad-class-folder',
        `'${folder}' has ${names.length} class folders (${names.slice(0, 12).join(', ')}${names.length > 12 ? ', ...' : ''}); at most ${FOLDER_CLASSES} classes (labels 0..${FOLDER_CLASSES - 1})`,
      );
    }
    names.forEach((name, i) => labels.set(name, i));
  }
  return sources.map((s) => ({
    ...s,
    classes: s.classes.map((c) => ({ ...c, label: labels.get(c.name)! })).sort((a, b) => a.label - b.label),
  }));
}

function isCsvName(file: string): boolean {
  return /\.csv$/i.test(file);
}

async function isFolder(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() === true;
}

/** The non-hidden files (full paths, sorted) and folders (names, sorted) of a folder; symbolic links followed. */
/**
 * Files that travel with a data set but hold no examples: a licence, a
 * readme, notes. A folder copied from a data set's distribution has them
 * (the embedded Fashion-MNIST has a LICENSE), and they are no one's data.
 */
export function isDocumentName(name: string): boolean {
  return /^(licen[cs]e|copying|notice|readme|authors|changelog)(\.[a-z]+)?$/i.test(name) || /\.(md|txt|pdf|html?)$/i.test(name);
}

async function entriesOf(folder: string): Promise<{ files: string[]; folders: string[] }> {
  const entries = await readdir(folder, { withFileTypes: true });
  const files: string[] = [];
  const folders: string[] = [];
  for (const e of entries) {
    if (e.name.startsWith('.') || isDocumentName(e.name)) continue;
    const path = join(folder, e.name);
    const target = e.isSymbolicLink() ? await stat(path).catch(() => undefined) : e;
    if (target?.isFile() === true) files.push(path);
    else if (target?.isDirectory() === true) folders.push(e.name);
  }
  return { files: files.sort(), folders: folders.sort() };
}
