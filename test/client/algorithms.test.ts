/**
 * A small training run per algorithm on synthetic data with a zoo model,
 * showing the masks behave: Un grows sparsity to its target, Hy removes whole
 * channels consistently, pruned weights stay exactly zero through training,
 * the dense baselines never prune, local never communicates.
 */
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import { trainMasked } from '../../client/algorithms/common.js';
import { createModel } from '../../client/model.js';
import { createParticipant, type LocalRoundResult } from '../../client/participant.js';
import { channelMaskOf, prunePercentile, prunedFraction, applyMasks, fullMasks } from '../../client/prune.js';
import { evaluate } from '../../client/train.js';
import { OneClientServer, shared, tinyData, zerosWhereMasked } from './participant-helpers.js';

beforeAll(async () => {
  await initBackend('wasm', { logger: { info: () => {} } });
});

describe('masked training', () => {
  it('keeps pruned weights exactly zero through SGD with momentum', async () => {
    const model = createModel('mlp', 1);
    const { train, test } = tinyData(1, 60, 20);
    const names = model.manifest.filter((s) => s.prunable).map((s) => s.name);
    const masks = prunePercentile(model.getWeights(), fullMasks(model.manifest), 40, names);
    model.setWeights(applyMasks(model.getWeights(), masks));
    await trainMasked({
      model,
      masks,
      data: { train, test },
      training: { epochs: 2, batchSize: 10, lr: 0.05, momentum: 0.5 },
      seed: 3,
    });
    const after = model.getWeights();
    expect(zerosWhereMasked(after, masks)).toBe(true);
    // and the kept weights did move
    const w = after.get('fc1.weight')!;
    const m = masks.get('fc1.weight')!;
    const before = applyMasks(createModel('mlp', 1).getWeights(), masks).get('fc1.weight')!;
    let moved = 0;
    for (let i = 0; i < w.length; i++) if (m.has(i) && w[i] !== before[i]) moved++;
    expect(moved).toBeGreaterThan(0);
    model.dispose();
  });
});

describe('L1 penalty on BN gamma', () => {
  it('shrinks |gamma| compared with the same training without it', async () => {
    const { train, test } = tinyData(8, 40, 10);
    const meanAbsGamma = async (s: number): Promise<number> => {
      const model = createModel('lenet5-bn-mnist', 8);
      const masks = fullMasks(model.manifest);
      const gammas = new Set(model.channelGroups.map((g) => g.gamma));
      await trainMasked(
        { model, masks, data: { train, test }, training: { epochs: 1, batchSize: 10, lr: 0.05, momentum: 0.5 }, seed: 8 },
        { l1: { names: gammas, s } },
      );
      const w = model.getWeights();
      let sum = 0;
      let n = 0;
      for (const name of gammas) {
        for (const x of w.get(name)!) {
          sum += Math.abs(x);
          n++;
        }
      }
      model.dispose();
      return sum / n;
    };
    const plain = await meanAbsGamma(0);
    const penalised = await meanAbsGamma(0.5);
    // 4 steps of lr 0.05 * s 0.5 (with momentum) pull every |gamma| down by about 0.2
    expect(penalised).toBeLessThan(plain - 0.1);
  });
});

describe('subfedavg-un', () => {
  it('prunes round by round up to the 30% target, then stops; pruned weights stay zero', async () => {
    const model = createModel('mlp', 2);
    const { train, test } = tinyData(2);
    const lines: string[] = [];
    const participant = createParticipant({
      model,
      algorithm: 'subfedavg-un',
      config: { epochs: 2, lr: 0.05 },
      train,
      test,
      seed: 2,
      log: (l) => lines.push(l),
    });
    const server = new OneClientServer(model.getWeights());
    const prunable = model.manifest.filter((s) => s.prunable).map((s) => s.name);
    const pruned: number[] = [];
    for (let r = 0; r < 7; r++) {
      const before = participant.masks;
      const result = await server.round_(participant);
      const after = participant.masks;
      pruned.push(prunedFraction(after, prunable));
      expect(zerosWhereMasked(model.getWeights(), after)).toBe(true);
      // biases are never pruned
      for (const spec of model.manifest) if (!spec.prunable) expect(after.get(spec.name)!.isFull).toBe(true);
      // masks only shrink, and the update marks exactly the tensors whose mask changed
      for (const [name, u] of result.update.tensors) {
        const t = shared(u);
        const old = before.get(name)!;
        const changed = old.toBytes().some((v, i) => v !== (t.mask.has(i) ? 1 : 0));
        expect(t.maskChanged).toBe(changed);
        for (let i = 0; i < old.length; i++) if (!old.has(i)) expect(t.mask.has(i)).toBe(false);
      }
      expect(result.metrics.sparsity).toBeGreaterThanOrEqual(0);
    }
    // 10% steps (10, 19, 27.1) then the capped step lands on the target
    expect(pruned[pruned.length - 1]).toBeGreaterThan(29.5);
    expect(pruned[pruned.length - 1]).toBeLessThan(30.5);
    for (let i = 1; i < pruned.length; i++) expect(pruned[i]).toBeGreaterThanOrEqual(pruned[i - 1]);
    expect(lines.some((l) => l.startsWith('unstructured: accepted'))).toBe(true);
    expect(lines.some((l) => l.startsWith('unstructured: at-target'))).toBe(true);
    // the personalized model still classifies its own data
    expect((await participant.evaluate()).accuracy).toBeGreaterThan(0.8);
    model.dispose();
  });
});

describe('subfedavg-hy', () => {
  it('removes whole channels consistently and prunes dense layers', async () => {
    const model = createModel('lenet5-bn-mnist', 3);
    // Channel pruning needs the |gamma| ranking to move between epoch 1 and the last:
    // a 4-class noisy task with a brisk learning rate does that within two rounds.
    const { train, test } = tinyData(3, 100, 40, 4, 0.5);
    const participant = createParticipant({
      model,
      algorithm: 'subfedavg-hy',
      config: { epochs: 3, lr: 0.1, gateOn: 'test' },
      train,
      test,
      seed: 3,
    });
    const server = new OneClientServer(model.getWeights());
    let channelAccepted = false;
    let kept: number[] | undefined;
    for (let r = 0; r < 3; r++) {
      const result = await server.round_(participant);
      channelAccepted ||= result.metrics.decisions.some((d) => d.kind === 'channel' && d.outcome === 'accepted');
      kept = result.metrics.channelsKept;
      expect(zerosWhereMasked(model.getWeights(), participant.masks)).toBe(true);
    }
    expect(channelAccepted).toBe(true);
    expect(kept!.some((k, g) => k < model.channelGroups[g].channels)).toBe(true);
    // the floor (half the channels, rounded up) holds
    model.channelGroups.forEach((g, i) => expect(kept![i]).toBeGreaterThanOrEqual(Math.ceil(g.channels / 2)));
    const denseNames = model.manifest.filter((s) => s.prunable && s.shape.length === 2).map((s) => s.name);
    const denseOnly = new Map(denseNames.map((n) => [n, participant.masks.get(n)!]));
    // beyond the rows a removed conv2 channel takes out, magnitude pruning removed more
    expect(denseNames.some((n) => n !== model.channelGroups[1].next.weight && prunedFraction(denseOnly, [n]) > 0)).toBe(true);
    // a removed channel zeroes its kernel slice, bias, beta and the next layer's inputs
    const masks = participant.masks;
    for (const g of model.channelGroups) {
      const ch = channelMaskOf(masks, g);
      const C = g.channels;
      const kernel = masks.get(g.kernel)!;
      const next = masks.get(g.next.weight)!;
      const nextShape = model.manifest.find((s) => s.name === g.next.weight)!.shape;
      const outer = nextShape[nextShape.length - 1];
      for (let c = 0; c < C; c++) {
        if (ch.has(c)) continue;
        expect(masks.get(g.bias)!.has(c)).toBe(false);
        expect(masks.get(g.beta)!.has(c)).toBe(false);
        for (let i = c; i < kernel.length; i += C) expect(kernel.has(i)).toBe(false);
        for (let i = 0; i < next.length; i++) if (Math.floor(i / outer) % C === c) expect(next.has(i)).toBe(false);
      }
    }
    model.dispose();
  });
});

describe('memory', () => {
  it('keeps the number of live tensors flat across rounds and evaluations', async () => {
    for (const algorithm of ['subfedavg-un', 'fedavg-ft'] as const) {
      const model = createModel('mlp', 7);
      const { train, test } = tinyData(7, 60, 20);
      const config = algorithm === 'fedavg-ft' ? { epochs: 1, ftEpochs: 2 } : { epochs: 2, gateOn: 'test' as const };
      const participant = createParticipant({ model, algorithm, config, train, test, seed: 7 });
      const server = new OneClientServer(model.getWeights());
      const counts: number[] = [];
      for (let r = 0; r < 3; r++) {
        await server.round_(participant);
        await participant.evaluate();
        counts.push(tf.memory().numTensors);
      }
      expect(counts[2]).toBe(counts[1]);
      model.dispose();
    }
  });
});

describe('dense baselines', () => {
  it('fedavg never prunes and sends no mask after the first contact', async () => {
    const model = createModel('mlp', 4);
    const { train, test } = tinyData(4);
    const participant = createParticipant({ model, algorithm: 'fedavg', config: { epochs: 1, lr: 0.05 }, train, test, seed: 4 });
    const server = new OneClientServer(model.getWeights());
    for (let r = 0; r < 2; r++) {
      const result = await server.round_(participant);
      expect(result.update.maskChange).toEqual({ kind: 'unchanged' });
      expect(participant.sparsity).toBe(0);
      for (const [name, t] of result.update.tensors) expect(shared(t).kept.length).toBe(model.getWeights().get(name)!.length);
    }
    expect((await participant.evaluate()).accuracy).toBeGreaterThan(0.8);
    model.dispose();
  });

  it('fedavg-ft reports the accuracy of a fine-tuned copy of the received model and never touches its own', async () => {
    const model = createModel('mlp', 5);
    const { train, test } = tinyData(5);
    const participant = createParticipant({
      model,
      algorithm: 'fedavg-ft',
      config: { epochs: 1, ftEpochs: 2, lr: 0.05 },
      train,
      test,
      seed: 5,
    });
    const server = new OneClientServer(model.getWeights());
    const result = await server.round_(participant);
    const own = evaluate(model, test);
    const weights = model.getWeights();
    const ft = await participant.evaluate();
    expect(ft.accuracy).toBeGreaterThan(0.8);
    // a fine-tune of 2 epochs from the received model differs from the 1-epoch local model
    expect(ft.loss).not.toBe(own.loss);
    expect(result.metrics.accuracy).toBe(ft.accuracy);
    const same = model.getWeights();
    for (const [name, w] of weights) expect(same.get(name)).toEqual(w);
    model.dispose();
  });

  it('local trains without ever taking a task or producing an update', async () => {
    const model = createModel('mlp', 6);
    const { train, test } = tinyData(6);
    const participant = createParticipant({ model, algorithm: 'local', config: { epochs: 1, lr: 0.05 }, train, test, seed: 6 });
    expect(participant.kind).toBe('local');
    const first = await participant.localRound();
    expect(first).not.toHaveProperty('update');
    const second = await participant.localRound();
    expect(second.metrics.accuracy).toBeGreaterThan(0.8);
    expect(participant.round).toBe(2);
    // Taking a task, or producing an update, does not compile for a local participant.
    expectTypeOf<typeof participant.localRound>().parameters.toEqualTypeOf<[]>();
    expectTypeOf<LocalRoundResult>().not.toHaveProperty('update');
    model.dispose();
  });
});
