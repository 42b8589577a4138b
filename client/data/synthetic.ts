import type { ImageDataset } from './dataset.js';
import { SeededRandom, deriveSeed } from '../../proto/random.js';

export interface SyntheticOptions {
  count: number;
  classes: number;
  height: number;
  width: number;
  channels: number;
  seed: number;
  /** Standard deviation of the per-pixel Gaussian noise, as a fraction of 255. Default 0.2. */
  noise?: number | undefined;
  /**
   * Which independent stream of examples to draw from the same class patterns
   * (the patterns depend on `seed` only): give train and test different streams.
   * Default 0.
   */
  sampleStream?: number;
  name?: string;
}

const BLOBS_PER_CLASS = 3;

/**
 * A labelled image set for fast tests: each class has a fixed pattern of a few
 * Gaussian blobs (per channel), and each example is its class pattern shifted
 * by up to one pixel, scaled in brightness and covered in noise. A small
 * model separates the classes in a few epochs, yet not perfectly at once.
 * Classes are balanced (count/classes each, the remainder to the first ones)
 * and shuffled; the same options give the same bytes.
 */
export function syntheticDataset(opts: SyntheticOptions): ImageDataset {
  const { count, classes, height, width, channels, seed } = opts;
  const noise = opts.noise ?? 0.2;
  for (const [key, v, min] of [
    ['count', count, 0],
    ['classes', classes, 1],
    ['height', height, 1],
    ['width', width, 1],
    ['channels', channels, 1],
  ] as const) {
    if (!Number.isInteger(v) || v < min) throw new RangeError(`syntheticDataset: ${key} must be an integer >= ${min}, got ${v}`);
  }
  if (classes > 256) throw new RangeError(`syntheticDataset: classes must be at most 256 (labels are bytes), got ${classes}`);
  if (!Number.isFinite(seed)) throw new RangeError(`syntheticDataset: seed must be a finite number, got ${seed}`);
  if (!(noise >= 0) || !Number.isFinite(noise)) throw new RangeError(`syntheticDataset: noise must be a finite number >= 0, got ${noise}`);

  const size = height * width * channels;
  const prototypes = Array.from({ length: classes }, (_, c) => classPrototype(height, width, channels, deriveSeed(seed, 1, c)));

  const rng = new SeededRandom(deriveSeed(seed, 2, opts.sampleStream ?? 0));
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) labels[i] = i % classes;
  rng.shuffle(labels);

  const images = new Uint8Array(count * size);
  for (let i = 0; i < count; i++) {
    const proto = prototypes[labels[i]];
    const dy = rng.int(3) - 1;
    const dx = rng.int(3) - 1;
    const gain = 0.8 + 0.4 * rng.next();
    const out = i * size;
    for (let y = 0; y < height; y++) {
      const sy = Math.min(height - 1, Math.max(0, y - dy));
      for (let x = 0; x < width; x++) {
        const sx = Math.min(width - 1, Math.max(0, x - dx));
        for (let ch = 0; ch < channels; ch++) {
          const v = 255 * (gain * proto[(sy * width + sx) * channels + ch] + noise * rng.normal());
          images[out + (y * width + x) * channels + ch] = v <= 0 ? 0 : v >= 255 ? 255 : Math.round(v);
        }
      }
    }
  }
  return { kind: 'images', images, labels, count, height, width, channels, numClasses: classes, name: opts.name ?? 'synthetic' };
}

/** One class's pattern in [0, 0.8]: a sum of Gaussian blobs at seeded positions, per channel. */
function classPrototype(height: number, width: number, channels: number, seed: number): Float32Array {
  const rng = new SeededRandom(seed);
  const proto = new Float32Array(height * width * channels);
  const side = Math.min(height, width);
  for (let ch = 0; ch < channels; ch++) {
    for (let b = 0; b < BLOBS_PER_CLASS; b++) {
      const cy = (0.15 + 0.7 * rng.next()) * (height - 1);
      const cx = (0.15 + 0.7 * rng.next()) * (width - 1);
      const sigma = Math.max(0.6, (0.08 + 0.12 * rng.next()) * side);
      const amp = 0.5 + 0.5 * rng.next();
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) {
          const d2 = (y - cy) ** 2 + (x - cx) ** 2;
          proto[(y * width + x) * channels + ch] += amp * Math.exp(-d2 / (2 * sigma * sigma));
        }
      }
    }
  }
  for (let i = 0; i < proto.length; i++) proto[i] = 0.8 * Math.min(1, proto[i]);
  return proto;
}
