/**
 * Compact export: the pruned structure physically removed. Pure functions on
 * arrays (no tfjs), so every rule is testable on hand-made weights.
 *
 * A unit is a conv output channel or a hidden dense neuron. Starting from the
 * masked weights, a unit goes when its output cannot depend on the input:
 *   - its incoming weights (over the inputs still there) are all zero, or
 *   - for a conv with BatchNorm, its gamma is zero (Sub-FedAvg (Hy) masks gamma,
 *     beta, bias and the kernel slice of a removed channel together);
 * or when nothing reads it: the next layer's weights from it are all zero.
 *
 * A removed constant unit still adds its constant k to every position it feeds,
 * so k times the sum of its outgoing weights is folded into the next layer's
 * bias: k = relu(BN(bias)) for a conv (pooling a constant changes nothing),
 * relu(bias) for a dense neuron. (Under Hy k is 0, since bias and beta are masked
 * too; folding makes the rule exact for any masked model.) The unit's slice of
 * its own kernel, bias, BatchNorm parameters and running statistics disappears,
 * and so do the next layer's inputs from it: the in-channel slice of the next
 * conv kernel, or the rows p*C + c of the dense layer after the NHWC flatten.
 * The compact model computes the same logits as the masked one, up to float
 * rounding. The model's inputs and outputs (classes) never change.
 */
import { Mask } from '../../proto/mask.js';
import { BN_EPSILON, type Architecture, type Layer } from '../model.js';
import { applyMasks, type TensorMap } from '../prune.js';
import type { PortableModel } from './portable.js';

/** What compaction did to one layer's units. */
export interface LayerReduction {
  readonly name: string;
  readonly kind: Layer['kind'];
  readonly before: number;
  readonly after: number;
}

export interface CompactResult {
  readonly model: PortableModel;
  readonly layers: readonly LayerReduction[];
}

/** The parameters and running statistics of one layer, by zoo name. */
function namesOf(layer: Layer): {
  weight: string;
  bias: string;
  bn?: { gamma: string; beta: string; mean: string; variance: string };
} {
  const base = { weight: `${layer.name}.weight`, bias: `${layer.name}.bias` };
  if (layer.kind !== 'conv' || layer.batchNorm === undefined) return base;
  const bn = layer.batchNorm;
  return {
    ...base,
    bn: { gamma: `${bn}.weight`, beta: `${bn}.bias`, mean: `${bn}.running_mean`, variance: `${bn}.running_var` },
  };
}

function units(layer: Layer): number {
  return layer.kind === 'conv' ? layer.outC : layer.outputs;
}

function need(map: ReadonlyMap<string, Float32Array>, name: string, what: string): Float32Array {
  const v = map.get(name);
  if (v === undefined) throw new Error(`compact: the model has no ${what} '${name}'`);
  return v;
}

/**
 * Rows of a layer's weight matrix ([rows][units]; a conv kernel [kh, kw, inC, outC] is
 * [kh*kw*inC][outC]) that read input unit `u` of `inputUnits`: one per kernel tap, or,
 * for a dense layer reading an image of `pixels` pixels (NHWC flatten), the rows p*C + u.
 */
function rowsReading(layer: Layer, inputUnits: number, u: number, pixels: number): number[] {
  const rows: number[] = [];
  const count = layer.kind === 'conv' ? layer.size * layer.size : pixels;
  for (let t = 0; t < count; t++) rows.push(t * inputUnits + u);
  return rows;
}

/**
 * The compact model of `source`: masked, then every unit that is constant or
 * unread removed (folding constants into the next bias). Masks are carried
 * along, cut the same way.
 */
export function compactModel(source: PortableModel): CompactResult {
  const arch = source.architecture;
  const weights: TensorMap = applyMasks(source.weights, source.masks);
  const personal: TensorMap = new Map([...source.personal].map(([k, v]) => [k, Float32Array.from(v)]));
  const layers = arch.layers;
  // The units of the current layer's input that remain (channels, or dense inputs).
  let keptIn: Int32Array = Int32Array.from({ length: arch.inputShape[2] }, (_, i) => i);
  let inputUnits = arch.inputShape[2];
  // Pixels of the input activation while it is still an image (before the first dense layer), else 1.
  let pixels = arch.inputShape[0] * arch.inputShape[1];
  let side: [number, number] = [arch.inputShape[0], arch.inputShape[1]];
  const keptOut: Int32Array[] = [];
  const reports: LayerReduction[] = [];
  for (let i = 0; i < layers.length; i++) {
    const layer = layers[i];
    const n = namesOf(layer);
    const W = need(weights, n.weight, 'weight');
    const bias = need(weights, n.bias, 'bias');
    const U = units(layer);
    // Rows of W that still have an input (the others went, folded, with their unit).
    const liveRows = [...keptIn].flatMap((u) => rowsReading(layer, inputUnits, u, pixels));
    if (layer.kind === 'conv') {
      side = [(side[0] - layer.size + 1) / 2, (side[1] - layer.size + 1) / 2];
      pixels = side[0] * side[1];
    }
    const remove = new Uint8Array(U);
    if (i < layers.length - 1) {
      const next = layers[i + 1];
      const nextNames = namesOf(next);
      const nextW = need(weights, nextNames.weight, 'weight');
      const nextBias = need(weights, nextNames.bias, 'bias');
      const nextUnits = units(next);
      const nextPixels = layer.kind === 'conv' ? pixels : 1;
      const gamma = n.bn ? need(weights, n.bn.gamma, 'BatchNorm gamma') : undefined;
      const constant = new Float64Array(U);
      for (let u = 0; u < U; u++) {
        const silent = liveRows.every((r) => W[r * U + u] === 0) || gamma?.[u] === 0;
        const unread = rowsReading(next, U, u, nextPixels).every((r) => {
          for (let o = 0; o < nextUnits; o++) if (nextW[r * nextUnits + o] !== 0) return false;
          return true;
        });
        if (!silent && !unread) continue;
        remove[u] = 1;
        if (silent) constant[u] = constantOutput(layer, u, bias, n.bn, weights, personal);
      }
      // A layer keeps at least one unit; keeping a removable one is exact.
      if (remove.every((r) => r === 1)) remove[0] = 0;
      // Fold the removed units' constants into the next layer's bias.
      const shift = new Float64Array(nextUnits);
      for (let u = 0; u < U; u++) {
        if (remove[u] === 0 || constant[u] === 0) continue;
        for (const r of rowsReading(next, U, u, nextPixels)) {
          for (let o = 0; o < nextUnits; o++) shift[o] += constant[u] * nextW[r * nextUnits + o];
        }
      }
      for (let o = 0; o < nextUnits; o++) if (shift[o] !== 0) nextBias[o] = Math.fround(nextBias[o] + shift[o]);
    }
    const kept = Int32Array.from({ length: U }, (_, u) => u).filter((u) => remove[u] === 0);
    keptOut.push(kept);
    reports.push({ name: layer.name, kind: layer.kind, before: U, after: kept.length });
    keptIn = kept;
    inputUnits = U;
    if (layer.kind === 'dense') pixels = 1;
  }
  return { model: cut(source, weights, personal, keptOut), layers: reports };
}

/** The constant output of a unit whose output does not depend on the input. */
function constantOutput(
  layer: Layer,
  u: number,
  bias: Float32Array,
  bn: ReturnType<typeof namesOf>['bn'],
  weights: TensorMap,
  personal: TensorMap,
): number {
  let z = bias[u];
  if (bn !== undefined) {
    const gamma = need(weights, bn.gamma, 'BatchNorm gamma')[u];
    const beta = need(weights, bn.beta, 'BatchNorm beta')[u];
    if (gamma === 0) z = beta;
    else {
      const mean = need(personal, bn.mean, 'running mean')[u];
      const variance = need(personal, bn.variance, 'running variance')[u];
      z = ((z - mean) / Math.sqrt(variance + BN_EPSILON)) * gamma + beta;
    }
  }
  const relu = layer.kind === 'conv' || layer.relu;
  return relu ? Math.max(0, z) : z;
}

/** Copies the kept units of every layer (and the matching inputs of the next) into a new model. */
function cut(source: PortableModel, weights: TensorMap, personal: TensorMap, keptOut: readonly Int32Array[]): PortableModel {
  const arch = source.architecture;
  const outWeights: TensorMap = new Map();
  const outPersonal: TensorMap = new Map();
  const outMasks = new Map<string, Mask>();
  const layers: Layer[] = [];
  let side: [number, number] = [arch.inputShape[0], arch.inputShape[1]];
  let inKept: Int32Array = Int32Array.from({ length: arch.inputShape[2] }, (_, i) => i);
  let inUnits = arch.inputShape[2];
  let flat = false;
  arch.layers.forEach((layer, i) => {
    const n = namesOf(layer);
    const U = units(layer);
    const out = keptOut[i];
    // Row map: new row -> old row of the weight matrix [rows][U].
    const rowMap: number[] = [];
    if (layer.kind === 'conv') {
      for (let t = 0; t < layer.size * layer.size; t++) for (const c of inKept) rowMap.push(t * inUnits + c);
    } else if (!flat) {
      for (let p = 0; p < side[0] * side[1]; p++) for (const c of inKept) rowMap.push(p * inUnits + c);
    } else {
      for (const c of inKept) rowMap.push(c);
    }
    const take = (name: string, values: Float32Array, into: TensorMap, rows: number[] | null): void => {
      const cols = out.length;
      const result = new Float32Array((rows?.length ?? 1) * cols);
      const maskBits = source.masks.get(name);
      const bits = new Uint8Array(result.length);
      (rows ?? [0]).forEach((r, newRow) => {
        for (let j = 0; j < cols; j++) {
          const from = r * U + out[j];
          result[newRow * cols + j] = values[from];
          bits[newRow * cols + j] = maskBits === undefined || maskBits.has(from) ? 1 : 0;
        }
      });
      into.set(name, result);
      if (into === outWeights) outMasks.set(name, Mask.fromBytes(bits));
    };
    take(n.weight, need(weights, n.weight, 'weight'), outWeights, rowMap);
    take(n.bias, need(weights, n.bias, 'bias'), outWeights, null);
    if (n.bn) {
      take(n.bn.gamma, need(weights, n.bn.gamma, 'BatchNorm gamma'), outWeights, null);
      take(n.bn.beta, need(weights, n.bn.beta, 'BatchNorm beta'), outWeights, null);
      take(n.bn.mean, need(personal, n.bn.mean, 'running mean'), outPersonal, null);
      take(n.bn.variance, need(personal, n.bn.variance, 'running variance'), outPersonal, null);
    }
    if (layer.kind === 'conv') {
      layers.push({ ...layer, inC: inKept.length, outC: out.length });
      side = [(side[0] - layer.size + 1) / 2, (side[1] - layer.size + 1) / 2];
    } else {
      layers.push({ ...layer, inputs: rowMap.length, outputs: out.length });
      flat = true;
    }
    inKept = out;
    inUnits = U;
  });
  const architecture: Architecture = { inputShape: arch.inputShape, layers };
  return { ...source, architecture, weights: outWeights, personal: outPersonal, masks: outMasks };
}
