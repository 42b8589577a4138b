// Liveness: alive, stale and gone by the clock, never by waiting. In-process
// cases fake the timers (Date and setTimeout move together); the gRPC case
// injects the coordinator's clock and drives heartbeats over loopback.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { PROTOCOL_VERSION, createCoordinatorDefinition, type HeartbeatRequest, type HeartbeatResponse } from '../../proto/rpc.js';
import { parseConfig, type CoordinatorConfigInput } from '../../server/config.js';
import { Coordinator } from '../../server/coordinator.js';
import { CoordinatorMetrics } from '../../server/metrics.js';
import { startCoordinator } from '../../server/main.js';
import {
  ENROLL,
  ScriptedClient,
  inProcessCoordinator,
  kernelDelta,
  withBias,
  memoryLogger,
  toyModel,
  updateHeader,
  type Joined,
} from './harness.js';

const S = 1000;
const LIVENESS = { staleAfterMs: 30 * S, goneAfterMs: 300 * S };

/** Three clients, all members of round 1; a deadline far enough that only reports and liveness close rounds. */
function start(overrides: Partial<CoordinatorConfigInput> = {}, clients = 3) {
  const {
    coord,
    clients: joined,
    log,
    metrics,
  } = inProcessCoordinator({ rounds: 5, minClients: 3, roundDeadlineMs: 600 * S, liveness: LIVENESS, ...overrides }, clients);
  const cred = (c: Joined) => ({ protocolVersion: PROTOCOL_VERSION, clientId: c.id, clientToken: c.token });
  const beat = (...cs: Joined[]) => cs.map((c) => coord.heartbeat(cred(c)));
  const push = (c: Joined, round: number) => coord.pushUpdate(updateHeader(c, round), withBias(kernelDelta([0, 0, 0, 0, 0, 0])));
  const pull = (c: Joined) => coord.task({ ...cred(c), maskVersion: 0, valueEncoding: 0 }).header;
  const state = (c: Joined) => coord.listClients().clients.find((v) => v.id === c.id)?.state;
  /** Advances the clock `ms` in steps of `step`, heartbeating `alive` after each, as live clients do. */
  const pass = (ms: number, alive: Joined[], step = 20 * S) => {
    for (let t = 0; t < ms; t += step) {
      vi.advanceTimersByTime(Math.min(step, ms - t));
      beat(...alive);
    }
  };
  return { coord, clients: joined, log, metrics, cred, beat, push, pull, state, pass };
}

describe('liveness in the coordinator', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('a silent member turns stale (still awaited), then gone (its round commits without it); it is sampled again once it calls', async () => {
    vi.useFakeTimers({ now: 0 });
    const s = start();
    const [a, b, c] = s.clients;
    s.push(a, 1);
    s.push(b, 1);
    s.pass(40 * S, [a, b]);
    expect([s.state(a), s.state(b), s.state(c)]).toEqual(['alive', 'alive', 'stale']);
    // Stale is not gone: c may be training, so round 1 still waits for it.
    expect(s.coord.status()).toMatchObject({ lastCommittedRound: 0, round: { id: 1, reported: 2 } });

    // At 300 s of silence c is gone; the round's liveness timer commits with a and b.
    s.pass(260 * S, [a, b]);
    expect(s.state(c)).toBe('gone');
    expect(s.coord.rounds(1)[0]).toMatchObject({ round: 1, members: [a.id, b.id, c.id], reporters: [a.id, b.id] });
    expect(s.coord.status()).toMatchObject({ lastCommittedRound: 1, round: { id: 2, members: 2 } });
    expect(s.coord.members().sort()).toEqual([a.id, b.id]);
    expect(s.log.lines().filter((l) => l.event === 'round_open')[1]).toMatchObject({ round: 2, members: 2, stale: 0, gone: 1 });
    const gauge = await s.metrics.registry.getSingleMetricAsString('subfed_clients');
    expect(gauge).toContain('subfed_clients{state="alive"} 2');
    expect(gauge).toContain('subfed_clients{state="gone"} 1');
    expect(s.coord.listClients().clients.find((v) => v.id === c.id)).toMatchObject({ state: 'gone', lastSeenAt: 0 });

    // c calls again: alive, but round 2 was sampled without it; round 3 samples it again.
    expect(s.beat(c)[0]).toEqual({ currentRound: 2, taskAvailable: false, finished: false });
    expect(s.state(c)).toBe('alive');
    expect(s.log.lines().find((l) => l.event === 'client_back')).toMatchObject({ clientId: c.id, was: 'gone' });
    expect(s.pull(c)).toMatchObject({ hasTask: false, roundId: 2 });
    s.push(a, 2);
    s.push(b, 2);
    expect(s.coord.status().round).toMatchObject({ id: 3, members: 3 });
    expect(s.coord.members()).toContain(c.id);
    expect(s.pull(c)).toMatchObject({ hasTask: true, roundId: 3 });
    s.coord.stop();
  });

  it('does not sample a stale client; the deadline quorum still counts it as awaited', () => {
    vi.useFakeTimers({ now: 0 });
    const s = start({ roundDeadlineMs: 60 * S });
    const [a, b, c] = s.clients;
    s.push(a, 1);
    s.push(b, 1);
    expect(s.coord.status().round?.quorum).toBe(2);
    // The deadline at 60 s: c (stale) is still awaited, so the quorum is 2 of 3, and a and b make it.
    s.pass(60 * S, [a, b]);
    expect(s.coord.status()).toMatchObject({ lastCommittedRound: 1, round: { id: 2, members: 2 } });
    expect(s.state(c)).toBe('stale');
    expect(s.coord.members().sort()).toEqual([a.id, b.id]);
    expect(s.log.lines().filter((l) => l.event === 'round_open')[1]).toMatchObject({ round: 2, stale: 1, gone: 0 });
    s.coord.stop();
  });

  it('awaits a gone member again when it comes back while its round is still open', () => {
    vi.useFakeTimers({ now: 0 });
    const s = start();
    const [a, b, c] = s.clients;
    s.push(a, 1);
    // b keeps beating without reporting (a slow trainer), so the round stays open when c goes gone.
    s.pass(320 * S, [a, b]);
    expect(s.state(c)).toBe('gone');
    expect(s.coord.status()).toMatchObject({ lastCommittedRound: 0, round: { id: 1, reported: 1 } });
    expect(s.pull(c)).toMatchObject({ hasTask: true, roundId: 1 });
    expect(s.push(c, 1)).toMatchObject({ accepted: true });
    s.push(b, 1);
    expect(s.coord.rounds(1)[0].reporters).toEqual([a.id, c.id, b.id]);
    s.coord.stop();
  });

  it('abandons a round whose members all went gone without a report, and opens the next attempt when one comes back', () => {
    vi.useFakeTimers({ now: 0 });
    const s = start();
    const [a, b] = s.clients;
    vi.advanceTimersByTime(300 * S);
    expect(s.log.lines().find((l) => l.event === 'round_abandoned')).toMatchObject({ round: 1, attempt: 0, reported: 0 });
    // Nobody alive to sample: no round until someone calls.
    expect(s.coord.status()).toMatchObject({ phase: 'waiting', round: null });
    vi.advanceTimersByTime(3600 * S);
    expect(s.coord.status().round).toBeNull();
    // minClients (3) counts enrolments, so the one client back is enough to sample from.
    s.beat(a);
    expect(s.coord.status().round).toMatchObject({ id: 1, attempt: 1, members: 1 });
    expect(s.coord.members()).toEqual([a.id]);
    s.beat(b);
    expect(s.coord.members()).toEqual([a.id]);
    s.coord.stop();
  });

  it('with liveness off, a silent client stays alive and sampled', () => {
    vi.useFakeTimers({ now: 0 });
    const s = start({ liveness: 'off' });
    const [a, b, c] = s.clients;
    s.push(a, 1);
    s.push(b, 1);
    // Past the round's deadline (600 s), twice the gone timeout the default policy would apply.
    vi.advanceTimersByTime(600 * S);
    expect(s.coord.status()).toMatchObject({ lastCommittedRound: 1, round: { id: 2, members: 3 } });
    expect([s.state(a), s.state(b), s.state(c)]).toEqual(['alive', 'alive', 'alive']);
    s.coord.stop();
  });

  it('after a restart, counts every enrolled client as seen at start (lastSeenAt null), so the interrupted round re-opens with its members', () => {
    vi.useFakeTimers({ now: 0 });
    const dir = mkdtempSync(join(tmpdir(), 'subfed-liveness-'));
    try {
      const sqlite = join(dir, 'state.db');
      const first = start({ sqlite }, 4);
      const [a, b, c, d] = first.clients;
      first.coord.leave({ ...first.cred(d), reason: 'done' });
      const members = first.coord.members();
      first.coord.stop();

      vi.advanceTimersByTime(3600 * S);
      const again = new Coordinator(
        parseConfig({ rounds: 5, fraction: 1, minClients: 3, enrollmentToken: ENROLL, liveness: LIVENESS, sqlite }),
        toyModel(),
        { logger: memoryLogger().logger, metrics: new CoordinatorMetrics() },
      );
      const states = () => again.listClients().clients.map((v) => [v.id, v.state, v.lastSeenAt]);
      expect(states()).toEqual([
        [a.id, 'alive', null],
        [b.id, 'alive', null],
        [c.id, 'alive', null],
        [d.id, 'left', null],
      ]);
      expect(again.members()).toEqual(members);
      // Nobody called since the restart: 30 s later every enrolled client is stale; a call makes one alive again.
      vi.advanceTimersByTime(30 * S);
      again.heartbeat({ protocolVersion: PROTOCOL_VERSION, clientId: a.id, clientToken: a.token });
      expect(states()).toEqual([
        [a.id, 'alive', 3630 * S],
        [b.id, 'stale', null],
        [c.id, 'stale', null],
        [d.id, 'left', null],
      ]);
      again.stop();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('liveness over gRPC and /api/clients', () => {
  const def = createCoordinatorDefinition();

  it('shows a silent client stale then gone and not sampled, and sampled again once it heartbeats', async () => {
    let clock = 1_000_000;
    const server = await startCoordinator(
      {
        rounds: 3,
        fraction: 1,
        minClients: 3,
        enrollmentToken: ENROLL,
        weighting: 'unweighted',
        // Far away: in this test rounds close by reports and by liveness alone.
        roundDeadlineMs: 3600 * S,
        liveness: LIVENESS,
      },
      toyModel(),
      { logger: memoryLogger().logger, now: () => clock },
    );
    const base = `http://127.0.0.1:${server.httpPort}`;
    const [a, b, c] = [0, 1, 2].map(() => new ScriptedClient(server.grpcAddress));
    try {
      for (const x of [a, b, c]) await x.join();
      const heartbeat = (x: ScriptedClient) => x.unary<HeartbeatRequest, HeartbeatResponse>(def.heartbeat, x.credentials());
      const clients = async (query = '') => {
        const res = await fetch(`${base}/api/clients${query}`);
        expect(res.status).toBe(200);
        return (await res.json()) as { now: number; total: number; clients: Record<string, unknown>[] };
      };
      const row = async (x: ScriptedClient) => (await clients()).clients.find((r) => r.id === x.id);

      for (const x of [a, b, c]) await x.pull();
      await a.push(1, a.encode({ 'dense/kernel': [1, 1, 1, 1, 1, 1] }), {
        metrics: { loss: 1, localAccuracy: 0.8, sparsity: 0.25, receivedAccuracy: 0.5, channelsKept: [] },
      });
      await b.push(1, b.encode({ 'dense/kernel': [1, 1, 1, 1, 1, 1] }));
      const t0 = clock;
      expect(await row(c)).toMatchObject({ state: 'alive', lastSeenAt: t0, roundsTaken: 0 });

      // Live clients heartbeat every 20 s; c says nothing.
      const pass = async (ms: number) => {
        for (let t = 0; t < ms; t += 20 * S) {
          clock += 20 * S;
          await heartbeat(a);
          await heartbeat(b);
        }
      };
      await pass(40 * S);
      expect(await row(c)).toMatchObject({ state: 'stale', lastSeenAt: t0 });
      expect(await clients('?state=stale')).toMatchObject({ total: 1, clients: [{ id: c.id }] });

      // 300 s: gone. The heartbeat that sees it closes round 1 without c; round 2 samples only a and b.
      await pass(260 * S);
      expect(await row(c)).toMatchObject({ state: 'gone', lastSeenAt: t0, roundsTaken: 0, sparsity: null, lastRound: null });
      expect(server.coordinator.status()).toMatchObject({ lastCommittedRound: 1, round: { id: 2, members: 2 } });
      expect(server.coordinator.members().sort()).toEqual([a.id, b.id]);
      const ra = await row(a);
      expect(ra).toMatchObject({
        state: 'alive',
        lastSeenAt: clock,
        roundsTaken: 1,
        lastRound: 1,
        sparsity: 0.25,
        localAccuracy: 0.8,
      });
      expect(ra?.bytesUp).toBeGreaterThan(0);
      expect(ra?.bytesDown).toBeGreaterThan(0);
      // c pulled its round-1 task, so it moved bytes as a member, though it never reported.
      expect((await row(c))?.bytesDown).toBeGreaterThan(0);
      const metrics = await (await fetch(`${base}/metrics`)).text();
      expect(metrics).toContain('subfed_clients{state="alive"} 2');
      expect(metrics).toContain('subfed_clients{state="gone"} 1');
      expect(metrics).toContain('subfed_clients{state="stale"} 0');

      // c comes back: alive at once, not in round 2 (sampled without it), in round 3.
      expect(await heartbeat(c)).toMatchObject({ currentRound: 2, taskAvailable: false });
      expect(await row(c)).toMatchObject({ state: 'alive', lastSeenAt: clock });
      expect((await c.pull()).header).toMatchObject({ hasTask: false, roundId: 2 });
      for (const x of [a, b]) {
        await x.pull();
        await x.push(2, x.encode({ 'dense/kernel': [0, 0, 0, 0, 0, 0] }));
      }
      expect(server.coordinator.members().sort()).toEqual([a.id, b.id, c.id]);
      expect((await c.pull()).header).toMatchObject({ hasTask: true, roundId: 3 });
      const all = await clients();
      expect(all.now).toBe(clock);
      expect(all.total).toBe(3);
      expect(all.clients.map((r) => [r.id, r.state, r.roundsTaken])).toEqual([
        [a.id, 'alive', 2],
        [b.id, 'alive', 2],
        [c.id, 'alive', 0],
      ]);
      expect(await clients('?limit=1&offset=1')).toMatchObject({ total: 3, clients: [{ id: b.id }] });
      expect(await clients('?state=left')).toEqual({ now: clock, total: 0, clients: [] });
    } finally {
      for (const x of [a, b, c]) x.close();
      await server.stop();
    }
  });

  it('refuses a bad /api/clients query with 400 naming the field', async () => {
    const server = await startCoordinator({ rounds: 1, fraction: 1, enrollmentToken: ENROLL }, toyModel(), {
      logger: memoryLogger().logger,
    });
    try {
      const base = `http://127.0.0.1:${server.httpPort}/api/clients`;
      const cases: [string, RegExp][] = [
        ['?state=zombie', /state/],
        ['?limit=0', /limit/],
        ['?limit=100001', /limit/],
        ['?limit=ten', /limit/],
        ['?offset=-1', /offset/],
        ['?colour=red', /additional properties|colour/i],
      ];
      for (const [query, message] of cases) {
        const res = await fetch(`${base}${query}`);
        expect(res.status, query).toBe(400);
        expect(((await res.json()) as { message: string }).message, query).toMatch(message);
      }
      expect((await fetch(base)).status).toBe(200);
    } finally {
      await server.stop();
    }
  });
});
