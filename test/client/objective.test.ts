// The hand-written training objectives: gradients against finite differences, the
// hard-label case against the cross-entropy the training loop uses, and distillation
// training on both engines.
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import { createModel } from '../../client/model.js';
import { logitObjective } from '../../client/objective.js';
import { crossEntropyWithStats, predictLogits, trainLocal } from '../../client/train.js';
import { SeededRandom } from '../../proto/random.js';
import { tinyData } from './participant-helpers.js';

beforeAll(async () => {
  await initBackend('wasm', { logger: { info: () => {} } });
});

const rng = new SeededRandom(3);
const ROWS = 4;
const CLASSES = 5;
const logits = Float64Array.from({ length: ROWS * CLASSES }, () => (rng.next() - 0.5) * 6);
const teacher = Float32Array.from({ length: ROWS * CLASSES }, () => (rng.next() - 0.5) * 6);
const labels = Int32Array.from([0, 3, 4, 1]);

describe('logitObjective', () => {
  it.each([
    ['labels only', undefined],
    ['soft targets, T 4, alpha 0.9', { teacher, temperature: 4, alpha: 0.9 }],
    ['soft targets only, T 2', { teacher, temperature: 2, alpha: 1 }],
  ] as const)('%s: the gradient is the derivative of the mean loss', (_name, soft) => {
    const at = (values: Float64Array): number => logitObjective(values, ROWS, CLASSES, labels, soft).loss;
    const { grad } = logitObjective(logits, ROWS, CLASSES, labels, soft);
    const h = 1e-5;
    for (let i = 0; i < logits.length; i++) {
      const up = Float64Array.from(logits);
      const down = Float64Array.from(logits);
      up[i] += h;
      down[i] -= h;
      expect(grad[i]).toBeCloseTo((at(up) - at(down)) / (2 * h), 5);
    }
  });

  it('with the labels alone it is the training loop’s cross-entropy', () => {
    const values = Float32Array.from(logits);
    let stats = { loss: 0, correct: 0 };
    const loss = crossEntropyWithStats(tf.tensor2d(values, [ROWS, CLASSES]), labels, (s) => (stats = s));
    const ours = logitObjective(values, ROWS, CLASSES, labels);
    expect(ours.loss).toBeCloseTo(loss.dataSync()[0], 5);
    expect(ours.correct).toBe(stats.correct);
    loss.dispose();
  });

  it('soft targets equal to the student cost nothing beyond the labels: the KL term is zero', () => {
    const values = Float32Array.from(logits);
    const same = logitObjective(values, ROWS, CLASSES, labels, { teacher: values, temperature: 3, alpha: 0.5 });
    const hard = logitObjective(values, ROWS, CLASSES, labels);
    expect(same.loss).toBeCloseTo(0.5 * hard.loss, 6);
  });

  it('refuses mismatched sizes', () => {
    expect(() => logitObjective(new Float32Array(6), 2, 3, [0])).toThrow('objective: 1 labels for 2 rows');
    expect(() =>
      logitObjective(new Float32Array(6), 2, 3, [0, 1], { teacher: new Float32Array(3), temperature: 1, alpha: 1 }),
    ).toThrow('objective: 3 teacher logits for 2 rows of 3');
  });
});

describe('trainLocal with soft targets', () => {
  it('trains the same on the native engine and on tfjs, and differently from the labels alone', async () => {
    const { train } = tinyData(5, 60, 10, 3);
    const teacherModel = createModel('lenet5-bn-mnist', 2);
    const soft = { logits: predictLogits(teacherModel, train), temperature: 4, alpha: 0.9 };
    teacherModel.dispose();
    const run = async (engine: 'native' | 'tfjs', withSoft: boolean): Promise<Map<string, Float32Array>> => {
      const model = createModel('lenet5-mnist', 1);
      await trainLocal(model, train, {
        epochs: 1,
        batchSize: 10,
        lr: 0.05,
        momentum: 0.5,
        seed: 7,
        engine,
        ...(withSoft ? { softTargets: soft } : {}),
      });
      const w = model.getWeights();
      model.dispose();
      return w;
    };
    const native = await run('native', true);
    const tfjs = await run('tfjs', true);
    const hard = await run('native', false);
    for (const [name, w] of native) {
      const other = tfjs.get(name)!;
      for (let i = 0; i < w.length; i++) expect(Math.abs(w[i] - other[i])).toBeLessThan(1e-4);
    }
    const fc2 = native.get('fc2.weight')!;
    expect(fc2.some((v, i) => Math.abs(v - hard.get('fc2.weight')![i]) > 1e-4)).toBe(true);
  });

  it('refuses soft targets that do not cover the training set', async () => {
    const { train } = tinyData(5, 20, 10, 3);
    const model = createModel('lenet5-mnist', 1);
    await expect(
      trainLocal(model, train, {
        epochs: 1,
        batchSize: 10,
        lr: 0.05,
        momentum: 0.5,
        seed: 7,
        softTargets: { logits: new Float32Array(10), temperature: 4, alpha: 0.9 },
      }),
    ).rejects.toThrow('soft targets: 10 logits, 20 examples of 10 classes need 200');
    model.dispose();
  });
});
