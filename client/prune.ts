/**
 * Pruning operators of Sub-FedAvg: pure functions on Float32Array weights and
 * Masks (proto/mask.ts). No TensorFlow here, so every rule is unit-testable
 * on hand-made arrays and the same code serves any backend. Masks are immutable:
 * every rule returns new ones.
 *
 * Follows the reference implementation (MMorafah/Sub-FedAvg):
 * - unstructured: per layer, the p-th percentile of |w| among alive weights
 *   (numpy's default "linear" percentile), entries strictly below it pruned;
 * - structured (network slimming): per BN layer, channels whose |gamma| is
 *   strictly above the value at sorted index floor(n*q) are kept, and a layer
 *   whose kept count would fall below its floor is left untouched.
 */

import type { MaskMap, TensorMap } from '../proto/codec.js';
import { elementCount } from '../proto/shape.js';
import { Mask } from '../proto/mask.js';
// Type-only: the pruning rules stay free of TensorFlow at run time.
import type { ChannelGroup } from './model.js';

export type { MaskMap, TensorMap };

function requireEntry<V>(map: ReadonlyMap<string, V>, name: string, what: string): V {
  const value = map.get(name);
  if (value === undefined) throw new Error(`${what} '${name}' is missing`);
  return value;
}

function checkPercent(p: number, what: string): void {
  if (!Number.isFinite(p) || p < 0 || p > 100) {
    throw new RangeError(`${what} must be a percentage in [0, 100], got ${p}`);
  }
}

/**
 * The p-th percentile (0..100) of `values` with numpy's default definition
 * (method 'linear'): the value at fractional rank (n-1)*p/100 of the sorted
 * values, linearly interpolated between its two neighbours.
 */
export function percentile(values: ArrayLike<number>, p: number): number {
  checkPercent(p, 'percentile p');
  const n = values.length;
  if (n === 0) throw new RangeError('percentile of an empty array is undefined');
  const sorted = Float64Array.from(values).sort();
  const rank = ((n - 1) * p) / 100;
  const lo = Math.floor(rank);
  const hi = Math.min(lo + 1, n - 1);
  const t = rank - lo;
  return sorted[lo] + (sorted[hi] - sorted[lo]) * t;
}

/**
 * One layer of the prune operator. Alive = kept by the mask AND non-zero (the
 * reference takes `tensor[nonzero(tensor * mask)]`). Returns a new mask: the old
 * one with every entry whose |w| is below the p-th percentile of the alive |w|
 * set to 0. A layer with nothing alive is returned unchanged.
 */
export function pruneLayer(weights: Float32Array, mask: Mask, p: number): Mask {
  checkPercent(p, 'prune percent');
  if (weights.length !== mask.length) {
    throw new RangeError(`weights (${weights.length}) and mask (${mask.length}) lengths differ`);
  }
  const alive: number[] = [];
  for (let i = 0; i < weights.length; i++) {
    if (mask.has(i) && weights[i] !== 0) alive.push(Math.abs(weights[i]));
  }
  if (alive.length === 0) return mask;
  const threshold = percentile(alive, p);
  return mask.derive((bits) => {
    for (let i = 0; i < weights.length; i++) if (Math.abs(weights[i]) < threshold) bits[i] = 0;
  });
}

/**
 * The prune operator over the named layers (per layer, not a global ranking).
 * Returns a new MaskMap holding every entry of `masks`: the named ones pruned,
 * the others (biases, BN parameters, ...) copied untouched.
 */
export function prunePercentile(
  weights: ReadonlyMap<string, Float32Array>,
  masks: MaskMap,
  p: number,
  names: readonly string[],
): MaskMap {
  const out = new Map(masks);
  for (const name of names) {
    const w = requireEntry(weights, name, 'weight tensor');
    const m = requireEntry(masks, name, 'mask');
    out.set(name, pruneLayer(w, m, p));
  }
  return out;
}

/** Fraction of positions where two equally long masks differ (scipy's hamming). */
export function hammingFraction(a: Mask, b: Mask): number {
  if (a.length !== b.length) throw new RangeError(`mask lengths differ: ${a.length} vs ${b.length}`);
  return a.length === 0 ? 0 : a.distance(b) / a.length;
}

/** Mean over the named layers of the Hamming fraction between m1 and m2. */
export function maskDistance(m1: MaskMap, m2: MaskMap, names: readonly string[]): number {
  if (names.length === 0) return 0;
  let sum = 0;
  for (const name of names) {
    sum += hammingFraction(requireEntry(m1, name, 'mask'), requireEntry(m2, name, 'mask'));
  }
  return sum / names.length;
}

/** Percentage (0..100, like the reference) of masked-out entries over the named tensors. */
export function prunedFraction(masks: MaskMap, names: readonly string[]): number {
  let total = 0;
  let pruned = 0;
  for (const name of names) {
    const m = requireEntry(masks, name, 'mask');
    total += m.length;
    pruned += m.length - m.keptCount;
  }
  return total === 0 ? 0 : (100 * pruned) / total;
}

/**
 * The prune percentage to use this round. Normally p; when the remaining gap to
 * the target is smaller than p, the step that removes exactly the gap from the
 * alive weights, (target - pruned) / (100 - pruned) * 100, capped at 5 so the
 * last steps are gentle (reference `Client_Sub_Un.train`).
 */
export function cappedPruneStep(p: number, targetPercent: number, prunedPercent: number): number {
  checkPercent(p, 'prune percent');
  checkPercent(targetPercent, 'pruning target');
  checkPercent(prunedPercent, 'pruned percent');
  if (targetPercent - prunedPercent >= p) return p;
  if (prunedPercent >= 100) return 0;
  const exact = ((targetPercent - prunedPercent) / (100 - prunedPercent)) * 100;
  return Math.max(0, Math.min(exact, 5));
}

/** w * mask for every named tensor of `weights` that has a mask; returns new arrays. */
export function applyMasks(weights: ReadonlyMap<string, Float32Array>, masks: MaskMap): TensorMap {
  const out: TensorMap = new Map();
  for (const [name, w] of weights) {
    const m = masks.get(name);
    if (m !== undefined && m.length !== w.length) {
      throw new RangeError(`mask of '${name}' has ${m.length} entries, tensor has ${w.length}`);
    }
    out.set(name, m === undefined ? Float32Array.from(w) : m.applyTo(w));
  }
  return out;
}

/** Full masks for a manifest: the starting point of every client. */
export function fullMasks(manifest: readonly { name: string; shape: readonly number[] }[]): MaskMap {
  return new Map(manifest.map((spec) => [spec.name, Mask.full(elementCount(spec.shape))]));
}

// ---------------------------------------------------------------- channels

/**
 * The alive channels of a group: its gamma mask (a removed channel has gamma's
 * mask at 0; all of a channel's tensors are masked together).
 */
export function channelMaskOf(masks: MaskMap, group: ChannelGroup): Mask {
  const m = requireEntry(masks, group.gamma, 'mask');
  if (m.length !== group.channels) {
    throw new RangeError(`mask of '${group.gamma}' has ${m.length} entries, group has ${group.channels} channels`);
  }
  return m;
}

/**
 * Network-slimming channel selection for one BN layer. Among the alive channels,
 * sort |gamma| ascending and take thr = sorted[floor(nAlive * q)]; keep alive
 * channels with |gamma| > thr. If that keeps fewer than `floor` channels (or the
 * layer already has no more than `floor` alive), the layer is left as it is —
 * the reference's cfg_prune rule.
 */
export function selectChannels(gamma: Float32Array, alive: Mask, q: number, floor: number): Mask {
  if (gamma.length !== alive.length) {
    throw new RangeError(`gamma (${gamma.length}) and channel mask (${alive.length}) lengths differ`);
  }
  if (!(q >= 0 && q < 1)) throw new RangeError(`channel quantile q must be in [0, 1), got ${q}`);
  const magnitudes: number[] = [];
  for (let c = 0; c < gamma.length; c++) if (alive.has(c)) magnitudes.push(Math.abs(gamma[c]));
  if (magnitudes.length <= floor) return alive;
  magnitudes.sort((a, b) => a - b);
  const threshold = magnitudes[Math.floor(magnitudes.length * q)];
  const next = Mask.build(gamma.length, (bits) => {
    for (let c = 0; c < gamma.length; c++) if (alive.has(c) && Math.abs(gamma[c]) > threshold) bits[c] = 1;
  });
  return next.keptCount < floor ? alive : next;
}

/** Hamming fraction between two channel-mask vectors over the channels alive in `alive` (the reference compares masks of the shrunk network). */
export function channelDistance(a: readonly Mask[], b: readonly Mask[], alive: readonly Mask[]): number {
  let total = 0;
  let diff = 0;
  for (let g = 0; g < alive.length; g++) {
    for (let c = 0; c < alive[g].length; c++) {
      if (!alive[g].has(c)) continue;
      total++;
      if (a[g].has(c) !== b[g].has(c)) diff++;
    }
  }
  return total === 0 ? 0 : diff / total;
}

/**
 * Write a channel decision into element masks: a removed channel zeroes its conv
 * kernel's output slice ([kh, kw, inC, outC]: index % outC), its bias, gamma and
 * beta, and the next layer's inputs from it: for a conv kernel the in-channel
 * slice ((index / outC) % inC), for the dense layer after an NHWC flatten the
 * rows pixel*C + c of its [in, out] matrix. Channels are only ever removed here:
 * entries already 0 stay 0. Returns a new MaskMap.
 */
export function applyChannelMask(
  masks: MaskMap,
  group: ChannelGroup,
  channelMask: Mask,
  shapes: ReadonlyMap<string, readonly number[]>,
): MaskMap {
  const C = group.channels;
  if (channelMask.length !== C) {
    throw new RangeError(`channel mask has ${channelMask.length} entries, group '${group.gamma}' has ${C} channels`);
  }
  const out = new Map(masks);
  const zeroWhere = (name: string, channelOf: (index: number) => number): void => {
    const m = requireEntry(out, name, 'mask');
    out.set(
      name,
      m.derive((bits) => {
        for (let i = 0; i < bits.length; i++) if (!channelMask.has(channelOf(i))) bits[i] = 0;
      }),
    );
  };
  const checkLastAxis = (name: string): number[] => {
    const shape = [...requireEntry(shapes, name, 'shape of')];
    if (shape[shape.length - 1] !== C) {
      throw new RangeError(`'${name}' has shape [${String(shape)}], its last axis should be ${C} channels`);
    }
    return shape;
  };
  for (const name of [group.kernel, group.bias, group.gamma, group.beta]) {
    const shape = checkLastAxis(name);
    const m = requireEntry(out, name, 'mask');
    if (m.length !== elementCount(shape)) {
      throw new RangeError(`mask of '${name}' has ${m.length} entries, shape [${String(shape)}] needs ${elementCount(shape)}`);
    }
    out.set(name, m.and(Mask.fromChannels(channelMask, shape)));
  }
  const nextShape = [...requireEntry(shapes, group.next.weight, 'shape of')];
  if (group.next.kind === 'conv') {
    if (nextShape.length !== 4 || nextShape[2] !== C) {
      throw new RangeError(`next conv '${group.next.weight}' has shape [${String(nextShape)}], expected [kh, kw, ${C}, outC]`);
    }
    const outC = nextShape[3];
    zeroWhere(group.next.weight, (i) => Math.floor(i / outC) % C);
  } else {
    const rows = group.next.spatial * C;
    if (nextShape.length !== 2 || nextShape[0] !== rows) {
      throw new RangeError(
        `dense '${group.next.weight}' after flatten has shape [${String(nextShape)}], expected [${rows}, out] (spatial ${group.next.spatial} x ${C} channels)`,
      );
    }
    const units = nextShape[1];
    zeroWhere(group.next.weight, (i) => Math.floor(i / units) % C);
  }
  return out;
}
