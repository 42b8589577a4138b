/**
 * A folder of images per class (`<label>/*.png`), decoded in pure JS (pngjs):
 * no native code, so it runs wherever the client runs. Every image must have
 * the size of the first one; grey images (with or without alpha) give one
 * channel, and one colour image (RGB, RGBA or palette) makes the whole set
 * RGB, the greys repeated over three channels. Alpha is dropped, as PIL's
 * convert('RGB') and tf.node.decodePng(x, 3) do. 16-bit images are scaled to
 * 8 bits. The session converts the channels to the model's when they differ.
 */
import { readFile } from 'node:fs/promises';
import { PNG } from 'pngjs';
import { validateDataset, type ImageDataset } from './dataset.js';
import { DataFileError } from './errors.js';

/** One class folder: its label and its image files (sorted). */
export interface ImageClass {
  /** The folder's name. */
  readonly name: string;
  readonly label: number;
  readonly files: readonly string[];
}

const PNG_SIGNATURE = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** True when the bytes start with the 8-byte PNG signature. */
export function isPng(bytes: Uint8Array): boolean {
  return bytes.length >= PNG_SIGNATURE.length && PNG_SIGNATURE.every((b, i) => bytes[i] === b);
}

/** A decoded image: always RGBA bytes, and whether the file held only grey levels. */
export interface DecodedPng {
  readonly width: number;
  readonly height: number;
  readonly grey: boolean;
  readonly rgba: Uint8Array;
}

/** Decodes one PNG; `file` names it in errors. */
export function decodePng(file: string, bytes: Uint8Array): DecodedPng {
  if (!isPng(bytes)) {
    const start = [...bytes.subarray(0, 8)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    throw new DataFileError(
      file,
      'not-png',
      `not a PNG image (starts with ${bytes.length === 0 ? 'nothing: the file is empty' : start}, a PNG with 89 50 4e 47 0d 0a 1a 0a)`,
    );
  }
  let png: ReturnType<typeof PNG.sync.read>;
  try {
    png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  } catch (err) {
    const message = (err as Error).message;
    // pngjs says this when the data ends before the image does.
    const why = /read requests wait/.test(message) ? 'truncated: the file ends inside the image data' : message;
    throw new DataFileError(file, 'corrupt-png', `corrupt PNG (${why})`);
  }
  // Colour types 0 (grey) and 4 (grey + alpha); 2, 3 and 6 carry colour.
  const grey = png.colorType === 0 || png.colorType === 4;
  return { width: png.width, height: png.height, grey, rgba: png.data };
}

export interface ReadImageClassesOptions {
  /** Labels must be below this. */
  readonly numClasses: number;
  readonly name: string;
}

/** Reads every image of `classes` (class by class, files in the order given) into one dataset. */
export async function readImageClasses(
  classes: readonly ImageClass[],
  opts: ReadImageClassesOptions,
): Promise<ImageDataset> {
  const count = classes.reduce((n, c) => n + c.files.length, 0);
  const labels = new Uint8Array(count);
  let first: { file: string; width: number; height: number } | undefined;
  let channels = 1;
  let images: Uint8Array = new Uint8Array(0);
  let i = 0;
  for (const cls of classes) {
    if (!Number.isInteger(cls.label) || cls.label < 0 || cls.label >= opts.numClasses) {
      throw new RangeError(`readImageClasses: label ${cls.label} of class '${cls.name}' is not in 0..${opts.numClasses - 1}`);
    }
    for (const file of cls.files) {
      const png = decodePng(file, await readImageFile(file));
      if (first === undefined) {
        first = { file, width: png.width, height: png.height };
        channels = png.grey ? 1 : 3;
        images = new Uint8Array(count * png.width * png.height * channels);
      } else if (png.width !== first.width || png.height !== first.height) {
        throw new DataFileError(
          file,
          'wrong-size',
          `is ${png.width}x${png.height} (width x height), but ${first.file}, the first image, is ${first.width}x${first.height}: all images must have one size`,
        );
      }
      const pixels = png.width * png.height;
      if (channels === 1 && !png.grey) {
        // The first colour image: what was read so far becomes RGB.
        images = greyToRgb(images, i * pixels, count * pixels);
        channels = 3;
      }
      const out = i * pixels * channels;
      if (channels === 1) {
        for (let p = 0; p < pixels; p++) images[out + p] = png.rgba[4 * p];
      } else {
        for (let p = 0; p < pixels; p++) {
          images[out + 3 * p] = png.rgba[4 * p];
          images[out + 3 * p + 1] = png.rgba[4 * p + 1];
          images[out + 3 * p + 2] = png.rgba[4 * p + 2];
        }
      }
      labels[i++] = cls.label;
    }
  }
  const ds: ImageDataset = {
    kind: 'images',
    images,
    labels,
    count,
    height: first?.height ?? 1,
    width: first?.width ?? 1,
    channels,
    numClasses: opts.numClasses,
    name: opts.name,
  };
  validateDataset(ds);
  return ds;
}

/** A grey buffer of `capacity` pixels, its first `filled` pixels repeated over three channels. */
function greyToRgb(grey: Uint8Array, filled: number, capacity: number): Uint8Array {
  const rgb = new Uint8Array(capacity * 3);
  for (let p = 0; p < filled; p++) rgb.fill(grey[p], 3 * p, 3 * p + 3);
  return rgb;
}

async function readImageFile(file: string): Promise<Uint8Array> {
  try {
    const bytes = await readFile(file);
    return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  } catch (err) {
    throw new DataFileError(file, 'unreadable', `cannot read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}
