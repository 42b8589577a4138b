import { describe, expect, it } from 'vitest';
import { decideChannels, decideUnstructured } from '../../client/algorithms/decisions.js';
import { AlgorithmConfigError, parseConfig } from '../../client/algorithms/config.js';
import { createAlgorithm, subfedavgHyConfig, subfedavgUnConfig } from '../../client/algorithms/index.js';
import { prunePercentile } from '../../client/prune.js';
import type { ChannelGroup } from '../../client/model.js';
import { Mask } from '../../proto/mask.js';
import { elementCount } from '../../proto/shape.js';

const f32 = (xs: number[]) => Float32Array.from(xs);
const u8 = (xs: number[]) => Mask.fromBytes(xs);
const bitsOf = (m: Mask | undefined) => [...m!.toBytes()];

/** 20 weights |w| = 1..20 in one layer, plus an unpruned bias. */
function layer() {
  const w = f32(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? 1 : -1) * (i + 1)));
  return {
    weights: new Map([
      ['w', w],
      ['b', f32([0.001, 0.002])],
    ]),
    masks: new Map([
      ['w', Mask.full(20)],
      ['b', u8([1, 1])],
    ]),
  };
}

const base = { p: 10, target: 30, distThresh: 1e-4, accThresh: 0.5 };

describe('decideUnstructured (Sub-FedAvg Un rule)', () => {
  it('prunes p% when masks still move, and accepts when the gate passes', async () => {
    const { weights, masks } = layer();
    const m1 = masks; // epoch-1 candidate differs from m2 = prune(10) -> distance 0.1
    const seen: number[] = [];
    const d = await decideUnstructured({
      ...base,
      weights,
      masks,
      m1,
      names: ['w'],
      prunedPercent: 0,
      gateAccuracy: (w) => {
        seen.push(w.get('w')!.filter((x) => x === 0).length);
        return 0.9;
      },
    });
    expect(d.report).toMatchObject({ outcome: 'accepted', step: 10, gateAccuracy: 0.9 });
    expect(d.report.distance).toBeCloseTo(0.1, 12);
    // 10th percentile of 1..20 = 2.9: |w| = 1, 2 pruned
    expect(bitsOf(d.masks.get('w')).slice(0, 3)).toEqual([0, 0, 1]);
    expect(d.weights.get('w')![0]).toBe(0);
    expect(d.weights.get('w')![1]).toBe(0);
    expect(seen).toEqual([2]); // the gate saw the pruned weights
    expect(bitsOf(d.masks.get('b'))).toEqual([1, 1]); // bias never pruned
  });

  it('rejects when gate accuracy is not above the threshold: old mask and weights kept', async () => {
    const { weights, masks } = layer();
    const d = await decideUnstructured({
      ...base,
      weights,
      masks,
      m1: masks,
      names: ['w'],
      prunedPercent: 0,
      gateAccuracy: () => 0.5,
    });
    expect(d.report.outcome).toBe('rejected');
    expect(d.masks).toBe(masks);
    expect(d.weights).toBe(weights);
  });

  it('does nothing when the epoch-1 and last-epoch candidates agree (distance <= thresh)', async () => {
    const { weights, masks } = layer();
    const m1 = prunePercentile(weights, masks, 10, ['w']);
    let gateCalls = 0;
    const d = await decideUnstructured({
      ...base,
      weights,
      masks,
      m1,
      names: ['w'],
      prunedPercent: 0,
      gateAccuracy: () => {
        gateCalls++;
        return 1;
      },
    });
    expect(d.report).toMatchObject({ outcome: 'stable', distance: 0 });
    expect(gateCalls).toBe(0);
    expect(d.masks).toBe(masks);
  });

  it('does nothing once the target is reached', async () => {
    const { weights, masks } = layer();
    const d = await decideUnstructured({
      ...base,
      weights,
      masks,
      m1: masks,
      names: ['w'],
      prunedPercent: 30,
      gateAccuracy: () => 1,
    });
    expect(d.report.outcome).toBe('at-target');
  });

  it('uses the capped step near the target', async () => {
    const { weights, masks } = layer();
    // pruned 27 of target 30: step = 3/73*100 = 4.11% < 5
    const d = await decideUnstructured({
      ...base,
      weights,
      masks,
      m1: masks,
      names: ['w'],
      prunedPercent: 27,
      gateAccuracy: () => 1,
    });
    expect(d.report.outcome).toBe('accepted');
    expect(d.report.step).toBeCloseTo((3 / 73) * 100, 10);
    // 4.11th percentile of 1..20 = 1 + 0.0411*19 = 1.78: only |w| = 1 pruned
    expect(bitsOf(d.masks.get('w')).filter((v) => v === 0).length).toBe(1);
  });
});

describe('decideChannels (Sub-FedAvg Hy channel rule)', () => {
  const group: ChannelGroup = {
    gamma: 'g',
    beta: 'be',
    kernel: 'k',
    bias: 'bi',
    channels: 4,
    next: { weight: 'd', kind: 'flatten-dense', spatial: 1 },
  };
  const shapes = new Map<string, number[]>([
    ['k', [1, 1, 1, 4]],
    ['bi', [4]],
    ['g', [4]],
    ['be', [4]],
    ['d', [4, 2]],
  ]);
  const ones = () => new Map([...shapes].map(([n, s]) => [n, Mask.full(elementCount(s))]));
  const weights = () => new Map([...shapes].map(([n, s]) => [n, new Float32Array(elementCount(s)).fill(0.5)]));

  it('removes the last-epoch selection when it differs from epoch 1 and the gate passes', async () => {
    const d = await decideChannels({
      weights: weights(),
      masks: ones(),
      groups: [group],
      shapes,
      first: [u8([1, 1, 1, 1])],
      last: [u8([1, 0, 1, 1])],
      q: 0.45,
      channelDistThresh: 0.01,
      accThresh: 0.5,
      gateAccuracy: () => 0.8,
    });
    expect(d.report).toMatchObject({ kind: 'channel', outcome: 'accepted', distance: 0.25 });
    expect(bitsOf(d.masks.get('g'))).toEqual([1, 0, 1, 1]);
    expect(bitsOf(d.masks.get('d'))).toEqual([1, 1, 0, 0, 1, 1, 1, 1]);
    expect([...d.weights.get('d')!]).toEqual([0.5, 0.5, 0, 0, 0.5, 0.5, 0.5, 0.5]);
  });

  it('keeps channels when the gate fails or the selection is stable', async () => {
    const common = {
      weights: weights(),
      masks: ones(),
      groups: [group],
      shapes,
      q: 0.45,
      channelDistThresh: 0.01,
      accThresh: 0.5,
    };
    const rejected = await decideChannels({
      ...common,
      first: [u8([1, 1, 1, 1])],
      last: [u8([1, 0, 1, 1])],
      gateAccuracy: () => 0.4,
    });
    expect(rejected.report.outcome).toBe('rejected');
    expect(rejected.masks).toBe(common.masks);
    const stable = await decideChannels({
      ...common,
      first: [u8([1, 0, 1, 1])],
      last: [u8([1, 0, 1, 1])],
      gateAccuracy: () => 1,
    });
    expect(stable.report.outcome).toBe('stable');
  });
});

describe('algorithm configs', () => {
  it('carry the reference defaults', () => {
    expect(parseConfig('subfedavg-un', subfedavgUnConfig, {})).toEqual({
      epochs: 5,
      batchSize: 10,
      lr: 0.01,
      momentum: 0.5,
      accThresh: 0.5,
      gateOn: 'val',
      valFraction: 0.1,
      p: 10,
      target: 30,
      distThresh: 1e-4,
    });
    const hy = parseConfig('subfedavg-hy', subfedavgHyConfig, { gateOn: 'test' });
    expect(hy).toMatchObject({ target: 50, distThresh: 5e-4, q: 0.45, l1: 1e-4, channelDistThresh: 0.01, gateOn: 'test' });
  });

  it('name the bad field and reject unknown keys and algorithms', () => {
    expect(() => createAlgorithm('subfedavg-un', { p: 150 })).toThrow(/subfedavg-un config: p:/);
    expect(() => createAlgorithm('fedavg', { prune: 10 })).toThrow(AlgorithmConfigError);
    expect(() => createAlgorithm('fedavg', { prune: 10 })).toThrow(/prune/);
    expect(() => createAlgorithm('fednova')).toThrow(/unknown algorithm 'fednova'/);
    expect(createAlgorithm('local').kind).toBe('local');
  });

  it('refuse one local epoch for Sub-FedAvg, which could never prune with it, and allow it for the dense baselines', () => {
    for (const name of ['subfedavg-un', 'subfedavg-hy']) {
      expect(() => createAlgorithm(name, { epochs: 1 })).toThrow(AlgorithmConfigError);
      expect(() => createAlgorithm(name, { epochs: 1 })).toThrow(
        `invalid ${name} config: epochs: expected at least 2: Sub-FedAvg compares the masks after epoch 1 and the last epoch, so 1 epoch never prunes, got 1`,
      );
      expect(createAlgorithm(name, { epochs: 2 }).training.epochs).toBe(2);
      // a coordinator's override is held to the same rule
      expect(() => createAlgorithm(name).withTraining({ epochs: 1 })).toThrow(/epochs: expected at least 2/);
    }
    for (const name of ['fedavg', 'fedavg-ft', 'local']) expect(createAlgorithm(name, { epochs: 1 }).training.epochs).toBe(1);
  });

  it('lay a coordinator override over their own training fields and keep the rest', () => {
    const algo = createAlgorithm('subfedavg-un', { epochs: 3, lr: 0.1, p: 20 });
    expect(algo.withTraining({ lr: 0.02 })).toEqual({ epochs: 3, batchSize: 10, lr: 0.02, momentum: 0.5 });
    expect(algo.withTraining({})).toEqual(algo.training);
    expect(algo.training).toEqual({ epochs: 3, batchSize: 10, lr: 0.1, momentum: 0.5 });
  });
});
