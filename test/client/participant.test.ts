import { beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import { createModel } from '../../client/model.js';
import { algorithmNames, describeAlgorithm } from '../../client/algorithms/index.js';
import {
  createParticipant,
  TaskError,
  updateDelta,
  type DenseTask,
  type FederatedParticipant,
  type FederatedRoundResult,
  type LocalParticipant,
  type LocalUpdate,
  type ReceivedTask,
} from '../../client/participant.js';
import { applyMasks, prunePercentile } from '../../client/prune.js';
import { evaluate } from '../../client/train.js';
import type { SparseValues } from '../../proto/codec.js';
import { Mask } from '../../proto/mask.js';
import { OneClientServer, shared, tinyData } from './participant-helpers.js';

beforeAll(async () => {
  await initBackend('wasm', { logger: { info: () => {} } });
});

function mlpParticipant(algorithm: 'fedavg' | 'subfedavg-un' = 'fedavg', config: object = { epochs: 1, lr: 0.05 }) {
  const model = createModel('mlp', 11);
  const { train, test } = tinyData(11, 60, 20);
  return { model, participant: createParticipant({ model, algorithm, config, train, test, seed: 11 }), train, test };
}

describe('updateDelta', () => {
  it('is trained - received at the kept positions, in index order', () => {
    const d = updateDelta(Float32Array.from([1, 5, 3, 9]), Float32Array.from([0.5, 4, 3, 1]), Mask.fromBytes([1, 0, 1, 1]));
    expect([...d]).toEqual([0.5, 0, 8]);
  });
});

describe('createParticipant', () => {
  it("gives each algorithm a participant of the registry's kind for it", () => {
    const { train, test } = tinyData(14, 30, 10);
    for (const name of algorithmNames()) {
      const descriptor = describeAlgorithm(name);
      const model = createModel(descriptor.requiresBatchNorm ? 'lenet5-bn-mnist' : 'mlp', 14);
      const participant = createParticipant({ model, algorithm: name, train, test, seed: 14 });
      expect([participant.kind, participant.algorithm.kind, participant.algorithm.name]).toEqual([
        descriptor.kind,
        descriptor.kind,
        name,
      ]);
      model.dispose();
    }
    // ... and so do the types: a federated round always yields an update, a local one never takes a task.
    expectTypeOf(createParticipant<'subfedavg-un'>).returns.toEqualTypeOf<FederatedParticipant>();
    expectTypeOf(createParticipant<'local'>).returns.toEqualTypeOf<LocalParticipant>();
    expectTypeOf<FederatedRoundResult['update']>().toEqualTypeOf<LocalUpdate>();
    expectTypeOf<LocalParticipant['localRound']>().parameters.toEqualTypeOf<[]>();
  });
});

describe('FederatedParticipant.localRound', () => {
  it('builds w = global at kept positions and uploads the delta at the new kept positions', async () => {
    const { model, participant } = mlpParticipant();
    const server = new OneClientServer(model.getWeights());
    await server.round_(participant); // first contact: dense
    const before = new Map([...server.global].map(([n, w]) => [n, Float32Array.from(w)]));
    const task = server.task();
    const result = await participant.localRound(task);
    const trained = model.getWeights();
    for (const [name, u] of result.update.tensors) {
      const t = shared(u);
      // received + delta == trained, at every kept position
      const rebuilt = t.mask.scatter(t.kept);
      const g = before.get(name)!;
      const w = trained.get(name)!;
      for (let i = 0; i < w.length; i++) if (t.mask.has(i)) expect(g[i] + rebuilt[i]).toBeCloseTo(w[i], 5);
    }
    expect(task.kind).toBe('sparse');
    expect(result.update).toMatchObject({
      round: task.round,
      numExamples: participant.numExamples,
      baseMaskVersion: 0,
      maskChange: { kind: 'unchanged' },
    });
    model.dispose();
  });

  it('zeroes received values outside its own mask and keeps BN running stats personal', async () => {
    const model = createModel('lenet5-bn-mnist', 12);
    const { train, test } = tinyData(12, 40, 20);
    const participant = createParticipant({ model, algorithm: 'fedavg', config: { epochs: 1 }, train, test, seed: 12 });
    const personal = model.getPersonal();
    const global = model.getWeights();
    // the coordinator's values are whatever it holds; the client takes them as sent (all-ones mask)
    const task: ReceivedTask = {
      kind: 'dense',
      round: 1,
      maskVersion: 0,
      tensors: new Map([...global].map(([n, w]) => [n, w.map((x) => x + 1)])),
    };
    const result = await participant.localRound(task);
    expect(result.update.tensors.size).toBe(model.manifest.length);
    // running stats moved by local training only; they are no manifest tensor and never uploaded
    for (const name of personal.keys()) expect(result.update.tensors.has(name)).toBe(false);
    expect(model.getPersonal().get('bn1.running_var')).not.toEqual(personal.get('bn1.running_var'));
    model.dispose();
  });

  it('sends the mask only for tensors whose mask changed, and bumps the mask version once', async () => {
    const { model, participant } = mlpParticipant('subfedavg-un', { epochs: 2, lr: 0.05, gateOn: 'test', accThresh: 0 });
    const server = new OneClientServer(model.getWeights());
    const result = await server.round_(participant);
    const changed = [...result.update.tensors].filter(([, t]) => t.maskChanged).map(([n]) => n);
    expect(changed.sort()).toEqual(
      model.manifest
        .filter((s) => s.prunable)
        .map((s) => s.name)
        .sort(),
    );
    expect(result.update.maskChange).toEqual({ kind: 'changed', version: 1 });
    expect(participant.maskVersion).toBe(1);
    for (const t of result.update.tensors.values()) expect(shared(t).kept.length).toBe(shared(t).mask.keptCount);
    model.dispose();
  });

  it('resends every mask when the coordinator holds another mask version', async () => {
    const { model, participant } = mlpParticipant();
    const server = new OneClientServer(model.getWeights());
    await server.round_(participant);
    // A coordinator on another mask version than ours sends the dense model.
    const task: DenseTask = {
      kind: 'dense',
      round: server.round + 1,
      maskVersion: 5,
      tensors: new Map([...server.global].map(([n, w]) => [n, Float32Array.from(w)])),
    };
    const result = await participant.localRound(task);
    expect([...result.update.tensors.values()].every((t) => t.maskChanged)).toBe(true);
    expect(result.update.baseMaskVersion).toBe(5);
    // Above the coordinator's 5, which refuses any new version not above the one it holds.
    expect(result.update.maskChange).toEqual({ kind: 'changed', version: 6 });
    expect(participant.maskVersion).toBe(6);
    model.dispose();
  });

  it('applies the coordinator training config over its own', async () => {
    const { model, participant } = mlpParticipant();
    const server = new OneClientServer(model.getWeights());
    await expect(participant.localRound(server.task({ epochs: 0 }))).rejects.toThrow(TaskError);
    await expect(participant.localRound(server.task({ epochs: 0 }))).rejects.toThrow(
      /^round \d+: task config: epochs: expected a positive integer, got 0$/,
    );
    await expect(participant.localRound(server.task('fast'))).rejects.toThrow(
      /task config: \(config\): expected a JSON object, got "fast"/,
    );
    // the same strict schema as the coordinator's: a misspelt field is refused, not dropped
    await expect(participant.localRound(server.task({ epoch: 3 }))).rejects.toThrow(
      /task config: \(config\): unknown field\(s\) epoch/,
    );
    // a valid override takes effect: a tenfold learning rate moves the weights further
    const before = model.getWeights();
    const slow = await participant.localRound(server.task({ lr: 0.005 }));
    const distance = (from: Map<string, Float32Array>) =>
      [...model.getWeights()].reduce((sum, [name, w]) => sum + w.reduce((s, x, i) => s + Math.abs(x - from.get(name)![i]), 0), 0);
    expect(slow.update).toBeDefined();
    const slowMoved = distance(before);
    model.setWeights(before);
    await participant.localRound(server.task({ lr: 0.05 }));
    expect(distance(before)).toBeGreaterThan(slowMoved);
    model.dispose();
  });

  it('refuses a task whose epochs a pruning algorithm cannot prune with, naming the field', async () => {
    const { model, participant } = mlpParticipant('subfedavg-un', { epochs: 2, lr: 0.05, gateOn: 'test' });
    const server = new OneClientServer(model.getWeights());
    const weights = model.getWeights();
    await expect(participant.localRound(server.task({ epochs: 1 }))).rejects.toThrow(TaskError);
    await expect(participant.localRound(server.task({ epochs: 1 }))).rejects.toThrow(
      /^round \d+: task config does not suit subfedavg-un: epochs: expected at least 2: Sub-FedAvg compares the masks after epoch 1 and the last epoch, so 1 epoch never prunes, got 1$/,
    );
    // refused before anything was trained or received
    expect(model.getWeights()).toEqual(weights);
    expect(participant.round).toBe(0);
    // the dense baselines take one epoch
    const dense = mlpParticipant('fedavg');
    expect(
      (await dense.participant.localRound(new OneClientServer(dense.model.getWeights()).task({ epochs: 1 }))).update,
    ).toBeDefined();
    dense.model.dispose();
    model.dispose();
  });

  it('rejects a task that does not fit the model, naming the tensor', async () => {
    const { model, participant } = mlpParticipant();
    const w = model.getWeights();
    const dense = (tensors: Map<string, Float32Array>): ReceivedTask => ({ kind: 'dense', round: 1, maskVersion: 0, tensors });
    const sparse = (tensors: Map<string, SparseValues>, maskVersion = 0): ReceivedTask => ({
      kind: 'sparse',
      round: 1,
      maskVersion,
      tensors,
    });
    const all = () => new Map<string, Float32Array>([...w].map(([n, v]) => [n, Float32Array.from(v)]));
    const allSparse = () =>
      new Map<string, SparseValues>([...w].map(([n, v]) => [n, { mask: Mask.full(v.length), kept: Float32Array.from(v) }]));
    const missing = all();
    missing.delete('fc2.bias');
    await expect(participant.localRound(dense(missing))).rejects.toThrow(/'fc2.bias' is missing/);
    const missingSparse = allSparse();
    missingSparse.delete('fc2.bias');
    await expect(participant.localRound(sparse(missingSparse))).rejects.toThrow(/'fc2.bias' is missing/);
    const unknown = all();
    unknown.set('fc9.weight', new Float32Array(1));
    await expect(participant.localRound(dense(unknown))).rejects.toThrow(/unknown tensor 'fc9.weight'/);
    const short = all();
    short.set('fc1.bias', new Float32Array(3));
    await expect(participant.localRound(dense(short))).rejects.toThrow(/'fc1.bias' has 3 values/);
    const nan = all();
    nan.get('fc3.bias')![2] = Number.NaN;
    await expect(participant.localRound(dense(nan))).rejects.toThrow(TaskError);
    await expect(participant.localRound(dense(nan))).rejects.toThrow(/'fc3.bias' holds a non-finite value at 2/);
    // sparse values laid out on a mask version we do not hold
    await expect(participant.localRound(sparse(allSparse(), 3))).rejects.toThrow(/mask version 3/);
    // sparse values on a mask of the wrong size, or that do not match the mask's kept count
    const wrongSize = allSparse();
    wrongSize.set('fc3.bias', { kept: new Float32Array(3), mask: Mask.full(3) });
    await expect(participant.localRound(sparse(wrongSize))).rejects.toThrow(/mask of 'fc3.bias' has 3 entries, shape needs 10/);
    const miscounted = allSparse();
    miscounted.set('fc3.bias', { kept: new Float32Array(10), mask: Mask.fromBytes([1, 1, 0, 0, 0, 0, 0, 0, 0, 0]) });
    await expect(participant.localRound(sparse(miscounted))).rejects.toThrow(/10 values for 2 kept positions/);
    // A federated round without a task does not compile.
    expectTypeOf<typeof participant.localRound>().parameters.toEqualTypeOf<[ReceivedTask]>();
    model.dispose();
  });

  it('holds out a validation split for the gate by default, or gates on test', () => {
    const { train, test } = tinyData(13, 50, 10);
    const model = createModel('mlp', 13);
    const val = createParticipant({ model, algorithm: 'subfedavg-un', train, test, seed: 1 });
    expect(val.data.gate!.count).toBe(5);
    expect(val.data.train.count).toBe(45);
    expect(val.numExamples).toBe(45);
    const onTest = createParticipant({ model, algorithm: 'subfedavg-un', config: { gateOn: 'test' }, train, test, seed: 1 });
    expect(onTest.data.gate).toBe(test);
    expect(onTest.data.train).toBe(train);
    expect(createParticipant({ model, algorithm: 'fedavg', train, test, seed: 1 }).data.gate).toBeUndefined();
    expect(() => createParticipant({ model: createModel('mlp', 1), algorithm: 'subfedavg-hy', train, test, seed: 1 })).toThrow(
      /BatchNorm/,
    );
    model.dispose();
  });
});

describe('Participant measurements', () => {
  it('measures the received and the trained model on the test data, and evaluates on the training data on request', async () => {
    const { model, participant } = mlpParticipant();
    const server = new OneClientServer(model.getWeights());
    const task = server.task();
    // What the client receives is the server's global model: measure it before the round trains it.
    const scratch = createModel('mlp', 11);
    scratch.setWeights(server.global);
    const received = evaluate(scratch, participant.data.test);
    scratch.dispose();
    const { metrics } = await participant.localRound(task);
    expect(metrics.receivedAccuracy).toBe(received.accuracy);
    expect(metrics.receivedLoss).toBe(received.loss);
    const test = await participant.evaluate();
    expect([metrics.accuracy, metrics.testLoss]).toEqual([test.accuracy, test.loss]);
    expect(await participant.evaluate('test')).toEqual(test);
    // 'train' is the same model on the client's own training data (the overfitting gap's other half).
    expect(await participant.evaluate('train')).toEqual(evaluate(model, participant.data.train));
    expect(participant.data.train.count).not.toBe(participant.data.test.count);
  });
});

describe('Participant state', () => {
  it('exports and restores weights, masks, BN stats, mask version and round', async () => {
    const config = { epochs: 2, gateOn: 'test', accThresh: 0 };
    const { model, participant, train, test } = mlpParticipant('subfedavg-un', config);
    const server = new OneClientServer(model.getWeights());
    await server.round_(participant);
    const state = participant.exportState();
    expect(state.round).toBe(1);
    expect(state.maskVersion).toBe(1);
    const model2 = createModel('mlp', 99);
    const resumed = createParticipant({
      model: model2,
      algorithm: 'subfedavg-un',
      config,
      train,
      test,
      seed: 11,
      restore: state,
    });
    expect(resumed.maskVersion).toBe(participant.maskVersion);
    expect(resumed.round).toBe(1);
    expect(model2.getWeights()).toEqual(model.getWeights());
    for (const [name, m] of participant.masks) expect(resumed.masks.get(name)).toEqual(m);
    expect((await resumed.evaluate()).accuracy).toBe((await participant.evaluate()).accuracy);
    // the restored client picks up sparse tasks on its mask
    const masks = resumed.masks;
    const task: ReceivedTask = {
      kind: 'sparse',
      round: 2,
      maskVersion: resumed.maskVersion,
      tensors: new Map(
        [...server.global].map(([n, w]) => {
          const mask = masks.get(n)!;
          return [n, { mask, kept: mask.gather(w) }];
        }),
      ),
    };
    const result = await resumed.localRound(task);
    expect(result.update.baseMaskVersion).toBe(1);
    model.dispose();
    model2.dispose();
  });

  it('refuses a restored mask of the wrong size', () => {
    const { model, participant, train, test } = mlpParticipant();
    const state = participant.exportState();
    const masks = new Map(state.masks);
    masks.set('fc1.bias', Mask.full(3));
    expect(() => createParticipant({ model, algorithm: 'fedavg', train, test, seed: 1, restore: { ...state, masks } })).toThrow(
      /'fc1.bias' has 3 entries/,
    );
    // and the prune helpers compose with a restored mask
    const names = ['fc1.weight'];
    const pruned = prunePercentile(state.weights, state.masks, 50, names);
    expect(
      applyMasks(state.weights, pruned)
        .get('fc1.weight')!
        .filter((x) => x === 0).length,
    ).toBeGreaterThan(0);
    model.dispose();
  });
});
