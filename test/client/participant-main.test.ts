/**
 * `subfed client` (runClient) against a real in-process coordinator over
 * loopback gRPC: joins, trains rounds, pushes sparse updates, saves its state,
 * resumes from it, and reports bad input clearly.
 */
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import { ClientCommandError, optionsFromFlags, runClient } from '../../client/main.js';
import { createModel } from '../../client/model.js';
import { loadState } from '../../client/state.js';
import type { Dataset } from '../../client/data/dataset.js';
import { startCoordinator, type CoordinatorHandle } from '../../server/main.js';
import type { TrainingOverrides } from '../../proto/training-config.js';
import { tinyData } from './participant-helpers.js';

const TOKEN = 'enroll-secret';

function idxFiles(ds: Dataset): { images: Buffer; labels: Buffer } {
  const images = Buffer.alloc(16 + ds.images.length);
  images.writeUInt32BE(0x00000803, 0);
  images.writeUInt32BE(ds.count, 4);
  images.writeUInt32BE(ds.height, 8);
  images.writeUInt32BE(ds.width, 12);
  images.set(ds.images, 16);
  const labels = Buffer.alloc(8 + ds.count);
  labels.writeUInt32BE(0x00000801, 0);
  labels.writeUInt32BE(ds.count, 4);
  labels.set(ds.labels, 8);
  return { images, labels };
}

async function startServer(rounds: number, training: TrainingOverrides = { epochs: 2, lr: 0.05 }): Promise<CoordinatorHandle> {
  const model = createModel('mlp', 0);
  const manifest = model.manifest.map((s) => ({ ...s, shape: [...s.shape] }));
  const initial = model.getWeights();
  model.dispose();
  return startCoordinator(
    {
      rounds,
      frac: 1,
      minClients: 1,
      enrollmentToken: TOKEN,
      http: { enabled: false },
      training,
      logLevel: 'silent',
    },
    { manifest, initial },
    { logger: pino({ level: 'silent' }) },
  );
}

describe('runClient', () => {
  let dir: string;
  let dataDir: string;

  beforeAll(async () => {
    await initBackend('wasm', { logger: { info: () => {} } });
    dir = await mkdtemp(join(tmpdir(), 'subfed-client-'));
    dataDir = join(dir, 'data');
    const { train, test } = tinyData(21, 80, 30);
    for (const [split, ds] of [
      ['train', train],
      ['test', test],
    ] as const) {
      await mkdir(join(dataDir, split), { recursive: true });
      const { images, labels } = idxFiles(ds);
      await writeFile(join(dataDir, split, 'images-idx3-ubyte'), images);
      await writeFile(join(dataDir, split, 'labels-idx1-ubyte'), labels);
    }
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('joins, trains rounds with pruning, pushes updates and saves its state; a restart resumes from it', async () => {
    const server = await startServer(2);
    const stateDir = join(dir, 'state');
    const lines: string[] = [];
    const config = { gateOn: 'test', accThresh: 0 };
    try {
      const summary = await runClient({
        server: server.grpcAddress,
        enrollmentToken: TOKEN,
        data: dataDir,
        stateDir,
        algorithm: 'subfedavg-un',
        algorithmConfig: config,
        backend: 'wasm',
        name: 'unit-client',
        maxRounds: 2,
        log: (l) => lines.push(l),
      });
      await server.waitForRound(2);
      expect(summary.rounds).toBe(2);
      expect(summary.bytesUp).toBeGreaterThan(0);
      expect(summary.bytesDown).toBeGreaterThan(0);
      expect(summary.lastAccuracy).toBeGreaterThan(0.5);
      expect(lines.some((l) => /^joined .* as c1/.test(l))).toBe(true);
      expect(lines.some((l) => /^round 2: loss/.test(l))).toBe(true);
      const state = await loadState(stateDir, { algorithm: 'subfedavg-un', model: 'mlp' });
      expect(state!.round).toBe(2);
      expect(state!.maskVersion).toBeGreaterThan(0); // the coordinator's epochs=2 let the Un rule prune
      expect(state!.clientId).toBe('c1');
    } finally {
      await server.stop();
    }

    // A new coordinator; the client resumes its personal state and re-sends its masks.
    const again = await startServer(1);
    const more: string[] = [];
    try {
      const before = await loadState(stateDir);
      const summary = await runClient({
        server: again.grpcAddress,
        enrollmentToken: TOKEN,
        data: dataDir,
        stateDir,
        algorithm: 'subfedavg-un',
        algorithmConfig: config,
        backend: 'wasm',
        name: 'unit-client',
        maxRounds: 1,
        log: (l) => more.push(l),
      });
      expect(summary.rounds).toBe(1);
      expect(
        more.some((l) => l.startsWith(`personal state from ${stateDir}: round 2, mask version ${before!.maskVersion}`)),
      ).toBe(true);
      // the new coordinator does not know the saved identity: the client joins again
      expect(more.some((l) => l.startsWith('pull: unknown client'))).toBe(true);
      await again.waitForRound(1);
      const after = await loadState(stateDir);
      expect(after!.maskVersion).toBeGreaterThan(before!.maskVersion);
    } finally {
      await again.stop();
    }
  });

  it('a restarted client resumes its identity: no new join, and its first task is already sparse', async () => {
    const server = await startServer(3);
    const stateDir = join(dir, 'state-same');
    const run = (lines: string[]) =>
      runClient({
        server: server.grpcAddress,
        enrollmentToken: TOKEN,
        data: dataDir,
        stateDir,
        algorithm: 'subfedavg-un',
        algorithmConfig: { gateOn: 'test', accThresh: 0 },
        backend: 'wasm',
        maxRounds: 1,
        log: (l) => lines.push(l),
      });
    try {
      const first: string[] = [];
      const a = await run(first);
      expect(first.some((l) => l.startsWith('joined '))).toBe(true);
      const saved = await loadState(stateDir);
      expect(saved!.clientToken).not.toBe('');
      expect(saved!.maskVersion).toBeGreaterThan(0);
      const second: string[] = [];
      const b = await run(second);
      expect(second.some((l) => l.startsWith(`resuming as ${saved!.clientId} `))).toBe(true);
      expect(second.some((l) => l.startsWith('joined '))).toBe(false);
      expect(b.rounds).toBe(1);
      // the first task of the first run was dense; the resumed one skips the pruned weights
      expect(b.bytesDown).toBeLessThan(0.95 * a.bytesDown);
      await server.waitForRound(2);
    } finally {
      await server.stop();
    }
  });

  it('returns once the coordinator says training is finished, with its state saved', async () => {
    const server = await startServer(2);
    const stateDir = join(dir, 'state-finished');
    const run = (lines: string[]) =>
      runClient({
        server: server.grpcAddress,
        enrollmentToken: TOKEN,
        data: dataDir,
        stateDir,
        algorithm: 'fedavg',
        backend: 'wasm',
        log: (l) => lines.push(l),
      });
    try {
      // No maxRounds: only the coordinator's signal ends the run.
      const lines: string[] = [];
      const summary = await run(lines);
      expect(summary).toMatchObject({ rounds: 2, finished: true });
      expect(lines.filter((l) => l.startsWith('training finished after round 2'))).toHaveLength(1);
      expect(lines.some((l) => l.startsWith('stopped after'))).toBe(false);
      expect((await loadState(stateDir))!.round).toBe(2);
      // A restart after the end trains nothing and returns at once.
      const again: string[] = [];
      expect(await run(again)).toMatchObject({ rounds: 0, finished: true });
      expect(again.some((l) => l.startsWith('training finished after round 2'))).toBe(true);
      expect((await loadState(stateDir))!.round).toBe(2);
    } finally {
      await server.stop();
    }
  });

  it('stops after the current round when aborted, with its state saved', async () => {
    const server = await startServer(10);
    const controller = new AbortController();
    const stateDir = join(dir, 'state-abort');
    const lines: string[] = [];
    try {
      const summary = await runClient({
        server: server.grpcAddress,
        enrollmentToken: TOKEN,
        data: dataDir,
        stateDir,
        algorithm: 'fedavg',
        backend: 'wasm',
        signal: controller.signal,
        log: (l) => {
          lines.push(l);
          if (l.startsWith('round 1:')) controller.abort();
        },
      });
      expect(summary.rounds).toBe(1);
      expect((await loadState(stateDir))!.round).toBe(1);
      expect(lines.some((l) => l.startsWith('stopped after 1 round(s); state saved'))).toBe(true);
    } finally {
      await server.stop();
    }
  });

  it('waits with backoff while the coordinator is unreachable and stops when aborted', async () => {
    const controller = new AbortController();
    const lines: string[] = [];
    const summary = await runClient({
      server: '127.0.0.1:1',
      enrollmentToken: TOKEN,
      data: dataDir,
      stateDir: join(dir, 'state-unreachable'),
      algorithm: 'fedavg',
      backend: 'wasm',
      retry: { maxAttempts: 1 },
      signal: controller.signal,
      log: (l) => {
        lines.push(l);
        if (l.includes('unavailable')) controller.abort();
      },
    });
    expect(summary.rounds).toBe(0);
    expect(lines.some((l) => /^join: coordinator unavailable .* retrying in/.test(l))).toBe(true);
  });

  it('reports bad options naming the flag', async () => {
    const base = {
      server: '127.0.0.1:1',
      enrollmentToken: TOKEN,
      data: dataDir,
      stateDir: join(dir, 's'),
      algorithm: 'fedavg',
      log: () => {},
    };
    await expect(runClient({ ...base, server: 'nohost' })).rejects.toThrow(/--server: expected host:port, got 'nohost'/);
    await expect(runClient({ ...base, algorithm: 'fedprox' })).rejects.toThrow(/--algorithm: unknown algorithm 'fedprox'/);
    await expect(runClient({ ...base, data: join(dir, 'missing') })).rejects.toThrow(ClientCommandError);
    await expect(runClient({ ...base, data: join(dir, 'missing') })).rejects.toThrow(/--data: '.*missing' is not a folder/);
    await expect(runClient({ ...base, algorithm: 'subfedavg-un', algorithmConfig: { p: -1 } })).rejects.toThrow(/config: p:/);
    await expect(runClient({ ...base, algorithm: 'local', backend: 'wasm' })).rejects.toThrow(/--model/);
  });

  it("refuses a coordinator's one-epoch task with Sub-FedAvg, naming the field, instead of training without pruning", async () => {
    const server = await startServer(1, { epochs: 1 });
    const base = { server: server.grpcAddress, enrollmentToken: TOKEN, data: dataDir, backend: 'wasm' as const, log: () => {} };
    try {
      await expect(runClient({ ...base, stateDir: join(dir, 'state-1-epoch'), algorithm: 'subfedavg-un' })).rejects.toThrow(
        /^round 1: task config does not suit subfedavg-un: epochs: expected at least 2: Sub-FedAvg compares the masks/,
      );
      // nothing was pushed: the round still waits for its member's update
      expect(server.coordinator.status().round).toMatchObject({ id: 1, members: 1, reported: 0 });
    } finally {
      await server.stop();
    }
  });

  it('turns CLI flags into options, naming each bad flag', async () => {
    const flags = { server: '127.0.0.1:5000', token: TOKEN, data: dataDir };
    const cfgFile = join(dir, 'algo.json');
    await writeFile(cfgFile, '{"target": 40}');
    expect(await optionsFromFlags({ ...flags, config: cfgFile, seed: '7', rounds: '3' })).toMatchObject({
      server: '127.0.0.1:5000',
      algorithm: 'subfedavg-un',
      algorithmConfig: { target: 40 },
      seed: 7,
      maxRounds: 3,
      valueEncoding: 'f32',
    });
    expect((await optionsFromFlags({ ...flags, config: '{"p": 5}' })).algorithmConfig).toEqual({ p: 5 });
    await expect(optionsFromFlags({ ...flags, rounds: '0' })).rejects.toThrow(/--rounds: expected an integer >= 1, got '0'/);
    await expect(optionsFromFlags({ ...flags, seed: '1.5' })).rejects.toThrow(/--seed/);
    await expect(optionsFromFlags({ ...flags, backend: 'gpu' })).rejects.toThrow(/--backend: .* got 'gpu'/);
    await expect(optionsFromFlags({ ...flags, config: '{oops' })).rejects.toThrow(/--config: not valid JSON/);
    await expect(optionsFromFlags({ ...flags, config: join(dir, 'nope.json') })).rejects.toThrow(/--config: cannot read/);
    await expect(optionsFromFlags({ server: '127.0.0.1:5000', data: dataDir })).rejects.toThrow(/--token is required/);
  });

  it('runs local-only training without a coordinator', async () => {
    const summary = await runClient({
      server: '127.0.0.1:1',
      enrollmentToken: TOKEN,
      data: dataDir,
      stateDir: join(dir, 'state-local'),
      algorithm: 'local',
      algorithmConfig: { epochs: 1, lr: 0.05 },
      model: 'mlp',
      backend: 'wasm',
      maxRounds: 2,
      log: () => {},
    });
    expect(summary).toMatchObject({ rounds: 2, bytesUp: 0, bytesDown: 0 });
    expect((await loadState(join(dir, 'state-local')))!.round).toBe(2);
  });
});
