/**
 * `subfed predict`: an exported model (either format) on images, run by
 * subfed's own engine (no tfjs-layers): the predicted label of each, and the
 * accuracy when the labels are known.
 *
 * Inputs: PNG files and folders of PNG files (searched recursively, sorted),
 * whose label is their folder's name when that is a class number (the
 * `<label>/*.png` layout of a client's data folder); or one IDX images file,
 * optionally with its IDX labels file (either order, gzip or raw).
 */
import { readdir, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { withChannels, type ImageDataset } from '../data/dataset.js';
import { DataFileError } from '../data/errors.js';
import { readMaybeGzip } from '../data/files.js';
import { IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, idxMagic, parseIdxImages, parseIdxLabels } from '../data/idx.js';
import { isPng, readImageClasses } from '../data/png.js';
import { argmaxRows, predictLogits } from '../train.js';
import { instantiate, withInputEncoding, type PortableModel } from './portable.js';

/** Images to classify: a name per image, and the labels when every one is known. */
export interface PredictInput {
  readonly images: ImageDataset;
  readonly names: readonly string[];
  readonly labelled: boolean;
}

/** A usage problem with the inputs (exit code 2). */
export class PredictInputError extends Error {
  override readonly name = 'PredictInputError';
}

async function pngFilesUnder(folder: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of (await readdir(folder, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    if (entry.name.startsWith('.')) continue;
    const path = join(folder, entry.name);
    if (entry.isDirectory()) out.push(...(await pngFilesUnder(path)));
    else if (entry.name.toLowerCase().endsWith('.png')) out.push(path);
  }
  return out;
}

/** Reads the inputs as images labelled when known; `classes` bounds the labels taken from folder names. */
export async function readPredictInput(paths: readonly string[], classes: number): Promise<PredictInput> {
  if (paths.length === 0) throw new PredictInputError('give images to classify: PNG files or folders, or an IDX images file');
  const files: string[] = [];
  for (const path of paths) {
    let info;
    try {
      info = await stat(path);
    } catch {
      throw new PredictInputError(`'${path}' does not exist`);
    }
    if (info.isDirectory()) {
      const found = await pngFilesUnder(path);
      if (found.length === 0) throw new PredictInputError(`'${path}' holds no PNG images`);
      files.push(...found);
    } else files.push(path);
  }
  const contents = await Promise.all(files.map(async (file) => ({ file, bytes: await readMaybeGzip(file) })));
  const idx = contents.filter((c) => [IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC].includes(idxMagic(c.bytes) ?? -1));
  if (idx.length > 0) {
    const imagesFile = idx.find((c) => idxMagic(c.bytes) === IDX_IMAGES_MAGIC);
    const labelsFile = idx.find((c) => idxMagic(c.bytes) === IDX_LABELS_MAGIC);
    if (
      imagesFile === undefined ||
      idx.length !== contents.length ||
      idx.length > 2 ||
      (idx.length === 2 && labelsFile === undefined)
    ) {
      throw new PredictInputError('give one IDX images file, optionally with its IDX labels file, and nothing else');
    }
    const parsed = parseIdxImages(imagesFile.file, imagesFile.bytes);
    const labels = labelsFile ? parseIdxLabels(labelsFile.file, labelsFile.bytes, classes) : new Uint8Array(parsed.count);
    if (labels.length !== parsed.count) {
      throw new DataFileError(
        labelsFile!.file,
        'count-mismatch',
        `has ${labels.length} labels but ${imagesFile.file} has ${parsed.count} images`,
      );
    }
    return {
      images: {
        kind: 'images',
        images: parsed.pixels,
        labels,
        count: parsed.count,
        height: parsed.rows,
        width: parsed.cols,
        channels: 1,
        numClasses: classes,
        name: imagesFile.file,
      },
      names: Array.from({ length: parsed.count }, (_, i) => `${basename(imagesFile.file)}[${i}]`),
      labelled: labelsFile !== undefined,
    };
  }
  const notPng = contents.find((c) => !isPng(c.bytes));
  if (notPng !== undefined) throw new PredictInputError(`'${notPng.file}' is neither a PNG image nor an IDX file`);
  const labelOf = (file: string): number | undefined => {
    const folder = basename(dirname(file));
    return /^\d+$/.test(folder) && Number(folder) < classes ? Number(folder) : undefined;
  };
  const labels = files.map(labelOf);
  const images = await readImageClasses(
    files.map((file, i) => ({ name: file, label: labels[i] ?? 0, files: [file] })),
    { numClasses: classes, name: files.length === 1 ? files[0] : `${files.length} images` },
  );
  return { images, names: files, labelled: labels.every((l) => l !== undefined) };
}

export interface Prediction {
  readonly name: string;
  readonly predicted: number;
  /** Undefined when the inputs carry no labels. */
  readonly label: number | undefined;
}

export interface PredictResult {
  readonly predictions: readonly Prediction[];
  /** Undefined when the inputs carry no labels. */
  readonly accuracy: number | undefined;
}

/** Classifies `input` with `portable` (images converted to the model's channels; sizes must match). */
export function predict(portable: PortableModel, input: PredictInput): PredictResult {
  const [h, w, c] = portable.architecture.inputShape;
  if (portable.input.kind !== 'images') {
    throw new PredictInputError('this model takes rows of CSV features, and subfed predict reads images');
  }
  if (input.images.height !== h || input.images.width !== w) {
    throw new PredictInputError(
      `${input.images.name}: the images are ${input.images.height}x${input.images.width}, the model takes ${h}x${w} (height x width); resize them (subfed does not)`,
    );
  }
  const images = withInputEncoding(withChannels(input.images, c), portable.input, input.images.name);
  const model = instantiate(portable);
  let predicted: Int32Array;
  try {
    predicted = argmaxRows(predictLogits(model, images), model.numClasses);
  } finally {
    model.dispose();
  }
  const predictions = input.names.map((name, i) => ({
    name,
    predicted: predicted[i],
    label: input.labelled ? images.labels[i] : undefined,
  }));
  const correct = predictions.filter((p) => p.label === p.predicted).length;
  return { predictions, accuracy: input.labelled ? correct / predictions.length : undefined };
}

export function formatPredictions(result: PredictResult): string {
  const lines = result.predictions.map((p) => `${p.name}\t${p.predicted}${p.label === undefined ? '' : `\t(label ${p.label})`}`);
  if (result.accuracy !== undefined) {
    const correct = result.predictions.filter((p) => p.label === p.predicted).length;
    lines.push(`accuracy: ${(100 * result.accuracy).toFixed(2)}% (${correct} of ${result.predictions.length})`);
  }
  return lines.join('\n');
}
