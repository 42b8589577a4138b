// A straggler: a member that pulled its task but pushes after its round closed
// at the deadline on quorum. The coordinator refuses the late update with
// FAILED_PRECONDITION (the real client, client/remote.ts, surfaces it as a
// RemoteError carrying that code, which its rounds loop treats as "pull again"),
// the late values appear nowhere, and the straggler's next round works.
import * as grpc from '@grpc/grpc-js';
import { afterAll, describe, expect, it } from 'vitest';
import { CoordinatorClient, RemoteError, type SharedOutgoingTensor, type PullOutcome } from '../../client/remote.js';
import { Mask } from '../../proto/mask.js';
import { startCoordinator, type CoordinatorHandle } from '../../server/main.js';
import type { TensorMap, TensorSpec } from '../../server/model.js';
import { memoryLogger } from '../server/harness.js';
import { exactDeltas } from './helpers.js';

const TOKEN = 'straggler-enroll';
const MANIFEST: TensorSpec[] = [
  { name: 'fc/kernel', shape: [8, 4], prunable: true },
  { name: 'fc/bias', shape: [4], prunable: false },
];
const size = (s: TensorSpec) => s.shape.reduce((a, b) => a * b, 1);

function initialModel(): TensorMap {
  return new Map(MANIFEST.map((s, i) => [s.name, exactDeltas(size(s), 7, i)]));
}

/** Client `c`'s dense deltas in round `r`. */
function deltas(c: number, r: number): Map<string, Float32Array> {
  return new Map(MANIFEST.map((s, i) => [s.name, exactDeltas(size(s), c, r, i)]));
}

function push(client: CoordinatorClient, c: number, round: number) {
  const tensors = new Map<string, SharedOutgoingTensor>();
  for (const [name, kept] of deltas(c, round)) tensors.set(name, { mask: Mask.full(kept.length), kept });
  return client.pushUpdate(
    {
      roundId: round,
      numExamples: 10,
      baseMaskVersion: 0,
      maskChange: { kind: 'unchanged' },
      metrics: { loss: 1, localAccuracy: 0.5, sparsity: 0, receivedAccuracy: 0.25, channelsKept: [] },
    },
    tensors,
  );
}

/** `before` plus the plain mean of the deltas of clients `cs` in round `r` (every mask full, equal weights). */
function plusMean(before: TensorMap, cs: number[], r: number): TensorMap {
  const out: TensorMap = new Map();
  for (const [name, g] of before) {
    const all = cs.map((c) => deltas(c, r).get(name)!);
    out.set(
      name,
      g.map((x, j) => x + all.reduce((sum, d) => sum + 10 * d[j], 0) / (10 * cs.length)),
    );
  }
  return out;
}

function taskRound(pulled: PullOutcome): number {
  if (pulled.kind !== 'task') throw new Error(`expected a task, got ${pulled.kind}`);
  return pulled.task.round;
}

let server: CoordinatorHandle;
const clients: CoordinatorClient[] = [];

afterAll(async () => {
  for (const c of clients) c.close();
  await server?.stop();
});

describe('a straggler past the deadline', () => {
  it('is refused with FAILED_PRECONDITION, leaves no trace in the closed round, and its next round works', async () => {
    const log = memoryLogger();
    server = await startCoordinator(
      {
        rounds: 2,
        fraction: 1,
        minClients: 3,
        quorum: 0.5,
        // Round 1 closes at this deadline with the two punctual members; round 2 with all three before it.
        roundDeadlineMs: 2000,
        enrollmentToken: TOKEN,
        http: { enabled: false },
        liveness: 'off',
      },
      { manifest: MANIFEST, initial: initialModel() },
      { logger: log.logger },
    );
    const [a, b, straggler] = ['a', 'b', 'straggler'].map(() => {
      const c = CoordinatorClient.connect(server.grpcAddress, { retry: { maxAttempts: 1 } });
      clients.push(c);
      return c;
    });
    for (const [i, c] of [a, b, straggler].entries()) await c.join(TOKEN, `c${i}`, 10);
    const [ida, idb, ids] = [a, b, straggler].map((c) => c.clientId!);
    // Everyone pulls round 1; the straggler then "trains" past the deadline.
    for (const c of [a, b, straggler]) expect(taskRound(await c.pullTask(0))).toBe(1);
    const deadlineAt = server.coordinator.status().round!.deadlineAt;
    await push(a, 0, 1);
    await push(b, 1, 1);
    await server.waitForRound(1);
    const [round1] = server.coordinator.rounds(1);
    expect(round1.committedAt).toBeGreaterThanOrEqual(deadlineAt);
    expect(round1.members.sort()).toEqual([ida, idb, ids].sort());
    expect(round1.reporters.sort()).toEqual([ida, idb].sort());

    const late = await push(straggler, 2, 1).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(late).toBeInstanceOf(RemoteError);
    expect(late).toMatchObject({ code: grpc.status.FAILED_PRECONDITION, method: 'PushUpdate' });
    expect((late as RemoteError).details).toBe('round 1 is closed (last committed round is 1)');
    const afterRound1 = plusMean(initialModel(), [0, 1], 1);
    expect(server.coordinator.globalModel()).toEqual(afterRound1);
    expect(log.lines().filter((l) => l.event === 'reject')).toEqual([
      expect.objectContaining({ clientId: ids, code: 'FAILED_PRECONDITION', reason: 'round_closed' }),
    ]);

    // Round 2: the straggler pulls the model round 1 made and reports in time, like the others.
    const pulled = await straggler.pullTask(0);
    expect(taskRound(pulled)).toBe(2);
    if (pulled.kind === 'task' && pulled.task.kind === 'dense') {
      expect(pulled.task.tensors).toEqual(afterRound1);
    } else throw new Error('expected a dense task');
    expect(await push(straggler, 2, 2)).toMatchObject({ accepted: true, message: 'update for round 2 accepted' });
    for (const [i, c] of [a, b].entries()) {
      expect(taskRound(await c.pullTask(0))).toBe(2);
      await push(c, i, 2);
    }
    await server.waitForRound(2);
    const [round2] = server.coordinator.rounds(1);
    expect(round2.reporters.sort()).toEqual([ida, idb, ids].sort());
    expect(round2.metrics[ids]).toMatchObject({ numExamples: 10 });
    expect(server.coordinator.globalModel()).toEqual(plusMean(afterRound1, [0, 1, 2], 2));
  });
});
