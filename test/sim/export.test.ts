// subfed sim --export: every client's state and compact model written after the last
// round, measured as the simulator measures its personalized accuracy, and the
// report's spread of model sizes and layer widths over clients.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import { runExport } from '../../client/export/export.js';
import { readExport } from '../../client/export/files.js';
import { loadDataset } from '../../sim/datasets.js';
import { PRESETS, validateSimConfig, type SimConfig } from '../../sim/presets.js';
import { formatExportTable, summarizeExports, type AlgorithmExports, type RoundReport } from '../../sim/report.js';
import { runSimulation, type SimulationEvent } from '../../sim/run.js';
import type { ClientExport } from '../../sim/worker-protocol.js';

const dir = mkdtempSync(join(tmpdir(), 'subfed-sim-export-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const config: SimConfig = validateSimConfig({
  ...PRESETS.quick,
  algorithms: ['subfedavg-hy'],
  algorithmConfigs: { 'subfedavg-hy': { gateOn: 'test', q: 0.45 } },
  dataset: 'synthetic',
  clients: 4,
  partition: { kind: 'shards', shardSize: 50, shardsPerClient: 2 },
  maxTestPerClient: 50,
  fraction: 1,
  rounds: 2,
  training: { epochs: 2, batchSize: 10, lr: 0.1, momentum: 0.5 },
  workers: 2,
  backend: 'wasm',
  seed: 3,
});

describe('subfed sim --export', () => {
  it("writes every client's state and compact model; their accuracy is the run's personalized accuracy", async () => {
    const data = await loadDataset('synthetic', { seed: 3, synthetic: { train: 400, test: 200 } });
    const exported: AlgorithmExports[] = [];
    const reports: RoundReport[] = [];
    const onEvent = (e: SimulationEvent): void => {
      if (e.kind === 'exported') exported.push(e);
    };
    for await (const r of runSimulation(config, { data, exportTo: join(dir, 'models'), onEvent })) reports.push(r);
    expect(exported).toHaveLength(1);
    const { clients, dir: folder } = exported[0];
    expect(folder).toBe(join(dir, 'models', 'subfedavg-hy'));
    expect(clients.map((c) => c.client)).toEqual([0, 1, 2, 3]);
    const last = reports.at(-1)!;
    // Each compact model scores exactly what the run measured for the client's personalized model.
    const measured = new Map(last.evaluation!.clients.map((c) => [c.client, c.test.accuracy]));
    for (const c of clients) expect(c.accuracy).toBeCloseTo(measured.get(c.client)!, 12);
    for (const c of clients) {
      expect(c.dir).toBe(join(folder, `client-${c.client}`, 'model'));
      expect(existsSync(join(folder, `client-${c.client}`, 'client-state.bin'))).toBe(true);
      expect(c.bytes).toBeLessThanOrEqual(c.maskedBytes);
      expect(c.widths.map((w) => w.name)).toEqual(['conv1', 'conv2', 'fc1', 'fc2']);
    }

    // The saved state exports to the same files subfed export writes.
    await initBackend('wasm', { logger: { info: () => {} } });
    const again = await runExport({
      stateDir: join(folder, 'client-1'),
      out: join(dir, 'again'),
      format: 'layers',
      quantization: 'f32',
      data: undefined,
      fineTuneEpochs: 0,
      seed: 0,
    });
    const written = await readExport(clients[1].dir);
    expect(again.layers.map((l) => l.after)).toEqual(clients[1].widths.map((w) => w.width));
    expect(again.parameters.compact).toBe(clients[1].parameters);
    expect(written.metadata.input).toEqual({ kind: 'images', mean: [0.5], std: [0.5] });
    expect(written.metadata.origin).toBe('subfedavg-hy simulated client 1 after round 2, compact');
  });

  it('summarises the sizes and widths over clients', () => {
    const client = (id: number, bytes: number, widths: number[]): ClientExport => ({
      client: id,
      dir: `m/client-${id}/model`,
      bytes,
      maskedBytes: 1000,
      parameters: bytes / 4,
      keptParameters: bytes / 4,
      widths: widths.map((width, i) => ({ name: `l${i}`, width })),
      accuracy: 0.5 + id / 10,
    });
    const summary = summarizeExports({
      algorithm: 'subfedavg-hy',
      dir: 'm',
      clients: [client(0, 400, [5, 10]), client(1, 600, [6, 12]), client(2, 400, [5, 10]), client(3, 1000, [10, 20])],
    });
    expect(summary).toMatchObject({
      clients: 4,
      bytes: { min: 400, median: 500, max: 1000 },
      maskedBytes: 1000,
      layers: ['l0', 'l1'],
      architectures: [
        { widths: [5, 10], clients: 2 },
        { widths: [10, 20], clients: 1 },
        { widths: [6, 12], clients: 1 },
      ],
    });
    expect(summary.meanAccuracy).toBeCloseTo(0.65, 12);
    const table = formatExportTable([summary]);
    expect(table).toMatch(/^subfedavg-hy +4 +400 B +500 B +1000 B +1000 B +65\.0%$/m);
    expect(table).toContain('subfedavg-hy widths (l0, l1): 5-10 x2, 10-20 x1, 6-12 x1');
  });
});
