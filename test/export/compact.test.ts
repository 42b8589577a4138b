// Compact export on hand-made masks: which units go, what is folded, and that the
// compact model computes the masked model's logits.
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import { syntheticDataset } from '../../client/data/synthetic.js';
import { compactModel } from '../../client/export/compact.js';
import { instantiate, keptParameterTotal, parameterTotal, type PortableModel } from '../../client/export/portable.js';
import { createModelFromArchitecture, type Architecture } from '../../client/model.js';
import { fullMasks } from '../../client/prune.js';
import { predictLogits } from '../../client/train.js';
import { Mask } from '../../proto/mask.js';
import { SeededRandom } from '../../proto/random.js';

beforeAll(async () => {
  await initBackend('wasm', { logger: { info: () => {} } });
});

/** 12x12 grey input -> conv1 3x3 (4 ch, BatchNorm) -> pool -> conv2 2x2 (3 ch) -> pool -> fc1 (5, ReLU) -> fc2 (3). */
const ARCH: Architecture = {
  inputShape: [12, 12, 1],
  layers: [
    { kind: 'conv', name: 'conv1', inC: 1, outC: 4, size: 3, batchNorm: 'bn1' },
    { kind: 'conv', name: 'conv2', inC: 4, outC: 3, size: 2 },
    { kind: 'dense', name: 'fc1', inputs: 12, outputs: 5, relu: true },
    { kind: 'dense', name: 'fc2', inputs: 5, outputs: 3, relu: false },
  ],
};

const data = syntheticDataset({ count: 48, classes: 3, height: 12, width: 12, channels: 1, seed: 4 });

/** The architecture with seeded weights, BatchNorm parameters and running statistics away from their defaults. */
function source(masks?: (m: Map<string, Mask>) => void): PortableModel {
  const model = createModelFromArchitecture('lenet5-bn-mnist', ARCH, 11);
  const rng = new SeededRandom(5);
  const weights = model.getWeights();
  weights.set(
    'bn1.weight',
    Float32Array.from({ length: 4 }, () => 0.5 + rng.next()),
  );
  weights.set(
    'bn1.bias',
    Float32Array.from({ length: 4 }, () => rng.next() - 0.5),
  );
  const personal = new Map([
    ['bn1.running_mean', Float32Array.from({ length: 4 }, () => rng.next() - 0.5)],
    ['bn1.running_var', Float32Array.from({ length: 4 }, () => 0.2 + rng.next())],
  ]);
  const manifest = model.manifest;
  model.dispose();
  const m = new Map(fullMasks(manifest));
  masks?.(m);
  return {
    family: 'lenet5-bn-mnist',
    architecture: ARCH,
    weights,
    personal,
    masks: m,
    input: { kind: 'images', mean: [0.5], std: [0.5] },
  };
}

/** A mask of `length` entries with `pruned(i)` ones removed. */
const without = (length: number, pruned: (i: number) => boolean): Mask =>
  Mask.build(length, (bits) => {
    for (let i = 0; i < length; i++) bits[i] = pruned(i) ? 0 : 1;
  });

/** Logits of a portable model on `data`, per engine. */
function logits(portable: PortableModel, engine: 'native' | 'tfjs'): Float32Array {
  const model = instantiate(portable);
  try {
    return predictLogits(model, data, engine);
  } finally {
    model.dispose();
  }
}

const maxDifference = (a: Float32Array, b: Float32Array): number => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

/** The masked model itself: weights times masks, full shape. */
function masked(p: PortableModel): PortableModel {
  const weights = new Map([...p.weights].map(([name, w]) => [name, p.masks.get(name)!.applyTo(w)]));
  return { ...p, weights };
}

describe('compactModel', () => {
  it('removes silent and unread units, folds the silent ones into the next bias, and keeps the logits', () => {
    const src = source((m) => {
      // conv1 channel 1: gamma pruned, beta kept at 0.7 -> constant relu(0.7) feeds conv2.
      m.set(
        'bn1.weight',
        without(4, (c) => c === 1),
      );
      // conv1 channel 2: its whole kernel slice pruned -> constant relu(BN(bias)).
      m.set(
        'conv1.weight',
        without(9 * 4, (i) => i % 4 === 2),
      );
      // conv2 channel 0: nothing in fc1 reads it (rows p*3 + 0); one more weight pruned on its own (row 1, neuron 0).
      m.set(
        'fc1.weight',
        without(12 * 5, (i) => Math.floor(i / 5) % 3 === 0 || i % 5 === 3 || i === 5),
      );
      // fc1 neuron 3: no incoming weight (above) -> constant relu(bias); neuron 4: fc2 does not read it.
      m.set(
        'fc2.weight',
        without(5 * 3, (i) => Math.floor(i / 3) === 4),
      );
    });
    src.weights.get('bn1.bias')![1] = 0.7;
    src.weights.get('conv1.bias')![2] = 0.3;
    src.weights.get('fc1.bias')![3] = 0.4;

    const { model: compact, layers } = compactModel(src);
    expect(layers.map((l) => [l.name, l.before, l.after])).toEqual([
      ['conv1', 4, 2],
      ['conv2', 3, 2],
      ['fc1', 5, 3],
      ['fc2', 3, 3],
    ]);
    expect(compact.architecture.layers).toEqual([
      { kind: 'conv', name: 'conv1', inC: 1, outC: 2, size: 3, batchNorm: 'bn1' },
      { kind: 'conv', name: 'conv2', inC: 2, outC: 2, size: 2 },
      { kind: 'dense', name: 'fc1', inputs: 8, outputs: 3, relu: true },
      { kind: 'dense', name: 'fc2', inputs: 3, outputs: 3, relu: false },
    ]);
    expect(compact.weights.get('conv1.weight')).toHaveLength(3 * 3 * 1 * 2);
    expect(compact.personal.get('bn1.running_var')).toEqual(
      Float32Array.from([0, 3].map((c) => src.personal.get('bn1.running_var')![c])),
    );
    // The constants went into the next biases: conv2's (channels 1 and 2 of conv1) and fc2's (neuron 3 of fc1).
    expect(compact.weights.get('conv2.bias')).not.toEqual(
      Float32Array.from([1, 2].map((c) => src.weights.get('conv2.bias')![c])),
    );
    expect(compact.weights.get('fc2.bias')).not.toEqual(src.weights.get('fc2.bias'));
    // Masks are cut the same way: fc1's unstructured zeros stay pruned.
    expect(compact.masks.get('fc1.weight')!.length).toBe(8 * 3);
    expect(parameterTotal(compact) - keptParameterTotal(compact)).toBe(1);

    const reference = logits(masked(src), 'tfjs');
    expect(maxDifference(logits(compact, 'tfjs'), reference)).toBeLessThan(1e-5);
    expect(maxDifference(logits(compact, 'native'), reference)).toBeLessThan(1e-5);
  });

  it('changes nothing in a model without pruning', () => {
    const src = source();
    const { model: compact, layers } = compactModel(src);
    expect(layers.every((l) => l.before === l.after)).toBe(true);
    expect(compact.architecture).toEqual(ARCH);
    for (const [name, w] of src.weights) expect(compact.weights.get(name)).toEqual(w);
    expect(logits(compact, 'tfjs')).toEqual(logits(src, 'tfjs'));
  });

  it('keeps one unit of a layer whose every unit could go', () => {
    const src = source((m) =>
      m.set(
        'bn1.weight',
        without(4, () => true),
      ),
    );
    const { model: compact, layers } = compactModel(src);
    expect(layers[0]).toMatchObject({ before: 4, after: 1 });
    expect(maxDifference(logits(compact, 'tfjs'), logits(masked(src), 'tfjs'))).toBeLessThan(1e-5);
  });

  it('refuses a model that lacks a tensor, naming it', () => {
    const src = source();
    const weights = new Map(src.weights);
    weights.delete('conv2.bias');
    expect(() => compactModel({ ...src, weights })).toThrow("compact: the model has no bias 'conv2.bias'");
  });
});
