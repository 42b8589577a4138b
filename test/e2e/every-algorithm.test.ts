// Every registered algorithm through `subfed sim --compare`'s driver: a real
// coordinator per algorithm, real gRPC clients in worker threads, tiny
// synthetic data, two rounds each. What each algorithm computes is tested in
// test/client/baselines.test.ts; here they all run end to end on one split,
// the personal ones sending their personal tensors as PERSONAL.
import { describe, expect, it } from 'vitest';
import { algorithmNames, describeAlgorithm } from '../../client/algorithms/registry.js';
import { loadDataset } from '../../sim/datasets.js';
import { PRESETS, validateSimConfig, type SimConfig } from '../../sim/presets.js';
import type { RoundReport } from '../../sim/report.js';
import { runSimulation } from '../../sim/run.js';

const config: SimConfig = validateSimConfig({
  ...PRESETS.quick,
  algorithms: [...algorithmNames()],
  dataset: 'synthetic',
  clients: 4,
  partition: { kind: 'shards', shardSize: 60, shardsPerClient: 2 },
  maxTestPerClient: 60,
  // Everyone every round, so that round 2's tasks are sparse (laid out on the masks of round 1).
  fraction: 1,
  rounds: 2,
  // Two epochs: Sub-FedAvg compares the candidate masks after the first and the last epoch.
  training: { epochs: 2, batchSize: 10, lr: 0.05, momentum: 0.5 },
  model: 'mlp',
  batchNormModel: 'lenet5-bn-mnist',
  evalEvery: 1,
  workers: 2,
  backend: 'auto',
  seed: 3,
  algorithmConfigs: {
    // Prune in round 1 already, and keep FedRep's head phase short.
    'subfedavg-un': { p: 20, accThresh: 0 },
    'subfedavg-hy': { accThresh: 0 },
    lotteryfl: { p: 20, accThresh: 0 },
    fedrep: { headEpochs: 1 },
    'fedavg-ft': { ftEpochs: 1 },
  },
});

describe('subfed sim with every registered algorithm', () => {
  it(
    'runs each for every round, personal parts never uploaded nor downloaded after the first task',
    { timeout: 600_000 },
    async () => {
      const data = await loadDataset('synthetic', { seed: 3, synthetic: { train: 480, test: 240 } });
      const reports: RoundReport[] = [];
      for await (const round of runSimulation(config, { data })) reports.push(round);
      const of = (name: string) => reports.filter((r) => r.algorithm === name);

      expect(reports.map((r) => `${r.algorithm}:${r.round}`)).toEqual(algorithmNames().flatMap((a) => [`${a}:1`, `${a}:2`]));
      for (const name of algorithmNames()) {
        for (const r of of(name)) {
          expect(r.members, `${name} round ${r.round}`).toHaveLength(4);
          expect(r.membersAccuracy.mean).toBeGreaterThanOrEqual(0);
          expect(r.membersAccuracy.mean).toBeLessThanOrEqual(1);
          // evalEvery 1: every round measures every client.
          expect(r.evaluation?.personalized.count).toBe(4);
          expect(r.evaluation?.global != null).toBe(describeAlgorithm(name).evaluatesGlobalModel);
        }
      }

      // Pruning algorithms prune; the others keep every weight.
      for (const name of ['subfedavg-un', 'lotteryfl']) expect(of(name)[1].meanSparsity, name).toBeGreaterThan(0);
      for (const name of ['fedavg', 'fedprox', 'ditto', 'fedrep', 'lg-fedavg']) expect(of(name)[1].meanSparsity, name).toBe(0);

      // FedAvg uploads every parameter. FedRep keeps its head (fc3: 2,010 of the MLP's 199,210 parameters)
      // and LG-FedAvg its body (fc1: 157,000) on the clients: their uploads are that much smaller.
      const up = (name: string) => of(name)[1].bytes.up;
      expect(up('fedrep')).toBeLessThan(up('fedavg'));
      // Four members, 4 bytes a value.
      expect(up('fedavg') - up('fedrep')).toBeGreaterThan(4 * 4 * 2_010 * 0.9);
      expect(up('lg-fedavg')).toBeLessThan(up('fedavg') - 4 * 4 * 157_000 * 0.9);
      // Round 2's tasks are sparse: the personal tensors come down without values too.
      expect(of('lg-fedavg')[1].bytes.down).toBeLessThan(of('fedavg')[1].bytes.down - 4 * 4 * 157_000 * 0.9);
      for (const r of of('local')) expect(r.bytes).toEqual({ up: 0, down: 0, denseUp: 0, denseDown: 0 });
    },
  );
});
