import type { KeptIndices } from '../proto/mask.js';
import type { AggregationConfig } from './config.js';
import type { TensorMap, TensorSpec } from './model.js';
import { elementCount } from '../proto/shape.js';
import type { ValidatedTensor, ValidatedUpdate } from './validate.js';

/** Folds a round's validated updates into one delta per position and applies it to the global model. */
export interface Aggregator {
  /** Number of updates folded since the last commit or reset. */
  readonly updates: number;
  add(update: ValidatedUpdate): void;
  /** Applies the round to `global` in place, then resets; returns how many positions some reporter kept. */
  commit(global: TensorMap): number;
  reset(): void;
}

/**
 * Checks an update against the manifest's sizes before anything of it is
 * kept. Callers validate first (validateUpdate); these checks only guard
 * against programming errors, so that even a bug never leaves half an update
 * in an aggregate.
 */
function checkShape(sizes: ReadonlyMap<string, number>, update: ValidatedUpdate): void {
  const weight = update.weight;
  if (!(weight > 0) || !Number.isFinite(weight)) throw new Error(`aggregate: weight must be positive, got ${weight}`);
  const names = new Set<string>();
  for (const { name, mask, deltas } of update.tensors) {
    const size = sizes.get(name);
    if (size === undefined) throw new Error(`aggregate: unknown tensor "${name}"`);
    if (names.has(name)) throw new Error(`aggregate: tensor "${name}" appears twice in one update`);
    names.add(name);
    if (mask.length !== size) throw new Error(`aggregate: tensor "${name}" has a mask of ${mask.length} for size ${size}`);
    if (deltas.length !== mask.keptCount) {
      throw new Error(`aggregate: tensor "${name}" has ${deltas.length} values for ${mask.keptCount} kept positions`);
    }
  }
}

function sizesOf(manifest: readonly TensorSpec[]): Map<string, number> {
  return new Map(manifest.map((spec) => [spec.name, elementCount(spec.shape)]));
}

/**
 * Sub-FedAvg's intersection average, streamed in O(model) memory.
 *
 * For every element j: sum[j] += n_k * delta_k[j] and weight[j] += n_k over the
 * clients k whose mask keeps j; commit sets global[j] += sum[j] / weight[j]
 * where weight[j] > 0 and leaves positions nobody kept untouched.
 *
 * Sums are Float64: with num_examples weights in the hundreds and a hundred
 * clients, a float32 accumulator would keep only ~3 significant digits of a
 * small delta next to a large running sum, and the result would depend on the
 * order the uploads arrived in. Sum and weight of one element sit side by
 * side (sum at 2j, weight at 2j+1) so a fold touches one cache line per kept
 * element instead of two.
 */
export class IntersectionAggregator implements Aggregator {
  readonly #acc = new Map<string, Float64Array>();
  readonly #sizes: Map<string, number>;
  #updates = 0;

  constructor(manifest: readonly TensorSpec[]) {
    this.#sizes = sizesOf(manifest);
    for (const [name, n] of this.#sizes) this.#acc.set(name, new Float64Array(2 * n));
  }

  /** Number of updates folded since the last commit or reset. */
  get updates(): number {
    return this.#updates;
  }

  /** Folds one whole update: for every tensor, `deltas[i]` is the delta at the mask's i-th kept position. */
  add(update: ValidatedUpdate): void {
    checkShape(this.#sizes, update);
    for (const tensor of update.tensors) fold(this.#acc.get(tensor.name) as Float64Array, tensor, update.weight);
    this.#updates++;
  }

  /**
   * Applies the running average to `global` in place, then resets the sums.
   * Returns how many positions changed owner-weight (had weight > 0).
   */
  commit(global: TensorMap): number {
    let touched = 0;
    for (const [name, acc] of this.#acc) {
      const g = global.get(name);
      const size = this.#sizes.get(name) as number;
      if (g === undefined || g.length !== size) throw new Error(`aggregate: global tensor "${name}" missing or resized`);
      for (let j = 0, a = 0; j < size; j++, a += 2) {
        const w = acc[a + 1];
        if (w > 0) {
          g[j] += acc[a] / w;
          touched++;
        }
      }
    }
    this.reset();
    return touched;
  }

  reset(): void {
    for (const acc of this.#acc.values()) acc.fill(0);
    this.#updates = 0;
  }
}

/** sum[j] += weight * delta and weight[j] += weight at every kept position j (interleaved, see the class comment). */
function fold(acc: Float64Array, { mask, deltas }: ValidatedTensor, weight: number): void {
  if (mask.isFull) {
    // No index list to walk: a dense tensor is the common case of FedAvg and of every first contact.
    for (let j = 0, a = 0; j < deltas.length; j++, a += 2) {
      acc[a] += weight * deltas[j];
      acc[a + 1] += weight;
    }
    return;
  }
  const kept = mask.keptIndices();
  for (let i = 0; i < kept.length; i++) {
    const a = kept[i] << 1;
    acc[a] += weight * deltas[i];
    acc[a + 1] += weight;
  }
}

/**
 * A coordinate-wise trimmed mean over the reporters that keep each position
 * (the intersection rule with a robust average): for position j with K_j
 * reporters, drop the floor(trim * K_j) smallest and the as many largest
 * deltas, and take the weighted mean of the rest (weights as the mean's:
 * num_examples or 1). trim < 0.5 always leaves at least one value. Positions
 * nobody kept keep their value. Ties are ordered by value, then weight, then
 * client id, so the result does not depend on the order uploads arrived in.
 *
 * Memory: it cannot stream. The values to drop at a position are known only
 * once every reporter's value there is, and no running summary of a stream
 * gives an exact trimmed mean. So it keeps each validated update until the
 * commit: the decoded deltas (4 bytes per kept value per reporter) and the
 * masks (the server holds them anyway), O(reporters x kept values) instead of
 * the mean's O(model). The commit walks each tensor once with one cursor per
 * reporter and sorts K_j values per position: O(n K log K) time, O(K) scratch.
 */
export class TrimmedMeanAggregator implements Aggregator {
  readonly #sizes: Map<string, number>;
  readonly #trim: number;
  #held: ValidatedUpdate[] = [];

  constructor(manifest: readonly TensorSpec[], trim: number) {
    if (!(trim >= 0 && trim < 0.5)) throw new Error(`aggregate: trim must be in [0, 0.5), got ${trim}`);
    this.#sizes = sizesOf(manifest);
    this.#trim = trim;
  }

  get updates(): number {
    return this.#held.length;
  }

  add(update: ValidatedUpdate): void {
    checkShape(this.#sizes, update);
    this.#held.push(update);
  }

  commit(global: TensorMap): number {
    // A fixed order of the reporters, so that ties break the same way whatever the arrival order.
    const updates = [...this.#held].sort((a, b) => (a.clientId < b.clientId ? -1 : a.clientId > b.clientId ? 1 : 0));
    let touched = 0;
    for (const [name, size] of this.#sizes) {
      const g = global.get(name);
      if (g === undefined || g.length !== size) throw new Error(`aggregate: global tensor "${name}" missing or resized`);
      const parts: { tensor: ValidatedTensor; weight: number; kept: KeptIndices | null; at: number }[] = [];
      for (const u of updates) {
        const tensor = u.tensors.find((t) => t.name === name);
        if (tensor !== undefined)
          parts.push({ tensor, weight: u.weight, kept: tensor.mask.isFull ? null : tensor.mask.keptIndices(), at: 0 });
      }
      const values = new Float64Array(parts.length);
      const weights = new Float64Array(parts.length);
      const order = new Int32Array(parts.length);
      for (let j = 0; j < size; j++) {
        let k = 0;
        for (const p of parts) {
          if (p.kept === null) {
            values[k] = p.tensor.deltas[j];
          } else if (p.at < p.kept.length && p.kept[p.at] === j) {
            values[k] = p.tensor.deltas[p.at++];
          } else {
            continue;
          }
          weights[k] = p.weight;
          order[k] = k;
          k++;
        }
        if (k === 0) continue;
        g[j] += trimmedMean(values, weights, order, k, Math.floor(this.#trim * k));
        touched++;
      }
    }
    this.reset();
    return touched;
  }

  reset(): void {
    this.#held = [];
  }
}

/**
 * The weighted mean of values[0..k) without the `cut` smallest and `cut`
 * largest. `order` is scratch (an insertion sort of indices: k is the number
 * of reporters keeping one position, a handful).
 */
function trimmedMean(values: Float64Array, weights: Float64Array, order: Int32Array, k: number, cut: number): number {
  const before = (a: number, b: number) => values[a] < values[b] || (values[a] === values[b] && weights[a] < weights[b]);
  for (let i = 1; i < k; i++) {
    const x = order[i];
    let m = i - 1;
    while (m >= 0 && before(x, order[m])) {
      order[m + 1] = order[m];
      m--;
    }
    order[m + 1] = x;
  }
  let sum = 0;
  let weight = 0;
  for (let i = cut; i < k - cut; i++) {
    sum += weights[order[i]] * values[order[i]];
    weight += weights[order[i]];
  }
  return sum / weight;
}

/** The aggregator the config asks for. */
export function createAggregator(manifest: readonly TensorSpec[], aggregation: AggregationConfig): Aggregator {
  return aggregation === 'mean' ? new IntersectionAggregator(manifest) : new TrimmedMeanAggregator(manifest, aggregation.trim);
}
