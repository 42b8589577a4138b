import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Mask } from '../../proto/mask.js';
import { PROTOCOL_VERSION } from '../../proto/rpc.js';
import { parseConfig } from '../../server/config.js';
import { Coordinator } from '../../server/coordinator.js';
import { CoordinatorMetrics } from '../../server/metrics.js';
import { quorumCount, sampleMembers, sampleSize } from '../../server/rounds.js';
import {
  ENROLL,
  inProcessCoordinator,
  kernelDelta,
  withBias,
  memoryLogger,
  refusal,
  toyModel,
  updateHeader as header,
  type Joined,
} from './harness.js';

describe('sampling', () => {
  const ids = Array.from({ length: 20 }, (_, i) => `c${i + 1}`);

  it('K = max(round(fraction * N), 1), capped at N', () => {
    expect(sampleSize(0.1, 20)).toBe(2);
    expect(sampleSize(0.01, 20)).toBe(1);
    expect(sampleSize(0.125, 20)).toBe(3); // round(2.5) = 3
    expect(sampleSize(1, 20)).toBe(20);
    expect(sampleSize(0.5, 0)).toBe(0);
  });

  it('is deterministic in (seed, round, attempt) and varies with each', () => {
    const a = sampleMembers(ids, 0.25, 7, 3, 0);
    expect(sampleMembers(ids, 0.25, 7, 3, 0)).toEqual(a);
    expect(a).toHaveLength(5);
    expect(new Set(a).size).toBe(5);
    for (const id of a) expect(ids).toContain(id);
    const others = [sampleMembers(ids, 0.25, 8, 3, 0), sampleMembers(ids, 0.25, 7, 4, 0), sampleMembers(ids, 0.25, 7, 3, 1)];
    for (const o of others) expect(o).not.toEqual(a);
  });

  it('covers every client over many rounds', () => {
    const seen = new Set<string>();
    for (let r = 1; r <= 200; r++) for (const id of sampleMembers(ids, 0.1, 1, r, 0)) seen.add(id);
    expect(seen.size).toBe(ids.length);
  });

  it('quorum is ceil(quorum * members), at least one', () => {
    expect(quorumCount(0.5, 4)).toBe(2);
    expect(quorumCount(0.5, 5)).toBe(3);
    expect(quorumCount(0.1, 3)).toBe(1);
    expect(quorumCount(1, 10)).toBe(10);
    expect(quorumCount(0.3, 10)).toBe(3);
  });
});

const setup = inProcessCoordinator;

const kernelOf = (coord: Coordinator) => Array.from(coord.globalModel().get('dense/kernel')!);
const K0 = [0.5, -0.25, 1, 2, -3, 0.125];

describe('round lifecycle', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('opens only once minClients are registered, then samples all with fraction 1', () => {
    const log = memoryLogger();
    const coord = new Coordinator(parseConfig({ rounds: 1, fraction: 1, minClients: 2, enrollmentToken: ENROLL }), toyModel(), {
      logger: log.logger,
      metrics: new CoordinatorMetrics(),
    });
    const join = () => coord.join({ protocolVersion: PROTOCOL_VERSION, enrollmentToken: ENROLL, clientName: '', numExamples: 1 });
    join();
    expect(coord.status().phase).toBe('waiting');
    join();
    expect(coord.status()).toMatchObject({ phase: 'open', round: { id: 1, members: 2, attempt: 0 } });
    coord.stop();
  });

  it('commits as soon as every member reported', () => {
    const { coord, clients } = setup();
    for (const c of clients) coord.pushUpdate(header(c, 1), withBias(kernelDelta([1, 1, 1, 1, 1, 1])));
    expect(coord.status().lastCommittedRound).toBe(1);
    expect(kernelOf(coord)).toEqual(K0.map((x) => x + 1));
    expect(coord.status().round).toMatchObject({ id: 2, reported: 0 });
    coord.stop();
  });

  it('commits at the deadline with a quorum', () => {
    vi.useFakeTimers();
    const { coord, clients, log } = setup();
    coord.pushUpdate(header(clients[0], 1), withBias(kernelDelta([2, 2, 2, 2, 2, 2])));
    coord.pushUpdate(header(clients[1], 1), withBias(kernelDelta([4, 4, 4, 4, 4, 4])));
    expect(coord.status().lastCommittedRound).toBe(0);
    vi.advanceTimersByTime(1000);
    expect(coord.status().lastCommittedRound).toBe(1);
    expect(kernelOf(coord)).toEqual(K0.map((x) => x + 3));
    const [summary] = coord.rounds(1);
    expect(summary).toMatchObject({ round: 1, attempts: 1 });
    expect(summary.reporters.sort()).toEqual([clients[0].id, clients[1].id].sort());
    expect(log.lines().filter((l) => l.event === 'round_commit')).toHaveLength(1);
    coord.stop();
  });

  it('abandons a round without quorum at the deadline and re-opens it with a new sample', () => {
    vi.useFakeTimers();
    // Two members, quorum 1.0: one report is not enough.
    const s = setup({ fraction: 0.5, quorum: 1, seed: 3 });
    const members1 = s.coord.members();
    const r = s.clients.find((c) => c.id === members1[0])!;
    s.coord.pushUpdate(header(r, 1), withBias(kernelDelta([9, 9, 9, 9, 9, 9])));
    vi.advanceTimersByTime(1000);
    expect(s.coord.status()).toMatchObject({ lastCommittedRound: 0, round: { id: 1, attempt: 1 } });
    expect(kernelOf(s.coord)).toEqual(K0);
    expect(s.log.lines().find((l) => l.event === 'round_abandoned')).toMatchObject({
      round: 1,
      attempt: 0,
      reported: 1,
      quorum: 2,
    });
    const members2 = s.coord.members();
    // The folded update of the abandoned attempt is gone: the new attempt starts from zero.
    for (const id of members2)
      s.coord.pushUpdate(
        header(
          s.clients.find((c) => c.id === id)!,
          1,
        ),
        withBias(kernelDelta([1, 1, 1, 1, 1, 1])),
      );
    expect(s.coord.status().lastCommittedRound).toBe(1);
    expect(kernelOf(s.coord)).toEqual(K0.map((x) => x + 1));
    expect(s.coord.rounds(1)[0].attempts).toBe(2);
    s.coord.stop();
  });

  it('refuses a late upload for a closed round with FAILED_PRECONDITION', () => {
    vi.useFakeTimers();
    const { coord, clients } = setup();
    for (const c of clients.slice(0, 2)) coord.pushUpdate(header(c, 1), withBias(kernelDelta([1, 1, 1, 1, 1, 1])));
    vi.advanceTimersByTime(1000); // deadline: 2 of 4 is the quorum, round 1 commits without clients 3 and 4
    expect(coord.status().lastCommittedRound).toBe(1);
    const err = refusal(() => coord.pushUpdate(header(clients[3], 1), withBias(kernelDelta([1, 1, 1, 1, 1, 1]))));
    expect(err).toMatchObject({ code: 'FAILED_PRECONDITION', reason: 'round_closed' });
    expect(err.message).toMatch(/round 1 is closed/);
    coord.stop();
  });

  it('treats a retried upload as idempotent: same ack, folded once', () => {
    const { coord, clients } = setup();
    const first = coord.pushUpdate(header(clients[0], 1), withBias(kernelDelta([4, 4, 4, 4, 4, 4])));
    const again = coord.pushUpdate(header(clients[0], 1), withBias(kernelDelta([4, 4, 4, 4, 4, 4])));
    expect(again).toEqual(first);
    expect(coord.status().round?.reported).toBe(1);
    for (const c of clients.slice(1)) coord.pushUpdate(header(c, 1), withBias(kernelDelta([0, 0, 0, 0, 0, 0])));
    // (4 + 0 + 0 + 0) / 4 = 1; a double fold would give 8 / 5.
    expect(kernelOf(coord)).toEqual(K0.map((x) => x + 1));
    coord.stop();
  });

  it('answers a retry that arrives after its round committed with the same ack', () => {
    const { coord, clients } = setup();
    const acks = clients.map((c) => coord.pushUpdate(header(c, 1), withBias(kernelDelta([1, 1, 1, 1, 1, 1]))));
    expect(coord.status().lastCommittedRound).toBe(1);
    const retry = coord.pushUpdate(header(clients[3], 1), withBias(kernelDelta([1, 1, 1, 1, 1, 1])));
    expect(retry).toEqual(acks[3]);
    expect(kernelOf(coord)).toEqual(K0.map((x) => x + 1));
    coord.stop();
  });

  it('refuses a retry whose content differs from the accepted update, in the open round and after its commit', async () => {
    const { coord, clients, metrics } = setup();
    const accepted = () => withBias(kernelDelta([4, 4, 4, 4, 4, 4]));
    coord.pushUpdate(header(clients[0], 1), accepted());
    const changed: [string, () => unknown][] = [
      ['other values', () => coord.pushUpdate(header(clients[0], 1), withBias(kernelDelta([4, 4, 4, 4, 4, 5])))],
      ['other num_examples', () => coord.pushUpdate(header(clients[0], 1, { numExamples: 11 }), accepted())],
      [
        'other metrics',
        () =>
          coord.pushUpdate(
            header(clients[0], 1, {
              metrics: { loss: 1, localAccuracy: 0.5, sparsity: 0, receivedAccuracy: 0.5, channelsKept: [] },
            }),
            accepted(),
          ),
      ],
      // The same content with another mask encoding (BITMAP instead of FULL) is not the upload that was accepted.
      ['another encoding', () => coord.pushUpdate(header(clients[0], 1), withBias(kernelDelta([4, 4, 4], [1, 1, 1, 0, 0, 0])))],
    ];
    for (const [what, push] of changed) {
      const err = refusal(push);
      expect({ what, code: err.code, reason: err.reason }).toEqual({
        what,
        code: 'FAILED_PRECONDITION',
        reason: 'retry_mismatch',
      });
      expect(err.message).toMatch(/already reported an update for round 1, and this one differs from it/);
    }
    expect(coord.status().round?.reported).toBe(1);
    for (const c of clients.slice(1)) coord.pushUpdate(header(c, 1), withBias(kernelDelta([0, 0, 0, 0, 0, 0])));
    expect(kernelOf(coord)).toEqual(K0.map((x) => x + 1));
    // After the commit: the same update is acknowledged again, another one is refused and applies nothing.
    expect(coord.pushUpdate(header(clients[0], 1), accepted())).toMatchObject({ accepted: true });
    expect(refusal(() => coord.pushUpdate(header(clients[0], 1), withBias(kernelDelta([9, 9, 9, 9, 9, 9]))))).toMatchObject({
      code: 'FAILED_PRECONDITION',
      reason: 'retry_mismatch',
    });
    expect(kernelOf(coord)).toEqual(K0.map((x) => x + 1));
    expect((await metrics.updatesAccepted.get()).values[0].value).toBe(4);
    coord.stop();
  });

  it('serves sparse tasks at the held mask version and dense ones to resynchronise', () => {
    const { coord, clients } = setup();
    const [a] = clients;
    const mask = [1, 0, 1, 0, 1, 0];
    const ack = coord.pushUpdate(header(a, 1, { maskChanged: true, newMaskVersion: 1 }), withBias(kernelDelta([0, 0, 0], mask)));
    expect(ack.maskVersion).toBe(1);
    for (const c of clients.slice(1)) coord.pushUpdate(header(c, 1), withBias(kernelDelta([0, 0, 0, 0, 0, 0])));
    const cred = { protocolVersion: PROTOCOL_VERSION, clientId: a.id, clientToken: a.token, valueEncoding: 0 as const };
    const sparse = coord.task({ ...cred, maskVersion: 1 });
    expect(sparse.header).toMatchObject({ hasTask: true, dense: false, maskVersion: 1, roundId: 2 });
    const dense = coord.task({ ...cred, maskVersion: 7 });
    expect(dense.header).toMatchObject({ hasTask: true, dense: true, maskVersion: 1 });
    expect(sparse.tensors[0].values!.data.length).toBe(3 * 4);
    expect(dense.tensors[0].values!.data.length).toBe(6 * 4);
    // A mask given relative to a version the server does not hold is refused.
    const err = refusal(() =>
      coord.pushUpdate(
        header(a, 2, { baseMaskVersion: 7 }),
        withBias({
          name: 'dense/kernel',
          mask: { encoding: 2, data: new Uint8Array(0) },
          values: { encoding: 1, data: new Uint8Array(12), scale: 0 },
        }),
      ),
    );
    expect(err).toMatchObject({ code: 'FAILED_PRECONDITION', reason: 'mask_version_mismatch' });
    expect(err.message).toMatch(/refers to mask version 7, the server holds 1/);
    // Sending the whole mask explicitly is the resync path.
    const resync = coord.pushUpdate(
      header(a, 2, { baseMaskVersion: 7, maskChanged: true, newMaskVersion: 8 }),
      withBias(kernelDelta([0, 0], [1, 1, 0, 0, 0, 0])),
    );
    expect(resync.maskVersion).toBe(8);
    coord.stop();
  });

  it('gives non-members and finished clients no task', () => {
    const { coord, clients } = setup({ fraction: 0.5 });
    const outsider = clients.find((c) => !coord.members().includes(c.id))!;
    const t = coord.task({
      protocolVersion: PROTOCOL_VERSION,
      clientId: outsider.id,
      clientToken: outsider.token,
      maskVersion: 0,
      valueEncoding: 0,
    });
    expect(t.header).toMatchObject({ hasTask: false, retryAfterMs: 500, finished: false });
    coord.stop();
  });

  it('says finished to a pull and a heartbeat once the last round is committed', () => {
    const { coord, clients } = setup({ rounds: 2 });
    const cred = (c: Joined) => ({ protocolVersion: PROTOCOL_VERSION, clientId: c.id, clientToken: c.token });
    const pull = (c: Joined) => coord.task({ ...cred(c), maskVersion: 0, valueEncoding: 0 }).header;
    const [a, b] = clients;
    for (const c of clients) coord.pushUpdate(header(c, 1), withBias(kernelDelta([0, 0, 0, 0, 0, 0])));
    expect(pull(a)).toMatchObject({ hasTask: true, roundId: 2, finished: false });
    coord.pushUpdate(header(a, 2), withBias(kernelDelta([0, 0, 0, 0, 0, 0])));
    // Reported, but round 2 is still open: wait, not finished.
    expect(pull(a)).toMatchObject({ hasTask: false, roundId: 2, finished: false });
    expect(coord.heartbeat(cred(a))).toMatchObject({ currentRound: 2, finished: false });
    for (const c of clients.slice(1)) coord.pushUpdate(header(c, 2), withBias(kernelDelta([0, 0, 0, 0, 0, 0])));
    expect(coord.status()).toMatchObject({ phase: 'finished', lastCommittedRound: 2 });
    for (const c of [a, b]) {
      expect(pull(c)).toMatchObject({ hasTask: false, roundId: 2, finished: true, tensorCount: 0 });
      expect(coord.heartbeat(cred(c))).toEqual({ currentRound: 2, taskAvailable: false, finished: true });
    }
    // A client joining after the end hears the same.
    const late = coord.join({ protocolVersion: PROTOCOL_VERSION, enrollmentToken: ENROLL, clientName: 'late', numExamples: 10 });
    expect(pull({ id: late.clientId, token: late.clientToken })).toMatchObject({ hasTask: false, finished: true });
    coord.stop();
  });

  it('answers heartbeats and lets a client leave (it is sampled no more)', () => {
    const { coord, clients } = setup({ rounds: 2, minClients: 4 });
    const [a, b] = clients;
    const cred = (c: Joined) => ({ protocolVersion: PROTOCOL_VERSION, clientId: c.id, clientToken: c.token });
    expect(coord.heartbeat(cred(a))).toEqual({ currentRound: 1, taskAvailable: true, finished: false });
    coord.pushUpdate(header(a, 1), withBias(kernelDelta([0, 0, 0, 0, 0, 0])));
    expect(coord.heartbeat(cred(a))).toEqual({ currentRound: 1, taskAvailable: false, finished: false });
    coord.leave({ ...cred(b), reason: 'battery low' });
    expect(refusal(() => coord.heartbeat(cred(b)))).toMatchObject({ code: 'UNAUTHENTICATED', reason: 'client_left' });
    expect(refusal(() => coord.pushUpdate(header(b, 1), withBias(kernelDelta([0, 0, 0, 0, 0, 0]))))).toMatchObject({
      code: 'UNAUTHENTICATED',
      reason: 'client_left',
    });
    expect(coord.status()).toMatchObject({ clientsRegistered: 4, clientsActive: 3 });
    for (const c of clients.slice(2)) coord.pushUpdate(header(c, 1), withBias(kernelDelta([0, 0, 0, 0, 0, 0])));
    // b left mid-round: round 1 no longer waits for it (it commits at once, before any deadline)...
    expect(coord.status()).toMatchObject({ lastCommittedRound: 1, phase: 'waiting', round: null });
    expect(coord.rounds(1)[0]).toMatchObject({
      members: clients.map((c) => c.id),
      reporters: [a.id, clients[2].id, clients[3].id],
    });
    // ...and round 2 needs a fourth client besides the three left (minClients 4), then does not sample b.
    coord.join({ protocolVersion: PROTOCOL_VERSION, enrollmentToken: ENROLL, clientName: 'new', numExamples: 10 });
    expect(coord.status()).toMatchObject({ round: { id: 2, members: 4 } });
    expect(coord.members()).not.toContain(b.id);
    coord.stop();
  });

  describe('a member that leaves during its round', () => {
    const cred = (c: Joined) => ({ protocolVersion: PROTOCOL_VERSION, clientId: c.id, clientToken: c.token });
    const zero = () => withBias(kernelDelta([0, 0, 0, 0, 0, 0]));

    it('is no longer awaited: the round commits as soon as the others reported, before the deadline', () => {
      vi.useFakeTimers();
      const { coord, clients, log } = setup({ roundDeadlineMs: 60_000 });
      const [a, b, c, d] = clients;
      coord.pushUpdate(header(a, 1), withBias(kernelDelta([4, 4, 4, 4, 4, 4])));
      coord.pushUpdate(header(b, 1), zero());
      coord.leave({ ...cred(c), reason: 'done' });
      expect(coord.status()).toMatchObject({ lastCommittedRound: 0, round: { id: 1, members: 4, reported: 2 } });
      coord.pushUpdate(header(d, 1), zero());
      expect(coord.status().lastCommittedRound).toBe(1);
      expect(kernelOf(coord)).toEqual(K0.map((x) => Math.fround(x + 4 / 3)));
      expect(log.lines().filter((l) => l.event === 'round_commit')).toEqual([
        expect.objectContaining({ round: 1, members: 4, reported: 3 }),
      ]);
      coord.stop();
    });

    it('commits at once when it was the last one awaited', () => {
      const { coord, clients } = setup();
      for (const c of clients.slice(0, 3)) coord.pushUpdate(header(c, 1), zero());
      expect(coord.status().lastCommittedRound).toBe(0);
      coord.leave({ ...cred(clients[3]), reason: 'done' });
      expect(coord.status().lastCommittedRound).toBe(1);
      expect(coord.rounds(1)[0].reporters).toHaveLength(3);
      coord.stop();
    });

    it('commits without waiting for its deadline once every unreported member left', () => {
      vi.useFakeTimers();
      // Four members, quorum 0.75: three reports were needed; once c and d left, the two in hand are all there can be.
      const { coord, clients } = setup({ quorum: 0.75 });
      const [a, b, c, d] = clients;
      coord.pushUpdate(header(a, 1), zero());
      coord.pushUpdate(header(b, 1), zero());
      expect(coord.status().round?.quorum).toBe(3);
      coord.leave({ ...cred(c), reason: 'done' });
      coord.leave({ ...cred(d), reason: 'done' });
      // c and d left unreported, so nobody is awaited any more: the round committed without its deadline.
      expect(coord.status().lastCommittedRound).toBe(1);
      coord.stop();
    });

    it('at the deadline, holds the reports to the quorum of the reporters plus the members still awaited', () => {
      vi.useFakeTimers();
      // Quorum 0.6 of four members is 3 reports; once c left, 0.6 of a, b (reported) and d (awaited) is 2.
      const { coord, clients } = setup({ quorum: 0.6 });
      const [a, b, c] = clients;
      coord.pushUpdate(header(a, 1), zero());
      coord.pushUpdate(header(b, 1), zero());
      expect(coord.status().round).toMatchObject({ reported: 2, quorum: 3 });
      coord.leave({ ...cred(c), reason: 'done' });
      expect(coord.status().round).toMatchObject({ reported: 2, quorum: 2 });
      vi.advanceTimersByTime(1000);
      expect(coord.status().lastCommittedRound).toBe(1);
      expect(coord.rounds(1)[0]).toMatchObject({ attempts: 1, reporters: [a.id, b.id] });
      coord.stop();
    });

    it('abandons the attempt at once when every member left without a report, and resamples the others', () => {
      vi.useFakeTimers();
      const { coord, clients, log } = setup({ fraction: 0.5, minClients: 4, seed: 3 });
      const first = coord.members();
      expect(first).toHaveLength(2);
      for (const id of first) coord.leave({ ...cred(clients.find((c) => c.id === id)!), reason: 'done' });
      // Two enrolled clients remain, fewer than minClients: the attempt is abandoned, and the next waits for a client.
      expect(log.lines().find((l) => l.event === 'round_abandoned')).toMatchObject({ round: 1, attempt: 0, reported: 0 });
      expect(coord.status()).toMatchObject({ phase: 'waiting', round: null, lastCommittedRound: 0 });
      coord.join({ protocolVersion: PROTOCOL_VERSION, enrollmentToken: ENROLL, clientName: 'x', numExamples: 10 });
      coord.join({ protocolVersion: PROTOCOL_VERSION, enrollmentToken: ENROLL, clientName: 'y', numExamples: 10 });
      // The next attempt of round 1 is attempt 1, sampled from the clients that are still here.
      expect(coord.status().round).toMatchObject({ id: 1, attempt: 1, members: 2 });
      for (const id of coord.members()) expect(first).not.toContain(id);
      coord.stop();
    });
  });

  it('persists registry, masks and rounds in SQLite and resumes from them', () => {
    const dir = mkdtempSync(join(tmpdir(), 'subfed-store-'));
    try {
      const sqlite = join(dir, 'nested', 'state.db');
      const first = setup({ sqlite, rounds: 2 });
      const [a] = first.clients;
      first.coord.pushUpdate(
        header(a, 1, { maskChanged: true, newMaskVersion: 1 }),
        withBias(kernelDelta([1, 1, 1], [1, 1, 1, 0, 0, 0])),
      );
      for (const c of first.clients.slice(1)) first.coord.pushUpdate(header(c, 1), withBias(kernelDelta([1, 1, 1, 1, 1, 1])));
      const model = first.coord.globalModel();
      first.coord.stop();

      const log = memoryLogger();
      const again = new Coordinator(
        parseConfig({ rounds: 2, fraction: 1, minClients: 4, enrollmentToken: ENROLL, sqlite }),
        toyModel(),
        {
          logger: log.logger,
          metrics: new CoordinatorMetrics(),
        },
      );
      expect(again.globalModel()).toEqual(model);
      expect(again.status()).toMatchObject({ lastCommittedRound: 1, clientsRegistered: 4, round: { id: 2 } });
      expect(again.clientMasks(a.id)).toEqual({
        version: 1,
        masks: new Map([['dense/kernel', Mask.fromBytes([1, 1, 1, 0, 0, 0])]]),
      });
      expect(again.heartbeat({ protocolVersion: PROTOCOL_VERSION, clientId: a.id, clientToken: a.token }).currentRound).toBe(2);
      expect(again.rounds(10).map((r) => r.round)).toEqual([1]);
      expect(log.lines().find((l) => l.event === 'resume')).toMatchObject({ lastRound: 1, clients: 4 });
      again.stop();
      // A different model cannot silently reuse the database.
      const other = toyModel();
      other.manifest[1] = { name: 'dense/bias', shape: [4], prunable: false };
      other.initial.set('dense/bias', new Float32Array(4));
      expect(
        () =>
          new Coordinator(parseConfig({ rounds: 2, fraction: 1, enrollmentToken: ENROLL, sqlite }), other, {
            logger: log.logger,
            metrics: new CoordinatorMetrics(),
          }),
      ).toThrow(/different model manifest/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
