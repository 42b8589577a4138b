import { describe, expect, it } from 'vitest';
import { algorithmNames, createAlgorithm, describeAlgorithm } from '../../client/algorithms/index.js';
import { loadDataset } from '../../sim/datasets.js';
import { PRESETS, algorithmConfig, validateSimConfig, type SimConfig } from '../../sim/presets.js';
import type { RoundReport } from '../../sim/report.js';
import { runSimulation } from '../../sim/run.js';

const tiny: SimConfig = validateSimConfig({
  ...PRESETS.quick,
  algorithms: ['fedavg', 'local'],
  dataset: 'synthetic',
  clients: 4,
  partition: { kind: 'shards', shardSize: 50, shardsPerClient: 2 },
  maxTestPerClient: 50,
  fraction: 0.5,
  rounds: 3,
  training: { ...PRESETS.quick.training, epochs: 1 },
  model: 'mlp',
  workers: 2,
  backend: 'auto',
  seed: 3,
});
const data = () => loadDataset('synthetic', { seed: 3, synthetic: { train: 400, test: 200 } });

/** Worker threads and sockets alive in this process. */
const handles = () => process.getActiveResourcesInfo().filter((r) => r !== 'Timeout' && r !== 'TTYWrap').length;

describe('runSimulation', () => {
  it('stops after the current round when aborted, evaluates everyone, and releases workers and the coordinator', async () => {
    const before = handles();
    const stop = new AbortController();
    const reports: RoundReport[] = [];
    // Ctrl-C arrives while round 1 trains: the round completes, then the run ends.
    const onEvent = (e: { kind: string }) => {
      if (e.kind === 'member-done') stop.abort();
    };
    for await (const round of runSimulation(tiny, { data: await data(), signal: stop.signal, onEvent })) reports.push(round);
    expect(reports.map((r) => `${r.algorithm}:${r.round}`)).toEqual(['fedavg:1']);
    // The stopped round is treated as the last one: every client and the global model are evaluated.
    const e = reports[0].evaluation!;
    expect(e.clients.map((c) => c.client)).toEqual([0, 1, 2, 3]);
    expect(e.global?.count).toBe(4);
    // Round 1 sampled half the clients: the headline is over those two, the other two are counted apart.
    const members = reports[0].members.map((m) => m.client);
    expect(members.every((m) => m >= 0 && m < 4)).toBe(true);
    expect(e.clients.filter((c) => c.sampled).map((c) => c.client)).toEqual([...members].sort());
    expect(e.personalized.count).toBe(2);
    expect(e.neverSampled).toBe(2);
    expect(handles()).toBeLessThanOrEqual(before);
  });

  it('cleans up when the consumer breaks out of the loop', async () => {
    const before = handles();
    for await (const round of runSimulation({ ...tiny, algorithms: ['local'] }, { data: await data() })) {
      expect(round.round).toBe(1);
      break;
    }
    expect(handles()).toBeLessThanOrEqual(before);
  });

  it("fails with the partitioner's message when the split cannot be made", async () => {
    const tooMany = { ...tiny, clients: 40 };
    const run = runSimulation(tooMany, { data: await data() });
    await expect(run.next()).rejects.toThrow(/40 clients x 2 shards|80 shards|shards/);
  });

  it('hands every algorithm a config its client schema accepts', () => {
    for (const preset of [PRESETS.paper, PRESETS.quick]) {
      for (const name of algorithmNames()) {
        const algo = createAlgorithm(name, algorithmConfig(preset, name));
        expect(algo.training).toEqual(preset.training);
        // The paper preset gates pruning on test data as the reference does; quick on a validation split.
        if (describeAlgorithm(name).pruning === 'gated')
          expect(algo.gate?.gateOn).toBe(preset === PRESETS.paper ? 'test' : 'val');
        else expect(algo.gate).toBeUndefined();
      }
    }
  });
});
