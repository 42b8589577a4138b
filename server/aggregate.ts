import type { TensorMap, TensorSpec } from './model.js';
import { elementCount } from '../proto/shape.js';
import type { ValidatedTensor, ValidatedUpdate } from './validate.js';

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
export class IntersectionAggregator {
  readonly #acc = new Map<string, Float64Array>();
  readonly #sizes = new Map<string, number>();
  #updates = 0;

  constructor(manifest: readonly TensorSpec[]) {
    for (const spec of manifest) {
      const n = elementCount(spec.shape);
      this.#sizes.set(spec.name, n);
      this.#acc.set(spec.name, new Float64Array(2 * n));
    }
  }

  /** Number of updates folded since the last commit or reset. */
  get updates(): number {
    return this.#updates;
  }

  /**
   * Folds one whole update: for every tensor, `deltas[i]` is the delta at the
   * mask's i-th kept position. Callers validate first (validateUpdate); these
   * checks only guard against programming errors, and all of them run before
   * anything is folded, so even a bug never leaves half an update in the sums.
   */
  add(update: ValidatedUpdate): void {
    const weight = update.weight;
    if (!(weight > 0) || !Number.isFinite(weight)) throw new Error(`aggregate: weight must be positive, got ${weight}`);
    const folds: { acc: Float64Array; tensor: ValidatedTensor }[] = [];
    const names = new Set<string>();
    for (const tensor of update.tensors) {
      const { name, mask, deltas } = tensor;
      const acc = this.#acc.get(name);
      const size = this.#sizes.get(name);
      if (acc === undefined || size === undefined) throw new Error(`aggregate: unknown tensor "${name}"`);
      if (names.has(name)) throw new Error(`aggregate: tensor "${name}" appears twice in one update`);
      names.add(name);
      if (mask.length !== size) throw new Error(`aggregate: tensor "${name}" has a mask of ${mask.length} for size ${size}`);
      if (deltas.length !== mask.keptCount) {
        throw new Error(`aggregate: tensor "${name}" has ${deltas.length} values for ${mask.keptCount} kept positions`);
      }
      folds.push({ acc, tensor });
    }
    for (const { acc, tensor } of folds) fold(acc, tensor, weight);
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
