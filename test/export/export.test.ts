// Export of a real Sub-FedAvg (Hy) client: the compact model's logits equal the masked
// model's, tfjs-layers opens every written variant (quantized ones dequantized by
// tfjs itself), the sparse container rebuilds the same LayersModel, bad files are
// refused naming the file and field.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import type { ImageDataset } from '../../client/data/dataset.js';
import { loadClientData } from '../../client/data/folder.js';
import { compactModel } from '../../client/export/compact.js';
import { accuracyOf, loadClientModel, runExport } from '../../client/export/export.js';
import { encodeExport, exportBytes, readExport, writeExport } from '../../client/export/files.js';
import { ExportFormatError, MODEL_JSON, WEIGHTS_FILE } from '../../client/export/layers-format.js';
import { instantiate, type PortableModel } from '../../client/export/portable.js';
import { SPARSE_FILE, decodeSparseModel, sparseModelHandler } from '../../client/export/sparse.js';
import { createModel, zooArchitecture } from '../../client/model.js';
import { applyMasks, fullMasks } from '../../client/prune.js';
import { predictLogits } from '../../client/train.js';
import { hyClient, type HyClient } from './fixture.js';
import { serveFiles, type StaticServer } from './static-server.js';

const dir = mkdtempSync(join(tmpdir(), 'subfed-export-'));
let client: HyClient;
let masked: PortableModel;
let server: StaticServer;
const routes = new Map<string, string>();

beforeAll(async () => {
  await initBackend('wasm', { logger: { info: () => {} } });
  client = await hyClient(dir);
  masked = (await loadClientModel(client.stateDir, undefined)).portable;
  server = await serveFiles(routes);
}, 120_000);

afterAll(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

const maxDifference = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

function logits(portable: PortableModel, data: ImageDataset, engine: 'native' | 'tfjs'): Float32Array {
  const model = instantiate(portable);
  try {
    return predictLogits(model, data, engine);
  } finally {
    model.dispose();
  }
}

/** The masked model: the state's weights times its masks, full shape. */
const maskedWeights = (p: PortableModel): PortableModel => ({ ...p, weights: applyMasks(p.weights, p.masks) });

/** The images as the model's input tensor (standardised as the model expects). */
function inputTensor(portable: PortableModel, data: ImageDataset): tf.Tensor4D {
  const { mean, std } = portable.input;
  const x = Float32Array.from(data.images, (v) => (v / 255 - mean[0]) / std[0]);
  return tf.tensor4d(x, [data.count, data.height, data.width, data.channels]);
}

/** Writes an export under `name` and serves its files at /<name>/<file>. */
async function served(name: string, portable: PortableModel, options: Parameters<typeof writeExport>[2]): Promise<string> {
  const out = join(dir, name);
  const written = await writeExport(out, portable, options);
  for (const f of written.files) routes.set(`/${name}/${f.name}`, join(out, f.name));
  return out;
}

/** tf.loadLayersModel over HTTP (tfjs's own http IOHandler fetches model.json and the weight files). */
async function loadOverHttp(name: string): Promise<tfl.LayersModel> {
  return tfl.loadLayersModel(`${server.url}/${name}/${MODEL_JSON}`);
}

function predictWith(model: tfl.LayersModel, portable: PortableModel, data: ImageDataset): Float32Array {
  return tf.tidy(() => (model.predict(inputTensor(portable, data)) as tf.Tensor).dataSync() as Float32Array);
}

describe('compact export of a Sub-FedAvg (Hy) client', () => {
  it('removes the pruned channels, and its logits equal the masked model within 1e-5 on the client test data', () => {
    const { model: compact, layers } = compactModel(masked);
    expect(layers.slice(0, 2).map((l) => l.after)).toEqual(client.channelsKept);
    expect(client.channelsKept.some((k, i) => k < [10, 20][i])).toBe(true);
    const reference = logits(maskedWeights(masked), client.test, 'tfjs');
    for (const engine of ['tfjs', 'native'] as const) {
      expect(maxDifference(logits(compact, client.test, engine), reference)).toBeLessThan(1e-5);
    }
  });

  it('equals an unpruned model exactly', () => {
    const model = createModel('lenet5-bn-mnist', 9);
    const dense: PortableModel = {
      family: 'lenet5-bn-mnist',
      architecture: zooArchitecture('lenet5-bn-mnist'),
      weights: model.getWeights(),
      personal: model.getPersonal(),
      masks: fullMasks(model.manifest),
      input: masked.input,
    };
    model.dispose();
    const { model: compact } = compactModel(dense);
    expect(compact.architecture).toEqual(dense.architecture);
    expect(maxDifference(logits(compact, client.test, 'tfjs'), logits(dense, client.test, 'tfjs'))).toBe(0);
  });

  it('opens with tf.loadLayersModel (f32): the same logits as the masked model', async () => {
    const compact = compactModel(masked).model;
    await served('f32', compact, { format: 'layers', quantization: 'f32', origin: 'test' });
    const loaded = await loadOverHttp('f32');
    expect(loaded.layers.map((l) => l.getClassName())).toEqual([
      'Conv2D',
      'BatchNormalization',
      'MaxPooling2D',
      'Activation',
      'Conv2D',
      'BatchNormalization',
      'MaxPooling2D',
      'Activation',
      'Flatten',
      'Dense',
      'Dense',
    ]);
    const reference = logits(maskedWeights(masked), client.test, 'tfjs');
    expect(maxDifference(predictWith(loaded, compact, client.test), reference)).toBeLessThan(1e-5);
    loaded.dispose();
  });

  it('int8 and f16: the manifest carries the quantization, tfjs dequantizes it, pruned weights stay zero', async () => {
    const compact = compactModel(masked).model;
    const f32Bytes = encodeExport(compact, { format: 'layers', quantization: 'f32', origin: 'test' }).files.find(
      (f) => f.name === WEIGHTS_FILE,
    )!.content.length;
    const reference = logits(compact, client.test, 'tfjs');
    const argmax = (l: Float32Array): number[] =>
      Array.from({ length: l.length / 10 }, (_, r) =>
        l.subarray(r * 10, r * 10 + 10).indexOf(Math.max(...l.subarray(r * 10, r * 10 + 10))),
      );
    for (const q of ['int8', 'f16'] as const) {
      const out = await served(q, compact, { format: 'layers', quantization: q, origin: 'test' });
      const json = JSON.parse(readFileSync(join(out, MODEL_JSON), 'utf8')) as {
        weightsManifest: { weights: { name: string; quantization?: { dtype: string; scale?: number; min?: number } }[] }[];
      };
      const specs = json.weightsManifest[0].weights;
      const kernel = specs.find((s) => s.name === 'fc1/kernel')!;
      if (q === 'int8') {
        expect(kernel.quantization?.dtype).toBe('uint8');
        expect([kernel.quantization?.scale, kernel.quantization?.min].every((v) => typeof v === 'number')).toBe(true);
        expect(readFileSync(join(out, WEIGHTS_FILE)).length).toBeLessThan(f32Bytes / 3);
      } else {
        expect(kernel.quantization).toEqual({ dtype: 'float16' });
      }
      // Vectors (biases, BatchNorm) stay float32.
      expect(specs.find((s) => s.name === 'bn1/moving_variance')!.quantization).toBeUndefined();
      const loaded = await loadOverHttp(q);
      const fc1 = loaded.getLayer('fc1').getWeights()[0].dataSync();
      const original = compact.weights.get('fc1.weight')!;
      const zeros = original.reduce((n, v) => n + (v === 0 ? 1 : 0), 0);
      expect(zeros).toBeGreaterThan(0);
      for (let i = 0; i < original.length; i++) if (original[i] === 0) expect(fc1[i]).toBe(0);
      const error = q === 'int8' ? Math.max(...Array.from(original, (v) => Math.abs(v))) / 255 : 1e-2;
      expect(maxDifference(fc1, original)).toBeLessThanOrEqual(error);
      const got = predictWith(loaded, compact, client.test);
      const agree = argmax(got).filter((p, i) => p === argmax(reference)[i]).length;
      expect(agree / client.test.count).toBeGreaterThanOrEqual(0.95);
      loaded.dispose();
    }
  });

  it('the sparse container rebuilds the LayersModel in memory, is smaller than compact f32, and reads back', async () => {
    const compact = compactModel(masked).model;
    const out = join(dir, 'sparse');
    const written = await writeExport(out, compact, { format: 'sparse', quantization: 'f32', origin: 'test' });
    expect(written.files.map((f) => f.name)).toEqual([SPARSE_FILE]);
    const f32 = exportBytes(encodeExport(compact, { format: 'layers', quantization: 'f32', origin: 'test' }).files);
    expect(written.bytes).toBeLessThan(f32);
    const loaded = await tfl.loadLayersModel(sparseModelHandler(readFileSync(join(out, SPARSE_FILE))));
    const reference = logits(maskedWeights(masked), client.test, 'tfjs');
    expect(maxDifference(predictWith(loaded, compact, client.test), reference)).toBeLessThan(1e-5);
    loaded.dispose();
    const read = await readExport(out);
    expect(read.format).toBe('sparse');
    for (const [name, w] of compact.weights) expect(read.portable.weights.get(name)).toEqual(w);
  });

  it('subfed export: every variant measured from its bytes; compact f32 as accurate as the masked model; fine-tuning keeps the zeros', async () => {
    const data = await loadClientData(client.dataDir, 0);
    const report = await runExport({
      stateDir: client.stateDir,
      out: join(dir, 'cli'),
      format: 'layers',
      quantization: 'int8',
      data,
      fineTuneEpochs: 1,
      seed: 1,
    });
    expect(report.variants.map((v) => v.name)).toEqual([
      'masked f32',
      'compact f32',
      'compact f16',
      'compact int8',
      'sparse f32',
    ]);
    const byName = new Map(report.variants.map((v) => [v.name, v]));
    expect(byName.get('compact f32')!.bytes).toBeLessThan(byName.get('masked f32')!.bytes);
    expect(byName.get('compact int8')!.bytes).toBeLessThan(byName.get('compact f32')!.bytes / 2);
    expect(report.fineTune).toMatchObject({ epochs: 1, before: accuracyOf(compactModel(masked).model, client.test) });
    // The masked model and the compact one agree before fine-tuning: the report's "before" is the masked accuracy.
    expect(report.fineTune!.before).toBe(accuracyOf(maskedWeights(masked), client.test));
    const read = await readExport(join(dir, 'cli'));
    expect(read.metadata).toMatchObject({ family: 'lenet5-bn-mnist', quantization: 'int8', input: masked.input });
    expect(read.metadata.origin).toMatch(/subfedavg-hy client .* after round 3, compact, fine-tuned 1 epoch/);
    // Fine-tuning trained with the compact masks: the unstructured zeros of fc1 are still zeros.
    const compact = compactModel(masked).model;
    const before = compact.weights.get('fc1.weight')!;
    const after = read.portable.weights.get('fc1.weight')!;
    for (let i = 0; i < before.length; i++) if (before[i] === 0) expect(after[i]).toBe(0);
  });
});

describe('bad export files', () => {
  const source = join(dir, 'good');
  beforeAll(async () => {
    const compact = compactModel(masked).model;
    await writeExport(join(source, 'layers'), compact, { format: 'layers', quantization: 'f32', origin: 'test' });
    await writeExport(join(source, 'sparse'), compact, { format: 'sparse', quantization: 'f32', origin: 'test' });
  });
  const good = (): { json: Record<string, unknown>; weights: Buffer } => ({
    json: JSON.parse(readFileSync(join(source, 'layers', MODEL_JSON), 'utf8')) as Record<string, unknown>,
    weights: readFileSync(join(source, 'layers', WEIGHTS_FILE)),
  });
  const layersOf = (json: Record<string, unknown>): Record<string, unknown>[] =>
    (json.modelTopology as { config: { layers: Record<string, unknown>[] } }).config.layers;

  const cases: [string, (f: { json: Record<string, unknown>; weights: Buffer }) => void, RegExp][] = [
    ['no subfed metadata', (f) => delete f.json.userDefinedMetadata, /not a subfed export \(no userDefinedMetadata\.subfed\)/],
    [
      'an unknown family',
      (f) => ((f.json.userDefinedMetadata as { subfed: { family: string } }).subfed.family = 'resnet'),
      /userDefinedMetadata\.subfed: family/,
    ],
    [
      'a layer class subfed never writes',
      (f) => (layersOf(f.json)[8].class_name = 'Dropout'),
      /layer 9 \("flatten"\): layer class "Dropout" is not one subfed writes/,
    ],
    [
      'a conv block without its ReLU',
      (f) => (layersOf(f.json)[3].class_name = 'Dropout'),
      /modelTopology: layer 4: a conv block ends with Activation relu/,
    ],
    [
      'same padding',
      (f) => ((layersOf(f.json)[0].config as Record<string, unknown>).padding = 'same'),
      /layer 1 \("conv1"\): padding must be 'valid', got "same"/,
    ],
    [
      'another BatchNorm epsilon',
      (f) => ((layersOf(f.json)[1].config as Record<string, unknown>).epsilon = 0.001),
      /layer 2 \("bn1"\): epsilon must be 0\.00001, got 0\.001/,
    ],
    [
      'a truncated weights file',
      (f) => (f.weights = f.weights.subarray(0, f.weights.length - 4)),
      /the weights are \d+ bytes, the manifest needs \d+/,
    ],
    ['a NaN weight', (f) => f.weights.writeFloatLE(Number.NaN, 0), /weight 'conv1\/kernel' holds a value that is not finite/],
    [
      'a filter count the weights do not have',
      (f) => ((layersOf(f.json)[0].config as Record<string, unknown>).filters = 3),
      /weight 'conv1\/kernel' has shape \[5, 5, 1, 5\], the topology needs \[5, 5, 1, 3\]/,
    ],
  ];
  it.each(cases)('%s', async (_name, damage, message) => {
    const f = good();
    damage(f);
    const out = mkdtempSync(join(dir, 'bad-'));
    writeFileSync(join(out, MODEL_JSON), JSON.stringify(f.json));
    writeFileSync(join(out, WEIGHTS_FILE), f.weights);
    const error = await readExport(out).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ExportFormatError);
    expect((error as Error).message).toContain(join(out, MODEL_JSON));
    expect((error as Error).message).toMatch(message);
  });

  it('a damaged sparse container is refused, naming the file and the problem', () => {
    const bytes = readFileSync(join(source, 'sparse', SPARSE_FILE));
    const where = 'x/model.sparse';
    expect(() => decodeSparseModel(Buffer.from('NOTSPARSE...'), where)).toThrow(
      'x/model.sparse: not a subfed sparse model (bad magic bytes)',
    );
    expect(() => decodeSparseModel(bytes.subarray(0, bytes.length - 3), where)).toThrow(
      /payload is \d+ bytes, the header lists \d+/,
    );
    const flipped = Buffer.from(bytes);
    flipped[flipped.length - 5] ^= 0xff;
    flipped[flipped.length - 40] ^= 0xff;
    const header = 12 + flipped.readUInt32LE(8);
    const garbled = Buffer.concat([flipped.subarray(0, header), Buffer.alloc(flipped.length - header, 0xff)]);
    expect(() => decodeSparseModel(garbled, where)).toThrow(
      /^x\/model\.sparse: tensor 'conv1\/kernel': SparseTensor: undecodable protobuf/,
    );
  });

  it('a folder without a model, and one with both formats', async () => {
    const empty = mkdtempSync(join(dir, 'empty-'));
    await expect(readExport(empty)).rejects.toThrow(`'${empty}' holds no model.json nor model.sparse`);
    writeFileSync(join(empty, MODEL_JSON), '{}');
    writeFileSync(join(empty, SPARSE_FILE), '');
    await expect(readExport(empty)).rejects.toThrow('holds both model.json and model.sparse; name the file');
  });
});
