import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Mask } from '../../proto/mask.js';
import { startCoordinator, type CoordinatorHandle } from '../../server/main.js';
import { ENROLL, ScriptedClient, memoryLogger, toyModel } from '../server/harness.js';

const f = Math.fround;

describe('coordinator end to end over loopback gRPC', () => {
  let server: CoordinatorHandle;
  let a: ScriptedClient, b: ScriptedClient, c: ScriptedClient;
  const log = memoryLogger();

  beforeAll(async () => {
    server = await startCoordinator(
      { rounds: 3, fraction: 1, minClients: 3, enrollmentToken: ENROLL, weighting: 'examples', roundDeadlineMs: 60_000 },
      toyModel(),
      { logger: log.logger },
    );
    [a, b, c] = [0, 1, 2].map(() => new ScriptedClient(server.grpcAddress));
    await a.join(ENROLL);
    await b.join(ENROLL);
    await c.join(ENROLL);
  });

  afterAll(async () => {
    for (const x of [a, b, c]) x?.close();
    await server?.stop();
  });

  it('three scripted clients run three rounds and the global matches the hand-computed model', async () => {
    const n = { a: 1, b: 1, c: 2 };
    // Round 1: everyone dense (first contact).
    for (const x of [a, b, c]) {
      const task = await x.pull();
      expect(task.header).toMatchObject({ hasTask: true, roundId: 1, dense: true, maskVersion: 0 });
      expect(Array.from(task.tensors.get('dense/kernel')!.kept)).toEqual([0.5, -0.25, 1, 2, -3, 0.125]);
    }
    await a.push(1, a.encode({ 'dense/kernel': [1, 1, 1, 1, 1, 1], 'dense/bias': [4, 0, 0] }), { numExamples: n.a });
    await b.push(1, b.encode({ 'dense/kernel': [3, 3, 3, 3, 3, 3], 'dense/bias': [0, 4, 0] }), { numExamples: n.b });
    await c.push(1, c.encode({ 'dense/kernel': [-1, -1, -1, -1, -1, -1], 'dense/bias': [0, 0, 4] }), { numExamples: n.c });
    await server.waitForRound(1);
    // kernel += (1 + 3 - 2) / 4 = 0.5; bias += [4, 4, 8] / 4
    const k1 = [1, 0.25, 1.5, 2.5, -2.5, 0.625];
    expect(Array.from(server.coordinator.globalModel().get('dense/kernel')!)).toEqual(k1);
    expect(Array.from(server.coordinator.globalModel().get('dense/bias')!)).toEqual([1, f(0.1 + 1), f(f(-0.1) + 2)]);

    // Round 2: A keeps the first row, C the second; B stays dense.
    for (const x of [a, b, c]) expect((await x.pull()).header).toMatchObject({ hasTask: true, roundId: 2 });
    a.masks.set('dense/kernel', Mask.fromBytes([1, 1, 1, 0, 0, 0]));
    c.masks.set('dense/kernel', Mask.fromBytes([0, 0, 0, 1, 1, 1]));
    const changed = { maskChanged: true, newMaskVersion: 1 };
    const ackA = await a.push(2, a.encode({ 'dense/kernel': [2, 2, 2, 0, 0, 0], 'dense/bias': [0, 0, 0] }), {
      numExamples: n.a,
      ...changed,
    });
    await b.push(2, b.encode({ 'dense/kernel': [-2, -2, -2, -2, -2, -2], 'dense/bias': [0, 0, 0] }), { numExamples: n.b });
    const ackC = await c.push(2, c.encode({ 'dense/kernel': [0, 0, 0, 0.5, 0.5, 0.5], 'dense/bias': [0, 0, 0] }), {
      numExamples: n.c,
      ...changed,
    });
    expect(ackA).toMatchObject({ accepted: true, maskVersion: 1 });
    expect(ackC).toMatchObject({ accepted: true, maskVersion: 1 });
    a.maskVersion = ackA.maskVersion;
    c.maskVersion = ackC.maskVersion;
    await server.waitForRound(2);
    // Row 1: A(+2*1) and B(-2*1) over weight 2 -> 0. Row 2: B(-2*1) + C(0.5*2) over weight 3 -> -1/3.
    const k2 = [1, 0.25, 1.5, f(2.5 - 1 / 3), f(-2.5 - 1 / 3), f(0.625 - 1 / 3)];
    expect(Array.from(server.coordinator.globalModel().get('dense/kernel')!)).toEqual(k2);
    expect(server.coordinator.clientMasks(a.id)).toEqual({
      version: 1,
      masks: new Map([['dense/kernel', Mask.fromBytes([1, 1, 1, 0, 0, 0])]]),
    });

    // Round 3: A and C hold mask version 1, so their downloads are sparse.
    const taskA = await a.pull();
    expect(taskA.header).toMatchObject({ hasTask: true, roundId: 3, dense: false, maskVersion: 1 });
    expect(Array.from(taskA.tensors.get('dense/kernel')!.kept)).toEqual([1, 0.25, 1.5]);
    expect(Array.from(taskA.tensors.get('dense/bias')!.kept)).toEqual(
      Array.from(server.coordinator.globalModel().get('dense/bias')!),
    );
    const taskC = await c.pull();
    expect(Array.from(taskC.tensors.get('dense/kernel')!.kept)).toEqual(k2.slice(3));
    expect((await b.pull()).header.dense).toBe(true);

    await a.push(3, a.encode({ 'dense/kernel': [1, 1, 1, 0, 0, 0] }, a.masks), { numExamples: n.a });
    const before = new Map(b.masks);
    b.masks.set('dense/kernel', Mask.fromBytes([0, 1, 1, 1, 1, 1]));
    const ackB = await b.push(3, b.encode({ 'dense/kernel': [0, 1, 1, 1, 1, 1] }, before), {
      numExamples: n.b,
      maskChanged: true,
      newMaskVersion: 1,
    });
    expect(ackB.maskVersion).toBe(1);
    await c.push(3, c.encode({ 'dense/kernel': [0, 0, 0, 3, 3, 3] }, c.masks), { numExamples: n.c });
    await server.waitForRound(3);
    // pos 0: A only (+1). pos 1,2: A and B, +1 each -> +1. pos 3..5: B(+1*1) + C(+3*2) over weight 3 -> +7/3.
    const k3 = [2, 1.25, 2.5, f(k2[3] + 7 / 3), f(k2[4] + 7 / 3), f(k2[5] + 7 / 3)];
    expect(Array.from(server.coordinator.globalModel().get('dense/kernel')!)).toEqual(k3);
    expect(server.coordinator.status().phase).toBe('finished');
    expect((await a.pull()).header.hasTask).toBe(false);

    const commits = log.lines().filter((l) => l.event === 'round_commit');
    expect(commits.map((l) => l.round)).toEqual([1, 2, 3]);
  });

  it('serves health, status, rounds and metrics over HTTP', async () => {
    const base = `http://127.0.0.1:${server.httpPort}`;
    expect(await (await fetch(`${base}/healthz`)).json()).toEqual({ status: 'ok' });
    const status = (await (await fetch(`${base}/api/status`)).json()) as Record<string, unknown>;
    expect(status).toMatchObject({ phase: 'finished', lastCommittedRound: 3, totalRounds: 3, clientsRegistered: 3 });
    const rounds = (await (await fetch(`${base}/api/rounds?limit=2`)).json()) as { rounds: Record<string, unknown>[] };
    expect(rounds.rounds.map((r) => r.round)).toEqual([3, 2]);
    const r3 = rounds.rounds[0] as {
      bytesUp: number;
      bytesDown: number;
      denseBytesUp: number;
      denseBytesDown: number;
      reporters: string[];
    };
    expect(r3.reporters.sort()).toEqual([a.id, b.id, c.id].sort());
    expect(r3.bytesUp).toBeGreaterThan(0);
    expect(r3.bytesDown).toBeGreaterThan(0);
    const traffic = (rounds.rounds[0] as unknown as { traffic: Record<string, { up: number; down: number }> }).traffic;
    expect(Object.keys(traffic).sort()).toEqual([a.id, b.id, c.id].sort());
    expect(Object.values(traffic).reduce((s, t) => s + t.up, 0)).toBe(r3.bytesUp);
    expect(Object.values(traffic).reduce((s, t) => s + t.down, 0)).toBe(r3.bytesDown);
    // A and C pulled sparse (3 of 6 kernel values), B dense.
    expect(traffic[a.id].down).toBeLessThan(traffic[b.id].down);
    // C's upload completed the round, and it is counted in it like A's (the same shape of update):
    // an upload joins its round's traffic when it is accepted, not when its call ends after the commit.
    expect(traffic[c.id].up).toBe(traffic[a.id].up);
    expect(r3.denseBytesUp).toBe(3 * 4 * 9);
    expect(r3.denseBytesDown).toBe(3 * 4 * 9);
    // Per client, /api/clients adds up the traffic of every committed round.
    const all = (await (await fetch(`${base}/api/rounds`)).json()) as {
      rounds: { traffic: Record<string, { up: number; down: number }> }[];
    };
    const listed = (await (await fetch(`${base}/api/clients`)).json()) as {
      clients: { id: string; state: string; roundsTaken: number; bytesUp: number; bytesDown: number }[];
    };
    expect(listed.clients.map((x) => [x.id, x.state, x.roundsTaken])).toEqual([
      [a.id, 'alive', 3],
      [b.id, 'alive', 3],
      [c.id, 'alive', 3],
    ]);
    for (const x of listed.clients) {
      expect(x.bytesUp).toBe(all.rounds.reduce((sum, r) => sum + r.traffic[x.id].up, 0));
      expect(x.bytesDown).toBe(all.rounds.reduce((sum, r) => sum + r.traffic[x.id].down, 0));
    }
    const bad = await fetch(`${base}/api/rounds?limit=0`);
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { message: string }).message).toMatch(/limit/);
    const unknown = await fetch(`${base}/api/rounds?color=red`);
    expect(unknown.status).toBe(400);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/subfed_rounds_committed_total 3/);
    expect(metrics).toMatch(/subfed_clients_registered 3/);
    expect(metrics).toContain('subfed_clients{state="alive"} 3');
    expect(metrics).toMatch(/subfed_wire_bytes_total\{direction="up"\} [1-9]/);
    // Round gauges after the last commit, and prom-client's default process metrics.
    expect(metrics).toMatch(/^subfed_round_committed 3$/m);
    expect(metrics).toMatch(/^subfed_round_open 0$/m);
    expect(metrics).toMatch(/^subfed_round_members 0$/m);
    expect(metrics).toMatch(/^subfed_round_reporters 0$/m);
    expect(metrics).toMatch(/^subfed_accuracy\{model="trained"\} 0\.5$/m);
    expect(metrics).toMatch(/^subfed_accuracy\{model="received"\} 0\.(4|39999)\d*$/m);
    expect(metrics).toMatch(/^process_cpu_user_seconds_total [0-9.]+$/m);
    expect(metrics).toMatch(/^process_resident_memory_bytes [1-9]/m);
    expect(metrics).toMatch(/^nodejs_eventloop_lag_seconds /m);
  });

  it('serves the dashboard page, its assets and its snapshot, and refuses unknown query fields', async () => {
    const base = `http://127.0.0.1:${server.httpPort}`;
    const page = await fetch(`${base}/`);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await page.text();
    for (const asset of ['dashboard.css', 'chart.umd.min.js', 'dashboard.js']) {
      expect(html).toContain(asset);
      const res = await fetch(`${base}/${asset}`);
      expect(res.status).toBe(200);
      expect((await res.text()).length).toBeGreaterThan(1000);
    }
    expect(html).not.toMatch(/https?:\/\/(?!www\.w3\.org)/); // no CDN: everything comes from the coordinator
    const snapshot = (await (await fetch(`${base}/api/dashboard`)).json()) as {
      status: { phase: string };
      model: { tensors: number; parameters: number };
      rounds: { round: number; members: number; reporters: number; cumulativeBytes: number }[];
      clients: { id: string; rounds: number; bytesUp: number }[];
    };
    expect(snapshot.status.phase).toBe('finished');
    expect(snapshot.model).toEqual({ tensors: 2, parameters: 9 });
    expect(snapshot.rounds.map((r) => [r.round, r.members, r.reporters])).toEqual([
      [1, 3, 3],
      [2, 3, 3],
      [3, 3, 3],
    ]);
    expect(snapshot.clients.map((c) => [c.id, c.rounds])).toEqual([
      [a.id, 3],
      [b.id, 3],
      [c.id, 3],
    ]);
    expect(snapshot.clients.every((c) => c.bytesUp > 0)).toBe(true);
    for (const path of ['/api/dashboard?x=1', '/api/events?since=3', '/?debug=1']) {
      const res = await fetch(`${base}${path}`);
      expect(res.status, path).toBe(400);
      await res.body?.cancel();
    }
    expect((await fetch(`${base}/api/events`, { headers: { accept: 'application/json' } })).status).toBe(406);
    expect((await fetch(`${base}/secrets.json`)).status).toBe(404);
  });
});
