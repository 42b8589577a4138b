import type { ImageDataset } from './dataset.js';
import { DataFileError } from './errors.js';
import { readMaybeGzip, type FileBytes } from './files.js';

/** IDX magic: two zero bytes, type 0x08 (unsigned byte), number of dimensions. */
export const IDX_IMAGES_MAGIC = 0x00000803;
export const IDX_LABELS_MAGIC = 0x00000801;

const hex = (n: number): string => `0x${n.toString(16).padStart(8, '0')}`;

export interface IdxOptions {
  /** Labels must be below this; 10 for MNIST and Fashion-MNIST. */
  numClasses?: number | undefined;
  /** Name of the resulting dataset; defaults to the images file path. */
  name?: string | undefined;
}

/**
 * Reads an IDX pair (MNIST, Fashion-MNIST, EMNIST...): 3-D unsigned-byte
 * images and 1-D unsigned-byte labels, each gzip-compressed or raw.
 */
export async function readIdx(imagesPath: string, labelsPath: string, opts: IdxOptions = {}): Promise<ImageDataset> {
  const [imageBytes, labelBytes] = await Promise.all([readMaybeGzip(imagesPath), readMaybeGzip(labelsPath)]);
  return idxDataset({ file: imagesPath, bytes: imageBytes }, { file: labelsPath, bytes: labelBytes }, opts);
}

/** Builds a dataset from the inflated bytes of an IDX images file and its labels file. */
export function idxDataset(images: FileBytes, labels: FileBytes, opts: IdxOptions = {}): ImageDataset {
  const numClasses = opts.numClasses ?? 10;
  if (!Number.isInteger(numClasses) || numClasses < 1 || numClasses > 256) {
    throw new RangeError(`readIdx: numClasses must be an integer in 1..256, got ${numClasses}`);
  }
  const parsed = parseIdxImages(images.file, images.bytes);
  const labelValues = parseIdxLabels(labels.file, labels.bytes, numClasses);
  if (parsed.count !== labelValues.length) {
    throw new DataFileError(labels.file, 'count-mismatch', `has ${labelValues.length} labels but ${images.file} has ${parsed.count} images`);
  }
  return {
    kind: 'images',
    images: parsed.pixels,
    labels: labelValues,
    count: parsed.count,
    height: parsed.rows,
    width: parsed.cols,
    channels: 1,
    numClasses,
    name: opts.name ?? images.file,
  };
}

/** The 32-bit big-endian number IDX files start with, or undefined when there are fewer than 4 bytes. */
export function idxMagic(bytes: Uint8Array): number | undefined {
  return bytes.length < 4 ? undefined : new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0);
}

/** Parses the bytes of an IDX3 unsigned-byte image file; `file` only names it in errors. */
export function parseIdxImages(
  file: string,
  bytes: Uint8Array,
): { pixels: Uint8Array; count: number; rows: number; cols: number } {
  const header = 16;
  checkMagic(file, bytes, IDX_IMAGES_MAGIC, 'images (unsigned byte, 3 dimensions)');
  if (bytes.length < header) {
    throw new DataFileError(file, 'truncated', `truncated: ${bytes.length} bytes, shorter than the ${header}-byte IDX3 header`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = view.getUint32(4);
  const rows = view.getUint32(8);
  const cols = view.getUint32(12);
  const need = count * rows * cols;
  const have = bytes.length - header;
  const what = `header says ${count} images of ${rows}x${cols} (${need} bytes)`;
  if (have < need) throw new DataFileError(file, 'truncated', `truncated: ${what} but only ${have} follow`);
  if (have > need) {
    throw new DataFileError(file, 'trailing-bytes', `${what} but ${have} follow (${have - need} extra); not a single IDX file?`);
  }
  return { pixels: bytes.subarray(header), count, rows, cols };
}

/** Parses the bytes of an IDX1 unsigned-byte label file and checks every label is below numClasses. */
export function parseIdxLabels(file: string, bytes: Uint8Array, numClasses: number): Uint8Array {
  const header = 8;
  checkMagic(file, bytes, IDX_LABELS_MAGIC, 'labels (unsigned byte, 1 dimension)');
  if (bytes.length < header) {
    throw new DataFileError(file, 'truncated', `truncated: ${bytes.length} bytes, shorter than the ${header}-byte IDX1 header`);
  }
  const count = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(4);
  const have = bytes.length - header;
  if (have < count) {
    throw new DataFileError(file, 'truncated', `truncated: header says ${count} labels (${count} bytes) but only ${have} follow`);
  }
  if (have > count) {
    throw new DataFileError(file, 'trailing-bytes', `header says ${count} labels but ${have} bytes follow (${have - count} extra)`);
  }
  const labels = bytes.subarray(header);
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] >= numClasses) {
      throw new DataFileError(
        file,
        'label-out-of-range',
        `label ${labels[i]} at index ${i} is out of range: labels must be below ${numClasses}`,
      );
    }
  }
  return labels;
}

function checkMagic(file: string, bytes: Uint8Array, expected: number, what: string): void {
  const magic = idxMagic(bytes);
  if (magic === undefined) {
    throw new DataFileError(file, 'truncated', `truncated: ${bytes.length} bytes, too short for an IDX magic number`);
  }
  if (magic !== expected) {
    const hint =
      magic === IDX_IMAGES_MAGIC
        ? ' (this is an images file; images and labels swapped?)'
        : magic === IDX_LABELS_MAGIC
          ? ' (this is a labels file; images and labels swapped?)'
          : ' (not an IDX file, or not gzip/raw)';
    throw new DataFileError(file, 'bad-magic', `wrong magic number ${hex(magic)}, expected ${hex(expected)} for IDX ${what}${hint}`);
  }
}
