/**
 * An in-memory labelled dataset, as one of two kinds of example:
 *
 * - `images`: raw bytes, NHWC, so that a device holds its data at one byte per
 *   pixel; normalisation (per channel) happens when a batch is built.
 * - `features`: rows of float32 numbers (a CSV's feature columns), kept as
 *   read; each feature is standardised with its own mean and std when a batch
 *   is built, with the statistics of the client's training split.
 *
 * Labels are bytes either way, each below numClasses.
 */
export type Dataset = ImageDataset | FeatureDataset;

interface Labelled {
  /** One label per example, each < numClasses. */
  readonly labels: Uint8Array;
  readonly count: number;
  readonly numClasses: number;
  /** Human-readable name, e.g. "fashion-mnist/train". */
  readonly name: string;
}

export interface ImageDataset extends Labelled {
  readonly kind: 'images';
  /** count*height*width*channels bytes, NHWC, raw 0..255. */
  readonly images: Uint8Array;
  readonly height: number;
  readonly width: number;
  readonly channels: number;
  /** Per-channel standardisation after pixel/255; absent means 0.5/0.5 (values in [-1, 1]). Kept by subset(). */
  readonly normalization?: Normalization;
}

export interface FeatureDataset extends Labelled {
  readonly kind: 'features';
  /** count*featureCount values, row-major, as read. */
  readonly features: Float32Array;
  readonly featureCount: number;
  /** The features' names (a CSV header), for messages. */
  readonly featureNames: readonly string[];
  /** Per-feature standardisation (x - mean[f]) / std[f], one entry per feature. Kept by subset(). */
  readonly normalization: Normalization;
}

/** Input standardisation: images (pixel/255 - mean[c]) / std[c] per channel; features (x - mean[f]) / std[f]. */
export interface Normalization {
  readonly mean: readonly number[];
  readonly std: readonly number[];
}

/** What one example is, for messages and events. */
export type ExampleShape =
  | { readonly kind: 'images'; readonly height: number; readonly width: number; readonly channels: number }
  | { readonly kind: 'features'; readonly features: number };

/**
 * The usual torchvision constants of the data sets we know, so that models
 * match the reference implementations (CIFAR-10: the ImageNet constants that
 * LG-FedAvg / Sub-FedAvg use).
 */
export const KNOWN_NORMALIZATION = {
  mnist: { mean: [0.1307], std: [0.3081] },
  'fashion-mnist': { mean: [0.286], std: [0.353] },
  cifar10: { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
} as const satisfies Record<string, Normalization>;

/** Thrown for arguments that do not fit the dataset they refer to. */
export class DatasetError extends Error {
  override readonly name = 'DatasetError';
}

/** Bytes of one image: height*width*channels. */
export function imageSize(ds: Pick<ImageDataset, 'height' | 'width' | 'channels'>): number {
  return ds.height * ds.width * ds.channels;
}

/** Values of one example: the bytes of an image, or the number of features. */
export function exampleSize(ds: Dataset): number {
  switch (ds.kind) {
    case 'images':
      return imageSize(ds);
    case 'features':
      return ds.featureCount;
  }
}

export function exampleShape(ds: Dataset): ExampleShape {
  switch (ds.kind) {
    case 'images':
      return { kind: 'images', height: ds.height, width: ds.width, channels: ds.channels };
    case 'features':
      return { kind: 'features', features: ds.featureCount };
  }
}

/** `28x28x1 images`, `13 features`. */
export function describeShape(shape: ExampleShape): string {
  switch (shape.kind) {
    case 'images':
      return `${shape.height}x${shape.width}x${shape.channels} images`;
    case 'features':
      return `${shape.features} features`;
  }
}

/**
 * Copies the examples and labels at `indices` (in that order, repeats allowed)
 * into a new dataset of the same kind and geometry.
 */
export function subset<D extends Dataset>(ds: D, indices: ArrayLike<number>, name = `${ds.name}[subset]`): D {
  const size = exampleSize(ds);
  const labels = new Uint8Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const src = indices[i];
    if (!Number.isInteger(src) || src < 0 || src >= ds.count) {
      throw new DatasetError(`subset of ${ds.name}: index ${src} at position ${i} is outside 0..${ds.count - 1}`);
    }
    labels[i] = ds.labels[src];
  }
  const rows = <T extends Uint8Array | Float32Array>(from: T, to: T): T => {
    for (let i = 0; i < indices.length; i++) to.set(from.subarray(indices[i] * size, (indices[i] + 1) * size), i * size);
    return to;
  };
  const common = { labels, count: indices.length, name };
  const ds2: Dataset = ds; // a switch narrows the union, not the type parameter
  switch (ds2.kind) {
    case 'images':
      return { ...ds2, ...common, images: rows(ds2.images, new Uint8Array(indices.length * size)) } as D;
    case 'features':
      return { ...ds2, ...common, features: rows(ds2.features, new Float32Array(indices.length * size)) } as D;
  }
}

/** Number of examples of each class, indexed by label (length numClasses). */
export function labelCounts(ds: Pick<Dataset, 'labels' | 'numClasses'>): number[] {
  const counts = new Array<number>(ds.numClasses).fill(0);
  for (const label of ds.labels) counts[label]++;
  return counts;
}

/**
 * Each feature's mean and (population) standard deviation over the dataset's
 * rows; a constant feature gets std 1, so that it standardises to 0 rather
 * than to a division by zero.
 */
export function featureStatistics(ds: Pick<FeatureDataset, 'features' | 'featureCount' | 'count'>): Normalization {
  const f = ds.featureCount;
  const sum = new Float64Array(f);
  const sumSq = new Float64Array(f);
  for (let r = 0; r < ds.count; r++) {
    for (let j = 0; j < f; j++) {
      const x = ds.features[r * f + j];
      sum[j] += x;
      sumSq[j] += x * x;
    }
  }
  const mean: number[] = [];
  const std: number[] = [];
  for (let j = 0; j < f; j++) {
    const m = ds.count === 0 ? 0 : sum[j] / ds.count;
    const variance = ds.count === 0 ? 0 : Math.max(0, sumSq[j] / ds.count - m * m);
    const s = Math.sqrt(variance);
    mean.push(m);
    // Relative to the feature's scale: float32 inputs carry ~7 digits.
    std.push(s > 1e-6 * Math.max(1, Math.abs(m)) ? s : 1);
  }
  return { mean, std };
}

/**
 * The same images with `channels` channels: colour to grey by luminance
 * (ITU-R BT.601, as PIL's convert('L')), grey to colour by repeating the
 * value. Only 1 and 3 channels convert; the same count returns `ds` itself.
 */
export function withChannels(ds: ImageDataset, channels: number): ImageDataset {
  if (ds.channels === channels) return ds;
  const pixels = ds.count * ds.height * ds.width;
  if (ds.channels === 3 && channels === 1) {
    const images = new Uint8Array(pixels);
    for (let p = 0; p < pixels; p++) {
      const i = 3 * p;
      images[p] = Math.round(0.299 * ds.images[i] + 0.587 * ds.images[i + 1] + 0.114 * ds.images[i + 2]);
    }
    return { ...withoutNormalization(ds), images, channels: 1 };
  }
  if (ds.channels === 1 && channels === 3) {
    const images = new Uint8Array(pixels * 3);
    for (let p = 0; p < pixels; p++) images.fill(ds.images[p], 3 * p, 3 * p + 3);
    return { ...withoutNormalization(ds), images, channels: 3 };
  }
  throw new DatasetError(`${ds.name}: cannot convert ${ds.channels}-channel images to ${channels} channels`);
}

/** A per-channel normalisation does not survive a channel conversion: drop it (0.5/0.5 applies). */
function withoutNormalization(ds: ImageDataset): Omit<ImageDataset, 'normalization'> {
  const { normalization: _dropped, ...rest } = ds;
  return rest;
}

/**
 * Checks the internal consistency of a dataset built by hand (sizes agree,
 * labels in range); readers call it too, so every Dataset that leaves this
 * folder satisfies the contract.
 */
export function validateDataset(ds: Dataset): void {
  const where = ds.name || 'dataset';
  const integers: [string, number, boolean][] = [
    ['count', ds.count, true],
    ['numClasses', ds.numClasses, false],
  ];
  switch (ds.kind) {
    case 'images':
      integers.push(['height', ds.height, false], ['width', ds.width, false], ['channels', ds.channels, false]);
      break;
    case 'features':
      integers.push(['featureCount', ds.featureCount, false]);
      break;
  }
  for (const [key, v, zeroAllowed] of integers) {
    if (!Number.isInteger(v) || v < 0 || (!zeroAllowed && v === 0)) {
      throw new DatasetError(`${where}: ${key} must be a ${zeroAllowed ? 'non-negative' : 'positive'} integer, got ${v}`);
    }
  }
  if (ds.numClasses > 256) throw new DatasetError(`${where}: numClasses ${ds.numClasses} exceeds 256 (labels are bytes)`);
  const expected = ds.count * exampleSize(ds);
  switch (ds.kind) {
    case 'images':
      if (ds.images.length !== expected) {
        throw new DatasetError(
          `${where}: images has ${ds.images.length} bytes but ${ds.count} images of ${ds.height}x${ds.width}x${ds.channels} need ${expected}`,
        );
      }
      break;
    case 'features':
      if (ds.features.length !== expected) {
        throw new DatasetError(
          `${where}: features has ${ds.features.length} values but ${ds.count} rows of ${ds.featureCount} need ${expected}`,
        );
      }
      if (ds.featureNames.length !== ds.featureCount) {
        throw new DatasetError(`${where}: ${ds.featureNames.length} feature names for ${ds.featureCount} features`);
      }
      if (ds.normalization.mean.length !== ds.featureCount || ds.normalization.std.length !== ds.featureCount) {
        throw new DatasetError(
          `${where}: normalization has ${ds.normalization.mean.length} means and ${ds.normalization.std.length} stds for ${ds.featureCount} features`,
        );
      }
      break;
  }
  if (ds.labels.length !== ds.count) {
    throw new DatasetError(`${where}: ${ds.labels.length} labels for ${ds.count} ${ds.kind === 'images' ? 'images' : 'rows'}`);
  }
  for (let i = 0; i < ds.labels.length; i++) {
    if (ds.labels[i] >= ds.numClasses) {
      throw new DatasetError(`${where}: label ${ds.labels[i]} at index ${i} is not below numClasses ${ds.numClasses}`);
    }
  }
}
