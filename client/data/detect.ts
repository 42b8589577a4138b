import type { ImageDataset } from './dataset.js';
import { DataFileError } from './errors.js';
import { readMaybeGzip, type FileBytes } from './files.js';
import { IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, idxDataset, idxMagic } from './idx.js';
import { CIFAR10_RECORD_BYTES, cifar10Dataset } from './cifar10.js';
import { isPng } from './png.js';

export type DataFormat = 'idx' | 'cifar10';

export interface ReadDataOptions {
  /** Skip content sniffing and read as this format. */
  format?: DataFormat;
  /** For IDX: labels must be below this (default 10). */
  numClasses?: number;
  name?: string;
}

/**
 * Reads a device's local data from the files it was given, telling the format
 * from the content: an IDX images + labels pair (in either order) or CIFAR-10
 * binary batches. This is what lets `--data a,b` work without a format flag.
 */
export async function readDatasetFiles(paths: readonly string[], opts: ReadDataOptions = {}): Promise<ImageDataset> {
  if (paths.length === 0) throw new RangeError('readDatasetFiles: no data files given');
  const files = await Promise.all(paths.map(async (file) => ({ file, bytes: await readMaybeGzip(file) })));
  const format = opts.format ?? detectFormat(files);
  switch (format) {
    case 'idx': {
      if (files.length !== 2) {
        throw new DataFileError(
          paths[0],
          'wrong-file-count',
          `IDX data needs exactly 2 files (images and labels), got ${files.length}: ${paths.join(', ')}`,
        );
      }
      // Accept the pair in either order: the magic numbers say which is which.
      const [a, b] = files;
      const [images, labels] = idxMagic(a.bytes) === IDX_LABELS_MAGIC && idxMagic(b.bytes) === IDX_IMAGES_MAGIC ? [b, a] : [a, b];
      return idxDataset(images, labels, { numClasses: opts.numClasses, name: opts.name });
    }
    case 'cifar10':
      return cifar10Dataset(files, opts.name);
    default: {
      const unknown: never = format;
      throw new RangeError(`unknown data format '${String(unknown)}'; expected idx or cifar10`);
    }
  }
}

/** IDX when any file carries an IDX magic number; CIFAR-10 when every file is whole 3073-byte records. */
export function detectFormat(files: readonly FileBytes[]): DataFormat {
  const isIdx = (f: FileBytes): boolean => {
    const magic = idxMagic(f.bytes);
    return magic === IDX_IMAGES_MAGIC || magic === IDX_LABELS_MAGIC;
  };
  if (files.some(isIdx)) return 'idx';
  if (files.every((f) => f.bytes.length > 0 && f.bytes.length % CIFAR10_RECORD_BYTES === 0)) return 'cifar10';
  const odd = files.find((f) => f.bytes.length === 0 || f.bytes.length % CIFAR10_RECORD_BYTES !== 0)!;
  if (isPng(odd.bytes)) {
    throw new DataFileError(
      odd.file,
      'unknown-format',
      'is a PNG image: images go in one folder per class (<data>/<label>/*.png, or train/<label>/ and test/<label>/)',
    );
  }
  const magic = idxMagic(odd.bytes);
  throw new DataFileError(
    odd.file,
    'unknown-format',
    `cannot tell the data format: not IDX (first 4 bytes ${magic === undefined ? 'missing' : `0x${magic.toString(16).padStart(8, '0')}`}, ` +
      `expected 0x00000803 or 0x00000801) and not CIFAR-10 binary (${odd.bytes.length} bytes is not a positive multiple of ${CIFAR10_RECORD_BYTES})`,
  );
}
