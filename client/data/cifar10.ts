import type { ImageDataset } from './dataset.js';
import { DataFileError } from './errors.js';
import { readMaybeGzip, type FileBytes } from './files.js';

const SIDE = 32;
const CHANNELS = 3;
const PIXELS = SIDE * SIDE;
/** One record: a label byte, then the red, green and blue planes (CHW). */
export const CIFAR10_RECORD_BYTES = 1 + CHANNELS * PIXELS;
export const CIFAR10_CLASSES = 10;

/**
 * Reads CIFAR-10 binary batches (data_batch_N.bin, test_batch.bin; gzip or
 * raw) into one NHWC dataset, in the order the paths are given.
 */
export async function readCifar10(paths: readonly string[], name?: string): Promise<ImageDataset> {
  if (paths.length === 0) throw new RangeError('readCifar10: no batch files given');
  const files = await Promise.all(paths.map(async (file) => ({ file, bytes: await readMaybeGzip(file) })));
  return cifar10Dataset(files, name);
}

/** Builds one dataset from the inflated bytes of CIFAR-10 binary batches, in the order given. */
export function cifar10Dataset(files: readonly FileBytes[], name?: string): ImageDataset {
  if (files.length === 0) throw new RangeError('readCifar10: no batch files given');
  const parsed = files.map(({ file, bytes }) => parseCifar10(file, bytes));
  const count = parsed.reduce((n, p) => n + p.labels.length, 0);
  const images = new Uint8Array(count * PIXELS * CHANNELS);
  const labels = new Uint8Array(count);
  let offset = 0;
  for (const p of parsed) {
    images.set(p.images, offset * PIXELS * CHANNELS);
    labels.set(p.labels, offset);
    offset += p.labels.length;
  }
  return {
    kind: 'images',
    images,
    labels,
    count,
    height: SIDE,
    width: SIDE,
    channels: CHANNELS,
    numClasses: CIFAR10_CLASSES,
    name: name ?? files.map((f) => f.file).join(','),
  };
}

/** Parses one binary batch; converts each CHW record to HWC. `file` only names it in errors. */
export function parseCifar10(file: string, bytes: Uint8Array): { images: Uint8Array; labels: Uint8Array } {
  if (bytes.length === 0 || bytes.length % CIFAR10_RECORD_BYTES !== 0) {
    const whole = Math.floor(bytes.length / CIFAR10_RECORD_BYTES);
    throw new DataFileError(
      file,
      'bad-length',
      `length ${bytes.length} is not a positive multiple of the ${CIFAR10_RECORD_BYTES}-byte CIFAR-10 record ` +
        `(${whole} whole records and ${bytes.length - whole * CIFAR10_RECORD_BYTES} bytes left over); truncated, or not a CIFAR-10 binary batch`,
    );
  }
  const count = bytes.length / CIFAR10_RECORD_BYTES;
  const images = new Uint8Array(count * PIXELS * CHANNELS);
  const labels = new Uint8Array(count);
  for (let r = 0; r < count; r++) {
    const base = r * CIFAR10_RECORD_BYTES;
    const label = bytes[base];
    if (label >= CIFAR10_CLASSES) {
      throw new DataFileError(
        file,
        'label-out-of-range',
        `record ${r} (byte offset ${base}) has label ${label}; CIFAR-10 labels must be 0..9 (CIFAR-100 binaries have 2 label bytes and are not supported)`,
      );
    }
    labels[r] = label;
    const src = base + 1;
    const dst = r * PIXELS * CHANNELS;
    for (let c = 0; c < CHANNELS; c++) {
      const plane = src + c * PIXELS;
      for (let p = 0; p < PIXELS; p++) images[dst + p * CHANNELS + c] = bytes[plane + p];
    }
  }
  return { images, labels };
}
