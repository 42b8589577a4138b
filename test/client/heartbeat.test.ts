/**
 * Heartbeats, client side: a client heartbeats while it trains a long local
 * round (training is CPU-bound on the event loop, and yields between batches),
 * and a failing heartbeat is reported once and never stops a round.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import type { ClientEvent } from '../../client/events.js';
import { runClient } from '../../client/main.js';
import { clientOptions } from '../../client/options.js';
import type { Coordinator } from '../../server/coordinator.js';
import { memoryLogger, startMlpCoordinator, TOKEN, writeIdxFolder } from './client-run-helpers.js';

/** Replaces the coordinator's Heartbeat handler, recording when each call arrived. */
function countHeartbeats(coordinator: Coordinator, answer?: () => never): { times: number[]; restore: () => void } {
  const original = coordinator.heartbeat.bind(coordinator);
  const times: number[] = [];
  coordinator.heartbeat = (req) => {
    times.push(performance.now());
    if (answer !== undefined) answer();
    return original(req);
  };
  return { times, restore: () => (coordinator.heartbeat = original) };
}

describe('client heartbeats', () => {
  let dir: string;
  let dataDir: string;

  beforeAll(async () => {
    await initBackend('wasm', { logger: { info: () => {} } });
    dir = await mkdtemp(join(tmpdir(), 'subfed-heartbeat-'));
    dataDir = join(dir, 'data');
    // Enough examples that one round of local training spans many heartbeat intervals.
    await writeIdxFolder(dataDir, 5, 1200, 40);
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('heartbeats while it trains a long local round', async () => {
    const server = await startMlpCoordinator(1, { epochs: 6, batchSize: 10 });
    const beats = countHeartbeats(server.coordinator);
    const marks: Partial<Record<ClientEvent['kind'], number>> = {};
    try {
      const { logger, records } = memoryLogger();
      const summary = await runClient(
        clientOptions({
          server: server.grpcAddress,
          enrollmentToken: TOKEN,
          data: dataDir,
          stateDir: join(dir, 'state-long'),
          algorithm: 'fedavg',
          backend: 'wasm',
          heartbeatMs: 10,
        }),
        { logger, onEvent: (e) => (marks[e.kind] ??= performance.now()) },
      );
      expect(summary).toMatchObject({ rounds: 1, finished: true });
      const [start, end] = [marks['round-started']!, marks.trained!];
      const duringTraining = beats.times.filter((t) => t > start && t < end);
      // 6 epochs of 120 batches take hundreds of ms: a loop that never yields lets no heartbeat through.
      // How many get through depends on the machine's speed (one at a time, each needing the loop
      // to yield on both ends), so the count asserted is the one that tells the two apart.
      expect(duringTraining.length).toBeGreaterThanOrEqual(1);
      expect(records.filter((r) => r.event === 'heartbeat-failed')).toEqual([]);
    } finally {
      beats.restore();
      await server.stop();
    }
  });

  it('reports a failing heartbeat once, and the round goes on', async () => {
    const server = await startMlpCoordinator(1, { epochs: 3, batchSize: 10 });
    const beats = countHeartbeats(server.coordinator, () => {
      throw new Error('heartbeat store down');
    });
    const events: ClientEvent[] = [];
    try {
      const { logger, records } = memoryLogger();
      const summary = await runClient(
        clientOptions({
          server: server.grpcAddress,
          enrollmentToken: TOKEN,
          data: dataDir,
          stateDir: join(dir, 'state-failing'),
          algorithm: 'fedavg',
          backend: 'wasm',
          heartbeatMs: 10,
        }),
        { logger, onEvent: (e) => events.push(e) },
      );
      expect(summary).toMatchObject({ rounds: 1, finished: true });
      expect(events.map((e) => e.kind)).toContain('pushed');
      expect(beats.times.length).toBeGreaterThanOrEqual(2); // it kept trying
      const failed = events.filter((e) => e.kind === 'heartbeat-failed');
      expect(failed).toEqual([{ kind: 'heartbeat-failed', reason: 'Heartbeat failed: INTERNAL (13): internal error' }]);
      expect(records.filter((r) => r.event === 'heartbeat-failed')).toMatchObject([{ level: 40, reason: failed[0].reason }]);
    } finally {
      beats.restore();
      await server.stop();
    }
  });
});
