// The coordinator counts each call's bytes by how the call ended: the repeat of
// an accepted upload and a refused upload are counted apart
// (subfed_call_bytes_total{outcome}), and only accepted calls count as a
// member's traffic in the round it commits.
import { afterEach, describe, expect, it } from 'vitest';
import { codecs } from '../../proto/schema.js';
import { splitTensor, type SparseTensor, type UpdateChunk, type UpdateHeader } from '../../proto/rpc.js';
import { startCoordinator, type CoordinatorHandle } from '../../server/main.js';
import type { RoundSummary } from '../../server/store.js';
import { ENROLL, ScriptedClient, expectCallError, memoryLogger, toyModel } from './harness.js';

let server: CoordinatorHandle | undefined;
const clients: ScriptedClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await server?.stop();
  server = undefined;
});

/** Bytes of an upload as ScriptedClient.push sends it: the header chunk, then every piece chunk. */
function uploadBytes(header: UpdateHeader, tensors: SparseTensor[]): number {
  const chunks: UpdateChunk[] = [
    { kind: 'header', header },
    ...tensors.flatMap((t) => splitTensor(t).map((piece) => ({ kind: 'piece' as const, piece }))),
  ];
  return chunks.reduce((sum, c) => sum + codecs.UpdateChunk.encode(c).length, 0);
}

async function callBytes(s: CoordinatorHandle): Promise<Record<string, number>> {
  const m = await s.metrics.callBytes.get();
  return Object.fromEntries(m.values.map((v) => [`${v.labels.direction}/${v.labels.outcome}`, v.value]));
}

describe('call bytes by outcome', () => {
  it('counts a retried upload and refused uploads apart from the traffic the round reports', async () => {
    server = await startCoordinator(
      { rounds: 1, fraction: 1, minClients: 2, enrollmentToken: ENROLL, http: { enabled: false } },
      toyModel(),
      { logger: memoryLogger().logger },
    );
    const [a, b] = [new ScriptedClient(server.grpcAddress), new ScriptedClient(server.grpcAddress)];
    clients.push(a, b);
    await a.join();
    await b.join();
    const committed = new Promise<RoundSummary>((resolve) => server?.coordinator.onRoundCommitted(resolve));

    await a.pull();
    const pullRequest = codecs.TaskRequest.encode({ ...a.credentials(), maskVersion: 0, valueEncoding: 1 }).length;
    const update = a.encode({ 'dense/kernel': [1, 2, 3, 4, 5, 6] });
    const upload = uploadBytes(a.header(1, {}, 2), update);
    expect((await a.push(1, update)).accepted).toBe(true);
    // The ack was "lost": the same upload again is acknowledged, and counted as a retry.
    expect((await a.push(1, update)).accepted).toBe(true);
    // Other content is refused after the whole stream was read.
    const other = a.encode({ 'dense/kernel': [9, 9, 9, 9, 9, 9] });
    await expectCallError(() => a.push(1, other));
    // A wrong token is refused at the header; the pieces behind it are not read.
    await expectCallError(() => a.push(1, update, { clientToken: 'nope' }));
    const header = codecs.UpdateChunk.encode({ kind: 'header', header: a.header(1, { clientToken: 'nope' }, 2) }).length;

    await b.pull();
    const bUpdate = b.encode({});
    const bUpload = uploadBytes(b.header(1, {}, 2), bUpdate);
    const bAck = await b.push(1, bUpdate);
    expect(bAck.accepted).toBe(true);
    const summary = await committed;

    const bytes = await callBytes(server);
    expect(bytes['up/retry']).toBe(upload);
    expect(bytes['up/refused']).toBe(uploadBytes(a.header(1, {}, 2), other) + header);
    // A's traffic in the round: its task request and its one accepted upload, not the repeat nor the refusals.
    expect(summary.traffic[a.id].up).toBe(pullRequest + upload);
    // B's upload completed the round and is in it (counted before the commit, not when its call ended), with its ack.
    // B's other traffic in the round: its task request, and its join, which opened the round (A's, before, is in no round).
    const bJoin = bytes['up/accepted'] - summary.bytesUp;
    const bPullRequest = codecs.TaskRequest.encode({ ...b.credentials(), maskVersion: 0, valueEncoding: 1 }).length;
    expect(summary.traffic[b.id].up).toBe(bJoin + bPullRequest + bUpload);
    expect(summary.traffic[b.id].down).toBeGreaterThan(codecs.UpdateAck.encode(bAck).length);
    expect(summary.bytesUp).toBe(summary.traffic[a.id].up + summary.traffic[b.id].up);
    // Everything the round reports was counted as accepted.
    expect(bytes['up/accepted']).toBeGreaterThanOrEqual(summary.bytesUp);
    expect(bytes['down/accepted']).toBeGreaterThanOrEqual(summary.bytesDown);
    expect(summary.traffic[a.id].down).toBeGreaterThan(4 * 9); // the dense task
  });
});
