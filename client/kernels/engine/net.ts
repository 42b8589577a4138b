/**
 * A zoo model compiled for the native engine: the layer plan (shapes, the internal
 * layout of every tensor, the offset tables of the matrix kernels) and sessions that
 * hold one call's buffers in the engine's memory and run forward, backward and the
 * optimiser step as a handful of kernel calls per layer, with no tfjs op in between.
 *
 * Internal layout: activations NHWC with channels padded to a multiple of 4 (zeros in
 * the padding); every parameter as [rows][cols padded to 4] with the rows in tfjs order
 * (conv kernel [kh*kw*inC][outC], dense [in][out], vectors [1][C]).
 */
import type { ImageDataset } from '../../data/dataset.js';
import { architectureOf, BN_EPSILON, BN_MOMENTUM, type Architecture, type Model } from '../../model.js';
import type { Engine } from './native.js';

/**
 * One tensor of the model inside the engine: [rows][cols] with row stride ld (cols
 * padded to 4). Row r is row rowIndex[r] of the tfjs tensor viewed as [fullRows][fullCols]
 * and column j its column colIndex[j]; without index lists, the identity. A compacted
 * plan (dead channels left out) holds a subset of the tensor.
 */
interface ParamSlot {
  readonly name: string;
  readonly rows: number;
  readonly cols: number;
  readonly ld: number;
  readonly fullRows: number;
  readonly fullCols: number;
  readonly rowIndex?: Int32Array;
  readonly colIndex?: Int32Array;
}

interface ConvPlan {
  readonly kind: 'conv';
  readonly name: string;
  readonly first: boolean;
  readonly inH: number;
  readonly inW: number;
  /** Input channels computed (live), and the channel stride of the input activation. */
  readonly inC: number;
  readonly inCs: number;
  /** Output channels computed (live). */
  readonly outC: number;
  /** Output channels padded to 4. */
  readonly mp: number;
  readonly k: number;
  readonly outH: number;
  readonly outW: number;
  readonly poolH: number;
  readonly poolW: number;
  readonly weight: string;
  readonly bias: string;
  readonly bn?: { readonly gamma: string; readonly beta: string; readonly mean: string; readonly variance: string };
}

interface DensePlan {
  readonly kind: 'dense';
  readonly first: boolean;
  /** Inputs computed (rows of the weight slot) and the row length of the input activation inside the engine. */
  readonly inputs: number;
  readonly ldx: number;
  /** Weight row i multiplies the activation at rowmap[i]. */
  readonly rowmap: Int32Array;
  readonly outputs: number;
  readonly op: number;
  readonly relu: boolean;
  readonly weight: string;
  readonly bias: string;
}

type LayerPlan = ConvPlan | DensePlan;

/**
 * BatchNorm running statistics of channels a compacted plan leaves out: such a channel's
 * pre-BN output is exactly zero, so every training step moves its running mean and
 * variance to keep*value + momentum*0.
 */
interface DeadStatistics {
  readonly mean: string;
  readonly variance: string;
  readonly channels: Int32Array;
}

/** Live output channels (ascending full indices) per conv layer name; layers not named keep all. */
export type LiveChannels = ReadonlyMap<string, Int32Array>;

const pad4 = (n: number): number => Math.ceil(n / 4) * 4;

/** conv1.weight -> conv1 */
const layerName = (param: string): string => param.slice(0, param.lastIndexOf('.'));

const identity = (n: number): Int32Array => Int32Array.from({ length: n }, (_, i) => i);

/** The compiled plan of one architecture, optionally compacted to the live channels of its conv layers. */
export class NetPlan {
  readonly inputShape: readonly [number, number, number];
  readonly layers: readonly LayerPlan[];
  readonly params: readonly ParamSlot[];
  readonly personal: readonly ParamSlot[];
  readonly dead: readonly DeadStatistics[];
  readonly numClasses: number;

  constructor(arch: Architecture, live?: LiveChannels) {
    const [h0, w0, c0] = arch.inputShape;
    this.inputShape = [h0, w0, c0];
    const layers: LayerPlan[] = [];
    const params: ParamSlot[] = [];
    const personal: ParamSlot[] = [];
    const dead: DeadStatistics[] = [];
    const vector = (name: string, full: number, index: Int32Array): ParamSlot => ({
      name,
      rows: 1,
      cols: index.length,
      ld: pad4(index.length),
      fullRows: 1,
      fullCols: full,
      ...(index.length === full ? {} : { colIndex: index }),
    });
    let h = h0;
    let w = w0;
    let c = c0; // channels of the activation in the tfjs model
    let kept = identity(c0); // which of them the engine computes
    let cs = c0;
    let flat: number | null = null; // set once a dense layer has run: the width of its output
    for (const layer of arch.layers) {
      const first = layers.length === 0;
      if (layer.kind === 'conv') {
        if (flat !== null) throw new Error('native engine: a conv layer after a dense layer is not supported');
        if (layer.inC !== c) throw new Error(`native engine: ${layer.name} expects ${layer.inC} channels, gets ${c}`);
        const outH = h - layer.size + 1;
        const outW = w - layer.size + 1;
        if (outH < 2 || outW < 2 || outH % 2 !== 0 || outW % 2 !== 0) {
          throw new Error(`native engine: ${layer.name} output ${outH}x${outW} does not tile into 2x2 pools`);
        }
        const out = live?.get(layer.name) ?? identity(layer.outC);
        if (out.length === 0 || out.some((ch, i) => ch < 0 || ch >= layer.outC || (i > 0 && ch <= out[i - 1]))) {
          throw new Error(`native engine: ${layer.name}: live channels must be ascending indices below ${layer.outC}`);
        }
        const mp = pad4(out.length);
        const plan: ConvPlan = {
          kind: 'conv',
          name: layer.name,
          first,
          inH: h,
          inW: w,
          inC: kept.length,
          inCs: cs,
          outC: out.length,
          mp,
          k: layer.size,
          outH,
          outW,
          poolH: outH / 2,
          poolW: outW / 2,
          weight: `${layer.name}.weight`,
          bias: `${layer.name}.bias`,
          ...(layer.batchNorm !== undefined
            ? {
                bn: {
                  gamma: `${layer.batchNorm}.weight`,
                  beta: `${layer.batchNorm}.bias`,
                  mean: `${layer.batchNorm}.running_mean`,
                  variance: `${layer.batchNorm}.running_var`,
                },
              }
            : {}),
        };
        layers.push(plan);
        const taps = layer.size * layer.size;
        const rowIndex = new Int32Array(taps * kept.length);
        for (let t = 0; t < taps; t++) for (let i = 0; i < kept.length; i++) rowIndex[t * kept.length + i] = t * c + kept[i];
        const compactRows = kept.length !== c;
        const compactCols = out.length !== layer.outC;
        params.push({
          name: plan.weight,
          rows: rowIndex.length,
          cols: out.length,
          ld: mp,
          fullRows: taps * c,
          fullCols: layer.outC,
          ...(compactRows ? { rowIndex } : {}),
          ...(compactCols ? { colIndex: out } : {}),
        });
        params.push(vector(plan.bias, layer.outC, out));
        if (plan.bn) {
          params.push(vector(plan.bn.gamma, layer.outC, out), vector(plan.bn.beta, layer.outC, out));
          personal.push(vector(plan.bn.mean, layer.outC, out), vector(plan.bn.variance, layer.outC, out));
          if (compactCols) {
            const channels = Int32Array.from(identity(layer.outC).filter((ch) => !out.includes(ch)));
            dead.push({ mean: plan.bn.mean, variance: plan.bn.variance, channels });
          }
        }
        h = plan.poolH;
        w = plan.poolW;
        c = layer.outC;
        kept = out;
        cs = mp;
      } else {
        let rowmap: Int32Array;
        let rowIndex: Int32Array | undefined;
        let ldx: number;
        if (flat === null) {
          // NHWC flatten: tfjs row (pixel*c + ch) reads the engine's activation at (pixel*cs + i), ch = kept[i].
          if (layer.inputs !== h * w * c) {
            throw new Error(`native engine: ${layer.name} expects ${layer.inputs} inputs, gets ${h * w * c}`);
          }
          rowmap = new Int32Array(h * w * kept.length);
          const rows = new Int32Array(h * w * kept.length);
          for (let p = 0; p < h * w; p++) {
            for (let i = 0; i < kept.length; i++) {
              rowmap[p * kept.length + i] = p * cs + i;
              rows[p * kept.length + i] = p * c + kept[i];
            }
          }
          if (kept.length !== c) rowIndex = rows;
          ldx = pad4(h * w * cs);
        } else {
          if (layer.inputs !== flat) throw new Error(`native engine: ${layer.name} expects ${layer.inputs} inputs, gets ${flat}`);
          rowmap = identity(layer.inputs);
          ldx = pad4(flat);
        }
        const plan: DensePlan = {
          kind: 'dense',
          first,
          inputs: rowmap.length,
          ldx,
          rowmap,
          outputs: layer.outputs,
          op: pad4(layer.outputs),
          relu: layer.relu,
          weight: `${layer.name}.weight`,
          bias: `${layer.name}.bias`,
        };
        layers.push(plan);
        params.push({
          name: plan.weight,
          rows: rowmap.length,
          cols: layer.outputs,
          ld: plan.op,
          fullRows: layer.inputs,
          fullCols: layer.outputs,
          ...(rowIndex !== undefined ? { rowIndex } : {}),
        });
        params.push(vector(plan.bias, layer.outputs, identity(layer.outputs)));
        flat = layer.outputs;
      }
    }
    const last = layers[layers.length - 1];
    if (last?.kind !== 'dense' || last.relu) throw new Error('native engine: the model must end in a dense layer without ReLU');
    if (layers[0]?.kind === 'dense' && layers[0].ldx !== h0 * w0 * c0) {
      throw new Error('native engine: an input size that is not a multiple of 4 is not supported for a dense first layer');
    }
    this.layers = layers;
    this.params = params;
    this.personal = personal;
    this.dead = dead;
    this.numClasses = last.outputs;
  }
}

const plans = new WeakMap<Architecture, NetPlan | null>();
/** Compacted plans per architecture, by live-channel signature; a few (clients differ). */
const compacted = new WeakMap<Architecture, Map<string, NetPlan>>();
const COMPACTED_PLANS = 16;

/**
 * The plan for `model`, or null when the engine does not cover it (not a zoo model, or
 * an unsupported shape). With `live`, the plan computes only those channels.
 */
export function planFor(model: Model, live?: LiveChannels): NetPlan | null {
  const arch = architectureOf(model);
  if (arch === undefined) return null;
  let plan = plans.get(arch);
  if (plan === undefined) {
    try {
      plan = new NetPlan(arch);
    } catch {
      plan = null;
    }
    plans.set(arch, plan);
  }
  if (plan === null || live === undefined || live.size === 0) return plan;
  const signature = [...live].map(([name, ch]) => `${name}:${ch.join(',')}`).join(';');
  let cache = compacted.get(arch);
  if (cache === undefined) {
    cache = new Map();
    compacted.set(arch, cache);
  }
  let compact = cache.get(signature);
  if (compact === undefined) {
    compact = new NetPlan(arch, live);
    cache.set(signature, compact);
    if (cache.size > COMPACTED_PLANS) cache.delete(cache.keys().next().value as string);
  } else {
    cache.delete(signature);
    cache.set(signature, compact);
  }
  return compact;
}

/**
 * Conv channels whose output is exactly zero whatever the input, so that leaving them out
 * changes no result. For training (masks given) a channel must also stay dead: every
 * entry it owns (kernel column, bias, BatchNorm gamma and beta) zero and masked, with
 * BatchNorm (its pre-BN output then is exactly zero, which its running statistics see).
 * For inference: gamma = beta = 0 (BatchNorm), or a zero kernel column and bias <= 0.
 * Undefined when no channel is dead.
 */
export function deadChannelsLeftOut(
  arch: Architecture,
  weights: ReadonlyMap<string, Float32Array>,
  masks?: ReadonlyMap<string, ArrayLike<number>>,
): LiveChannels | undefined {
  const live = new Map<string, Int32Array>();
  for (const layer of arch.layers) {
    if (layer.kind !== 'conv') continue;
    const kernel = weights.get(`${layer.name}.weight`);
    const bias = weights.get(`${layer.name}.bias`);
    if (kernel === undefined || bias === undefined) return undefined;
    const gamma = layer.batchNorm !== undefined ? weights.get(`${layer.batchNorm}.weight`) : undefined;
    const beta = layer.batchNorm !== undefined ? weights.get(`${layer.batchNorm}.bias`) : undefined;
    const zeroColumn = (values: ArrayLike<number> | undefined, ch: number): boolean => {
      if (values === undefined) return false;
      for (let i = ch; i < values.length; i += layer.outC) if (values[i] !== 0) return false;
      return true;
    };
    const isDead = (ch: number): boolean => {
      if (masks !== undefined) {
        if (layer.batchNorm === undefined || gamma === undefined || beta === undefined) return false;
        const names = [`${layer.name}.weight`, `${layer.name}.bias`, `${layer.batchNorm}.weight`, `${layer.batchNorm}.bias`];
        for (const name of names) {
          const mask = masks.get(name);
          if (mask === undefined || !zeroColumn(mask, ch) || !zeroColumn(weights.get(name), ch)) return false;
        }
        return true;
      }
      if (gamma !== undefined && beta !== undefined) return gamma[ch] === 0 && beta[ch] === 0;
      return zeroColumn(kernel, ch) && bias[ch] <= 0;
    };
    const kept: number[] = [];
    for (let ch = 0; ch < layer.outC; ch++) if (!isDead(ch)) kept.push(ch);
    if (kept.length === 0) kept.push(0); // an all-dead layer: keep one (zero) channel so that shapes stay valid
    if (kept.length < layer.outC) live.set(layer.name, Int32Array.from(kept));
  }
  return live.size > 0 ? live : undefined;
}

/** Byte offsets of one call's buffers, relative to the session's base. */
class Layout {
  bytes = 0;
  f32(n: number): number {
    return this.#take(n * 4);
  }
  i32(n: number): number {
    return this.#take(n * 4);
  }
  f64(n: number): number {
    return this.#take(n * 8);
  }
  u8(n: number): number {
    return this.#take(n);
  }
  #take(bytes: number): number {
    const at = this.bytes;
    this.bytes += Math.ceil(bytes / 64) * 64;
    return at;
  }
}

interface ParamBuffers {
  readonly slot: ParamSlot;
  readonly w: number;
  readonly buf: number;
  readonly g: number;
}

interface ConvBuffers {
  readonly plan: ConvPlan;
  readonly arow: number;
  readonly crow: number;
  readonly poff: number;
  readonly toff: number;
  readonly ident: number;
  readonly z: number;
  readonly a: number;
  readonly arg: number;
  readonly dz: number;
  readonly da: number;
  readonly mean: number;
  readonly variance: number;
  readonly invstd: number;
  readonly wt: number;
}

interface DenseBuffers {
  readonly plan: DensePlan;
  readonly arow: number;
  readonly crow: number;
  readonly rowmap: number;
  readonly ident: number;
  readonly y: number;
  readonly dy: number;
  readonly wt: number;
}

type LayerBuffers = ConvBuffers | DenseBuffers;

export interface SessionOptions {
  readonly batch: number;
  readonly training: boolean;
  /** Called with a stage name after each stage when profiling. */
  readonly profile?: (stage: string) => void;
}

export interface StepStats {
  loss: number;
  correct: number;
}

/**
 * A training loss computed outside the engine from a batch's logits (rows of numClasses):
 * the batch's mean loss, its correct count, and the gradient of the mean loss with
 * respect to the logits, in the same layout.
 */
export type LogitObjective = (logits: Float32Array) => StepStats & { readonly grad: Float32Array };

/** A byte -> normalised float table per channel (256 per channel). */
export type NormalizationTables = readonly Float32Array[];

/**
 * One call's worth of engine memory for a plan: parameters (with momentum, gradient
 * and mask), personal state, activations, gradients and tables for up to `batch`
 * images. dispose() it when done; the memory goes back to the arena.
 */
export class Session {
  readonly plan: NetPlan;
  readonly batch: number;
  readonly #e: Engine;
  readonly #base: number;
  readonly #bytes: number;
  readonly #training: boolean;
  readonly #profile: ((stage: string) => void) | undefined;
  readonly #params: ParamBuffers[];
  readonly #paramsByName: Map<string, ParamBuffers>;
  readonly #personal: Map<string, { slot: ParamSlot; at: number }>;
  readonly #layers: LayerBuffers[];
  readonly #x: number;
  readonly #staging: number;
  readonly #labels: number;
  readonly #table: number;
  readonly #stats: number;
  readonly #perRow: number;
  #released = false;

  constructor(e: Engine, plan: NetPlan, options: SessionOptions) {
    this.#e = e;
    this.plan = plan;
    this.batch = options.batch;
    this.#training = options.training;
    this.#profile = options.profile;
    const B = options.batch;
    const training = options.training;
    const L = new Layout();
    const [h0, w0, c0] = plan.inputShape;
    const x = L.f32(B * h0 * w0 * c0);
    const staging = L.u8(B * h0 * w0 * c0);
    const labels = L.i32(B);
    const table = L.f32(256 * c0);
    const stats = L.f64(2);
    const perRow = L.f64(2 * B);
    const params = plan.params.map((slot) => {
      const n = slot.rows * slot.ld;
      return { slot, w: L.f32(n), buf: training ? L.f32(n) : 0, g: training ? L.f32(n) : 0 };
    });
    const personal = plan.personal.map((slot) => ({ slot, at: L.f32(slot.rows * slot.ld) }));
    const layers: LayerBuffers[] = plan.layers.map((p): LayerBuffers => {
      if (p.kind === 'conv') {
        const rows = B * p.outH * p.outW;
        const pooled = B * p.poolH * p.poolW * p.mp;
        return {
          plan: p,
          arow: L.i32(rows),
          crow: L.i32(rows),
          poff: L.i32(p.k * p.k * p.inC),
          toff: L.i32(p.k * p.k),
          ident: L.i32(p.outC),
          z: L.f32(rows * p.mp),
          a: L.f32(pooled),
          arg: training ? L.i32(pooled) : 0,
          dz: training ? L.f32(rows * p.mp) : 0,
          da: training ? L.f32(pooled) : 0,
          mean: L.f32(p.mp),
          variance: L.f32(p.mp),
          invstd: L.f32(p.mp),
          wt: training && !p.first ? L.f32(p.k * p.k * p.outC * p.inCs) : 0,
        };
      }
      return {
        plan: p,
        arow: L.i32(B),
        crow: L.i32(B),
        rowmap: L.i32(p.inputs),
        ident: L.i32(p.outputs),
        y: L.f32(B * p.op),
        dy: training ? L.f32(B * p.op) : 0,
        wt: training && !p.first ? L.f32(p.outputs * p.ldx) : 0,
      };
    });
    this.#bytes = L.bytes;
    const base = e.arena.acquire(L.bytes);
    this.#base = base;
    this.#x = base + x;
    this.#staging = base + staging;
    this.#labels = base + labels;
    this.#table = base + table;
    this.#stats = base + stats;
    this.#perRow = base + perRow;
    this.#params = params.map((p) => ({
      slot: p.slot,
      w: base + p.w,
      buf: training ? base + p.buf : 0,
      g: training ? base + p.g : 0,
    }));
    this.#paramsByName = new Map(this.#params.map((p) => [p.slot.name, p]));
    this.#personal = new Map(personal.map((p) => [p.slot.name, { slot: p.slot, at: base + p.at }]));
    const opt = (o: number, present: boolean): number => (present ? base + o : 0);
    this.#layers = layers.map((l): LayerBuffers => {
      if (l.plan.kind === 'conv') {
        const c = l as ConvBuffers;
        return {
          plan: c.plan,
          arow: base + c.arow,
          crow: base + c.crow,
          poff: base + c.poff,
          toff: base + c.toff,
          ident: base + c.ident,
          z: base + c.z,
          a: base + c.a,
          arg: opt(c.arg, training),
          dz: opt(c.dz, training),
          da: opt(c.da, training),
          mean: base + c.mean,
          variance: base + c.variance,
          invstd: base + c.invstd,
          wt: opt(c.wt, training && !c.plan.first),
        };
      }
      const d = l as DenseBuffers;
      return {
        plan: d.plan,
        arow: base + d.arow,
        crow: base + d.crow,
        rowmap: base + d.rowmap,
        ident: base + d.ident,
        y: base + d.y,
        dy: opt(d.dy, training),
        wt: opt(d.wt, training && !d.plan.first),
      };
    });
    this.#writeTables();
  }

  #writeTables(): void {
    const e = this.#e;
    const B = this.batch;
    for (const l of this.#layers) {
      if (l.plan.kind === 'conv') {
        const c = l as ConvBuffers;
        const p = c.plan;
        const arow = e.i32(c.arow, B * p.outH * p.outW);
        const crow = e.i32(c.crow, B * p.outH * p.outW);
        let n = 0;
        for (let b = 0; b < B; b++)
          for (let oh = 0; oh < p.outH; oh++)
            for (let ow = 0; ow < p.outW; ow++, n++) {
              arow[n] = ((b * p.inH + oh) * p.inW + ow) * p.inCs;
              crow[n] = n * p.mp;
            }
        const poff = e.i32(c.poff, p.k * p.k * p.inC);
        const toff = e.i32(c.toff, p.k * p.k);
        for (let kh = 0; kh < p.k; kh++)
          for (let kw = 0; kw < p.k; kw++) {
            const t = kh * p.k + kw;
            toff[t] = (kh * p.inW + kw) * p.inCs;
            for (let ci = 0; ci < p.inC; ci++) poff[t * p.inC + ci] = toff[t] + ci;
          }
        const ident = e.i32(c.ident, p.outC);
        for (let m = 0; m < p.outC; m++) ident[m] = m;
      } else {
        const d = l as DenseBuffers;
        const p = d.plan;
        const arow = e.i32(d.arow, B);
        const crow = e.i32(d.crow, B);
        for (let b = 0; b < B; b++) {
          arow[b] = b * p.ldx;
          crow[b] = b * p.op;
        }
        e.i32(d.rowmap, p.inputs).set(p.rowmap);
        const ident = e.i32(d.ident, p.outputs);
        for (let m = 0; m < p.outputs; m++) ident[m] = m;
      }
    }
  }

  #release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#e.arena.release(this.#base, this.#bytes);
  }

  // ------------------------------------------------------------ state in and out

  /**
   * Copies the model's parameters and personal tensors into the session (tfjs layout ->
   * engine layout). The session keeps the given arrays: what a compacted plan leaves out
   * is read back from them (weights()), so the caller must not change them meanwhile.
   */
  load(weights: ReadonlyMap<string, Float32Array>, personal: ReadonlyMap<string, Float32Array>): void {
    for (const p of this.#params) this.#writeSlot(p.slot, p.w, weights);
    for (const { slot, at } of this.#personal.values()) this.#writeSlot(slot, at, personal);
    this.#loaded = { weights, personal };
    this.#steps = 0;
  }

  #loaded: { weights: ReadonlyMap<string, Float32Array>; personal: ReadonlyMap<string, Float32Array> } | undefined;
  /** Training steps since load(): how often the left-out channels' running statistics decayed. */
  #steps = 0;

  #writeSlot(slot: ParamSlot, at: number, values: ReadonlyMap<string, ArrayLike<number>>): void {
    const src = values.get(slot.name);
    if (src === undefined || src.length !== slot.fullRows * slot.fullCols) {
      throw new Error(`native engine: tensor ${slot.name} is missing or has the wrong size`);
    }
    const dst = this.#e.f32(at, slot.rows * slot.ld);
    const { rows, cols, ld, fullCols, rowIndex, colIndex } = slot;
    if (rowIndex === undefined && colIndex === undefined && ld === cols && src instanceof Float32Array) {
      dst.set(src);
      return;
    }
    dst.fill(0);
    for (let r = 0; r < rows; r++) {
      const from = (rowIndex?.[r] ?? r) * fullCols;
      for (let j = 0; j < cols; j++) dst[r * ld + j] = src[from + (colIndex?.[j] ?? j)];
    }
  }

  /** The slot's values in tfjs layout; entries the plan leaves out come from `base` (zero without). */
  #readSlot(slot: ParamSlot, at: number, base: Float32Array | undefined): Float32Array {
    const src = this.#e.f32(at, slot.rows * slot.ld);
    const { rows, cols, ld, fullCols, rowIndex, colIndex } = slot;
    if (rowIndex === undefined && colIndex === undefined && ld === cols) return Float32Array.from(src);
    const out = base !== undefined ? Float32Array.from(base) : new Float32Array(slot.fullRows * fullCols);
    for (let r = 0; r < rows; r++) {
      const to = (rowIndex?.[r] ?? r) * fullCols;
      for (let j = 0; j < cols; j++) out[to + (colIndex?.[j] ?? j)] = src[r * ld + j];
    }
    return out;
  }

  weights(): Map<string, Float32Array> {
    return new Map(this.#params.map((p) => [p.slot.name, this.#readSlot(p.slot, p.w, this.#loaded?.weights.get(p.slot.name))]));
  }

  personalState(): Map<string, Float32Array> {
    const out = new Map(
      [...this.#personal.values()].map(({ slot, at }) => [
        slot.name,
        this.#readSlot(slot, at, this.#loaded?.personal.get(slot.name)),
      ]),
    );
    // Each step took a left-out channel's statistics to keep*value + momentum*0, in float32 as bn_running does.
    const keep = Math.fround(1 - BN_MOMENTUM);
    for (const d of this.plan.dead) {
      for (const name of [d.mean, d.variance]) {
        const values = out.get(name);
        if (values === undefined) continue;
        for (const ch of d.channels) {
          let v = values[ch];
          for (let s = 0; s < this.#steps; s++) v = Math.fround(Math.fround(v * keep) + 0);
          values[ch] = v;
        }
      }
    }
    return out;
  }

  /** Parameter gradients of the last step in tfjs layout (zero where the plan leaves entries out), for tests. */
  gradients(): Map<string, Float32Array> {
    return new Map(this.#params.map((p) => [p.slot.name, this.#readSlot(p.slot, p.g, undefined)]));
  }

  /** The momentum buffers in tfjs layout (zero where the plan leaves entries out). */
  momentum(): Map<string, Float32Array> {
    return new Map(this.#params.map((p) => [p.slot.name, this.#readSlot(p.slot, p.buf, undefined)]));
  }

  setMomentum(buffers: ReadonlyMap<string, Float32Array>): void {
    for (const p of this.#params) this.#writeSlot(p.slot, p.buf, buffers);
  }

  /** Zeroes the momentum buffers (a fresh optimiser). */
  resetMomentum(): void {
    for (const p of this.#params) this.#e.f32(p.buf, p.slot.rows * p.slot.ld).fill(0);
  }

  /**
   * Gradient masks (tfjs layout, 0/1 per element) for the named tensors; a tensor without
   * one (or with an all-ones one) trains unmasked. The mask buffers live in a region of
   * their own, released with the session.
   */
  setMasks(masks: ReadonlyMap<string, ArrayLike<number>> | undefined): void {
    this.#releaseMasks();
    if (masks === undefined) return;
    const chosen = this.#params.filter((p) => {
      const m = masks.get(p.slot.name);
      if (m === undefined) return false;
      if (m.length !== p.slot.fullRows * p.slot.fullCols)
        throw new Error(`native engine: mask of ${p.slot.name} has the wrong size`);
      for (let i = 0; i < m.length; i++) if (m[i] !== 1) return true;
      return false;
    });
    if (chosen.length === 0) return;
    const bytes = chosen.reduce((n, p) => n + Math.ceil((p.slot.rows * p.slot.ld * 4) / 64) * 64, 0);
    const base = this.#e.arena.acquire(bytes);
    this.#maskRegion = { base, bytes };
    let at = base;
    for (const p of chosen) {
      this.#writeSlot(p.slot, at, masks);
      this.#maskOf.set(p.slot.name, at);
      at += Math.ceil((p.slot.rows * p.slot.ld * 4) / 64) * 64;
    }
  }

  #maskRegion: { base: number; bytes: number } | undefined;
  readonly #maskOf = new Map<string, number>();
  #l1 = new Map<string, number>();

  #releaseMasks(): void {
    if (this.#maskRegion !== undefined) this.#e.arena.release(this.#maskRegion.base, this.#maskRegion.bytes);
    this.#maskRegion = undefined;
    this.#maskOf.clear();
  }

  #proximal: { base: number; bytes: number; mu: number; at: Map<string, number> } | undefined;

  #releaseProximal(): void {
    if (this.#proximal !== undefined) this.#e.arena.release(this.#proximal.base, this.#proximal.bytes);
    this.#proximal = undefined;
  }

  /**
   * A proximal term: mu*(w - anchor) is added to the gradient of every tensor
   * `anchor` names, before the mask (FedProx's mu, Ditto's lambda). The anchors
   * (tfjs layout) are copied into a region of their own, released with the session.
   */
  setProximal(proximal: { readonly anchor: ReadonlyMap<string, Float32Array>; readonly mu: number } | undefined): void {
    this.#releaseProximal();
    if (proximal === undefined || !(proximal.mu > 0)) return;
    const chosen = this.#params.filter((p) => proximal.anchor.has(p.slot.name));
    if (chosen.length === 0) return;
    const stride = (p: ParamBuffers): number => Math.ceil((p.slot.rows * p.slot.ld * 4) / 64) * 64;
    const bytes = chosen.reduce((n, p) => n + stride(p), 0);
    const base = this.#e.arena.acquire(bytes);
    this.#proximal = { base, bytes, mu: Math.fround(proximal.mu), at: new Map() };
    let at = base;
    for (const p of chosen) {
      this.#writeSlot(p.slot, at, proximal.anchor);
      this.#proximal.at.set(p.slot.name, at);
      at += stride(p);
    }
  }

  /** g += mu*(w - anchor), in float32 as the tfjs path computes it; padding entries hold zero in w, g and the anchor. */
  #addProximal(p: ParamBuffers): void {
    const prox = this.#proximal;
    const anchorAt = prox?.at.get(p.slot.name);
    if (prox === undefined || anchorAt === undefined) return;
    const n = p.slot.rows * p.slot.ld;
    const g = this.#e.f32(p.g, n);
    const w = this.#e.f32(p.w, n);
    const a = this.#e.f32(anchorAt, n);
    const mu = prox.mu;
    for (let i = 0; i < n; i++) g[i] = Math.fround(g[i] + Math.fround(mu * Math.fround(w[i] - a[i])));
  }

  /** s*sign(w) is added to these tensors' gradients before masking (L1 on BatchNorm gamma). */
  setL1(l1: { readonly names: ReadonlySet<string>; readonly s: number } | undefined): void {
    this.#l1 = new Map();
    if (l1 === undefined || !(l1.s > 0)) return;
    for (const name of l1.names) if (this.#paramsByName.has(name)) this.#l1.set(name, Math.fround(l1.s));
  }

  /** Releases the session's memory (and its masks). */
  dispose(): void {
    this.#releaseMasks();
    this.#releaseProximal();
    this.#release();
  }

  // ------------------------------------------------------------ data in

  setNormalization(tables: NormalizationTables): void {
    const t = this.#e.f32(this.#table, 256 * this.plan.inputShape[2]);
    tables.forEach((table, c) => t.set(table, c * 256));
  }

  /** Loads images order[start..start+count) of `data`, normalised, and their labels. */
  loadBatch(data: ImageDataset, order: ArrayLike<number>, start: number, count: number): void {
    if (count > this.batch) throw new Error(`native engine: batch of ${count} in a session for ${this.batch}`);
    const [h, w, c] = this.plan.inputShape;
    const size = h * w * c;
    const e = this.#e;
    const staging = e.u8(this.#staging, count * size);
    const labels = e.i32(this.#labels, count);
    const images = data.images;
    for (let i = 0; i < count; i++) {
      const idx = order[start + i];
      staging.set(images.subarray(idx * size, idx * size + size), i * size);
      labels[i] = data.labels[idx];
    }
    e.k.normalize_u8(this.#staging, count, size, c, this.#table, this.#x);
  }

  // ------------------------------------------------------------ compute

  #mark(stage: string): void {
    this.#profile?.(stage);
  }

  /** Forward pass over the loaded batch; the logits are left in the last layer's output. */
  forward(count: number, training: boolean): void {
    const k = this.#e.k;
    let x = this.#x;
    for (const l of this.#layers) {
      if (l.plan.kind === 'conv') {
        const c = l as ConvBuffers;
        const p = c.plan;
        const rows = count * p.outH * p.outW;
        const w = this.#param(p.weight);
        const bias = this.#param(p.bias);
        k.gemm_rows(x, c.arow, c.poff, p.k * p.k * p.inC, w.w, p.mp, c.z, c.crow, 0, p.bn ? bias.w : 0, 0, rows, p.mp / 4);
        this.#mark(`${layerName(p.weight)} conv forward`);
        const arg = training ? c.arg : 0;
        if (p.bn) {
          const gamma = this.#param(p.bn.gamma).w;
          const beta = this.#param(p.bn.beta).w;
          const rmean = this.#personalAt(p.bn.mean);
          const rvar = this.#personalAt(p.bn.variance);
          let mean = rmean;
          if (training) {
            k.bn_stats(c.z, rows, p.mp, c.mean, c.variance);
            k.bn_invstd(c.variance, BN_EPSILON, c.invstd, p.mp);
            const unbias = rows > 1 ? rows / (rows - 1) : 1;
            k.bn_running(rmean, rvar, c.mean, c.variance, p.outC, 1 - BN_MOMENTUM, BN_MOMENTUM, unbias);
            mean = c.mean;
          } else {
            k.bn_invstd(rvar, BN_EPSILON, c.invstd, p.mp);
          }
          k.bn_pool_relu(c.z, count, p.outH, p.outW, p.mp, mean, c.invstd, gamma, beta, c.a, arg);
        } else {
          k.pool_bias_relu(c.z, count, p.outH, p.outW, p.mp, bias.w, c.a, arg);
        }
        this.#mark(`${layerName(p.weight)} ${p.bn ? 'bn+' : 'bias+'}pool+relu forward`);
        x = c.a;
      } else {
        const d = l as DenseBuffers;
        const p = d.plan;
        k.gemm_rows(
          x,
          d.arow,
          d.rowmap,
          p.inputs,
          this.#param(p.weight).w,
          p.op,
          d.y,
          d.crow,
          0,
          this.#param(p.bias).w,
          0,
          count,
          p.op / 4,
        );
        if (p.relu) k.relu_inplace(d.y, count * p.op);
        this.#mark(`${layerName(p.weight)} dense forward`);
        x = d.y;
      }
    }
  }

  /**
   * Loss and correct count of the logits against the loaded labels; with `gradient`,
   * dlogits too; with `perRow`, each row's [loss, correct] into it (2 per row).
   */
  loss(count: number, gradient: boolean, perRow?: Float64Array): StepStats {
    const last = this.#layers[this.#layers.length - 1] as DenseBuffers;
    const stats = this.#e.f64(this.#stats, 2);
    stats[0] = 0;
    stats[1] = 0;
    this.#e.k.softmax_ce(
      last.y,
      last.plan.op,
      count,
      last.plan.outputs,
      this.#labels,
      gradient ? last.dy : 0,
      this.#stats,
      perRow ? this.#perRow : 0,
    );
    this.#mark('softmax cross-entropy');
    if (perRow) perRow.set(this.#e.f64(this.#perRow, 2 * count));
    const out = this.#e.f64(this.#stats, 2);
    return { loss: out[0] / count, correct: out[1] };
  }

  /** Backward pass: every parameter gradient of the batch's mean loss. */
  backward(count: number): void {
    const k = this.#e.k;
    for (let i = this.#layers.length - 1; i >= 0; i--) {
      const l = this.#layers[i];
      const below = i > 0 ? this.#layers[i - 1] : undefined;
      const input =
        below === undefined ? this.#x : below.plan.kind === 'conv' ? (below as ConvBuffers).a : (below as DenseBuffers).y;
      const inputGrad =
        below === undefined ? 0 : below.plan.kind === 'conv' ? (below as ConvBuffers).da : (below as DenseBuffers).dy;
      if (l.plan.kind === 'dense') {
        const d = l as DenseBuffers;
        const p = d.plan;
        const w = this.#param(p.weight);
        if (p.relu) k.relu_grad(d.dy, d.y, count * p.op);
        k.gemm_taps(input, d.arow, d.rowmap, p.inputs, d.dy, p.op, w.g, p.op, 0, count, p.op / 4);
        k.colsum(d.dy, count, p.op, p.op / 4, this.#param(p.bias).g);
        if (!p.first) {
          k.transpose_map(w.w, p.inputs, p.outputs, p.op, d.rowmap, d.wt, p.ldx);
          k.gemm_rows(d.dy, d.crow, d.ident, p.outputs, d.wt, p.ldx, inputGrad, d.arow, 0, 0, 0, count, p.ldx / 4);
        }
        this.#mark(`${layerName(p.weight)} dense backward`);
      } else {
        const c = l as ConvBuffers;
        const p = c.plan;
        const rows = count * p.outH * p.outW;
        const w = this.#param(p.weight);
        const bias = this.#param(p.bias);
        if (p.bn) {
          const gamma = this.#param(p.bn.gamma);
          const beta = this.#param(p.bn.beta);
          k.bn_pool_relu_grad(
            c.da,
            c.a,
            c.arg,
            c.z,
            count,
            p.outH,
            p.outW,
            p.mp,
            c.mean,
            c.invstd,
            gamma.w,
            c.dz,
            gamma.g,
            beta.g,
            bias.g,
          );
        } else {
          k.pool_bias_relu_grad(c.da, c.a, c.arg, count, p.outH, p.outW, p.mp, c.dz, bias.g);
        }
        this.#mark(`${layerName(p.weight)} ${p.bn ? 'bn+' : 'bias+'}pool+relu backward`);
        k.gemm_taps(input, c.arow, c.poff, p.k * p.k * p.inC, c.dz, p.mp, w.g, p.mp, 0, rows, p.mp / 4);
        this.#mark(`${layerName(p.weight)} conv filter gradient`);
        if (!p.first) {
          const T = p.k * p.k;
          k.conv_transpose_kernel(w.w, T, p.inC, p.outC, p.mp, c.wt, p.inCs);
          k.conv_input_grad(
            c.dz,
            c.crow,
            c.ident,
            p.outC,
            c.wt,
            p.inCs,
            T,
            c.toff,
            inputGrad,
            count * p.inH * p.inW * p.inCs,
            c.arow,
            rows,
          );
          this.#mark(`${layerName(p.weight)} conv input gradient`);
        }
      }
    }
  }

  /** SGD with momentum on every parameter, after the gradient rule (proximal term, L1, then mask). */
  sgd(lr: number, momentum: number): void {
    const k = this.#e.k;
    for (const p of this.#params) {
      this.#addProximal(p);
      k.sgd_step(
        p.w,
        p.buf,
        p.g,
        this.#maskOf.get(p.slot.name) ?? 0,
        p.slot.rows * p.slot.ld,
        lr,
        momentum,
        this.#l1.get(p.slot.name) ?? 0,
      );
    }
    this.#mark('sgd');
  }

  /** The logits of the last forward pass: `count` rows of numClasses, copied out. */
  logits(count: number): Float32Array {
    const last = this.#layers[this.#layers.length - 1] as DenseBuffers;
    const { op, outputs } = last.plan;
    const y = this.#e.f32(last.y, count * op);
    const out = new Float32Array(count * outputs);
    for (let r = 0; r < count; r++) out.set(y.subarray(r * op, r * op + outputs), r * outputs);
    return out;
  }

  /**
   * One training step on a loaded batch of `count` images. The loss is softmax
   * cross-entropy with the loaded labels, or `objective`'s, which maps the logits
   * (`count` rows of numClasses) to the batch's loss, correct count and the gradient
   * of the mean loss with respect to the logits.
   */
  trainStep(count: number, lr: number, momentum: number, objective?: LogitObjective): StepStats {
    if (!this.#training) throw new Error('native engine: trainStep on an evaluation session');
    this.forward(count, true);
    let stats: StepStats;
    if (objective === undefined) stats = this.loss(count, true);
    else {
      const result = objective(this.logits(count));
      this.#setLogitGradient(count, result.grad);
      stats = { loss: result.loss, correct: result.correct };
    }
    this.backward(count);
    this.sgd(lr, momentum);
    this.#steps++;
    return stats;
  }

  #setLogitGradient(count: number, grad: Float32Array): void {
    const last = this.#layers[this.#layers.length - 1] as DenseBuffers;
    const { op, outputs } = last.plan;
    if (grad.length !== count * outputs) {
      throw new Error(
        `native engine: logit gradient has ${grad.length} values, ${count} rows of ${outputs} need ${count * outputs}`,
      );
    }
    const dy = this.#e.f32(last.dy, count * op);
    dy.fill(0);
    for (let r = 0; r < count; r++) dy.set(grad.subarray(r * outputs, (r + 1) * outputs), r * op);
  }

  #param(name: string): ParamBuffers {
    const p = this.#paramsByName.get(name);
    if (p === undefined) throw new Error(`native engine: no parameter ${name}`);
    return p;
  }

  #personalAt(name: string): number {
    const p = this.#personal.get(name);
    if (p === undefined) throw new Error(`native engine: no personal tensor ${name}`);
    return p.at;
  }
}
