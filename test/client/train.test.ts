import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import { KNOWN_NORMALIZATION, type ImageDataset } from '../../client/data/dataset.js';
import { SeededRandom } from '../../proto/random.js';
import { createModel } from '../../client/model.js';
import type { ModelName } from '../../client/model-names.js';
import { crossEntropyWithStats, evaluate, normalizationFor, trainLocal } from '../../client/train.js';

beforeAll(async () => {
  await initBackend('wasm', { logger: { info: () => {} } });
});

/** A learnable toy task: class k lights up a 5-row band at rows 2k..2k+4 (plus noise). */
function bandDataset(count: number, seed: number, side = 28, channels = 1, numClasses = 4): ImageDataset {
  const rng = new SeededRandom(seed);
  const size = side * side * channels;
  const images = new Uint8Array(count * size);
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    const label = rng.int(numClasses);
    labels[i] = label;
    for (let p = 0; p < size; p++) {
      const row = Math.floor(p / (side * channels));
      const lit = row >= 2 + label * 5 && row < 7 + label * 5;
      images[i * size + p] = lit ? 200 + rng.int(56) : rng.int(60);
    }
  }
  return { kind: 'images', images, labels, count, height: side, width: side, channels, numClasses, name: 'synthetic-bands' };
}

const base = { epochs: 3, batchSize: 10, lr: 0.01, momentum: 0.5, seed: 1 };

describe('trainLocal', () => {
  it.each<ModelName>(['lenet5-mnist', 'mlp', 'lenet5-bn-mnist'])(
    'reduces the loss of %s on a small synthetic task',
    async (name) => {
      const data = bandDataset(120, 1);
      const model = createModel(name, 1);
      const before = evaluate(model, data);
      const epochs: number[] = [];
      const history = await trainLocal(model, data, { ...base, onEpochEnd: (epoch) => void epochs.push(epoch) });
      const after = evaluate(model, data);
      expect(epochs).toEqual([1, 2, 3]);
      expect(history).toHaveLength(3);
      expect(history.every((h) => h.samples === 120)).toBe(true);
      expect(history[2].loss).toBeLessThan(history[0].loss);
      expect(after.loss).toBeLessThan(before.loss);
      expect(after.accuracy).toBeGreaterThan(0.5);
      model.dispose();
    },
  );

  it('keeps weights whose gradient the hook zeroes exactly where they were (a pruning mask)', async () => {
    const model = createModel('lenet5-mnist', 2);
    const masks = new Map<string, Uint8Array>();
    const weights = model.getWeights();
    for (const spec of model.manifest) {
      if (!spec.prunable) continue;
      const w = weights.get(spec.name)!;
      const mask = new Uint8Array(w.length).map((_, i) => (i % 3 === 0 ? 0 : 1));
      for (let i = 0; i < w.length; i++) if (mask[i] === 0) w[i] = 0;
      masks.set(spec.name, mask);
    }
    model.setWeights(weights);
    const maskTensors = new Map([...masks].map(([n, m]) => [n, tf.tensor(Float32Array.from(m), model.params.get(n)!.shape)]));
    const seen = new Set<string>();
    await trainLocal(model, bandDataset(60, 2), {
      ...base,
      epochs: 2,
      gradTransform: (name, grad) => {
        seen.add(name);
        const mask = maskTensors.get(name);
        return mask ? tf.mul(grad, mask) : grad;
      },
    });
    expect([...seen].sort()).toEqual(model.manifest.map((s) => s.name).sort());
    const trained = model.getWeights();
    for (const [name, mask] of masks) {
      const w = trained.get(name)!;
      let moved = 0;
      for (let i = 0; i < w.length; i++) {
        if (mask[i] === 0) expect(Object.is(w[i], 0), `${name}[${i}]`).toBe(true);
        else if (w[i] !== weights.get(name)![i]) moved++;
      }
      expect(moved).toBeGreaterThan(0);
    }
    tf.dispose([...maskTensors.values()]);
    model.dispose();
  });

  it('keeps the number of live tensors flat across epochs and calls', async () => {
    const model = createModel('lenet5-bn-mnist', 3);
    const data = bandDataset(25, 3); // 25 = two full batches of 10 and one of 5
    const counts: number[] = [];
    const opts = { ...base, epochs: 3, onEpochEnd: () => void counts.push(tf.memory().numTensors) };
    await trainLocal(model, data, opts);
    const afterFirst = tf.memory().numTensors;
    await trainLocal(model, data, opts);
    evaluate(model, data, 7);
    expect(new Set(counts).size).toBe(1);
    expect(tf.memory().numTensors).toBe(afterFirst);
    model.dispose();
  });

  it('is deterministic for a given model seed and shuffling seed', async () => {
    const data = bandDataset(40, 4);
    const run = async (seed: number): Promise<Float32Array> => {
      const model = createModel('mlp', 9);
      await trainLocal(model, data, { ...base, epochs: 1, seed });
      const w = model.getWeights().get('fc3.weight')!;
      model.dispose();
      return w;
    };
    const a = await run(1);
    expect(await run(1)).toEqual(a);
    expect(await run(2)).not.toEqual(a);
  });

  it('takes the same steps on cpu (fused optimiser kernel) as on wasm (tf ops for fc1/fc2, fused for the rest), pruned weights staying zero', async () => {
    const data = bandDataset(30, 6);
    const mask = tf.tensor(
      Float32Array.from({ length: 200 * 10 }, (_, i) => i % 2),
      [200, 10],
    );
    const run = async (): Promise<Map<string, Float32Array>> => {
      const model = createModel('mlp', 8);
      const weights = model.getWeights();
      weights.get('fc3.weight')!.forEach((_, i, w) => {
        if (i % 2 === 0) w[i] = 0;
      });
      model.setWeights(weights);
      await trainLocal(model, data, {
        ...base,
        epochs: 2,
        gradTransform: (name, g) => (name === 'fc3.weight' ? tf.mul(g, mask) : g),
      });
      const trained = model.getWeights();
      model.dispose();
      return trained;
    };
    const onWasm = await run();
    await initBackend('cpu', { logger: { info: () => {} } });
    try {
      const onCpu = await run();
      for (const [name, w] of onWasm) {
        const v = onCpu.get(name)!;
        for (let i = 0; i < w.length; i++) expect(Math.abs(w[i] - v[i]), `${name}[${i}]`).toBeLessThan(1e-4);
      }
      expect(
        onCpu
          .get('fc3.weight')!
          .filter((_, i) => i % 2 === 0)
          .every((v) => Object.is(v, 0)),
      ).toBe(true);
    } finally {
      await initBackend('wasm', { logger: { info: () => {} } });
      mask.dispose();
    }
  });

  it('rejects bad options and mismatched data with errors naming the problem', async () => {
    const model = createModel('lenet5-mnist', 1);
    const data = bandDataset(10, 5);
    await expect(trainLocal(model, data, { ...base, batchSize: 0 })).rejects.toThrow(
      /batchSize must be a positive integer, got 0/,
    );
    await expect(trainLocal(model, data, { ...base, epochs: 1.5 })).rejects.toThrow(/epochs must be a positive integer/);
    await expect(trainLocal(model, data, { ...base, lr: -1 })).rejects.toThrow(/lr must be a positive number/);
    await expect(trainLocal(model, data, { ...base, momentum: 1 })).rejects.toThrow(/momentum must be in \[0, 1\)/);
    await expect(trainLocal(model, bandDataset(10, 5, 32, 3), base)).rejects.toThrow(
      /dataset synthetic-bands has 32x32x3 images, model lenet5-mnist expects 28x28x1/,
    );
    expect(() => evaluate(model, { ...data, count: 0, images: new Uint8Array(0), labels: new Uint8Array(0) })).toThrow(
      /is empty/,
    );
    model.dispose();
  });
});

describe('gradients', () => {
  /**
   * Checks the registered gradient of `f` at `x` against central finite differences of
   * L(x) = sum(f(x) * r) for a fixed random r, on a few coordinates. Inputs are chosen
   * away from kinks (ReLU at 0, max-pool ties), so a step of 1e-2 is accurate.
   */
  function checkGradient(label: string, f: (x: tf.Tensor) => tf.Tensor, x: tf.Tensor, seed: number): void {
    const rng = new SeededRandom(seed);
    const outShape = tf.tidy(() => f(x).shape);
    const r = tf.tensor(
      Float32Array.from({ length: outShape.reduce((a, b) => a * b, 1) }, () => rng.normal()),
      outShape,
    );
    const loss = (input: tf.Tensor): tf.Scalar => tf.sum(tf.mul(f(input), r));
    const analytic = tf.tidy(() => tf.grad(loss)(x).dataSync());
    const values = x.dataSync() as Float32Array;
    const eps = 1e-2;
    for (let probe = 0; probe < 6; probe++) {
      const i = rng.int(values.length);
      const at = (delta: number): number =>
        tf.tidy(() => {
          const shifted = values.slice();
          shifted[i] += delta;
          return loss(tf.tensor(shifted, x.shape)).dataSync()[0];
        });
      const numerical = (at(eps) - at(-eps)) / (2 * eps);
      expect(Math.abs(numerical - analytic[i]), `${label} d/dx[${i}]: ${numerical} vs ${analytic[i]}`).toBeLessThan(
        2e-3 * (1 + Math.abs(analytic[i])),
      );
    }
    r.dispose();
  }

  /** Values at least 0.05 apart and away from zero: no ReLU kinks or max-pool ties within a step. */
  function spread(shape: number[], seed: number): tf.Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    const p = new SeededRandom(seed).permutation(n);
    return tf.tensor(
      Float32Array.from(p, (k) => (k - n / 2 + 0.5) * 0.05),
      shape,
    );
  }

  it('match finite differences for every op our models differentiate through (cpu)', async () => {
    await initBackend('cpu', { logger: { info: () => {} } });
    try {
      const rng = new SeededRandom(9);
      const randn = (shape: number[]): tf.Tensor =>
        tf.tensor(
          Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal()),
          shape,
        );
      const bias = randn([5]);
      const matrix = randn([4, 5]);
      const kernel = randn([3, 3, 2, 4]);
      const image = randn([2, 7, 7, 2]);
      const gamma = randn([2]);
      checkGradient('add (broadcast)', (x) => tf.add(x, bias), randn([3, 5]), 1);
      checkGradient('add (broadcast, bias side)', (b) => tf.add(matrix, b), randn([5]), 2);
      checkGradient('sub (broadcast, both sides)', (b) => tf.sub(tf.sub(matrix, b), tf.mul(b, 2)), randn([5]), 3);
      checkGradient('mul (broadcast)', (g) => tf.mul(image, g), randn([2]), 4);
      checkGradient('neg, reshape', (x) => tf.reshape(tf.neg(x), [5, 3]), randn([3, 5]), 5);
      checkGradient(
        'sum and mean over axes',
        (x) => tf.add(tf.sum(x, 1), tf.reshape(tf.mean(tf.square(x), [1, 2]), [2, 1])),
        randn([2, 3, 4]),
        6,
      );
      checkGradient('rsqrt', (x) => tf.rsqrt(tf.add(tf.square(x), 0.5)), randn([6]), 7);
      checkGradient('relu', (x) => tf.relu(x), spread([4, 6], 8), 8);
      checkGradient('maxPool', (x) => tf.maxPool(x as tf.Tensor4D, 2, 2, 'valid'), spread([2, 6, 6, 3], 9), 9);
      for (const [ta, tb] of [
        [false, false],
        [false, true],
        [true, false],
        [true, true],
      ] as const) {
        const other = randn(tb ? [6, 5] : [5, 6]);
        checkGradient(`matMul a (${ta}, ${tb})`, (a) => tf.matMul(a, other, ta, tb), randn(ta ? [5, 4] : [4, 5]), 10);
        const left = randn(ta ? [5, 4] : [4, 5]);
        checkGradient(`matMul b (${ta}, ${tb})`, (b) => tf.matMul(left, b, ta, tb), other, 11);
      }
      for (const pad of ['valid', 'same', 1] as const) {
        checkGradient(`conv2d input (${pad})`, (x) => tf.conv2d(x as tf.Tensor4D, kernel as tf.Tensor4D, [2, 1], pad), image, 12);
        checkGradient(
          `conv2d filter (${pad})`,
          (w) => tf.conv2d(image as tf.Tensor4D, w as tf.Tensor4D, [1, 2], pad),
          kernel,
          13,
        );
      }
      const batchNorm = (x: tf.Tensor, g: tf.Tensor): tf.Tensor => {
        const { mean, variance } = tf.moments(x, [0, 1, 2]);
        return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, 1e-5))), g), 0.1);
      };
      checkGradient('batch norm (input, through the batch statistics)', (x) => batchNorm(x, gamma), image, 14);
      checkGradient('batch norm (gamma)', (g) => batchNorm(image, g), gamma, 15);
    } finally {
      await initBackend('wasm', { logger: { info: () => {} } });
    }
  });

  it('cross-entropy by hand: loss, accuracy and gradient match the tf-op formulation', () => {
    const rng = new SeededRandom(21);
    const labels = Int32Array.from([0, 3, 7, 9, 3, 1], (l) => l);
    const logits = tf.tensor2d(
      Float32Array.from({ length: 6 * 10 }, () => rng.normal() * 3),
      [6, 10],
    );
    const oneHot = tf.oneHot(tf.tensor1d(labels, 'int32'), 10);
    const reference = (x: tf.Tensor): tf.Scalar => tf.neg(tf.mean(tf.sum(tf.mul(oneHot, tf.logSoftmax(x)), 1))) as tf.Scalar;
    let stats = { loss: Number.NaN, correct: -1 };
    const got = tf.valueAndGrad((x: tf.Tensor) =>
      crossEntropyWithStats(x as tf.Tensor2D, labels, (s) => {
        stats = s;
      }),
    )(logits);
    const want = tf.valueAndGrad(reference)(logits);
    expect(got.value.dataSync()[0]).toBeCloseTo(want.value.dataSync()[0], 5);
    expect(stats.loss).toBeCloseTo(want.value.dataSync()[0], 5);
    const predicted = tf.argMax(logits, 1).dataSync();
    expect(stats.correct).toBe(labels.filter((l, i) => predicted[i] === l).length);
    const g = got.grad.dataSync();
    const w = want.grad.dataSync();
    for (let i = 0; i < w.length; i++) expect(g[i]).toBeCloseTo(w[i], 6);
    // The upstream gradient scales it (here 3 * loss).
    const scaled = tf
      .grad((x: tf.Tensor) =>
        tf.mul(
          crossEntropyWithStats(x as tf.Tensor2D, labels, () => {}),
          3,
        ),
      )(logits)
      .dataSync();
    for (let i = 0; i < w.length; i++) expect(scaled[i]).toBeCloseTo(3 * w[i], 5);
    tf.dispose([logits, oneHot, got.value, got.grad, want.value, want.grad]);
  });

  it('gives every trainable tensor of every model a finite gradient', () => {
    for (const name of ['mlp', 'lenet5-cifar', 'lenet5-bn-cifar'] as const) {
      const model = createModel(name, 11);
      const x = tf.randomNormal<tf.Rank.R4>([4, ...model.inputShape]);
      const labels = tf.oneHot(tf.tensor1d([0, 3, 7, 9], 'int32'), 10);
      const { value, grads } = tf.variableGrads(
        () => tf.neg(tf.mean(tf.sum(tf.mul(labels, tf.logSoftmax(model.forward(x, true))), 1))) as tf.Scalar,
        [...model.params.values()],
      );
      for (const [tensorName, v] of model.params) {
        const g = grads[v.name];
        expect(g?.shape, `${name} ${tensorName}`).toEqual(v.shape);
        const data = g.dataSync();
        expect(data.every(Number.isFinite) && data.some((d) => d !== 0), `${name} ${tensorName}`).toBe(true);
      }
      tf.dispose([x, labels, value, ...Object.values(grads)]);
      model.dispose();
    }
  });
});

describe('normalizationFor', () => {
  it("uses the dataset's own constants and [-1, 1] otherwise", () => {
    const fashion = KNOWN_NORMALIZATION['fashion-mnist'];
    expect(normalizationFor({ name: 'f', channels: 1, normalization: fashion })).toEqual({ mean: [0.286], std: [0.353] });
    expect(normalizationFor({ name: 'synthetic', channels: 2 })).toEqual({ mean: [0.5, 0.5], std: [0.5, 0.5] });
  });

  it('rejects constants that do not fit the channel count, naming the dataset', () => {
    expect(() => normalizationFor({ name: 'rgb/train', channels: 3, normalization: KNOWN_NORMALIZATION.mnist })).toThrow(
      'rgb/train: normalization has 1 means and 1 stds for 3 channels',
    );
  });
});
