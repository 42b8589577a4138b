/**
 * The tfjs LayersModel format (model.json + weight files), written and read
 * without tfjs-layers: `tf.loadLayersModel` opens what we write, and our own
 * engine runs it (subfed predict), so a device needs no 31 MB tfjs-layers.
 *
 * A zoo layer becomes Keras layers: a conv block is Conv2D (valid, bias) ->
 * [BatchNormalization (epsilon 1e-5)] -> MaxPooling2D 2x2 -> Activation relu
 * (bias before the pool: a per-channel constant commutes with the max, so this is
 * the zoo's forward pass); the first dense layer follows a Flatten (NHWC, row
 * p*C + c as in the zoo); a dense layer is Dense with relu or linear activation.
 * Weight names: conv1/kernel, conv1/bias, bn1/gamma, bn1/beta, bn1/moving_mean,
 * bn1/moving_variance, fc1/kernel, fc1/bias (zoo names conv1.weight, bn1.weight, ...).
 *
 * `userDefinedMetadata.subfed` says what the model is (its zoo family, input
 * standardisation, parameter counts, where it came from); the reader needs it.
 */
import * as tf from '@tensorflow/tfjs-core';
import { z } from 'zod';
import { formatZodIssues } from '../../proto/zod-issues.js';
import { Mask } from '../../proto/mask.js';
import { BN_EPSILON, checkArchitecture, type Architecture, type Layer } from '../model.js';
import { MODEL_NAMES, type ModelName } from '../model-names.js';
import type { TensorMap } from '../prune.js';
import { encodeTensor, type ManifestQuantization, type Quantization } from './quantize.js';
import { keptParameterTotal, parameterTotal, type InputEncoding, type PortableModel } from './portable.js';

export const EXPORT_FORMAT_VERSION = 1;
export const MODEL_JSON = 'model.json';
export const WEIGHTS_FILE = 'weights.bin';

/** A file in an export that cannot be used; the message names the file and the field. */
export class ExportFormatError extends Error {
  override readonly name = 'ExportFormatError';
}

const inputSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('images'), mean: z.array(z.number()).min(1), std: z.array(z.number().positive()).min(1) }),
  z.object({ kind: z.literal('features'), mean: z.array(z.number()).min(1), std: z.array(z.number().positive()).min(1) }),
]);

/** userDefinedMetadata.subfed */
export const metadataSchema = z.object({
  formatVersion: z.literal(EXPORT_FORMAT_VERSION),
  family: z.enum(MODEL_NAMES as [ModelName, ...ModelName[]]),
  input: inputSchema,
  /** Parameter values in the file, and how many of them are kept (non-pruned). */
  parameters: z.number().int().nonnegative(),
  keptParameters: z.number().int().nonnegative(),
  quantization: z.enum(['f32', 'f16', 'int8']),
  /** Where the model came from, in words. */
  origin: z.string(),
});
export type ExportMetadata = z.infer<typeof metadataSchema>;

// ---------------------------------------------------------------- names

const SUFFIXES: readonly [zoo: string, keras: string][] = [
  ['.running_mean', '/moving_mean'],
  ['.running_var', '/moving_variance'],
];

/** Zoo tensor name -> tfjs weight name. */
function kerasName(zooName: string, architecture: Architecture): string {
  for (const [zoo, keras] of SUFFIXES) if (zooName.endsWith(zoo)) return zooName.slice(0, -zoo.length) + keras;
  const layer = zooName.slice(0, zooName.lastIndexOf('.'));
  const isBatchNorm = architecture.layers.some((l) => l.kind === 'conv' && l.batchNorm === layer);
  if (zooName.endsWith('.weight')) return `${layer}/${isBatchNorm ? 'gamma' : 'kernel'}`;
  if (zooName.endsWith('.bias')) return `${layer}/${isBatchNorm ? 'beta' : 'bias'}`;
  throw new Error(`no tfjs name for tensor '${zooName}'`);
}

/** Every tensor of a model, zoo name -> tfjs name, in the order the file stores them. */
function tensorNames(architecture: Architecture): { zoo: string; keras: string; personal: boolean }[] {
  const out: { zoo: string; keras: string; personal: boolean }[] = [];
  const add = (zoo: string, personal = false): void => {
    out.push({ zoo, keras: kerasName(zoo, architecture), personal });
  };
  for (const layer of architecture.layers) {
    add(`${layer.name}.weight`);
    add(`${layer.name}.bias`);
    if (layer.kind === 'conv' && layer.batchNorm !== undefined) {
      add(`${layer.batchNorm}.weight`);
      add(`${layer.batchNorm}.bias`);
      add(`${layer.batchNorm}.running_mean`, true);
      add(`${layer.batchNorm}.running_var`, true);
    }
  }
  return out;
}

// ---------------------------------------------------------------- topology

type KerasLayer = { class_name: string; config: Record<string, unknown> };

/** The Keras topology (Sequential) of an architecture. */
export function modelTopology(architecture: Architecture, name: string): object {
  const [h, w, c] = architecture.inputShape;
  const layers: KerasLayer[] = [];
  const first = (): Record<string, unknown> =>
    layers.length === 0 ? { batch_input_shape: [null, h, w, c], dtype: 'float32' } : {};
  let flattened = false;
  for (const layer of architecture.layers) {
    if (layer.kind === 'conv') {
      layers.push({
        class_name: 'Conv2D',
        config: {
          name: layer.name,
          trainable: true,
          ...first(),
          filters: layer.outC,
          kernel_size: [layer.size, layer.size],
          strides: [1, 1],
          padding: 'valid',
          data_format: 'channels_last',
          dilation_rate: [1, 1],
          activation: 'linear',
          use_bias: true,
        },
      });
      if (layer.batchNorm !== undefined) {
        layers.push({
          class_name: 'BatchNormalization',
          config: {
            name: layer.batchNorm,
            trainable: true,
            axis: -1,
            momentum: 0.9,
            epsilon: BN_EPSILON,
            center: true,
            scale: true,
          },
        });
      }
      layers.push({
        class_name: 'MaxPooling2D',
        config: {
          name: `${layer.name}_pool`,
          trainable: true,
          pool_size: [2, 2],
          strides: [2, 2],
          padding: 'valid',
          data_format: 'channels_last',
        },
      });
      layers.push({ class_name: 'Activation', config: { name: `${layer.name}_relu`, trainable: true, activation: 'relu' } });
    } else {
      if (!flattened) {
        layers.push({ class_name: 'Flatten', config: { name: 'flatten', trainable: true, ...first() } });
        flattened = true;
      }
      layers.push({
        class_name: 'Dense',
        config: {
          name: layer.name,
          trainable: true,
          units: layer.outputs,
          activation: layer.relu ? 'relu' : 'linear',
          use_bias: true,
        },
      });
    }
  }
  return { class_name: 'Sequential', config: { name, layers }, keras_version: 'tfjs-layers 4.22.0', backend: 'tensor_flow.js' };
}

const pair = (v: unknown): [number, number] | undefined =>
  typeof v === 'number'
    ? [v, v]
    : Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number')
      ? [v[0], v[1]]
      : undefined;

/**
 * The architecture of a topology in the vocabulary modelTopology writes (a Sequential
 * chain of those layers); anything else is an error naming the layer and field.
 */
export function parseTopology(topology: unknown, file: string): Architecture {
  const fail = (what: string): never => {
    throw new ExportFormatError(`${file}: modelTopology: ${what}`);
  };
  const root = topology as { class_name?: unknown; config?: { layers?: unknown } } | null;
  if (root?.class_name !== 'Sequential') fail(`expected a Sequential model, got class_name ${JSON.stringify(root?.class_name)}`);
  const list = root!.config?.layers;
  if (!Array.isArray(list) || list.length === 0) fail('config.layers must be a non-empty list');
  const keras = list as KerasLayer[];
  let inputShape: [number, number, number] | undefined;
  const layers: Layer[] = [];
  let channels = 0;
  let side: [number, number] = [0, 0];
  let flat: number | undefined;
  for (let i = 0; i < keras.length; i++) {
    const entry = keras[i];
    const cfg = entry?.config ?? {};
    const where = `layer ${i + 1} (${JSON.stringify(cfg.name ?? entry?.class_name ?? null)})`;
    const bad = (field: string, expected: string): never =>
      fail(`${where}: ${field} must be ${expected}, got ${JSON.stringify(cfg[field])}`);
    if (i === 0) {
      const shape = cfg.batch_input_shape;
      if (!Array.isArray(shape) || shape.length !== 4 || !shape.slice(1).every((n) => Number.isInteger(n) && (n as number) > 0)) {
        bad('batch_input_shape', '[null, height, width, channels]');
      }
      inputShape = [(shape as number[])[1], (shape as number[])[2], (shape as number[])[3]];
      side = [inputShape[0], inputShape[1]];
      channels = inputShape[2];
    }
    if (typeof cfg.name !== 'string') bad('name', 'a string');
    const name = cfg.name as string;
    switch (entry.class_name) {
      case 'Conv2D': {
        const size = pair(cfg.kernel_size);
        if (size === undefined || size[0] !== size[1]) bad('kernel_size', 'a square kernel');
        if (String(pair(cfg.strides)) !== '1,1') bad('strides', '[1, 1]');
        if (cfg.padding !== 'valid') bad('padding', "'valid'");
        if ((cfg.data_format ?? 'channels_last') !== 'channels_last') bad('data_format', "'channels_last'");
        if (cfg.dilation_rate !== undefined && String(pair(cfg.dilation_rate)) !== '1,1') bad('dilation_rate', '[1, 1]');
        if ((cfg.activation ?? 'linear') !== 'linear') bad('activation', "'linear' (ReLU comes after the pool)");
        if (cfg.use_bias !== true) bad('use_bias', 'true');
        if (!Number.isInteger(cfg.filters)) bad('filters', 'an integer');
        let batchNorm: string | undefined;
        let next = i + 1;
        if (keras[next]?.class_name === 'BatchNormalization') {
          const bn = keras[next].config;
          const bnWhere = `layer ${next + 1} (${JSON.stringify(bn.name ?? null)})`;
          if (typeof bn.name !== 'string') fail(`${bnWhere}: name must be a string`);
          if (bn.axis !== -1 && bn.axis !== 3) fail(`${bnWhere}: axis must be -1 (channels), got ${JSON.stringify(bn.axis)}`);
          if (bn.epsilon !== BN_EPSILON) fail(`${bnWhere}: epsilon must be ${BN_EPSILON}, got ${JSON.stringify(bn.epsilon)}`);
          if (bn.center === false || bn.scale === false) fail(`${bnWhere}: center and scale must be true`);
          batchNorm = bn.name as string;
          next++;
        }
        const pool = keras[next];
        if (
          pool?.class_name !== 'MaxPooling2D' ||
          String(pair(pool.config.pool_size)) !== '2,2' ||
          String(pair(pool.config.strides ?? pool.config.pool_size)) !== '2,2' ||
          (pool.config.padding ?? 'valid') !== 'valid'
        ) {
          fail(`layer ${next + 1}: a conv block continues with MaxPooling2D 2x2, stride 2, valid`);
        }
        const relu = keras[next + 1];
        if (relu?.class_name !== 'Activation' || relu.config.activation !== 'relu')
          fail(`layer ${next + 2}: a conv block ends with Activation relu`);
        layers.push({
          kind: 'conv',
          name,
          inC: channels,
          outC: cfg.filters as number,
          size: size![0],
          ...(batchNorm !== undefined ? { batchNorm } : {}),
        });
        channels = cfg.filters as number;
        side = [(side[0] - size![0] + 1) / 2, (side[1] - size![0] + 1) / 2];
        i = next + 1;
        break;
      }
      case 'Flatten':
        if (flat !== undefined) fail(`${where}: a Flatten after a dense layer`);
        break;
      case 'Dense': {
        if (!Number.isInteger(cfg.units)) bad('units', 'an integer');
        const activation = cfg.activation ?? 'linear';
        if (activation !== 'relu' && activation !== 'linear') bad('activation', "'relu' or 'linear'");
        if (cfg.use_bias !== true) bad('use_bias', 'true');
        if (flat === undefined && keras[i - 1]?.class_name !== 'Flatten')
          fail(`${where}: the first Dense layer must follow a Flatten`);
        const inputs = flat ?? side[0] * side[1] * channels;
        layers.push({ kind: 'dense', name, inputs, outputs: cfg.units as number, relu: activation === 'relu' });
        flat = cfg.units as number;
        break;
      }
      default:
        fail(
          `${where}: layer class ${JSON.stringify(entry?.class_name)} is not one subfed writes (Conv2D, BatchNormalization, MaxPooling2D, Activation, Flatten, Dense)`,
        );
    }
  }
  const architecture: Architecture = { inputShape: inputShape!, layers };
  try {
    checkArchitecture(architecture);
  } catch (err) {
    fail((err as Error).message);
  }
  return architecture;
}

// ---------------------------------------------------------------- artifacts

/** A model's metadata from its values. */
export function exportMetadata(portable: PortableModel, quantization: Quantization, origin: string): ExportMetadata {
  return {
    formatVersion: EXPORT_FORMAT_VERSION,
    family: portable.family,
    input: { kind: portable.input.kind, mean: [...portable.input.mean], std: [...portable.input.std] },
    parameters: parameterTotal(portable),
    keptParameters: keptParameterTotal(portable),
    quantization,
    origin,
  };
}

/** One weight as the manifest lists it. */
export interface WeightSpec {
  name: string;
  shape: number[];
  dtype: 'float32';
  quantization?: ManifestQuantization;
}

/** model.json's content (weightsManifest aside) and the weight bytes in manifest order. */
export interface LayersArtifacts {
  readonly modelTopology: object;
  readonly weightSpecs: WeightSpec[];
  readonly weightData: Uint8Array;
  readonly metadata: ExportMetadata;
}

/** The shape of a zoo tensor in the architecture. */
function shapeOf(name: string, values: Float32Array, architecture: Architecture): number[] {
  for (const l of architecture.layers) {
    if (l.kind === 'conv') {
      if (name === `${l.name}.weight`) return [l.size, l.size, l.inC, l.outC];
      if (name.startsWith(`${l.name}.`) || (l.batchNorm !== undefined && name.startsWith(`${l.batchNorm}.`))) return [l.outC];
    } else {
      if (name === `${l.name}.weight`) return [l.inputs, l.outputs];
      if (name === `${l.name}.bias`) return [l.outputs];
    }
  }
  return [values.length];
}

/** The model as LayersModel artifacts, weights encoded as `quantization` says. */
export function toLayersArtifacts(portable: PortableModel, quantization: Quantization, origin: string): LayersArtifacts {
  const specs: WeightSpec[] = [];
  const pieces: Uint8Array[] = [];
  for (const t of tensorNames(portable.architecture)) {
    const values = (t.personal ? portable.personal : portable.weights).get(t.zoo);
    if (values === undefined) throw new Error(`export: the model has no tensor '${t.zoo}'`);
    const shape = shapeOf(t.zoo, values, portable.architecture);
    if (shape.reduce((a, b) => a * b, 1) !== values.length) {
      throw new Error(`export: tensor '${t.zoo}' has ${values.length} values, shape [${shape.join(', ')}] needs another count`);
    }
    const encoded = encodeTensor(values, shape, quantization);
    specs.push({
      name: t.keras,
      shape,
      dtype: 'float32',
      ...(encoded.quantization ? { quantization: encoded.quantization } : {}),
    });
    pieces.push(encoded.bytes);
  }
  const weightData = new Uint8Array(pieces.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of pieces) {
    weightData.set(p, at);
    at += p.length;
  }
  return {
    modelTopology: modelTopology(portable.architecture, `subfed-${portable.family}`),
    weightSpecs: specs,
    weightData,
    metadata: exportMetadata(portable, quantization, origin),
  };
}

/** model.json of a single-file LayersModel whose weights are in `weightsPath`. */
export function modelJson(artifacts: LayersArtifacts, weightsPath: string): object {
  return {
    format: 'layers-model',
    generatedBy: 'subfed',
    convertedBy: null,
    modelTopology: artifacts.modelTopology,
    weightsManifest: [{ paths: [weightsPath], weights: artifacts.weightSpecs }],
    userDefinedMetadata: { subfed: artifacts.metadata },
  };
}

/** The metadata of an export, or an error naming the file. */
export function parseMetadata(userDefinedMetadata: unknown, file: string): ExportMetadata {
  const raw = (userDefinedMetadata as { subfed?: unknown } | undefined)?.subfed;
  if (raw === undefined) throw new ExportFormatError(`${file}: not a subfed export (no userDefinedMetadata.subfed)`);
  const parsed = metadataSchema.safeParse(raw);
  if (!parsed.success) {
    throw new ExportFormatError(`${file}: userDefinedMetadata.subfed: ${formatZodIssues(parsed.error).join('; ')}`);
  }
  return parsed.data;
}

/**
 * A PortableModel from decoded artifacts (weights dequantized by tfjs-core's own
 * decodeWeights, exactly as loadLayersModel does). Masks: zero entries of kernels and
 * weight matrices count as pruned.
 */
export function portableFromArtifacts(
  artifacts: {
    modelTopology: unknown;
    weightSpecs: tf.io.WeightsManifestEntry[];
    weightData: ArrayBuffer;
    userDefinedMetadata: unknown;
  },
  file: string,
): { portable: PortableModel; metadata: ExportMetadata } {
  const metadata = parseMetadata(artifacts.userDefinedMetadata, file);
  const architecture = parseTopology(artifacts.modelTopology, file);
  const expectedBytes = artifacts.weightSpecs.reduce(
    (n, s) => n + s.shape.reduce((a, b) => a * b, 1) * (s.quantization ? (s.quantization.dtype === 'uint8' ? 1 : 2) : 4),
    0,
  );
  if (artifacts.weightData.byteLength !== expectedBytes) {
    throw new ExportFormatError(
      `${file}: the weights are ${artifacts.weightData.byteLength} bytes, the manifest needs ${expectedBytes}`,
    );
  }
  let decoded: tf.NamedTensorMap;
  try {
    decoded = tf.io.decodeWeights(artifacts.weightData, artifacts.weightSpecs);
  } catch (err) {
    throw new ExportFormatError(`${file}: weights: ${(err as Error).message}`);
  }
  const weights: TensorMap = new Map();
  const personal: TensorMap = new Map();
  try {
    for (const t of tensorNames(architecture)) {
      const tensor = decoded[t.keras];
      if (tensor === undefined) throw new ExportFormatError(`${file}: the weights manifest has no '${t.keras}'`);
      const values = Float32Array.from(tensor.dataSync() as Float32Array);
      const expected = shapeOf(t.zoo, values, architecture);
      if (tensor.shape.join(',') !== expected.join(',')) {
        throw new ExportFormatError(
          `${file}: weight '${t.keras}' has shape [${tensor.shape.join(', ')}], the topology needs [${expected.join(', ')}]`,
        );
      }
      if (values.some((v) => !Number.isFinite(v)))
        throw new ExportFormatError(`${file}: weight '${t.keras}' holds a value that is not finite`);
      (t.personal ? personal : weights).set(t.zoo, values);
    }
  } finally {
    tf.dispose(Object.values(decoded));
  }
  const masks = new Map<string, Mask>();
  for (const [name, values] of weights) {
    const rank = shapeOf(name, values, architecture).length;
    masks.set(
      name,
      rank >= 2
        ? Mask.build(values.length, (bits) => values.forEach((v, i) => (bits[i] = v !== 0 ? 1 : 0)))
        : Mask.full(values.length),
    );
  }
  const input: InputEncoding = metadata.input;
  const channels = architecture.inputShape[2];
  const inputs = architecture.inputShape.reduce((a, b) => a * b, 1);
  const width = input.kind === 'images' ? channels : inputs;
  if (input.mean.length !== width || input.std.length !== width) {
    throw new ExportFormatError(
      `${file}: userDefinedMetadata.subfed.input: ${input.kind} need ${width} means and stds, got ${input.mean.length} and ${input.std.length}`,
    );
  }
  return { portable: { family: metadata.family, architecture, weights, personal, masks, input }, metadata };
}
