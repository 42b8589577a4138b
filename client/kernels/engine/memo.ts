/**
 * Exact memoisation of native evaluation. The native forward pass computes every image
 * independently of the others in its chunk (each logit's sum runs in one fixed order),
 * and evaluate() sums the per-image losses in index order, so a remembered per-image
 * result is bit for bit what recomputing it would give. Two memos, per thread:
 *
 * - per model and dataset: the content it last held when evaluated on that dataset, and
 *   the result. A federated client is evaluated again unchanged all the time: after
 *   training the personalized accuracy is usually that of weights its pruning gate just
 *   measured, and an evaluation round re-evaluates every client, most of them untouched
 *   since, on its test data and then its training data (so one entry per dataset: a
 *   single entry per model would be evicted by the other dataset every time).
 * - per content: the per-image results of the last few distinct model contents. Many
 *   clients hold the same model (every client that has not trained yet holds the seeded
 *   initial one) and their test sets overlap (all test images of their labels).
 *
 * Content = the bits of every parameter and personal tensor; a dataset is identified by
 * object (datasets are treated as immutable values) and its images by a hash of their
 * bytes and label. SUBFED_EVAL_MEMO=off turns both off.
 */
import type { ImageDataset } from '../../data/dataset.js';

export interface EvalResult {
  readonly loss: number;
  readonly accuracy: number;
}

interface ModelEntry {
  readonly key: string;
  readonly result: EvalResult;
}

/** A 53-bit image key and a further 32-bit check, per image (and label) of a dataset. */
interface ImageKeys {
  readonly key: Float64Array;
  readonly check: Int32Array;
}

interface Prediction {
  readonly check: number;
  readonly loss: number;
  readonly correct: number;
}

const PREDICTION_MODELS = 4;

/** Weak both ways: a model or a dataset that is dropped takes its entries with it. */
const byModel = new WeakMap<object, WeakMap<ImageDataset, ModelEntry>>();
const imageKeys = new WeakMap<ImageDataset, ImageKeys>();
/** Insertion order is recency order (a hit moves the entry to the end). */
const predictions = new Map<string, Map<number, Prediction>>();

export function memoEnabled(): boolean {
  return process.env.SUBFED_EVAL_MEMO !== 'off';
}

/** Two independent 32-bit hashes of the bits of every tensor, in map order, plus the name. */
export function contentKey(name: string, ...tensors: ReadonlyMap<string, Float32Array>[]): string {
  let h1 = 0x811c9dc5 | 0;
  let h2 = 0x01000193 | 0;
  let n = 0;
  for (const map of tensors) {
    for (const values of map.values()) {
      const words = new Uint32Array(values.buffer, values.byteOffset, values.length);
      for (let i = 0; i < words.length; i++) {
        const w = words[i];
        h1 = Math.imul(h1 ^ w, 0x9e3779b1);
        h1 ^= h1 >>> 15;
        h2 = Math.imul(h2 + w, 0x85ebca77);
        h2 ^= h2 >>> 13;
      }
      n += words.length;
      h1 = Math.imul(h1 ^ n, 0x27d4eb2f);
      h2 = Math.imul(h2 ^ (n >>> 1), 0x165667b1);
    }
  }
  return `${name}:${h1 >>> 0}:${h2 >>> 0}:${n}`;
}

function keysOf(data: ImageDataset): ImageKeys {
  let keys = imageKeys.get(data);
  if (keys !== undefined && keys.key.length === data.count) return keys;
  const size = data.height * data.width * data.channels;
  const key = new Float64Array(data.count);
  const check = new Int32Array(data.count);
  const images = data.images;
  for (let i = 0; i < data.count; i++) {
    let a = (0x811c9dc5 ^ data.labels[i]) | 0;
    let b = (0x9747b28c + data.labels[i]) | 0;
    let c = 0x5bd1e995 | 0;
    // Only the image's own bytes (and label) may enter: the same image in another dataset gets the same key.
    const base = i * size;
    for (let p = 0; p < size; p++) {
      const v = images[base + p];
      a = Math.imul(a ^ v, 0x01000193);
      b = Math.imul(b + v, 0x5bd1e995);
      b ^= b >>> 15;
      c = Math.imul(c ^ (v + (p << 8)), 0x27d4eb2f);
    }
    a ^= a >>> 16;
    key[i] = (a >>> 0) * 0x200000 + ((b >>> 0) & 0x1fffff);
    check[i] = c ^ (c >>> 13);
  }
  keys = { key, check };
  imageKeys.set(data, keys);
  return keys;
}

/** The remembered result of `model` holding content `key` on `data`, if any. */
export function lookupModel(model: object, key: string, data: ImageDataset): EvalResult | undefined {
  const entry = byModel.get(model)?.get(data);
  return entry !== undefined && entry.key === key ? entry.result : undefined;
}

export function rememberModel(model: object, key: string, data: ImageDataset, result: EvalResult): void {
  let entries = byModel.get(model);
  if (entries === undefined) {
    entries = new WeakMap();
    byModel.set(model, entries);
  }
  entries.set(data, { key, result });
}

/**
 * Per-image results of content `key` on `data`: fills losses/correct for the images it
 * knows and returns the indices of those it does not, in index order.
 */
export function lookupImages(key: string, data: ImageDataset, losses: Float64Array, correct: Uint8Array): Int32Array {
  const known = predictions.get(key);
  if (known === undefined) return Int32Array.from({ length: data.count }, (_, i) => i);
  predictions.delete(key);
  predictions.set(key, known);
  const keys = keysOf(data);
  const missing: number[] = [];
  for (let i = 0; i < data.count; i++) {
    const hit = known.get(keys.key[i]);
    if (hit !== undefined && hit.check === keys.check[i]) {
      losses[i] = hit.loss;
      correct[i] = hit.correct;
    } else missing.push(i);
  }
  return Int32Array.from(missing);
}

/** Records the per-image results of `indices` of `data` for content `key`. */
export function rememberImages(
  key: string,
  data: ImageDataset,
  indices: Int32Array,
  losses: Float64Array,
  correct: Uint8Array,
): void {
  let known = predictions.get(key);
  if (known === undefined) {
    known = new Map();
    predictions.set(key, known);
    while (predictions.size > PREDICTION_MODELS) {
      const oldest = predictions.keys().next().value as string;
      predictions.delete(oldest);
    }
  }
  const keys = keysOf(data);
  for (const i of indices) known.set(keys.key[i], { check: keys.check[i], loss: losses[i], correct: correct[i] });
}
