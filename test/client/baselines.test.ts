/**
 * The baselines' defining steps, each on hand-made tensors or a tiny model whose
 * expected result is computed independently: FedProx's gradient term, FedRep's
 * head-then-body phases and personal head, LG-FedAvg's personal body, Ditto's
 * personal update and what it evaluates, LotteryFL's prune-and-rewind; and the
 * algorithm state a resumed client takes back.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import { Ditto } from '../../client/algorithms/ditto.js';
import { FedRep, HEAD_PHASE_STREAM, freezeAllBut } from '../../client/algorithms/fedrep.js';
import { LotteryFL, decideLottery } from '../../client/algorithms/lotteryfl.js';
import { layerTensors, lastLayersTensors } from '../../client/algorithms/common.js';
import { createAlgorithm, describeAlgorithm } from '../../client/algorithms/registry.js';
import type { FederatedAlgorithm, RoundContext } from '../../client/algorithms/types.js';
import { createModel, type Model } from '../../client/model.js';
import type { ModelName } from '../../client/model-names.js';
import { createParticipant } from '../../client/participant.js';
import { fullMasks, prunedFraction, type MaskMap, type TensorMap } from '../../client/prune.js';
import { evaluate, trainLocal } from '../../client/train.js';
import { Mask } from '../../proto/mask.js';
import { deriveSeed } from '../../proto/random.js';
import { OneClientServer, shared, tinyData } from './participant-helpers.js';

beforeAll(async () => {
  await initBackend('cpu', { logger: { info: () => {} } });
});

const f32 = (xs: number[]) => Float32Array.from(xs);
const copyOf = (weights: TensorMap): TensorMap => new Map([...weights].map(([n, w]) => [n, Float32Array.from(w)]));

/** Every value of `a` within `tolerance` of `b`'s. */
function expectClose(a: TensorMap, b: TensorMap, tolerance: number, what: string): void {
  for (const [name, values] of a) {
    const other = b.get(name)!;
    let worst = 0;
    for (let i = 0; i < values.length; i++) worst = Math.max(worst, Math.abs(values[i] - other[i]));
    expect(worst, `${what}: ${name}`).toBeLessThanOrEqual(tolerance);
  }
}

/** A round context on `model` as it stands: full masks, the training config given, no validation split. */
function contextFor(
  model: Model,
  train: RoundContext['data']['train'],
  training: RoundContext['training'],
  seed = 5,
): RoundContext {
  return { model, masks: fullMasks(model.manifest), data: { train, test: train }, training, seed };
}

/** One full-batch step per epoch, no momentum: each epoch is exactly w -= lr * g'. */
const fullBatch = (count: number, epochs: number, lr = 0.1) => ({ epochs, batchSize: count, lr, momentum: 0 });

describe('fedprox', () => {
  it('adds mu (w - w_global) to every gradient: after two steps it trails FedAvg by exactly -lr mu (w1 - w0)', async () => {
    const { train } = tinyData(1, 20, 4);
    const lr = 0.1;
    const mu = 0.5;
    const run = async (algorithm: 'fedavg' | 'fedprox', epochs: number): Promise<TensorMap> => {
      const model = createModel('lenet5-mnist', 3);
      const algo = createAlgorithm(algorithm, algorithm === 'fedprox' ? { mu } : {}) as FederatedAlgorithm;
      await algo.train(contextFor(model, train, fullBatch(20, epochs, lr)));
      const w = model.getWeights();
      model.dispose();
      return w;
    };
    const w0 = createModel('lenet5-mnist', 3).getWeights();
    const w1 = await run('fedavg', 1);
    const fedavg2 = await run('fedavg', 2);
    const fedprox2 = await run('fedprox', 2);
    // Step 1 is the same (w = w_global: no pull yet); step 2 adds mu (w1 - w0) to the same gradient.
    const expected = new Map([...fedavg2].map(([n, w]) => [n, w.map((x, i) => x - lr * mu * (w1.get(n)![i] - w0.get(n)![i]))]));
    expectClose(fedprox2, expected, 2e-6, 'fedprox after two steps');
    // mu = 0 is FedAvg.
    const model = createModel('lenet5-mnist', 3);
    await (createAlgorithm('fedprox', { mu: 0 }) as FederatedAlgorithm).train(contextFor(model, train, fullBatch(20, 2, lr)));
    expectClose(model.getWeights(), fedavg2, 0, 'fedprox with mu 0');
    model.dispose();
  });
});

describe('the model split into layers', () => {
  it('counts a conv layer with its BatchNorm as one layer, in order', () => {
    expect(layerTensors({ name: 'lenet5-bn-mnist' })).toEqual([
      ['conv1.weight', 'conv1.bias', 'bn1.weight', 'bn1.bias'],
      ['conv2.weight', 'conv2.bias', 'bn2.weight', 'bn2.bias'],
      ['fc1.weight', 'fc1.bias'],
      ['fc2.weight', 'fc2.bias'],
    ]);
    expect([...lastLayersTensors({ name: 'mlp' }, 2)]).toEqual(['fc2.weight', 'fc2.bias', 'fc3.weight', 'fc3.bias']);
    for (const name of ['lenet5-mnist', 'lenet5-bn-cifar', 'mlp'] satisfies ModelName[]) {
      const model = createModel(name, 1);
      expect(layerTensors(model).flat().sort()).toEqual(model.manifest.map((s) => s.name).sort());
      model.dispose();
    }
  });

  it('refuses a head or shared part that leaves no layer on the other side, naming the field', () => {
    expect(describeAlgorithm('fedrep').modelProblem({ name: 'mlp', channelGroups: [] }, { headLayers: 3 } as never)).toBe(
      "fedrep: headLayers 3 leaves no layer on the other side: 'mlp' has 3 layers",
    );
    expect(describeAlgorithm('lg-fedavg').modelProblem({ name: 'mlp', channelGroups: [] })).toBeUndefined();
    const model = createModel('mlp', 1);
    const { train, test } = tinyData(1, 20, 4);
    expect(() => createParticipant({ model, algorithm: 'lg-fedavg', config: { sharedLayers: 4 }, train, test, seed: 1 })).toThrow(
      "lg-fedavg: sharedLayers 4 leaves no layer on the other side: 'mlp' has 3 layers",
    );
    model.dispose();
  });
});

describe('fedrep', () => {
  it('freezes by masking: the trained part keeps its masks, the rest keeps nothing', () => {
    const masks: MaskMap = new Map([
      ['a', Mask.fromBytes([1, 0, 1])],
      ['b', Mask.full(2)],
    ]);
    const frozen = freezeAllBut(masks, new Set(['a']));
    expect(frozen.get('a')).toEqual(Mask.fromBytes([1, 0, 1]));
    expect(frozen.get('b')).toEqual(Mask.none(2));
  });

  it('trains the head first (body frozen), then the body (head frozen), exactly as two separate runs', async () => {
    const { train } = tinyData(2, 30, 4);
    const training = { epochs: 2, batchSize: 10, lr: 0.05, momentum: 0.5 };
    const model = createModel('lenet5-mnist', 4);
    const received = model.getWeights();
    const fedrep = createAlgorithm('fedrep', { headEpochs: 3 }) as FedRep;
    const head = fedrep.personalTensors(model);
    expect([...head]).toEqual(['fc2.weight', 'fc2.bias']);
    const ctx = contextFor(model, train, training, 8);
    const outcome = await fedrep.train(ctx);
    expect(outcome.epochs).toBe(5);
    expect(outcome.masks).toBe(ctx.masks);

    // The same two phases by hand.
    const reference = createModel('lenet5-mnist', 4);
    const all = fullMasks(reference.manifest);
    const bodyNames = new Set(reference.manifest.map((s) => s.name).filter((n) => !head.has(n)));
    await trainLocal(reference, train, {
      ...training,
      epochs: 3,
      seed: deriveSeed(8, HEAD_PHASE_STREAM),
      gradMasks: freezeAllBut(all, head),
    });
    const afterHead = reference.getWeights();
    for (const name of bodyNames) expect(afterHead.get(name)).toEqual(received.get(name));
    await trainLocal(reference, train, { ...training, seed: 8, gradMasks: freezeAllBut(all, bodyNames) });
    const expected = reference.getWeights();
    for (const name of head) expect(expected.get(name)).toEqual(afterHead.get(name));
    expectClose(model.getWeights(), expected, 0, 'fedrep against the two phases');
    model.dispose();
    reference.dispose();
  });

  it('never uploads its head: PERSONAL in every update, the global head untouched, the client keeping its own', async () => {
    const model = createModel('mlp', 6);
    const { train, test } = tinyData(6, 60, 20);
    const participant = createParticipant({
      model,
      algorithm: 'fedrep',
      config: { epochs: 1, headEpochs: 1, lr: 0.05 },
      train,
      test,
      seed: 6,
    });
    const server = new OneClientServer(model.getWeights());
    const initialHead = Float32Array.from(server.global.get('fc3.weight')!);
    for (let round = 1; round <= 2; round++) {
      const { update } = await server.round_(participant);
      expect(update.tensors.get('fc3.weight')).toEqual({ kind: 'personal', maskChanged: round === 1 });
      expect(update.tensors.get('fc3.bias')?.kind).toBe('personal');
      expect(shared(update.tensors.get('fc1.weight')).mask.isFull).toBe(true);
      expect(update.maskChange.kind).toBe(round === 1 ? 'changed' : 'unchanged');
    }
    expect(server.global.get('fc3.weight')).toEqual(initialHead);
    expect(model.getWeights().get('fc3.weight')).not.toEqual(initialHead);
    // The coordinator holds a mask keeping nothing for the head; the client's own masks stay full.
    expect(participant.wireMasks.get('fc3.weight')).toEqual(Mask.none(200 * 10));
    expect(participant.masks.get('fc3.weight')!.isFull).toBe(true);
    expect(participant.sparsity).toBe(0);
    model.dispose();
  });
});

describe('lg-fedavg', () => {
  it('keeps its own body whatever the task holds, loads the shared head, and uploads the head only', async () => {
    const model = createModel('lenet5-mnist', 7);
    const ownBody = copyOf(model.getWeights());
    const { train, test } = tinyData(7, 40, 10);
    // A learning rate this small changes nothing visible: what the model holds after a round is what it loaded.
    const participant = createParticipant({
      model,
      algorithm: 'lg-fedavg',
      config: { epochs: 1, lr: 1e-12 },
      train,
      test,
      seed: 7,
    });
    const personal = participant.personalTensors;
    expect([...personal]).toEqual(['conv1.weight', 'conv1.bias', 'conv2.weight', 'conv2.bias']);
    // The coordinator's model differs from the client's everywhere.
    const other = createModel('lenet5-mnist', 99);
    const server = new OneClientServer(other.getWeights());
    other.dispose();
    for (let round = 1; round <= 2; round++) {
      const { update } = await server.round_(participant);
      const after = model.getWeights();
      for (const name of personal) {
        expect(update.tensors.get(name)?.kind).toBe('personal');
        expectClose(new Map([[name, after.get(name)!]]), ownBody, 1e-9, `round ${round}: own body`);
      }
      for (const name of ['fc1.weight', 'fc2.bias']) {
        expect(update.tensors.get(name)?.kind).toBe('shared');
        expectClose(new Map([[name, after.get(name)!]]), server.global, 1e-6, `round ${round}: the shared head`);
      }
    }
    model.dispose();
  });
});

describe('ditto', () => {
  it('starts the personal model at the received one; with lambda 0 it trains exactly as local SGD, the upload as FedAvg', async () => {
    const { train } = tinyData(3, 20, 4);
    const training = fullBatch(20, 2, 0.05);
    const model = createModel('mlp', 2);
    const received = model.getWeights();
    const ditto = createAlgorithm('ditto', { lambda: 0 }) as Ditto;
    await ditto.train(contextFor(model, train, training));
    const fedavg = createModel('mlp', 2);
    await (createAlgorithm('fedavg') as FederatedAlgorithm).train(contextFor(fedavg, train, training));
    // Both tracks trained from the received model on the same batches, without a pull: equal.
    expectClose(model.getWeights(), fedavg.getWeights(), 0, 'global track');
    expectClose(ditto.personalModel!.weights, fedavg.getWeights(), 0, 'personal model, lambda 0');
    expect(ditto.personalModel!.weights.get('fc1.weight')).not.toEqual(received.get('fc1.weight'));
    model.dispose();
    fedavg.dispose();
  });

  it('pulls the personal model toward the received global: one step is local SGD minus lr lambda (v - w_global)', async () => {
    const { train } = tinyData(3, 20, 4);
    const lambda = 2;
    const lr = 0.05;
    const model = createModel('mlp', 2);
    const ditto = createAlgorithm('ditto', { lambda }) as Ditto;
    await ditto.train(contextFor(model, train, fullBatch(20, 1, lr)));
    const v1 = copyOf(ditto.personalModel!.weights);
    // Round 2 receives a global model 1 below the personal one everywhere: v - w_global = 1.
    const global = new Map([...v1].map(([n, w]) => [n, w.map((x) => x - 1)]));
    model.setWeights(global);
    await ditto.train(contextFor(model, train, fullBatch(20, 1, lr), 9));
    // Independently: one plain SGD step from v1 on the same batch.
    const plain = createModel('mlp', 2);
    plain.setWeights(v1);
    await trainLocal(plain, train, { ...fullBatch(20, 1, lr), seed: 9 });
    const expected = new Map([...plain.getWeights()].map(([n, w]) => [n, w.map((x) => x - lr * lambda * 1)]));
    expectClose(ditto.personalModel!.weights, expected, 2e-6, 'personal model after one step');
    plain.dispose();
    model.dispose();
  });

  it('reports the personal model as personalized accuracy, uploads the global track, and resumes with both', async () => {
    const model = createModel('mlp', 4);
    const { train, test } = tinyData(4, 60, 30);
    const config = { epochs: 1, lr: 0.05, lambda: 0.5 };
    const participant = createParticipant({ model, algorithm: 'ditto', config, train, test, seed: 4 });
    const server = new OneClientServer(model.getWeights());
    const { metrics } = await server.round_(participant);
    const ditto = participant.algorithm as Ditto;
    const personal = createModel('mlp', 0);
    personal.setWeights(ditto.personalModel!.weights);
    expect(metrics.accuracy).toBe(evaluate(personal, test).accuracy);
    expect((await participant.evaluate()).accuracy).toBe(metrics.accuracy);
    // The global track is what the participant's model holds, and what the update moved the global model to.
    expectClose(server.global, model.getWeights(), 1e-6, 'the uploaded global track');

    const state = participant.exportState();
    expect([...state.algorithmState.keys()]).toContain('personal/fc1.weight');
    const resumed = createParticipant({
      model: createModel('mlp', 9),
      algorithm: 'ditto',
      config,
      train,
      test,
      seed: 4,
      restore: state,
    });
    expectClose((resumed.algorithm as Ditto).personalModel!.weights, ditto.personalModel!.weights, 0, 'resumed personal model');
    expect((await resumed.evaluate()).accuracy).toBe(metrics.accuracy);
    const bad = new Map([...state.algorithmState, ['personal/nope', f32([1])]]);
    expect(() =>
      createParticipant({
        model: createModel('mlp', 9),
        algorithm: 'ditto',
        config,
        train,
        test,
        seed: 4,
        restore: { ...state, algorithmState: bad },
      }),
    ).toThrow(/the saved ditto state holds tensors it does not know: personal\/nope/);
    personal.dispose();
    model.dispose();
  });
});

describe('lotteryfl', () => {
  /** 8 weights |w| = 1..8 (sign alternating) and a bias; the initial weights 10 + i. */
  const tensors = () => ({
    received: new Map([
      ['w', f32([1, -2, 3, -4, 5, -6, 7, -8])],
      ['b', f32([0.5, -0.5])],
    ]),
    initial: new Map([
      ['w', f32([10, 11, 12, 13, 14, 15, 16, 17])],
      ['b', f32([20, 21])],
    ]),
    masks: new Map([
      ['w', Mask.full(8)],
      ['b', Mask.full(2)],
    ]),
  });
  const rule = { names: ['w'], p: 25, target: 50, accThresh: 0.2 };

  it('prunes p% of the alive weights by magnitude and rewinds every kept weight to its initial value', () => {
    const { received, initial, masks } = tensors();
    const d = decideLottery({ ...rule, received, initial, masks, gateAccuracy: 0.6 });
    expect(d.report).toMatchObject({ kind: 'unstructured', outcome: 'accepted', step: 25, gateAccuracy: 0.6 });
    // The 25th percentile of 1..8 is 2.75: |w| = 1 and 2 go.
    expect([...d.masks.get('w')!.toBytes()]).toEqual([0, 0, 1, 1, 1, 1, 1, 1]);
    expect([...d.weights.get('w')!]).toEqual([0, 0, 12, 13, 14, 15, 16, 17]);
    // Biases are not pruned, and rewind too.
    expect(d.masks.get('b')!.isFull).toBe(true);
    expect([...d.weights.get('b')!]).toEqual([20, 21]);
  });

  it('trains on as received when the gate accuracy is not above accThresh, or the target is reached', () => {
    const { received, initial, masks } = tensors();
    const low = decideLottery({ ...rule, received, initial, masks, gateAccuracy: 0.2 });
    expect(low.report.outcome).toBe('rejected');
    expect(low.masks).toBe(masks);
    expect(low.weights).toBe(received);
    const half = new Map([...masks, ['w', Mask.fromBytes([0, 0, 0, 0, 1, 1, 1, 1])]]);
    const done = decideLottery({ ...rule, received, initial, masks: half, gateAccuracy: 0.9 });
    expect(done.report.outcome).toBe('at-target');
    expect(done.masks).toBe(half);
  });

  it('rewinds to the first model it received and trains the ticket with pruned weights at zero; resumes with it', async () => {
    const model = createModel('mlp', 5);
    const initial = model.getWeights();
    // Ten classes, so that the untrained model gets some right: the gate passes above 0.
    const { train, test } = tinyData(5, 60, 60, 10);
    const config = { epochs: 1, lr: 0.05, p: 20, accThresh: 0, gateOn: 'test' as const };
    const participant = createParticipant({ model, algorithm: 'lotteryfl', config, train, test, seed: 5 });
    const server = new OneClientServer(model.getWeights());
    const first = await server.round_(participant);
    expect(first.metrics.decisions[0]).toMatchObject({ outcome: 'accepted', step: 20 });
    const names = model.manifest.filter((s) => s.prunable).map((s) => s.name);
    expect(prunedFraction(participant.masks, names)).toBeCloseTo(20, 0);
    const w = model.getWeights();
    for (const name of names) {
      const mask = participant.masks.get(name)!;
      for (let i = 0; i < mask.length; i++) if (!mask.has(i)) expect(w.get(name)![i]).toBe(0);
    }
    expect(shared(first.update.tensors.get('fc1.weight')).mask).toEqual(participant.masks.get('fc1.weight'));
    const saved = participant.exportState().algorithmState;
    expectClose(
      new Map([...saved].map(([k, v]) => [k.replace(/^initial\//, ''), v])),
      initial,
      0,
      'the rewind point is the first model received',
    );
    const resumed = createParticipant({
      model: createModel('mlp', 1),
      algorithm: 'lotteryfl',
      config,
      train,
      test,
      seed: 5,
      restore: participant.exportState(),
    });
    expect((resumed.algorithm as LotteryFL).exportState()).toEqual(saved);
    model.dispose();
  });
});
