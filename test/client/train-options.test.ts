/**
 * The training options beyond plain SGD, on both engines: the proximal term
 * (FedProx's mu, Ditto's lambda) as an exact gradient term, early stopping on a
 * validation split, and seeded image augmentation. Then the participant's side:
 * the validation split it holds out for early stopping.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import { augmentImages } from '../../client/data/augment.js';
import type { Dataset, ImageDataset } from '../../client/data/dataset.js';
import { createModel, type Model } from '../../client/model.js';
import type { ModelName } from '../../client/model-names.js';
import { createParticipant } from '../../client/participant.js';
import { EarlyStopper, trainLocal, type EngineChoice } from '../../client/train.js';
import { parseTrainingOverrides, TrainingConfigError } from '../../proto/training-config.js';
import { OneClientServer, tinyData } from './participant-helpers.js';
import { Mask } from '../../proto/mask.js';

beforeAll(async () => {
  await initBackend('cpu', { logger: { info: () => {} } });
});

const ENGINES: readonly EngineChoice[] = ['tfjs', 'native'];

/** `a - b`, element by element. */
const minus = (a: Float32Array, b: Float32Array) => a.map((x, i) => x - b[i]);

describe('the proximal term', () => {
  it.each(ENGINES)(
    '%s: one SGD step moves each weight by exactly -lr * mu * (w - anchor) more than without it',
    async (engine) => {
      const { train } = tinyData(3, 20, 4);
      const lr = 0.1;
      const mu = 0.5;
      const run = async (proximal: boolean): Promise<Map<string, Float32Array>> => {
        const model = createModel('lenet5-mnist', 4);
        // The anchor sits 1 above every weight, so mu * (w - anchor) = -mu everywhere.
        const anchor = new Map([...model.getWeights()].map(([name, w]) => [name, w.map((x) => x + 1)]));
        // One batch of the whole set, no momentum: exactly one step w -= lr * g'.
        const opts = { epochs: 1, batchSize: 20, lr, momentum: 0, seed: 1, engine };
        await trainLocal(model, train, proximal ? { ...opts, proximal: { anchor, mu } } : opts);
        const w = model.getWeights();
        model.dispose();
        return w;
      };
      const plain = await run(false);
      const withTerm = await run(true);
      for (const [name, w] of withTerm) {
        // w' - w_plain = -lr * mu * (w0 - anchor) = lr * mu
        for (const d of minus(w, plain.get(name)!)) expect(d).toBeCloseTo(lr * mu, 5);
      }
    },
  );

  it('is the same on both engines, with masks (pruned weights stay put) and BatchNorm', async () => {
    const name: ModelName = 'lenet5-bn-mnist';
    const { train } = tinyData(5, 40, 4);
    const start = createModel(name, 2);
    const before = start.getWeights();
    const anchor = new Map([...before].map(([n, w]) => [n, w.map((x, i) => x + ((i % 3) - 1) * 0.05)]));
    const gradMasks = new Map(
      start.manifest.map((spec) => [
        spec.name,
        Mask.build(before.get(spec.name)!.length, (bits) => bits.forEach((_, i) => (bits[i] = i % 4 === 0 ? 0 : 1))),
      ]),
    );
    start.dispose();
    const results = await Promise.all(
      ENGINES.map(async (engine) => {
        const model = createModel(name, 2);
        const history = await trainLocal(model, train, {
          epochs: 2,
          batchSize: 10,
          lr: 0.05,
          momentum: 0.5,
          seed: 3,
          engine,
          gradMasks,
          proximal: { anchor, mu: 0.3 },
        });
        const w = model.getWeights();
        model.dispose();
        return { history, w };
      }),
    );
    const [tfjs, native] = results;
    expect(native.history[1].loss).toBeCloseTo(tfjs.history[1].loss, 4);
    for (const [tensor, values] of native.w) {
      const other = tfjs.w.get(tensor)!;
      const old = before.get(tensor)!;
      for (let i = 0; i < values.length; i++) {
        expect(Math.abs(values[i] - other[i])).toBeLessThan(1e-4);
        // The mask applies after the proximal term: a masked weight does not move, however far from its anchor.
        if (i % 4 === 0) expect([values[i], other[i]]).toEqual([old[i], old[i]]);
      }
    }
  });

  it('refuses an anchor that does not fit the model, naming the tensor', async () => {
    const model = createModel('mlp', 1);
    const { train } = tinyData(1, 10, 2);
    const opts = { epochs: 1, batchSize: 5, lr: 0.01, momentum: 0, seed: 1 };
    await expect(
      trainLocal(model, train, { ...opts, proximal: { anchor: new Map([['nope', new Float32Array(1)]]), mu: 1 } }),
    ).rejects.toThrow(/proximal anchor names unknown tensor 'nope'/);
    await expect(
      trainLocal(model, train, { ...opts, proximal: { anchor: new Map([['fc1.bias', new Float32Array(3)]]), mu: 1 } }),
    ).rejects.toThrow(/proximal anchor of 'fc1.bias' has 3 values, the tensor 200/);
    model.dispose();
  });
});

describe('early stopping', () => {
  it('stops after `patience` epochs without an improvement of more than minDelta (pure rule)', () => {
    const stopsAt = (accuracies: number[], patience: number, minDelta: number): number | undefined => {
      const stopper = new EarlyStopper({ patience, minDelta });
      const at = accuracies.findIndex((a) => stopper.observe(a));
      return at === -1 ? undefined : at + 1;
    };
    // 0.6 beats 0.5 by more than 0.05; 0.6 and 0.61 do not beat 0.6 by more: stale twice.
    expect(stopsAt([0.5, 0.6, 0.6, 0.61, 0.7], 2, 0.05)).toBe(4);
    // Without the delta 0.61 is an improvement, so the run never goes stale twice.
    expect(stopsAt([0.5, 0.6, 0.6, 0.61, 0.7], 2, 0)).toBeUndefined();
    expect(stopsAt([0.9, 0.8, 0.7], 1, 0)).toBe(2);
    // An equal accuracy is no improvement.
    expect(stopsAt([0.5, 0.5, 0.5], 2, 0)).toBe(3);
  });

  it.each(ENGINES)(
    '%s: ends local training early when validation accuracy stays flat, recording it per epoch',
    async (engine) => {
      const { train, test } = tinyData(2, 40, 20);
      const model = createModel('lenet5-mnist', 1);
      const seen: number[] = [];
      // A learning rate this small leaves the predictions as they are: accuracy flat, so stale from epoch 2 on.
      const history = await trainLocal(model, train, {
        epochs: 10,
        batchSize: 10,
        lr: 1e-12,
        momentum: 0,
        seed: 1,
        engine,
        earlyStopping: { patience: 2, minDelta: 0, validation: test },
        onEpochEnd: (epoch) => void seen.push(epoch),
      });
      expect(history).toHaveLength(3);
      expect(seen).toEqual([1, 2, 3]);
      expect(history.every((h) => h.valAccuracy === history[0].valAccuracy && h.valAccuracy !== undefined)).toBe(true);
      model.dispose();
    },
  );

  it('runs every epoch while validation accuracy keeps improving', async () => {
    const { train, test } = tinyData(2, 80, 40);
    const model = createModel('mlp', 1);
    const history = await trainLocal(model, train, {
      epochs: 3,
      batchSize: 10,
      lr: 0.05,
      momentum: 0.5,
      seed: 1,
      earlyStopping: { patience: 3, minDelta: 0, validation: test },
    });
    expect(history).toHaveLength(3);
    model.dispose();
  });

  it('in the shared schema: defaults, and a bad field named', () => {
    expect(parseTrainingOverrides({ earlyStopping: {} })).toEqual({ earlyStopping: { patience: 2, minDelta: 0 } });
    const bad = (input: unknown) => {
      try {
        parseTrainingOverrides(input, '(config)');
      } catch (err) {
        if (err instanceof TrainingConfigError) return err.problems.join('; ');
        throw err;
      }
      throw new Error('accepted');
    };
    expect(bad({ earlyStopping: { patience: 0 } })).toMatch(/earlyStopping\.patience: expected a positive integer, got 0/);
    expect(bad({ earlyStopping: { patience: 2, delta: 0.1 } })).toMatch(/earlyStopping.*delta/);
    expect(bad({ augmentation: { shift: 17 } })).toMatch(/augmentation\.shift: expected an integer in \[0, 16\], got 17/);
    expect(bad({ augmentation: { flip: true } })).toMatch(/augmentation\.shift/);
  });
});

describe('the participant and early stopping', () => {
  it('holds out a validation split for its own early stopping: fewer examples trained, fewer epochs run', async () => {
    const model = createModel('mlp', 3);
    const { train, test } = tinyData(3, 100, 20);
    const participant = createParticipant({
      model,
      algorithm: 'fedavg',
      // lr ~ 0 keeps validation accuracy flat, so patience 1 stops after epoch 2.
      config: { epochs: 6, lr: 1e-12, earlyStopping: { patience: 1 } },
      train,
      test,
      seed: 1,
    });
    expect(participant.data.val?.count).toBe(10);
    expect(participant.numExamples).toBe(90);
    const server = new OneClientServer(model.getWeights());
    const result = await server.round_(participant);
    expect(result.metrics.epochs).toBe(2);
    expect(result.update.numExamples).toBe(90);
    model.dispose();
  });

  it("holds out the split when a task's config first turns early stopping on, the same examples every round", async () => {
    const model = createModel('mlp', 3);
    const { train, test } = tinyData(3, 100, 20);
    const participant = createParticipant({ model, algorithm: 'fedavg', config: { epochs: 3, lr: 1e-12 }, train, test, seed: 1 });
    expect(participant.data.val).toBeUndefined();
    const server = new OneClientServer(model.getWeights());
    const plain = await server.round_(participant);
    expect(plain.metrics.epochs).toBe(3);
    expect(plain.update.numExamples).toBe(100);
    const stopping = { earlyStopping: { patience: 1 } };
    const first = await server.round_(participant, stopping);
    const second = await server.round_(participant, stopping);
    expect(first.metrics.epochs).toBe(2);
    expect(first.update.numExamples).toBe(90);
    expect(second.update.numExamples).toBe(90);
    model.dispose();
  });
});

/** One 3x3 single-channel image holding 1..9 row by row. */
function counting(count: number, channels = 1): ImageDataset {
  const size = 9 * channels;
  const images = new Uint8Array(count * size);
  for (let i = 0; i < count; i++)
    for (let p = 0; p < size; p++) images[i * size + p] = 1 + Math.floor(p / channels) + 10 * (p % channels);
  return {
    kind: 'images',
    images,
    labels: new Uint8Array(count),
    count,
    height: 3,
    width: 3,
    channels,
    numClasses: 1,
    name: 'counting',
  };
}

/** The 3x3 image 1..9 with its content moved by dx (right), dy (down), black where it moved out; mirrored first with flip. */
function shifted(dx: number, dy: number, flip: boolean): number[] {
  const rows = [
    [1, 2, 3],
    [4, 5, 6],
    [7, 8, 9],
  ].map((r) => (flip ? [...r].reverse() : r));
  const out: number[] = [];
  for (let y = 0; y < 3; y++) for (let x = 0; x < 3; x++) out.push(rows[y - dy]?.[x - dx] ?? 0);
  return out;
}

describe('image augmentation', () => {
  it('shifts each image by up to `shift` pixels with black fill, every offset drawn, seeded', () => {
    const data = counting(300);
    const a = augmentImages(data, { shift: 1, flip: false }, 7);
    const seen = new Set<string>();
    const candidates = new Map<string, string>();
    for (let dx = -1; dx <= 1; dx++)
      for (let dy = -1; dy <= 1; dy++) candidates.set(shifted(dx, dy, false).join(','), `${dx},${dy}`);
    for (let i = 0; i < data.count; i++) {
      const image = Array.from(a.images.subarray(i * 9, i * 9 + 9)).join(',');
      const offset = candidates.get(image);
      expect(offset, `image ${i}: ${image}`).toBeDefined();
      seen.add(offset!);
    }
    expect(seen.size).toBe(9);
    expect(augmentImages(data, { shift: 1, flip: false }, 7).images).toEqual(a.images);
    expect(augmentImages(data, { shift: 1, flip: false }, 8).images).not.toEqual(a.images);
    expect(a.labels).toBe(data.labels);
    // The source is untouched.
    expect(Array.from(data.images.subarray(0, 9))).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it("mirrors left-right about half the time with flip, keeping each pixel's channels together (CIFAR-like)", () => {
    const data = counting(400, 3);
    const a = augmentImages(data, { shift: 0, flip: true }, 3);
    let mirrored = 0;
    for (let i = 0; i < data.count; i++) {
      const image = Array.from(a.images.subarray(i * 27, i * 27 + 27));
      const firstRow = [image[0], image[3], image[6]];
      if (firstRow.join() === '3,2,1') mirrored++;
      else expect(firstRow).toEqual([1, 2, 3]);
      // Channel c of a pixel holds 10 c + its value: the channels moved together.
      for (let p = 0; p < 9; p++) expect([image[3 * p + 1] - image[3 * p], image[3 * p + 2] - image[3 * p]]).toEqual([10, 20]);
    }
    expect(mirrored).toBeGreaterThan(150);
    expect(mirrored).toBeLessThan(250);
    expect(augmentImages(data, { shift: 0, flip: false }, 3).images).toEqual(data.images);
  });

  it('refuses a shift that does not fit the images, and feature data', async () => {
    expect(() => augmentImages(counting(1), { shift: 3, flip: false }, 1)).toThrow(
      /augmentation.shift 3 does not fit counting's 3x3 images/,
    );
    const features: Dataset = {
      kind: 'features',
      features: new Float32Array(784 * 2),
      featureCount: 784,
      featureNames: [],
      normalization: { mean: new Array<number>(784).fill(0), std: new Array<number>(784).fill(1) },
      labels: new Uint8Array(2),
      count: 2,
      numClasses: 2,
      name: 'rows.csv',
    };
    const model = createModel('mlp', 1);
    await expect(
      trainLocal(model, features, {
        epochs: 1,
        batchSize: 2,
        lr: 0.01,
        momentum: 0,
        seed: 1,
        augmentation: { shift: 2, flip: false },
      }),
    ).rejects.toThrow(/augmentation needs image data; dataset rows.csv holds features/);
    model.dispose();
  });

  it('trains each epoch on other augmented images, identically on both engines', async () => {
    const { train } = tinyData(4, 40, 4);
    const curves = await Promise.all(
      ENGINES.map(async (engine) => {
        const model: Model = createModel('lenet5-mnist', 6);
        const opts = { epochs: 2, batchSize: 10, lr: 0.05, momentum: 0.5, seed: 9, engine };
        const augmented = await trainLocal(model, train, { ...opts, augmentation: { shift: 2, flip: false } });
        const w = model.getWeights();
        model.dispose();
        const plainModel = createModel('lenet5-mnist', 6);
        const plain = await trainLocal(plainModel, train, opts);
        plainModel.dispose();
        return { augmented, plain, w };
      }),
    );
    const [tfjs, native] = curves;
    expect(native.augmented[1].loss).toBeCloseTo(tfjs.augmented[1].loss, 4);
    expect(tfjs.augmented[0].loss).not.toBe(tfjs.plain[0].loss);
    for (const [tensor, values] of native.w) {
      const other = tfjs.w.get(tensor)!;
      for (let i = 0; i < values.length; i++) expect(Math.abs(values[i] - other[i])).toBeLessThan(1e-4);
    }
  });
});
