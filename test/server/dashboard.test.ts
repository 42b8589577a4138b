// The dashboard feed, driven through a Coordinator directly: what it makes of
// committed rounds (means over reporters, dropouts, running byte totals), the
// client table, the events it sends, and the history it starts from.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { encodeSparseTensor } from '../../proto/codec.js';
import { Mask } from '../../proto/mask.js';
import { PROTOCOL_VERSION, type UpdateMetrics } from '../../proto/rpc.js';
import { parseConfig } from '../../server/config.js';
import { Coordinator } from '../../server/coordinator.js';
import { DashboardFeed, LIVENESS_POLL_MS, roundPoint, type DashboardEvent } from '../../server/dashboard.js';
import { CoordinatorMetrics } from '../../server/metrics.js';
import type { RoundSummary } from '../../server/store.js';
import { ENROLL, memoryLogger, toyModel } from './harness.js';

const dir = mkdtempSync(join(tmpdir(), 'subfed-dashboard-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function coordinator(sqlite?: string, now?: () => number): Coordinator {
  const config = parseConfig({
    rounds: 3,
    fraction: 1,
    minClients: 2,
    enrollmentToken: ENROLL,
    roundDeadlineMs: 600_000,
    liveness: { staleAfterMs: 10_000, goneAfterMs: 60_000 },
    ...(sqlite !== undefined ? { sqlite } : {}),
  });
  return new Coordinator(config, toyModel(), { logger: memoryLogger().logger, metrics: new CoordinatorMetrics(), now });
}

function join2(coord: Coordinator, names: string[]) {
  return names.map((name, i) => {
    const r = coord.join({
      protocolVersion: PROTOCOL_VERSION,
      enrollmentToken: ENROLL,
      clientName: name,
      numExamples: 10 * (i + 1),
    });
    return { id: r.clientId, token: r.clientToken };
  });
}

function push(coord: Coordinator, c: { id: string; token: string }, round: number, metrics: UpdateMetrics) {
  const tensor = encodeSparseTensor('dense/kernel', { mask: Mask.full(6), kept: new Float32Array(6) }, [2, 3], {
    values: 'f32',
  });
  const bias = encodeSparseTensor('dense/bias', { mask: Mask.full(3), kept: new Float32Array(3) }, [3], { values: 'f32' });
  coord.task({ protocolVersion: PROTOCOL_VERSION, clientId: c.id, clientToken: c.token, maskVersion: 0, valueEncoding: 1 });
  coord.pushUpdate(
    {
      protocolVersion: PROTOCOL_VERSION,
      clientId: c.id,
      clientToken: c.token,
      roundId: round,
      numExamples: 10,
      baseMaskVersion: 0,
      maskChanged: false,
      newMaskVersion: 0,
      metrics,
      tensorCount: 2,
    },
    [tensor, bias],
  );
}

const metrics = (accuracy: number, sparsity: number, channelsKept: number[] = []): UpdateMetrics => ({
  loss: 1,
  localAccuracy: accuracy,
  receivedAccuracy: accuracy / 2,
  sparsity,
  channelsKept,
});

describe('roundPoint', () => {
  const summary: RoundSummary = {
    round: 4,
    attempts: 2,
    committedAt: 1,
    members: ['c1', 'c2', 'c3'],
    reporters: ['c1', 'c3'],
    metrics: {
      c1: { numExamples: 1, loss: 1, localAccuracy: 0.8, receivedAccuracy: 0.4, sparsity: 0.2, channelsKept: [4, 10] },
      c3: { numExamples: 1, loss: 1, localAccuracy: 0.6, receivedAccuracy: 0.2, sparsity: 0.4, channelsKept: [6, 12] },
    },
    bytesUp: 100,
    bytesDown: 300,
    traffic: {},
    denseBytesUp: 1000,
    denseBytesDown: 2000,
    aggregationSeconds: 0,
  };

  it('averages over the reporters, counts dropouts and keeps running byte totals', () => {
    const before = roundPoint({ ...summary, round: 3 }, undefined);
    const p = roundPoint(summary, before);
    expect(p).toMatchObject({ round: 4, attempts: 2, members: 3, reporters: 2, dropouts: 1, bytes: 400, denseBytes: 3000 });
    expect(p.accuracy).toBeCloseTo(0.7);
    expect(p.receivedAccuracy).toBeCloseTo(0.3);
    expect(p.sparsity).toBeCloseTo(0.3);
    expect(p.channelsKept).toEqual([5, 11]);
    expect([p.cumulativeBytes, p.cumulativeDenseBytes]).toEqual([800, 6000]);
  });

  it('has no means and no channels when nobody reported them', () => {
    const p = roundPoint({ ...summary, reporters: [], metrics: {} }, undefined);
    expect([p.accuracy, p.receivedAccuracy, p.sparsity, p.channelsKept]).toEqual([null, null, null, null]);
    const { channelsKept: _, ...stored } = summary.metrics.c1; // a round stored before channels were sent
    const old = roundPoint({ ...summary, reporters: ['c1'], metrics: { c1: stored } }, undefined);
    expect(old.channelsKept).toBeNull();
  });
});

describe('DashboardFeed', () => {
  it('tells its subscribers about joins, round progress and commits, and keeps the client table', () => {
    const coord = coordinator();
    const feed = new DashboardFeed();
    feed.attach(coord, 'test');
    const events: DashboardEvent[] = [];
    feed.subscribe((e) => events.push(e));

    const [a, b] = join2(coord, ['alpha', 'beta']);
    const kinds = () => events.map((e) => e.kind);
    expect(kinds()).toEqual(['clients', 'status', 'clients', 'status']);
    const lastClients = events.filter((e) => e.kind === 'clients').at(-1);
    expect(lastClients?.kind === 'clients' && lastClients.clients.map((c) => c.name)).toEqual(['alpha', 'beta']);

    events.length = 0;
    push(coord, a, 1, metrics(0.9, 0.2, [3, 5]));
    // A new last-seen time alone does not resend the table.
    expect(kinds()).toEqual(['status']);
    push(coord, b, 1, metrics(0.7, 0.4, [5, 7]));
    expect(kinds()).toEqual(['status', 'round', 'status']);
    const round = events.find((e) => e.kind === 'round');
    if (round?.kind !== 'round') throw new Error('no round event');
    expect(round.round).toMatchObject({ round: 1, members: 2, reporters: 2, dropouts: 0, channelsKept: [4, 6] });
    expect(round.round.accuracy).toBeCloseTo(0.8);
    expect(round.clients.map((c) => [c.id, c.rounds, c.lastRound, c.sparsity])).toEqual([
      [a.id, 1, 1, 0.2],
      [b.id, 1, 1, 0.4],
    ]);

    const snapshot = feed.snapshot();
    expect(snapshot).toMatchObject({ title: 'test', model: { tensors: 2, parameters: 9 } });
    expect(snapshot.status?.lastCommittedRound).toBe(1);
    expect(snapshot.rounds).toHaveLength(1);
    expect(snapshot.clients.map((c) => c.rounds)).toEqual([1, 1]);

    feed.detach();
    events.length = 0;
    push(coord, a, 2, metrics(0.9, 0.2));
    expect(events).toEqual([]);
    coord.stop();
  });

  it('starts from the stored history of a resumed coordinator', () => {
    const file = join(dir, 'history.db');
    const first = coordinator(file);
    const [a, b] = join2(first, ['alpha', 'beta']);
    for (const round of [1, 2]) {
      push(first, a, round, metrics(0.5 + round / 10, 0.1 * round));
      push(first, b, round, metrics(0.4 + round / 10, 0.1 * round));
    }
    first.stop();

    const resumed = coordinator(file);
    const feed = new DashboardFeed();
    const events: DashboardEvent[] = [];
    feed.subscribe((e) => events.push(e));
    feed.attach(resumed, 'resumed');
    expect(events.map((e) => e.kind)).toEqual(['snapshot']);
    const { rounds, clients } = feed.snapshot();
    expect(rounds.map((r) => r.round)).toEqual([1, 2]);
    expect(rounds[1].cumulativeBytes).toBe(rounds[0].bytes + rounds[1].bytes);
    expect(clients.map((c) => [c.name, c.rounds, c.lastRound])).toEqual([
      ['alpha', 2, 2],
      ['beta', 2, 2],
    ]);
    resumed.stop();
  });

  it('sends the table when a silent client turns stale, then gone, with no call to the coordinator', () => {
    vi.useFakeTimers();
    let clock = 1_000_000;
    const coord = coordinator(undefined, () => clock);
    const feed = new DashboardFeed();
    try {
      const [a] = join2(coord, ['alpha', 'beta']);
      feed.attach(coord, 'liveness');
      const tables: string[][] = [];
      feed.subscribe((e) => {
        if (e.kind === 'clients') tables.push(e.clients.map((c) => `${c.name}:${c.state}`));
      });
      const poll = () => vi.advanceTimersByTime(LIVENESS_POLL_MS);

      poll();
      expect(tables).toEqual([]); // nothing changed: nothing sent

      clock += 5_000;
      coord.heartbeat({ protocolVersion: PROTOCOL_VERSION, clientId: a.id, clientToken: a.token });
      clock += 6_000; // beta silent for 11 s: stale; alpha heard from 6 s ago
      poll();
      expect(tables).toEqual([['alpha:alive', 'beta:stale']]);
      const seen = feed.snapshot().clients.map((c) => c.lastSeenAt);
      expect(seen).toEqual([1_005_000, 1_000_000]);

      clock += 60_000;
      poll();
      expect(tables.at(-1)).toEqual(['alpha:gone', 'beta:gone']);
      const count = tables.length;
      poll();
      expect(tables).toHaveLength(count); // states unchanged since: nothing sent

      feed.detach();
      coord.heartbeat({ protocolVersion: PROTOCOL_VERSION, clientId: a.id, clientToken: a.token });
      poll();
      expect(tables).toHaveLength(count); // a detached feed stops looking
    } finally {
      feed.detach();
      coord.stop();
      vi.useRealTimers();
    }
  });
});
