/**
 * Local training: a hand-written loop (not model.fit) so that pruning can reach into
 * every gradient before the optimiser step, and so that the optimiser matches the
 * reference exactly: PyTorch SGD with momentum, recreated for every call.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Dataset, ImageDataset, Normalization } from './data/dataset.js';
import { deriveSeed, SeededRandom } from '../proto/random.js';
import { eventLoopYielder } from './event-loop.js';
import { registerGradients } from './kernels/gradients.js';
import { sgdMomentumStep } from './kernels/sgd_momentum.js';
import type { Model } from './model.js';

export interface TrainOptions {
  epochs: number;
  batchSize: number;
  lr: number;
  momentum: number;
  /** Drives the per-epoch shuffling. */
  seed: number;
  /** Per-tensor gradient hook (mask multiply, L1 on gamma); runs inside tf.tidy. */
  gradTransform?: (name: string, grad: tf.Tensor) => tf.Tensor;
  /** 1-based epoch. */
  onEpochEnd?: (epoch: number, stats: EpochStats) => void | Promise<void>;
}

export interface EpochStats {
  /** Mean cross-entropy over the epoch's samples. */
  loss: number;
  accuracy: number;
  samples: number;
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
  registerGradients();
  const tables = inputTables(data);
  const optimizer = new SgdMomentum(opts.lr, opts.momentum);
  const breathe = eventLoopYielder();
  const history: EpochStats[] = [];
  try {
    for (let epoch = 1; epoch <= opts.epochs; epoch++) {
      const order = new SeededRandom(deriveSeed(opts.seed, epoch)).permutation(data.count);
      let lossSum = 0;
      let correct = 0;
      for (let start = 0; start < data.count; start += opts.batchSize) {
        const end = Math.min(start + opts.batchSize, data.count);
        const step = trainStep(
          model,
          optimizer,
          opts.gradTransform,
          makeBatch(data, tables, order, start, end, model.inputShape),
        );
        lossSum += step.loss * (end - start);
        correct += step.correct;
        await breathe();
      }
      const stats: EpochStats = { loss: lossSum / data.count, accuracy: correct / data.count, samples: data.count };
      history.push(stats);
      await opts.onEpochEnd?.(epoch, stats);
    }
  } finally {
    optimizer.dispose();
  }
  return history;
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

/** One SGD step; returns the batch's mean loss and number of correct predictions. */
function trainStep(model: Model, optimizer: SgdMomentum, gradTransform: TrainOptions['gradTransform'], batch: Batch): StepStats {
  let stats: StepStats = { loss: Number.NaN, correct: 0 };
  try {
    const { value, grads } = tf.variableGrads(
      () =>
        crossEntropyWithStats(model.forward(batch.x, true), batch.labelValues, (s) => {
          stats = s;
        }),
      [...model.params.values()],
    );
    value.dispose();
    for (const [name, variable] of model.params) {
      const raw = grads[variable.name];
      if (raw === undefined) throw new Error(`trainLocal: no gradient for ${name}`);
      const grad = gradTransform ? tf.tidy(() => gradTransform(name, raw)) : raw;
      optimizer.step(name, variable, grad);
      if (grad !== raw) grad.dispose();
    }
    tf.dispose(Object.values(grads));
    return stats;
  } finally {
    batch.x.dispose();
  }
}

/** Mean loss and accuracy of `model` (inference mode: BatchNorm uses running statistics). */
export function evaluate(model: Model, data: Dataset, batchSize = 256): { loss: number; accuracy: number } {
  if (!Number.isInteger(batchSize) || batchSize < 1)
    throw new Error(`evaluate: batchSize must be a positive integer, got ${batchSize}`);
  checkCompatible(model, data, 'evaluate');
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
