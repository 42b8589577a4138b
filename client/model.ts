/**
 * The model zoo: small reference networks written directly with tf ops (no tfjs-layers),
 * with PyTorch-style names and PyTorch's default initialisation from our own seeded PRNG,
 * so one seed gives bit-identical weights everywhere.
 *
 * Layout NHWC: conv kernels [kh, kw, inC, outC], dense weights [in, out]. A conv block is
 * conv(valid) -> [BatchNorm] -> maxpool 2 -> ReLU, as in the Sub-FedAvg reference.
 */
import * as tf from '@tensorflow/tfjs-core';
import { SeededRandom } from '../proto/random.js';
import { elementCount } from '../proto/shape.js';
import type { TensorSpec } from '../proto/messages.js';
import { isModelName, MODEL_NAMES, type ModelName } from './model-names.js';

// One trainable tensor of a model (prunable = conv kernels and dense weight matrices): the manifest entry the wire carries.
export type { TensorSpec };

/** One BatchNorm'd conv layer, for hybrid (channel) pruning. */
export interface ChannelGroup {
  gamma: string;
  beta: string;
  kernel: string;
  bias: string;
  channels: number;
  /**
   * The layer that consumes these channels. For 'conv' its kernel's inC axis is the
   * channel; for 'flatten-dense' the NHWC flatten puts channel c of pixel p at input
   * row p*channels + c, and spatial is the number of pixels (1 for 'conv').
   */
  next: { weight: string; kind: 'conv' | 'flatten-dense'; spatial: number };
}

export interface Model {
  readonly name: ModelName;
  readonly inputShape: [number, number, number];
  readonly numClasses: number;
  readonly manifest: readonly TensorSpec[];
  readonly params: ReadonlyMap<string, tf.Variable>;
  readonly personal: ReadonlyMap<string, tf.Variable>;
  readonly channelGroups: readonly ChannelGroup[];
  /** Logits. training=true normalises with batch statistics and updates the running ones. */
  forward(x: tf.Tensor4D, training: boolean): tf.Tensor2D;
  getWeights(): Map<string, Float32Array>;
  setWeights(w: Map<string, Float32Array>): void;
  getPersonal(): Map<string, Float32Array>;
  setPersonal(p: Map<string, Float32Array>): void;
  dispose(): void;
}

/** PyTorch's BatchNorm defaults. */
export const BN_EPSILON = 1e-5;
export const BN_MOMENTUM = 0.1;

export interface ConvLayer {
  kind: 'conv';
  name: string; // conv1 -> conv1.weight, conv1.bias
  inC: number;
  outC: number;
  size: number;
  batchNorm?: string; // bn1 -> bn1.weight (gamma), bn1.bias (beta), bn1.running_mean/var
}
export interface DenseLayer {
  kind: 'dense';
  name: string;
  inputs: number;
  outputs: number;
  relu: boolean;
}
export type Layer = ConvLayer | DenseLayer;

export interface Architecture {
  readonly inputShape: [number, number, number];
  readonly layers: readonly Layer[];
}

/** The layers of every live zoo model, for engines that compile them (client/kernels/engine). */
const architectures = new WeakMap<Model, Architecture>();

/** A zoo model's architecture; undefined for any other implementation of Model. */
export function architectureOf(model: Model): Architecture | undefined {
  return architectures.get(model);
}

function lenet(
  channels: number,
  side: number,
  widths: { conv: [number, number]; dense: number[] },
  batchNorm: boolean,
): Architecture {
  const [c1, c2] = widths.conv;
  const flatSide = ((side - 4) / 2 - 4) / 2; // two valid 5x5 convs, each followed by a 2x2 pool
  const layers: Layer[] = [
    { kind: 'conv', name: 'conv1', inC: channels, outC: c1, size: 5, ...(batchNorm ? { batchNorm: 'bn1' } : {}) },
    { kind: 'conv', name: 'conv2', inC: c1, outC: c2, size: 5, ...(batchNorm ? { batchNorm: 'bn2' } : {}) },
  ];
  let inputs = flatSide * flatSide * c2;
  widths.dense.forEach((outputs, i) => {
    layers.push({ kind: 'dense', name: `fc${i + 1}`, inputs, outputs, relu: i < widths.dense.length - 1 });
    inputs = outputs;
  });
  return { inputShape: [side, side, channels], layers };
}

/** The architecture of a zoo model. */
export function zooArchitecture(name: ModelName): Architecture {
  switch (name) {
    case 'mlp':
      return {
        inputShape: [28, 28, 1],
        layers: [
          { kind: 'dense', name: 'fc1', inputs: 784, outputs: 200, relu: true },
          { kind: 'dense', name: 'fc2', inputs: 200, outputs: 200, relu: true },
          { kind: 'dense', name: 'fc3', inputs: 200, outputs: 10, relu: false },
        ],
      };
    case 'lenet5-mnist':
    case 'lenet5-bn-mnist':
      return lenet(1, 28, { conv: [10, 20], dense: [50, 10] }, name === 'lenet5-bn-mnist');
    case 'lenet5-cifar':
    case 'lenet5-bn-cifar':
      return lenet(3, 32, { conv: [6, 16], dense: [120, 84, 10] }, name === 'lenet5-bn-cifar');
  }
}

/** Builds `name` with weights drawn from `seed`: the same seed gives bit-identical weights. */
export function createModel(name: ModelName, seed: number): Model {
  if (!isModelName(name)) throw new Error(`unknown model "${String(name)}": expected one of ${MODEL_NAMES.join(', ')}`);
  if (!Number.isFinite(seed)) throw new Error(`createModel(${name}): seed must be a finite number, got ${seed}`);
  return new ZooModel(name, zooArchitecture(name), seed);
}

/**
 * A model of the zoo family `name` with other layer widths: a compact export (pruned
 * channels and neurons removed) or a width-scaled student. `arch` is checked first
 * (checkArchitecture); the weights are drawn from `seed` as for the zoo's own models.
 */
export function createModelFromArchitecture(name: ModelName, arch: Architecture, seed: number): Model {
  if (!isModelName(name)) throw new Error(`unknown model "${String(name)}": expected one of ${MODEL_NAMES.join(', ')}`);
  if (!Number.isFinite(seed)) throw new Error(`createModelFromArchitecture(${name}): seed must be a finite number, got ${seed}`);
  checkArchitecture(arch);
  return new ZooModel(name, arch, seed);
}

/**
 * Throws, naming the layer, unless `arch` is a chain the zoo's forward pass runs: valid
 * convolutions each followed by a 2x2 pool (even output sides), then dense layers over
 * the NHWC flatten, ending in a dense layer without ReLU; every width at least 1 and
 * every layer's input width equal to what the layer before it produces.
 */
export function checkArchitecture(arch: Architecture): void {
  const [h0, w0, c0] = arch.inputShape;
  const positive = (n: number): boolean => Number.isSafeInteger(n) && n >= 1;
  if (!arch.inputShape.every(positive))
    throw new Error(`input shape [${arch.inputShape.join(', ')}]: expected 3 positive integers`);
  if (arch.layers.length === 0) throw new Error('the architecture has no layers');
  let side: [number, number] = [h0, w0];
  let channels = c0;
  let flat: number | undefined;
  const names = new Set<string>();
  arch.layers.forEach((layer, i) => {
    const where = `layer ${i + 1} (${layer.name})`;
    if (!/^[A-Za-z][\w-]*$/.test(layer.name)) throw new Error(`${where}: a layer name is letters, digits, '_' and '-'`);
    if (names.has(layer.name) || (layer.kind === 'conv' && layer.batchNorm !== undefined && names.has(layer.batchNorm))) {
      throw new Error(`${where}: the name is used twice`);
    }
    names.add(layer.name);
    if (layer.kind === 'conv') {
      if (layer.batchNorm !== undefined) names.add(layer.batchNorm);
      if (flat !== undefined) throw new Error(`${where}: a conv layer after a dense layer`);
      if (!positive(layer.outC) || !positive(layer.size))
        throw new Error(`${where}: filters and kernel size must be positive integers`);
      if (layer.inC !== channels) throw new Error(`${where}: takes ${layer.inC} channels, the layer before gives ${channels}`);
      const out = side.map((s) => s - layer.size + 1);
      if (out.some((s) => s < 2 || s % 2 !== 0)) {
        throw new Error(`${where}: output ${out.join('x')} does not tile into 2x2 pools`);
      }
      side = [out[0] / 2, out[1] / 2];
      channels = layer.outC;
    } else {
      const inputs = flat ?? side[0] * side[1] * channels;
      if (!positive(layer.outputs)) throw new Error(`${where}: units must be a positive integer`);
      if (layer.inputs !== inputs) throw new Error(`${where}: takes ${layer.inputs} inputs, the layer before gives ${inputs}`);
      flat = layer.outputs;
    }
  });
  const last = arch.layers[arch.layers.length - 1];
  if (last.kind !== 'dense' || last.relu)
    throw new Error(`the last layer (${last.name}) must be dense without ReLU (it gives the logits)`);
}

/**
 * `arch` with every hidden width (conv channels, dense units but the output layer's)
 * multiplied by `factor` and rounded, at least 1: e.g. LeNet-5 with half the channels.
 */
export function scaleArchitecture(arch: Architecture, factor: number): Architecture {
  if (!(Number.isFinite(factor) && factor > 0)) throw new RangeError(`width factor must be a positive number, got ${factor}`);
  const scaled = (n: number): number => Math.max(1, Math.round(n * factor));
  const layers: Layer[] = [];
  let channels = arch.inputShape[2];
  let side: [number, number] = [arch.inputShape[0], arch.inputShape[1]];
  let flat: number | undefined;
  arch.layers.forEach((layer, i) => {
    if (layer.kind === 'conv') {
      const outC = scaled(layer.outC);
      layers.push({ ...layer, inC: channels, outC });
      channels = outC;
      side = [(side[0] - layer.size + 1) / 2, (side[1] - layer.size + 1) / 2];
    } else {
      const inputs = flat ?? side[0] * side[1] * channels;
      const outputs = i === arch.layers.length - 1 ? layer.outputs : scaled(layer.outputs);
      layers.push({ ...layer, inputs, outputs });
      flat = outputs;
    }
  });
  return { inputShape: arch.inputShape, layers };
}

/**
 * What an algorithm may require of a model (its BatchNorm'd conv layers), known
 * from the architecture alone: checking a configuration builds no tensors.
 */
export function modelStructure(name: ModelName): Pick<Model, 'name' | 'channelGroups'> {
  return { name, channelGroups: channelGroupsOf(zooArchitecture(name)) };
}

/** PyTorch's default init for conv and linear layers: U(-1/sqrt(fanIn), 1/sqrt(fanIn)) for weight and bias. */
function uniformInit(rng: SeededRandom, size: number, fanIn: number): Float32Array {
  const bound = 1 / Math.sqrt(fanIn);
  const values = new Float32Array(size);
  for (let i = 0; i < size; i++) values[i] = (rng.next() * 2 - 1) * bound;
  return values;
}

class ZooModel implements Model {
  readonly name: ModelName;
  readonly inputShape: [number, number, number];
  readonly numClasses: number;
  readonly manifest: readonly TensorSpec[];
  readonly params: ReadonlyMap<string, tf.Variable>;
  readonly personal: ReadonlyMap<string, tf.Variable>;
  readonly channelGroups: readonly ChannelGroup[];
  readonly #layers: readonly Layer[];
  #disposed = false;

  constructor(name: ModelName, arch: Architecture, seed: number) {
    this.name = name;
    this.inputShape = arch.inputShape;
    this.#layers = arch.layers;
    const rng = new SeededRandom(seed);
    const manifest: TensorSpec[] = [];
    const params = new Map<string, tf.Variable>();
    const personal = new Map<string, tf.Variable>();
    // tfjs variable names are process-global, so ours stay anonymous; the maps carry the names.
    const addParam = (tensorName: string, shape: number[], prunable: boolean, values: Float32Array): void => {
      manifest.push({ name: tensorName, shape, prunable });
      params.set(tensorName, variableFrom(tf.tensor(values, shape, 'float32'), true));
    };
    const addPersonal = (tensorName: string, shape: number[], fill: number): void => {
      personal.set(tensorName, variableFrom(tf.fill(shape, fill, 'float32'), false));
    };
    for (const layer of arch.layers) {
      if (layer.kind === 'conv') {
        const fanIn = layer.inC * layer.size * layer.size;
        const kernelShape = [layer.size, layer.size, layer.inC, layer.outC];
        addParam(`${layer.name}.weight`, kernelShape, true, uniformInit(rng, elementCount(kernelShape), fanIn));
        addParam(`${layer.name}.bias`, [layer.outC], false, uniformInit(rng, layer.outC, fanIn));
        if (layer.batchNorm !== undefined) {
          addParam(`${layer.batchNorm}.weight`, [layer.outC], false, new Float32Array(layer.outC).fill(1));
          addParam(`${layer.batchNorm}.bias`, [layer.outC], false, new Float32Array(layer.outC));
          addPersonal(`${layer.batchNorm}.running_mean`, [layer.outC], 0);
          addPersonal(`${layer.batchNorm}.running_var`, [layer.outC], 1);
        }
      } else {
        addParam(
          `${layer.name}.weight`,
          [layer.inputs, layer.outputs],
          true,
          uniformInit(rng, layer.inputs * layer.outputs, layer.inputs),
        );
        addParam(`${layer.name}.bias`, [layer.outputs], false, uniformInit(rng, layer.outputs, layer.inputs));
      }
    }
    const last = arch.layers[arch.layers.length - 1];
    if (last?.kind !== 'dense') throw new Error(`${name}: architecture must end in a dense layer`);
    this.numClasses = last.outputs;
    this.manifest = manifest;
    this.params = params;
    this.personal = personal;
    this.channelGroups = channelGroupsOf(arch);
    architectures.set(this, arch);
  }

  forward(x: tf.Tensor4D, training: boolean): tf.Tensor2D {
    this.#assertAlive();
    const [h, w, c] = this.inputShape;
    if (x.rank !== 4 || x.shape[1] !== h || x.shape[2] !== w || x.shape[3] !== c) {
      throw new Error(`${this.name}.forward: input shape [${x.shape.join(', ')}] does not match [batch, ${h}, ${w}, ${c}]`);
    }
    return tf.tidy(() => {
      let act: tf.Tensor = x;
      for (const layer of this.#layers) {
        if (layer.kind === 'conv') {
          const conv = tf.conv2d(act as tf.Tensor4D, this.#param(`${layer.name}.weight`) as tf.Tensor4D, 1, 'valid');
          const bias = this.#param(`${layer.name}.bias`);
          if (layer.batchNorm !== undefined) {
            act = tf.maxPool(this.#batchNorm(tf.add(conv, bias), layer.batchNorm, training), 2, 2, 'valid');
          } else {
            // A per-channel bias commutes with the max over a window (float addition is
            // monotonic), so it is added after pooling: on a quarter of the values, and the
            // bias gradient sums a quarter as many rows.
            act = tf.add(tf.maxPool(conv, 2, 2, 'valid'), bias);
          }
          act = tf.relu(act);
        } else {
          if (act.rank !== 2) act = tf.reshape(act, [act.shape[0], -1]);
          act = tf.add(
            tf.matMul(act as tf.Tensor2D, this.#param(`${layer.name}.weight`) as tf.Tensor2D),
            this.#param(`${layer.name}.bias`),
          );
          if (layer.relu) act = tf.relu(act);
        }
      }
      return act as tf.Tensor2D;
    });
  }

  /** Training: batch statistics (biased variance), running stats updated like PyTorch (unbiased). */
  #batchNorm(x: tf.Tensor4D, bn: string, training: boolean): tf.Tensor4D {
    const gamma = this.#param(`${bn}.weight`);
    const beta = this.#param(`${bn}.bias`);
    const runningMean = this.#personalVar(`${bn}.running_mean`);
    const runningVar = this.#personalVar(`${bn}.running_var`);
    let mean: tf.Tensor;
    let variance: tf.Tensor;
    if (training) {
      ({ mean, variance } = tf.moments(x, [0, 1, 2]));
      const n = x.shape[0] * x.shape[1] * x.shape[2];
      const unbiased = n > 1 ? tf.mul(variance, n / (n - 1)) : variance;
      // Running statistics never reach the loss, so no gradient flows through these updates.
      runningMean.assign(tf.add(tf.mul(runningMean, 1 - BN_MOMENTUM), tf.mul(mean, BN_MOMENTUM)));
      runningVar.assign(tf.add(tf.mul(runningVar, 1 - BN_MOMENTUM), tf.mul(unbiased, BN_MOMENTUM)));
    } else {
      mean = runningMean;
      variance = runningVar;
    }
    const normalized = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, BN_EPSILON)));
    return tf.add(tf.mul(normalized, gamma), beta);
  }

  #param(name: string): tf.Variable {
    const v = this.params.get(name);
    if (v === undefined) throw new Error(`${this.name}: no parameter ${name}`);
    return v;
  }

  #personalVar(name: string): tf.Variable {
    const v = this.personal.get(name);
    if (v === undefined) throw new Error(`${this.name}: no personal tensor ${name}`);
    return v;
  }

  getWeights(): Map<string, Float32Array> {
    this.#assertAlive();
    return readAll(this.params);
  }

  setWeights(w: Map<string, Float32Array>): void {
    this.#assertAlive();
    writeAll(this.name, 'weights', this.params, w);
  }

  getPersonal(): Map<string, Float32Array> {
    this.#assertAlive();
    return readAll(this.personal);
  }

  setPersonal(p: Map<string, Float32Array>): void {
    this.#assertAlive();
    writeAll(this.name, 'personal state', this.personal, p);
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const v of this.params.values()) v.dispose();
    for (const v of this.personal.values()) v.dispose();
  }

  #assertAlive(): void {
    if (this.#disposed) throw new Error(`${this.name}: model was disposed`);
  }
}

/**
 * A variable holding `initial`'s values; `initial` is disposed. The variable takes
 * its own reference to the data, so the initial tensor would otherwise stay
 * alive (and counted in tf.memory()) for the life of the process.
 */
function variableFrom(initial: tf.Tensor, trainable: boolean): tf.Variable {
  try {
    return tf.variable(initial, trainable);
  } finally {
    initial.dispose();
  }
}

function readAll(vars: ReadonlyMap<string, tf.Variable>): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const [name, v] of vars) out.set(name, Float32Array.from(v.dataSync() as Float32Array));
  return out;
}

/** Validates the whole map first, so a bad map leaves the model untouched. */
function writeAll(model: string, what: string, vars: ReadonlyMap<string, tf.Variable>, values: Map<string, Float32Array>): void {
  for (const name of values.keys()) {
    if (!vars.has(name)) throw new Error(`${model}: set ${what}: unknown tensor "${name}"`);
  }
  for (const [name, v] of vars) {
    const data = values.get(name);
    if (data === undefined) throw new Error(`${model}: set ${what}: tensor "${name}" is missing`);
    if (!(data instanceof Float32Array)) throw new Error(`${model}: set ${what}: tensor "${name}" must be a Float32Array`);
    if (data.length !== v.size) {
      throw new Error(
        `${model}: set ${what}: tensor "${name}" has ${data.length} values, shape [${v.shape.join(', ')}] needs ${v.size}`,
      );
    }
  }
  // assign() takes its own reference to the new data; tidy drops the temporaries' references.
  tf.tidy(() => {
    for (const [name, v] of vars) v.assign(tf.tensor(values.get(name) as Float32Array, v.shape, 'float32'));
  });
}

function channelGroupsOf(arch: Architecture): ChannelGroup[] {
  const groups: ChannelGroup[] = [];
  let side = arch.inputShape[0];
  arch.layers.forEach((layer, i) => {
    if (layer.kind !== 'conv') return;
    side = (side - layer.size + 1) / 2;
    if (layer.batchNorm === undefined) return;
    const next = arch.layers[i + 1];
    if (next === undefined) throw new Error('a conv layer must be followed by another layer');
    groups.push({
      gamma: `${layer.batchNorm}.weight`,
      beta: `${layer.batchNorm}.bias`,
      kernel: `${layer.name}.weight`,
      bias: `${layer.name}.bias`,
      channels: layer.outC,
      next:
        next.kind === 'conv'
          ? { weight: `${next.name}.weight`, kind: 'conv', spatial: 1 }
          : { weight: `${next.name}.weight`, kind: 'flatten-dense', spatial: side * side },
    });
  });
  return groups;
}

/** Total number of trainable values. */
export function parameterCount(manifest: readonly TensorSpec[]): number {
  return manifest.reduce((n, spec) => n + elementCount(spec.shape), 0);
}
