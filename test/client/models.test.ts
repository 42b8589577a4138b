import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import { createModel, parameterCount } from '../../client/model.js';
import { MODEL_NAMES, type ModelName } from '../../client/model-names.js';

beforeAll(async () => {
  await initBackend('wasm', { logger: { info: () => {} } });
});

const EXPECTED: Record<ModelName, { params: number; input: [number, number, number]; tensors: number; personal: number }> = {
  mlp: { params: 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10, input: [28, 28, 1], tensors: 6, personal: 0 },
  'lenet5-mnist': { params: 21_840, input: [28, 28, 1], tensors: 8, personal: 0 },
  'lenet5-cifar': { params: 62_006, input: [32, 32, 3], tensors: 10, personal: 0 },
  // BatchNorm adds gamma and beta per channel (10+20, resp. 6+16); running stats are personal.
  'lenet5-bn-mnist': { params: 21_840 + 2 * 30, input: [28, 28, 1], tensors: 12, personal: 4 },
  'lenet5-bn-cifar': { params: 62_006 + 2 * 22, input: [32, 32, 3], tensors: 14, personal: 4 },
};

describe.each(MODEL_NAMES)('%s', (name) => {
  it('has the reference parameter count, input shape and manifest', () => {
    const model = createModel(name, 1);
    const want = EXPECTED[name];
    expect(parameterCount(model.manifest)).toBe(want.params);
    expect(model.inputShape).toEqual(want.input);
    expect(model.manifest).toHaveLength(want.tensors);
    expect(model.personal.size).toBe(want.personal);
    for (const spec of model.manifest) {
      expect(model.params.get(spec.name)?.shape).toEqual(spec.shape);
      // Exactly the conv kernels and dense matrices are prunable.
      expect(spec.prunable).toBe(spec.shape.length >= 2);
    }
    model.dispose();
  });

  it('is bit-identical for the same seed and different for another seed', () => {
    const a = createModel(name, 123);
    const b = createModel(name, 123);
    const c = createModel(name, 124);
    const wa = a.getWeights();
    const wb = b.getWeights();
    const wc = c.getWeights();
    for (const spec of a.manifest) {
      expect(Buffer.from(wb.get(spec.name)!.buffer).equals(Buffer.from(wa.get(spec.name)!.buffer))).toBe(true);
    }
    expect(wc.get(a.manifest[0].name)).not.toEqual(wa.get(a.manifest[0].name));
    tf.dispose([a, b, c].flatMap((m) => [...m.params.values(), ...m.personal.values()]));
  });

  it('maps a batch to logits of shape [batch, 10] in both modes without leaking tensors', () => {
    const model = createModel(name, 2);
    const x = tf.randomNormal<tf.Rank.R4>([3, ...model.inputShape]);
    const before = tf.memory().numTensors;
    for (const training of [false, true]) {
      const logits = model.forward(x, training);
      expect(logits.shape).toEqual([3, 10]);
      expect(Array.from(logits.dataSync()).every(Number.isFinite)).toBe(true);
      logits.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
    x.dispose();
    model.dispose();
  });
});

describe('weights and personal state', () => {
  it('round-trips weights and rejects unknown, missing and wrong-length tensors without changing the model', () => {
    const model = createModel('lenet5-mnist', 5);
    const weights = model.getWeights();
    weights.get('fc2.bias')!.fill(0.25);
    model.setWeights(weights);
    expect(Array.from(model.getWeights().get('fc2.bias')!)).toEqual(new Array(10).fill(0.25));

    const extra = new Map(weights).set('fc9.weight', new Float32Array(1));
    expect(() => model.setWeights(extra)).toThrow(/unknown tensor "fc9.weight"/);
    const missing = new Map(weights);
    missing.delete('conv1.weight');
    expect(() => model.setWeights(missing)).toThrow(/"conv1.weight" is missing/);
    const short = new Map(weights).set('fc1.weight', new Float32Array(3));
    short.get('fc2.bias')!.fill(9);
    expect(() => model.setWeights(short)).toThrow(/"fc1.weight" has 3 values, shape \[320, 50\] needs 16000/);
    // Validation happens before any write.
    expect(model.getWeights().get('fc2.bias')![0]).toBe(0.25);
    model.dispose();
    expect(() => model.getWeights()).toThrow(/disposed/);
  });

  it('keeps BatchNorm running statistics personal: updated by training-mode forward only', () => {
    const model = createModel('lenet5-bn-mnist', 3);
    expect([...model.personal.keys()]).toEqual(['bn1.running_mean', 'bn1.running_var', 'bn2.running_mean', 'bn2.running_var']);
    expect(model.manifest.some((s) => s.name.includes('running'))).toBe(false);
    const x = tf.randomNormal<tf.Rank.R4>([4, 28, 28, 1], 2, 1);
    tf.dispose(model.forward(x, false));
    expect(Array.from(model.getPersonal().get('bn1.running_mean')!)).toEqual(new Array(10).fill(0));
    tf.dispose(model.forward(x, true));
    const after = model.getPersonal();
    expect(after.get('bn1.running_mean')!.some((v) => v !== 0)).toBe(true);
    const reset = new Map(after);
    reset.set('bn1.running_var', new Float32Array(10).fill(1));
    model.setPersonal(reset);
    expect(Array.from(model.getPersonal().get('bn1.running_var')!)).toEqual(new Array(10).fill(1));
    expect(() => model.setPersonal(new Map())).toThrow(/"bn1.running_mean" is missing/);
    x.dispose();
    model.dispose();
  });

  it('describes the BatchNorm channel groups for hybrid pruning', () => {
    const mnist = createModel('lenet5-bn-mnist', 1);
    expect(mnist.channelGroups).toEqual([
      {
        gamma: 'bn1.weight',
        beta: 'bn1.bias',
        kernel: 'conv1.weight',
        bias: 'conv1.bias',
        channels: 10,
        next: { weight: 'conv2.weight', kind: 'conv', spatial: 1 },
      },
      {
        gamma: 'bn2.weight',
        beta: 'bn2.bias',
        kernel: 'conv2.weight',
        bias: 'conv2.bias',
        channels: 20,
        next: { weight: 'fc1.weight', kind: 'flatten-dense', spatial: 16 },
      },
    ]);
    const cifar = createModel('lenet5-bn-cifar', 1);
    expect(cifar.channelGroups[1]).toMatchObject({
      channels: 16,
      next: { weight: 'fc1.weight', kind: 'flatten-dense', spatial: 25 },
    });
    expect(createModel('lenet5-mnist', 1).channelGroups).toEqual([]);
    mnist.dispose();
    cifar.dispose();
  });

  it('maps a removed channel to the flatten-dense rows p*channels + c of the next layer', () => {
    const model = createModel('lenet5-bn-mnist', 4);
    const group = model.channelGroups[1];
    const removed = 7;
    const weights = model.getWeights();
    // Removing channel 7 of conv2 the hybrid way: its BatchNorm scale and shift are zero.
    weights.get(group.gamma)![removed] = 0;
    weights.get(group.beta)![removed] = 0;
    model.setWeights(weights);
    const x = tf.randomNormal<tf.Rank.R4>([2, 28, 28, 1], 0, 1, 'float32', 3);
    const before = model.forward(x, false).dataSync();
    // Scramble exactly the rows fed by that channel: the output must not move.
    const fc1 = weights.get(group.next.weight)!;
    const outputs = 50;
    for (let p = 0; p < group.next.spatial; p++) {
      const row = p * group.channels + removed;
      for (let j = 0; j < outputs; j++) fc1[row * outputs + j] = 100 + j;
    }
    model.setWeights(weights);
    expect(Array.from(model.forward(x, false).dataSync())).toEqual(Array.from(before));
    // A row of another channel does move it.
    fc1[(3 * group.channels + removed + 1) * outputs] = 100;
    model.setWeights(weights);
    expect(Array.from(model.forward(x, false).dataSync())).not.toEqual(Array.from(before));
    x.dispose();
    model.dispose();
  });

  it('leaks no tensors: createModel + dispose, and repeated setWeights/setPersonal', () => {
    const start = tf.memory();
    for (const name of MODEL_NAMES) createModel(name, 7).dispose();
    expect(tf.memory().numTensors).toBe(start.numTensors);
    expect(tf.memory().numBytes).toBe(start.numBytes);

    const model = createModel('lenet5-bn-mnist', 8);
    const weights = model.getWeights();
    const personal = model.getPersonal();
    const held = tf.memory();
    for (let i = 0; i < 5; i++) {
      weights.get('fc2.bias')!.fill(i);
      model.setWeights(weights);
      personal.get('bn1.running_var')!.fill(i + 1);
      model.setPersonal(personal);
    }
    // One tensor per variable, no more: the temporaries assigned from are gone, and so
    // are the values they replaced.
    expect(tf.memory().numTensors).toBe(held.numTensors);
    expect(tf.memory().numTensors - start.numTensors).toBe(model.params.size + model.personal.size);
    expect(tf.memory().numBytes).toBe(held.numBytes);
    expect(Array.from(model.getWeights().get('fc2.bias')!)).toEqual(new Array(10).fill(4));
    expect(Array.from(model.getPersonal().get('bn1.running_var')!)).toEqual(new Array(10).fill(5));
    model.dispose();
    expect(tf.memory().numTensors).toBe(start.numTensors);
    expect(tf.memory().numBytes).toBe(start.numBytes);
  });

  it('rejects an unknown model name', () => {
    expect(() => createModel('resnet' as ModelName, 1)).toThrow(/unknown model "resnet"/);
  });
});
