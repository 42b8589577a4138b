import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadDataset } from '../../sim/datasets.js';
import { PRESETS, validateSimConfig, type SimConfig } from '../../sim/presets.js';
import { RunWriter } from '../../sim/run-folder.js';
import { runSimulation, type SimulationEvent } from '../../sim/run.js';
import type { RoundReport } from '../../sim/report.js';

// A tiny simulation over real loopback gRPC: 6 clients on 2-class shards of a
// synthetic 28x28 set, 3 members a round, 3 rounds, the MLP, two worker threads.
const dir = mkdtempSync(path.join(tmpdir(), 'subfed-sim-e2e-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const config: SimConfig = validateSimConfig({
  ...PRESETS.quick,
  algorithms: ['fedavg', 'subfedavg-un', 'local'],
  dataset: 'synthetic',
  clients: 6,
  partition: { kind: 'shards', shardSize: 100, shardsPerClient: 2 },
  fraction: 0.5,
  rounds: 3,
  // Two epochs: Sub-FedAvg compares the candidate masks after the first and the last epoch.
  training: { epochs: 2, batchSize: 10, lr: 0.05, momentum: 0.5 },
  model: 'mlp',
  evalEvery: 2,
  workers: 2,
  backend: 'auto',
  seed: 7,
  // Prune hard and gate loosely so masks change within three short rounds.
  algorithmConfigs: { 'subfedavg-un': { ...PRESETS.quick.algorithmConfigs['subfedavg-un'], p: 20, accThresh: 0 } },
});

describe('subfed sim end to end (synthetic data, real gRPC, worker threads)', () => {
  const reports: RoundReport[] = [];
  const events: SimulationEvent[] = [];

  it('runs every algorithm for every round', async () => {
    const data = await loadDataset('synthetic', { seed: 7, synthetic: { train: 1200, test: 600 } });
    const writer = new RunWriter(path.join(dir, 'run'), config);
    for await (const round of runSimulation(config, { data, onEvent: (e) => events.push(e) })) {
      reports.push(round);
      writer.appendRound(round);
    }
    writer.finish([]);
    expect(reports.map((r) => `${r.algorithm}:${r.round}`)).toEqual([
      'fedavg:1',
      'fedavg:2',
      'fedavg:3',
      'subfedavg-un:1',
      'subfedavg-un:2',
      'subfedavg-un:3',
      'local:1',
      'local:2',
      'local:3',
    ]);
    expect(events[0].kind).toBe('setup');
    const lines = readFileSync(path.join(dir, 'run', 'rounds.jsonl'), 'utf8')
      .trimEnd()
      .split('\n');
    expect(lines.map((l) => JSON.parse(l) as unknown)).toEqual(reports);
  });

  const of = (algorithm: string) => reports.filter((r) => r.algorithm === algorithm);

  it('samples 3 members a round, the same ones for every algorithm', () => {
    for (const r of reports) expect(r.members).toHaveLength(3);
    const clientsOf = (r: RoundReport) => r.members.map((m) => m.client).sort();
    for (const round of [0, 1, 2]) {
      const fed = clientsOf(of('fedavg')[round]);
      expect(clientsOf(of('subfedavg-un')[round])).toEqual(fed);
      expect(clientsOf(of('local')[round])).toEqual(fed);
    }
  });

  it('learns: accuracy rises above chance', () => {
    // 2-class clients: chance on a client's own test data is 50%; the global model faces 10 classes.
    for (const algorithm of ['fedavg', 'subfedavg-un', 'local']) {
      const last = of(algorithm).at(-1)!;
      expect(last.evaluation).not.toBeNull();
      expect(last.membersAccuracy.mean).toBeGreaterThan(0.6);
    }
    const fed = of('fedavg');
    expect(fed[2].evaluation!.global!.mean).toBeGreaterThan(0.2);
    expect(fed[2].receivedAccuracy!.mean).toBeGreaterThan(fed[0].receivedAccuracy!.mean);
  });

  it('evaluates everyone on evaluation rounds only (every 2 and the last), on test and training data', () => {
    expect(of('fedavg').map((r) => r.evaluation !== null)).toEqual([false, true, true]);
    expect(of('fedavg').map((r) => r.evaluation?.global != null)).toEqual([false, true, true]);
    expect(of('subfedavg-un').every((r) => r.evaluation?.global == null)).toBe(true);
    const e = of('fedavg')[1].evaluation!;
    expect(e.clients.map((c) => c.client)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(e.clients.every((c) => c.global !== null)).toBe(true);
    // The headline is over the clients sampled in rounds 1-2; the rest are counted apart.
    const sampled = new Set(
      of('fedavg')
        .slice(0, 2)
        .flatMap((r) => r.members.map((m) => m.client)),
    );
    expect(e.clients.filter((c) => c.sampled).map((c) => c.client)).toEqual([...sampled].sort());
    expect(e.personalized.count + e.neverSampled).toBe(6);
    expect(e.personalized.count).toBe(sampled.size);
    for (const c of e.clients) {
      expect(Number.isFinite(c.test.loss)).toBe(true);
      // Only a sampled client is measured on its training data (a never-sampled one holds the initial model).
      expect('train' in c).toBe(c.sampled);
      if (c.sampled) {
        expect(c.train.accuracy).toBeGreaterThanOrEqual(0);
        expect(Number.isFinite(c.train.loss)).toBe(true);
      }
    }
  });

  it("records each member's received and trained model, with losses", () => {
    for (const r of of('fedavg')) {
      for (const m of r.members) {
        expect(m.received).not.toBeNull();
        expect(m.received!.loss).toBeGreaterThan(0);
        expect(m.personalized.loss).toBeGreaterThan(0);
      }
      expect(r.receivedAccuracy!.mean).toBeCloseTo(r.members.reduce((s, m) => s + m.received!.accuracy, 0) / 3, 12);
    }
    for (const r of of('local')) expect(r.members.every((m) => m.received === null)).toBe(true);
  });

  it('writes the report and the CSV files beside rounds.jsonl', () => {
    for (const file of ['report.html', 'series.csv', 'clients.csv', 'summary.json']) {
      expect(readFileSync(path.join(dir, 'run', file), 'utf8').length).toBeGreaterThan(100);
    }
  });

  it('counts bytes in both directions next to the dense size, and none for local-only', () => {
    for (const algorithm of ['fedavg', 'subfedavg-un']) {
      for (const r of of(algorithm)) {
        expect(r.bytes.up).toBeGreaterThan(0);
        expect(r.bytes.down).toBeGreaterThan(0);
        expect(r.bytes.denseUp).toBeGreaterThan(0);
        expect(r.bytes.denseDown).toBeGreaterThan(0);
      }
    }
    // The MLP has 199,210 parameters: three dense f32 downloads are at least 3 * 4 * 199,210 bytes.
    expect(of('fedavg')[0].bytes.denseDown).toBe(3 * 4 * 199_210);
    for (const r of of('local')) expect(r.bytes).toEqual({ up: 0, down: 0, denseUp: 0, denseDown: 0 });
    expect(of('local').every((r) => r.receivedAccuracy === null)).toBe(true);
  });

  it('prunes under subfedavg-un only', () => {
    expect(of('subfedavg-un').at(-1)!.meanSparsity).toBeGreaterThan(0);
    expect(of('fedavg').every((r) => r.meanSparsity === 0)).toBe(true);
  });

  it('reports the sparsity each download was cut to: none on first contact, one pruning step behind after', () => {
    const un = of('subfedavg-un');
    expect(un[0].receivedSparsity).toBe(0);
    for (const r of un) expect(r.receivedSparsity).toBeLessThanOrEqual(r.meanSparsity);
  });
});
