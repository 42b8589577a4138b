/**
 * An in-memory labelled image dataset, kept as raw bytes so that a device holds
 * its data at one byte per pixel; normalisation happens when a batch is built.
 */
export interface Dataset {
  /** count*height*width*channels bytes, NHWC, raw 0..255. */
  readonly images: Uint8Array;
  /** One label per image, each < numClasses. */
  readonly labels: Uint8Array;
  readonly count: number;
  readonly height: number;
  readonly width: number;
  readonly channels: number;
  readonly numClasses: number;
  /** Human-readable name, e.g. "fashion-mnist/train". */
  readonly name: string;
  /** Per-channel standardisation after pixel/255; absent means 0.5/0.5 (values in [-1, 1]). Kept by subset(). */
  readonly normalization?: Normalization;
}

/** Input standardisation: (pixel/255 - mean[c]) / std[c]. */
export interface Normalization {
  readonly mean: readonly number[];
  readonly std: readonly number[];
}

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
export function imageSize(ds: Pick<Dataset, 'height' | 'width' | 'channels'>): number {
  return ds.height * ds.width * ds.channels;
}

/**
 * Copies the images and labels at `indices` (in that order, repeats allowed)
 * into a new dataset of the same geometry.
 */
export function subset(ds: Dataset, indices: ArrayLike<number>, name = `${ds.name}[subset]`): Dataset {
  const size = imageSize(ds);
  const images = new Uint8Array(indices.length * size);
  const labels = new Uint8Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const src = indices[i];
    if (!Number.isInteger(src) || src < 0 || src >= ds.count) {
      throw new DatasetError(`subset of ${ds.name}: index ${src} at position ${i} is outside 0..${ds.count - 1}`);
    }
    images.set(ds.images.subarray(src * size, (src + 1) * size), i * size);
    labels[i] = ds.labels[src];
  }
  return { ...ds, images, labels, count: indices.length, name };
}

/** Number of examples of each class, indexed by label (length numClasses). */
export function labelCounts(ds: Pick<Dataset, 'labels' | 'numClasses'>): number[] {
  const counts = new Array<number>(ds.numClasses).fill(0);
  for (const label of ds.labels) counts[label]++;
  return counts;
}

/**
 * Checks the internal consistency of a dataset built by hand (sizes agree,
 * labels in range); readers call it too, so every Dataset that leaves this
 * folder satisfies the contract.
 */
export function validateDataset(ds: Dataset): void {
  const where = ds.name || 'dataset';
  for (const key of ['count', 'height', 'width', 'channels', 'numClasses'] as const) {
    const v = ds[key];
    if (!Number.isInteger(v) || v < 0 || (key !== 'count' && v === 0)) {
      throw new DatasetError(`${where}: ${key} must be a ${key === 'count' ? 'non-negative' : 'positive'} integer, got ${v}`);
    }
  }
  if (ds.numClasses > 256) throw new DatasetError(`${where}: numClasses ${ds.numClasses} exceeds 256 (labels are bytes)`);
  const expected = ds.count * imageSize(ds);
  if (ds.images.length !== expected) {
    throw new DatasetError(
      `${where}: images has ${ds.images.length} bytes but ${ds.count} images of ${ds.height}x${ds.width}x${ds.channels} need ${expected}`,
    );
  }
  if (ds.labels.length !== ds.count) {
    throw new DatasetError(`${where}: ${ds.labels.length} labels for ${ds.count} images`);
  }
  for (let i = 0; i < ds.labels.length; i++) {
    if (ds.labels[i] >= ds.numClasses) {
      throw new DatasetError(`${where}: label ${ds.labels[i]} at index ${i} is not below numClasses ${ds.numClasses}`);
    }
  }
}
