/**
 * Local training: a hand-written loop (not model.fit) so that pruning can reach into
 * every gradient before the optimiser step, and so that the optimiser matches the
 * reference exactly: PyTorch SGD with momentum, recreated for every call.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Dataset, ImageDataset, Normalization } from './data/dataset.js';
import { deriveSeed, SeededRandom } from '../proto/random.js';
import type { MaskMap } from '../proto/codec.js';
import { eventLoopYielder } from './event-loop.js';
import { compactPlan, nativePlan, openSession, type EngineChoice, type NetPlan } from './kernels/engine/index.js';
import { contentKey, lookupImages, lookupModel, memoEnabled, rememberImages, rememberModel } from './kernels/engine/memo.js';
import { registerGradients } from './kernels/gradients.js';
import { sgdMomentumStep } from './kernels/sgd_momentum.js';
import type { Model } from './model.js';
import { augmentImages, type AugmentationConfig } from './data/augment.js';
import type { EarlyStoppingConfig } from '../proto/training-config.js';
import { checkSoftTargets, logitObjective, teacherRows, type ObjectiveResult, type SoftTargets } from './objective.js';

export type { EngineChoice } from './kernels/engine/index.js';
export type { SoftTargets } from './objective.js';

export interface TrainOptions {
  epochs: number;
  batchSize: number;
  lr: number;
  momentum: number;
  /** Drives the per-epoch shuffling. */
  seed: number;
  /**
   * Gradient masks: each named tensor's gradient is multiplied by its 0/1 mask (the
   * tensor's values, flattened) before the optimiser step, so pruned weights stay exactly
   * where they are. Tensors without a mask train unmasked.
   */
  gradMasks?: MaskMap;
  /** L1 penalty: s*sign(w) is added to these tensors' gradients, before the masks apply. */
  l1?: { readonly names: ReadonlySet<string>; readonly s: number };
  /**
   * A proximal term toward `anchor`: mu*(w - anchor) is added to the gradient of
   * every tensor the anchor names, before L1 and the masks (the gradient of
   * mu/2 * ||w - anchor||^2: FedProx's mu, Ditto's lambda). Both engines run it.
   */
  proximal?: Proximal;
  /**
   * Stop after the first epoch that leaves the accuracy on `validation` without an
   * improvement of more than `minDelta` over the best so far for `patience` epochs in
   * a row. The weights stay those of the last epoch trained (no rewind to the best).
   */
  earlyStopping?: EarlyStopping;
  /** Each epoch trains on a seeded augmented copy of the images (client/data/augment.ts). */
  augmentation?: AugmentationConfig;
  /**
   * A further per-tensor gradient hook, after gradMasks and l1; runs inside tf.tidy. The
   * native engine cannot run tf code, so a gradTransform means the tfjs path.
   */
  gradTransform?: (name: string, grad: tf.Tensor) => tf.Tensor;
  /**
   * Which engine trains: 'native' (our wasm kernels, client/kernels/engine), 'tfjs', or
   * 'auto' (native wherever it covers the model). Default: SUBFED_ENGINE, else 'auto'.
   * Both give the same training curve within float rounding.
   */
  engine?: EngineChoice;
  /**
   * Knowledge distillation: the loss mixes the labels with the teacher's softened
   * predictions (client/objective.ts). Without, softmax cross-entropy with the labels.
   */
  softTargets?: SoftTargets;
  /** 1-based epoch. */
  onEpochEnd?: (epoch: number, stats: EpochStats) => void | Promise<void>;
}

export interface EpochStats {
  /** Mean cross-entropy over the epoch's samples. */
  loss: number;
  accuracy: number;
  samples: number;
  /** Accuracy on the early-stopping validation data after this epoch, when early stopping is on. */
  valAccuracy?: number;
}

export interface Proximal {
  readonly anchor: ReadonlyMap<string, Float32Array>;
  readonly mu: number;
}

export interface EarlyStopping extends EarlyStoppingConfig {
  /** Held out of the training data (the participant's validation split). */
  readonly validation: Dataset;
}

/**
 * The early-stopping rule over the validation accuracy of each epoch: an epoch
 * improves when it beats the best so far by more than minDelta; training stops
 * once `patience` epochs in a row did not. Keras's EarlyStopping, without restoring.
 */
export class EarlyStopper {
  #best = Number.NEGATIVE_INFINITY;
  #stale = 0;

  constructor(readonly rule: EarlyStoppingConfig) {}

  /** Records one epoch's validation accuracy; true when training should stop now. */
  observe(accuracy: number): boolean {
    if (accuracy > this.#best + this.rule.minDelta) {
      this.#best = accuracy;
      this.#stale = 0;
      return false;
    }
    this.#stale += 1;
    return this.#stale >= this.rule.patience;
  }
}

/** The seed stream of each epoch's augmentation draws, apart from the shuffling's. */
const AUGMENT_STREAM = 0xa06;

/** The data an epoch trains on: the images as they are, or a seeded augmented copy. */
function epochData<D extends Dataset>(data: D, opts: TrainOptions, epoch: number): D {
  if (opts.augmentation === undefined || data.kind !== 'images') return data;
  return augmentImages(data, opts.augmentation, deriveSeed(opts.seed, epoch, AUGMENT_STREAM)) as D;
}

/**
 * An epoch's statistics from its sums, with the validation accuracy when early
 * stopping is on, and whether to stop. The model holds the epoch's final weights.
 */
function endEpoch(
  model: Model,
  opts: TrainOptions,
  stopper: EarlyStopper | undefined,
  sums: { readonly loss: number; readonly correct: number; readonly samples: number },
): { stats: EpochStats; stop: boolean } {
  const stats: EpochStats = { loss: sums.loss / sums.samples, accuracy: sums.correct / sums.samples, samples: sums.samples };
  if (stopper === undefined || opts.earlyStopping === undefined) return { stats, stop: false };
  const valAccuracy = evaluate(model, opts.earlyStopping.validation, 256, opts.engine).accuracy;
  return { stats: { ...stats, valAccuracy }, stop: stopper.observe(valAccuracy) };
}

/** The dataset's own standardisation, else 0.5/0.5 per channel (values in [-1, 1]). */
export function normalizationFor(data: Pick<ImageDataset, 'normalization' | 'channels' | 'name'>): Normalization {
  const norm = data.normalization;
  if (norm === undefined)
    return { mean: new Array<number>(data.channels).fill(0.5), std: new Array<number>(data.channels).fill(0.5) };
  if (norm.mean.length !== data.channels || norm.std.length !== data.channels) {
    throw new Error(
      `${data.name}: normalization has ${norm.mean.length} means and ${norm.std.length} stds for ${data.channels} channels`,
    );
  }
  return norm;
}

/** A lookup table byte -> normalised float per channel, so building a batch is one pass. */
function normalizationTable(norm: Normalization): Float32Array[] {
  return norm.mean.map((mean, c) => {
    const table = new Float32Array(256);
    for (let v = 0; v < 256; v++) table[v] = (v / 255 - mean) / norm.std[c];
    return table;
  });
}

interface Batch {
  x: tf.Tensor4D;
  labelValues: Int32Array;
}

/** An image dataset's byte -> float tables per channel; none for features (standardised as the batch is built). */
function inputTables(data: Dataset): Float32Array[] {
  return data.kind === 'images' ? normalizationTable(normalizationFor(data)) : [];
}

/**
 * The normalised examples and the labels at `order[start..end)`, shaped as the
 * model's input: images as they are, a row of features laid out over
 * `inputShape` (checkCompatible made sure the sizes agree).
 */
function makeBatch(
  data: Dataset,
  tables: Float32Array[],
  order: ArrayLike<number>,
  start: number,
  end: number,
  inputShape: readonly [number, number, number],
): Batch {
  const count = end - start;
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) labels[i] = data.labels[order[start + i]];
  const [height, width, channels] = inputShape;
  const size = height * width * channels;
  const values = new Float32Array(count * size);
  switch (data.kind) {
    case 'images':
      for (let i = 0; i < count; i++) {
        const src = order[start + i] * size;
        const dst = i * size;
        if (channels === 1) {
          const table = tables[0];
          for (let p = 0; p < size; p++) values[dst + p] = table[data.images[src + p]];
        } else {
          for (let p = 0; p < size; p++) values[dst + p] = tables[p % channels][data.images[src + p]];
        }
      }
      break;
    case 'features': {
      const { mean, std } = data.normalization;
      for (let i = 0; i < count; i++) {
        const src = order[start + i] * size;
        const dst = i * size;
        for (let f = 0; f < size; f++) values[dst + f] = (data.features[src + f] - mean[f]) / std[f];
      }
      break;
    }
  }
  return { x: tf.tensor4d(values, [count, height, width, channels], 'float32'), labelValues: labels };
}

/** Mean softmax cross-entropy of `logits` against integer labels. */
function crossEntropy(logits: tf.Tensor2D, labels: tf.Tensor1D): tf.Scalar {
  const oneHot = tf.oneHot(labels, logits.shape[1]);
  return tf.neg(tf.mean(tf.sum(tf.mul(oneHot, tf.logSoftmax(logits)), 1))) as tf.Scalar;
}

function correctCount(logits: tf.Tensor2D, labels: tf.Tensor1D): tf.Scalar {
  return tf.sum<tf.Scalar>(tf.cast(tf.equal(tf.argMax(logits, 1), labels), 'int32'));
}

function checkCompatible(model: Model, data: Dataset, where: string): void {
  const [h, w, c] = model.inputShape;
  switch (data.kind) {
    case 'images':
      if (data.height !== h || data.width !== w || data.channels !== c) {
        throw new Error(
          `${where}: dataset ${data.name} has ${data.height}x${data.width}x${data.channels} images, model ${model.name} expects ${h}x${w}x${c}`,
        );
      }
      break;
    case 'features':
      if (data.featureCount !== h * w * c) {
        throw new Error(
          `${where}: dataset ${data.name} has ${data.featureCount} features, model ${model.name} takes ${h * w * c} inputs (${h}x${w}x${c})`,
        );
      }
      break;
  }
  if (data.numClasses > model.numClasses) {
    throw new Error(
      `${where}: dataset ${data.name} has ${data.numClasses} classes, model ${model.name} outputs ${model.numClasses}`,
    );
  }
  if (data.count === 0) throw new Error(`${where}: dataset ${data.name} is empty`);
}

function checkOptions(opts: TrainOptions): void {
  const positiveInt = (key: 'epochs' | 'batchSize'): void => {
    const v = opts[key];
    if (!Number.isInteger(v) || v < 1) throw new Error(`trainLocal: ${key} must be a positive integer, got ${v}`);
  };
  positiveInt('epochs');
  positiveInt('batchSize');
  if (!Number.isFinite(opts.lr) || opts.lr <= 0) throw new Error(`trainLocal: lr must be a positive number, got ${opts.lr}`);
  if (!Number.isFinite(opts.momentum) || opts.momentum < 0 || opts.momentum >= 1) {
    throw new Error(`trainLocal: momentum must be in [0, 1), got ${opts.momentum}`);
  }
  if (!Number.isFinite(opts.seed)) throw new Error(`trainLocal: seed must be a finite number, got ${opts.seed}`);
  if (opts.proximal !== undefined && !(opts.proximal.mu >= 0 && Number.isFinite(opts.proximal.mu))) {
    throw new Error(`trainLocal: proximal mu must be a finite number >= 0, got ${opts.proximal.mu}`);
  }
}

/**
 * torch.optim.SGD(lr, momentum) without dampening or weight decay:
 *   buf = g on the first step, then buf = momentum*buf + g;  w -= lr*buf.
 * The buffer starts at zero, which makes the first step buf = 0*m + g = g exactly. A
 * gradient that stays zero keeps its buffer at zero and its weight bit-for-bit unchanged.
 * On cpu (and on wasm for small tensors) the step is one fused kernel per tensor (kernels/sgd_momentum.ts).
 */
class SgdMomentum {
  readonly #attrs: { lr: number; momentum: number };
  readonly #buffers = new Map<string, tf.Tensor>();

  constructor(lr: number, momentum: number) {
    this.#attrs = { lr, momentum };
  }

  step(name: string, variable: tf.Variable, grad: tf.Tensor): void {
    const previous = this.#buffers.get(name) ?? tf.zerosLike(variable);
    const [weights, buf] = sgdMomentumStep(variable, previous, grad, this.#attrs);
    variable.assign(weights);
    weights.dispose();
    this.#buffers.set(name, buf);
    previous.dispose();
  }

  dispose(): void {
    for (const buf of this.#buffers.values()) buf.dispose();
    this.#buffers.clear();
  }
}

/**
 * Trains `model` in place on `data` for `opts.epochs` epochs of shuffled mini-batches
 * (the last batch may be smaller) and returns each epoch's statistics. The optimiser
 * (SgdMomentum) starts fresh on every call, like the reference's per-round optimiser.
 * gradTransform runs inside tf.tidy; it may return its input.
 */
export async function trainLocal(model: Model, data: Dataset, opts: TrainOptions): Promise<EpochStats[]> {
  checkOptions(opts);
  checkCompatible(model, data, 'trainLocal');
  if (opts.softTargets !== undefined) checkSoftTargets(opts.softTargets, data.count, model.numClasses);
  if (opts.augmentation !== undefined && data.kind !== 'images') {
    throw new Error(`trainLocal: augmentation needs image data; dataset ${data.name} holds features`);
  }
  if (opts.earlyStopping !== undefined) checkCompatible(model, opts.earlyStopping.validation, 'trainLocal (early stopping)');
  for (const [name, anchor] of opts.proximal?.anchor ?? []) {
    const variable = model.params.get(name);
    if (variable === undefined) throw new Error(`trainLocal: the proximal anchor names unknown tensor '${name}'`);
    if (anchor.length !== variable.size) {
      throw new Error(`trainLocal: the proximal anchor of '${name}' has ${anchor.length} values, the tensor ${variable.size}`);
    }
  }
  if (opts.gradTransform !== undefined && opts.engine === 'native') {
    throw new Error('trainLocal: a gradTransform needs the tfjs engine (the native engine runs no tf code)');
  }
  // The native engine covers image data; float features (CSV) train on the tfjs path.
  const plan = opts.gradTransform === undefined && data.kind === 'images' ? nativePlan(model, opts.engine) : null;
  if (plan !== null && data.kind === 'images') return trainNative(model, data, opts, plan);
  registerGradients();
  const tables = inputTables(data);
  const optimizer = new SgdMomentum(opts.lr, opts.momentum);
  const rule = GradientRule.create(model, opts);
  const stopper = opts.earlyStopping && new EarlyStopper(opts.earlyStopping);
  const breathe = eventLoopYielder();
  const history: EpochStats[] = [];
  try {
    for (let epoch = 1; epoch <= opts.epochs; epoch++) {
      const order = new SeededRandom(deriveSeed(opts.seed, epoch)).permutation(data.count);
      const epochSet = epochData(data, opts, epoch);
      let lossSum = 0;
      let correct = 0;
      for (let start = 0; start < data.count; start += opts.batchSize) {
        const end = Math.min(start + opts.batchSize, data.count);
        const step = trainStep(
          model,
          optimizer,
          rule,
          opts.gradTransform,
          makeBatch(epochSet, tables, order, start, end, model.inputShape),
          opts.softTargets && teacherRows(opts.softTargets, model.numClasses, order, start, end - start),
          opts.softTargets,
        );
        lossSum += step.loss * (end - start);
        correct += step.correct;
        await breathe();
      }
      const { stats, stop } = endEpoch(model, opts, stopper, { loss: lossSum, correct, samples: data.count });
      history.push(stats);
      await opts.onEpochEnd?.(epoch, stats);
      if (stop) break;
    }
  } finally {
    optimizer.dispose();
    rule.dispose();
  }
  return history;
}

/** proximal, l1 and gradMasks as tf ops, for the tfjs path: g' = (g + mu*(w - anchor) + s*sign(w)) * mask. */
class GradientRule {
  readonly #masks: Map<string, tf.Tensor>;
  readonly #l1: TrainOptions['l1'];
  readonly #anchors: Map<string, tf.Tensor>;
  readonly #mu: number;

  private constructor(masks: Map<string, tf.Tensor>, l1: TrainOptions['l1'], anchors: Map<string, tf.Tensor>, mu: number) {
    this.#masks = masks;
    this.#l1 = l1;
    this.#anchors = anchors;
    this.#mu = mu;
  }

  static create(model: Model, opts: TrainOptions): GradientRule {
    const masks = new Map<string, tf.Tensor>();
    for (const [name, mask] of opts.gradMasks ?? []) {
      const variable = model.params.get(name);
      if (variable === undefined) throw new Error(`trainLocal: gradMasks names unknown tensor '${name}'`);
      if (mask.length !== variable.size) {
        throw new Error(`trainLocal: mask of '${name}' has ${mask.length} values, the tensor ${variable.size}`);
      }
      if (!mask.isFull) masks.set(name, tf.tensor(Float32Array.from(mask.toBytes()), variable.shape, 'float32'));
    }
    const anchors = new Map<string, tf.Tensor>();
    const mu = opts.proximal?.mu ?? 0;
    if (mu > 0) {
      for (const [name, anchor] of opts.proximal?.anchor ?? []) {
        anchors.set(name, tf.tensor(anchor, (model.params.get(name) as tf.Variable).shape, 'float32'));
      }
    }
    return new GradientRule(masks, opts.l1 !== undefined && opts.l1.s > 0 ? opts.l1 : undefined, anchors, mu);
  }

  /** Runs inside tf.tidy. */
  apply(name: string, variable: tf.Variable, grad: tf.Tensor): tf.Tensor {
    let g = grad;
    const anchor = this.#anchors.get(name);
    if (anchor !== undefined) g = tf.add(g, tf.mul(tf.sub(variable, anchor), this.#mu));
    if (this.#l1?.names.has(name)) g = tf.add(g, tf.mul(tf.sign(variable), this.#l1.s));
    const mask = this.#masks.get(name);
    return mask === undefined ? g : tf.mul(g, mask);
  }

  get empty(): boolean {
    return this.#masks.size === 0 && this.#l1 === undefined && this.#anchors.size === 0;
  }

  dispose(): void {
    for (const t of this.#masks.values()) t.dispose();
    this.#masks.clear();
    for (const t of this.#anchors.values()) t.dispose();
    this.#anchors.clear();
  }
}

/**
 * The native engine's loop: the same epochs, shuffling, batches and statistics as the
 * tfjs loop. The session computes only channels that can be nonzero (compactPlan); if an
 * epoch callback revives one, training continues in a session for the new plan with the
 * optimiser state carried over.
 */
async function trainNative(model: Model, data: ImageDataset, opts: TrainOptions, base: NetPlan): Promise<EpochStats[]> {
  const batch = Math.min(opts.batchSize, data.count);
  const tables = normalizationTable(normalizationFor(data));
  // The engine reads masks as 0/1 bytes in its own layout; one copy per training call.
  const masks = new Map([...(opts.gradMasks ?? [])].map(([name, mask]) => [name, mask.toBytes()]));
  const open = (weights: Map<string, Float32Array>, personal: Map<string, Float32Array>): ReturnType<typeof openSession> => {
    const s = openSession(compactPlan(model, weights, masks) ?? base, { batch, training: true });
    try {
      s.setNormalization(tables);
      s.load(weights, personal);
      s.setMasks(masks);
      s.setL1(opts.l1);
      s.setProximal(opts.proximal);
      s.resetMomentum();
      return s;
    } catch (err) {
      s.dispose();
      throw err;
    }
  };
  let session = open(model.getWeights(), model.getPersonal());
  const stopper = opts.earlyStopping && new EarlyStopper(opts.earlyStopping);
  const breathe = eventLoopYielder();
  const history: EpochStats[] = [];
  try {
    for (let epoch = 1; epoch <= opts.epochs; epoch++) {
      const order = new SeededRandom(deriveSeed(opts.seed, epoch)).permutation(data.count);
      const epochSet = epochData(data, opts, epoch);
      let lossSum = 0;
      let correct = 0;
      for (let start = 0; start < data.count; start += opts.batchSize) {
        const count = Math.min(opts.batchSize, data.count - start);
        session.loadBatch(epochSet, order, start, count);
        const soft = opts.softTargets;
        const step = session.trainStep(
          count,
          opts.lr,
          opts.momentum,
          soft === undefined
            ? undefined
            : (logits) =>
                logitObjective(logits, count, model.numClasses, labelsAt(data, order, start, count), {
                  teacher: teacherRows(soft, model.numClasses, order, start, count),
                  temperature: soft.temperature,
                  alpha: soft.alpha,
                }),
        );
        lossSum += step.loss * count;
        correct += step.correct;
        await breathe();
      }
      // The model holds the trained state at every epoch end, as on the tfjs path; whatever
      // the callback does to the model is what the next epoch trains on.
      model.setWeights(session.weights());
      model.setPersonal(session.personalState());
      const { stats, stop } = endEpoch(model, opts, stopper, { loss: lossSum, correct, samples: data.count });
      history.push(stats);
      if (stop) {
        await opts.onEpochEnd?.(epoch, stats);
        break;
      }
      if (opts.onEpochEnd !== undefined) {
        await opts.onEpochEnd(epoch, stats);
        if (epoch < opts.epochs) {
          const weights = model.getWeights();
          const personal = model.getPersonal();
          if ((compactPlan(model, weights, masks) ?? base) === session.plan) session.load(weights, personal);
          else {
            const momentum = session.momentum();
            session.dispose();
            session = open(weights, personal);
            session.setMomentum(momentum);
          }
        }
      }
    }
  } finally {
    session.dispose();
  }
  return history;
}

/** Images per native evaluation chunk: activations stay in the core's cache. */
const NATIVE_EVAL_CHUNK = 32;

function evaluateNative(model: Model, data: ImageDataset, plan: NetPlan): { loss: number; accuracy: number } {
  const weights = model.getWeights();
  const personal = model.getPersonal();
  const memo = memoEnabled();
  const key = memo ? contentKey(model.name, weights, personal) : '';
  if (memo) {
    const known = lookupModel(model, key, data);
    if (known !== undefined) return known;
  }
  const losses = new Float64Array(data.count);
  const correct = new Uint8Array(data.count);
  const todo = memo ? lookupImages(key, data, losses, correct) : Int32Array.from({ length: data.count }, (_, i) => i);
  if (todo.length > 0) {
    const session = openSession(compactPlan(model, weights) ?? plan, {
      batch: Math.min(NATIVE_EVAL_CHUNK, todo.length),
      training: false,
    });
    try {
      session.setNormalization(normalizationTable(normalizationFor(data)));
      session.load(weights, personal);
      const rows = new Float64Array(2 * session.batch);
      for (let start = 0; start < todo.length; start += session.batch) {
        const count = Math.min(session.batch, todo.length - start);
        session.loadBatch(data, todo, start, count);
        session.forward(count, false);
        session.loss(count, false, rows);
        for (let r = 0; r < count; r++) {
          losses[todo[start + r]] = rows[2 * r];
          correct[todo[start + r]] = rows[2 * r + 1];
        }
      }
    } finally {
      session.dispose();
    }
    if (memo) rememberImages(key, data, todo, losses, correct);
  }
  // In index order, so that the result does not depend on what the memo held.
  let lossSum = 0;
  let hits = 0;
  for (let i = 0; i < data.count; i++) {
    lossSum += losses[i];
    hits += correct[i];
  }
  const result = { loss: lossSum / data.count, accuracy: hits / data.count };
  if (memo) rememberModel(model, key, data, result);
  return result;
}

/** The batch's mean loss and number of correct predictions. */
interface StepStats {
  loss: number;
  correct: number;
}

/**
 * Mean softmax cross-entropy of `logits` [batch, classes] against `labels`, with its
 * gradient (softmax - onehot) / batch written by hand: the logits are read once (they are
 * small), loss, accuracy and gradient come from one pass in TypeScript, and the tape gets
 * one op instead of the ~15 kernels (and their gradients) of the tf-op formulation.
 * `stats` receives the loss and the number of rows whose first maximum is the label.
 */
export function crossEntropyWithStats(logits: tf.Tensor2D, labels: Int32Array, stats: (s: StepStats) => void): tf.Scalar {
  const [rows, classes] = logits.shape;
  if (labels.length !== rows) throw new Error(`crossEntropy: ${labels.length} labels for ${rows} rows of logits`);
  const loss = tf.customGrad((...inputs: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const values = (inputs[0] as tf.Tensor).dataSync();
    const grad = new Float32Array(rows * classes);
    let lossSum = 0;
    let correct = 0;
    for (let r = 0; r < rows; r++) {
      const base = r * classes;
      let best = 0;
      for (let c = 1; c < classes; c++) if (values[base + c] > values[base + best]) best = c;
      const label = labels[r];
      if (best === label) correct++;
      const max = values[base + best];
      let denominator = 0;
      for (let c = 0; c < classes; c++) {
        const e = Math.exp(values[base + c] - max);
        grad[base + c] = e;
        denominator += e;
      }
      // -log softmax(x)[label] = log(sum exp(x - max)) - (x[label] - max)
      lossSum += Math.log(denominator) - (values[base + label] - max);
      for (let c = 0; c < classes; c++) grad[base + c] = (grad[base + c] / denominator - (c === label ? 1 : 0)) / rows;
    }
    stats({ loss: lossSum / rows, correct });
    return {
      value: tf.scalar(lossSum / rows),
      gradFunc: (dy: tf.Tensor) => tf.mul(dy, tf.tensor2d(grad, [rows, classes])),
    };
  });
  return loss(logits) as tf.Scalar;
}

/** A loss computed in TypeScript from the logits' values (client/objective.ts), with its hand-written gradient. */
function objectiveLoss(
  logits: tf.Tensor2D,
  objective: (values: Float32Array, rows: number, classes: number) => ObjectiveResult,
  stats: (s: StepStats) => void,
): tf.Scalar {
  const [rows, classes] = logits.shape;
  const loss = tf.customGrad((...inputs: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const result = objective((inputs[0] as tf.Tensor).dataSync() as Float32Array, rows, classes);
    stats({ loss: result.loss, correct: result.correct });
    return {
      value: tf.scalar(result.loss),
      gradFunc: (dy: tf.Tensor) => tf.mul(dy, tf.tensor2d(result.grad, [rows, classes])),
    };
  });
  return loss(logits) as tf.Scalar;
}

/** The labels of examples order[start .. start+count). */
function labelsAt(data: Dataset, order: ArrayLike<number>, start: number, count: number): Int32Array {
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) labels[i] = data.labels[order[start + i]];
  return labels;
}

/** One SGD step; returns the batch's mean loss and number of correct predictions. */
function trainStep(
  model: Model,
  optimizer: SgdMomentum,
  rule: GradientRule,
  gradTransform: TrainOptions['gradTransform'],
  batch: Batch,
  teacher: Float32Array | undefined,
  soft: SoftTargets | undefined,
): StepStats {
  let stats: StepStats = { loss: Number.NaN, correct: 0 };
  const record = (s: StepStats): void => {
    stats = s;
  };
  try {
    const { value, grads } = tf.variableGrads(
      () =>
        teacher === undefined || soft === undefined
          ? crossEntropyWithStats(model.forward(batch.x, true), batch.labelValues, record)
          : objectiveLoss(
              model.forward(batch.x, true),
              (values, rows, classes) =>
                logitObjective(values, rows, classes, batch.labelValues, {
                  teacher,
                  temperature: soft.temperature,
                  alpha: soft.alpha,
                }),
              record,
            ),
      [...model.params.values()],
    );
    value.dispose();
    for (const [name, variable] of model.params) {
      const raw = grads[variable.name];
      if (raw === undefined) throw new Error(`trainLocal: no gradient for ${name}`);
      const grad =
        gradTransform || !rule.empty
          ? tf.tidy(() => {
              const ruled = rule.apply(name, variable, raw);
              return gradTransform ? gradTransform(name, ruled) : ruled;
            })
          : raw;
      optimizer.step(name, variable, grad);
      if (grad !== raw) grad.dispose();
    }
    tf.dispose(Object.values(grads));
    return stats;
  } finally {
    batch.x.dispose();
  }
}

/**
 * Mean loss and accuracy of `model` (inference mode: BatchNorm uses running statistics).
 * `engine` as in TrainOptions; batchSize is the tfjs path's batch.
 */
export function evaluate(
  model: Model,
  data: Dataset,
  batchSize = 256,
  engine?: EngineChoice,
): { loss: number; accuracy: number } {
  if (!Number.isInteger(batchSize) || batchSize < 1)
    throw new Error(`evaluate: batchSize must be a positive integer, got ${batchSize}`);
  checkCompatible(model, data, 'evaluate');
  const plan = data.kind === 'images' ? nativePlan(model, engine) : null;
  if (plan !== null && data.kind === 'images') return evaluateNative(model, data, plan);
  const tables = inputTables(data);
  const identity = new Int32Array(data.count).map((_, i) => i);
  let lossSum = 0;
  let correct = 0;
  for (let start = 0; start < data.count; start += batchSize) {
    const end = Math.min(start + batchSize, data.count);
    const batch = makeBatch(data, tables, identity, start, end, model.inputShape);
    const labels = tf.tensor1d(batch.labelValues, 'int32');
    const [loss, hits] = tf.tidy(() => {
      const logits = model.forward(batch.x, false);
      return [crossEntropy(logits, labels), correctCount(logits, labels)];
    });
    lossSum += loss.dataSync()[0] * (end - start);
    correct += hits.dataSync()[0];
    tf.dispose([loss, hits, batch.x, labels]);
  }
  return { loss: lossSum / data.count, accuracy: correct / data.count };
}

/**
 * The logits of `model` (inference mode) for every example of `data`, in index order:
 * data.count rows of numClasses. `engine` as in TrainOptions.
 */
export function predictLogits(model: Model, data: Dataset, engine?: EngineChoice, batchSize = 256): Float32Array {
  checkCompatible(model, data, 'predictLogits');
  const classes = model.numClasses;
  const out = new Float32Array(data.count * classes);
  const order = Int32Array.from({ length: data.count }, (_, i) => i);
  const plan = data.kind === 'images' ? nativePlan(model, engine) : null;
  if (plan !== null && data.kind === 'images') {
    const weights = model.getWeights();
    const session = openSession(compactPlan(model, weights) ?? plan, {
      batch: Math.min(NATIVE_EVAL_CHUNK, data.count),
      training: false,
    });
    try {
      session.setNormalization(normalizationTable(normalizationFor(data)));
      session.load(weights, model.getPersonal());
      for (let start = 0; start < data.count; start += session.batch) {
        const count = Math.min(session.batch, data.count - start);
        session.loadBatch(data, order, start, count);
        session.forward(count, false);
        out.set(session.logits(count), start * classes);
      }
    } finally {
      session.dispose();
    }
    return out;
  }
  const tables = inputTables(data);
  for (let start = 0; start < data.count; start += batchSize) {
    const end = Math.min(start + batchSize, data.count);
    const batch = makeBatch(data, tables, order, start, end, model.inputShape);
    const logits = model.forward(batch.x, false);
    out.set(logits.dataSync(), start * classes);
    tf.dispose([logits, batch.x]);
  }
  return out;
}

/** The predicted class of each row of `logits` (the first maximum). */
export function argmaxRows(logits: Float32Array, classes: number): Int32Array {
  const rows = logits.length / classes;
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (logits[r * classes + c] > logits[r * classes + best]) best = c;
    out[r] = best;
  }
  return out;
}
