// A link that breaks in the middle of a chunked stream: a TCP proxy inside the
// test stands between a real client (client/remote.ts) and the coordinator,
// counts the bytes crossing it and cuts the connection at a chosen point. The
// client retries; the server accepts each update at most once, which the
// round's reporters, the accepted-updates counter and the global model (bit
// for bit) all show.
import { afterEach, describe, expect, it } from 'vitest';
import { CoordinatorClient, type SharedOutgoingTensor } from '../../client/remote.js';
import { Mask } from '../../proto/mask.js';
import { startCoordinator, type CoordinatorHandle } from '../../server/main.js';
import type { TensorMap, TensorSpec } from '../../server/model.js';
import { memoryLogger } from '../server/harness.js';
import { TcpProxy, exactDeltas } from './helpers.js';

const TOKEN = 'proxy-enroll';
const MANIFEST: TensorSpec[] = [
  { name: 'fc/kernel', shape: [128, 128], prunable: true },
  { name: 'fc/bias', shape: [128], prunable: false },
];
/** Uploads travel in pieces of this many bytes, so one update is a stream of several. */
const CHUNK = 8192;
const FAST_RETRY = { initialDelayMs: 10, maxDelayMs: 50 };

function initialModel(): TensorMap {
  return new Map(
    MANIFEST.map((s, i) => [
      s.name,
      exactDeltas(
        s.shape.reduce((a, b) => a * b, 1),
        99,
        i,
      ),
    ]),
  );
}

/** Client `c`'s update: dense deltas from (c, tensor), num_examples 10 * (c + 1). */
function update(c: number) {
  const tensors = new Map<string, SharedOutgoingTensor>();
  for (const [i, s] of MANIFEST.entries()) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    tensors.set(s.name, { mask: Mask.full(n), kept: exactDeltas(n, c, i) });
  }
  return {
    fields: {
      roundId: 1,
      numExamples: 10 * (c + 1),
      baseMaskVersion: 0,
      maskChange: { kind: 'unchanged' as const },
      metrics: { loss: 1, localAccuracy: 0.5, sparsity: 0, receivedAccuracy: 0.25, channelsKept: [] },
    },
    tensors,
  };
}

/** The global after one round where clients `cs` each reported once: initial + the examples-weighted mean. */
function expectedGlobal(cs: number[]): TensorMap {
  const out: TensorMap = new Map();
  for (const [name, g] of initialModel()) {
    const sums = new Float64Array(g.length);
    let weight = 0;
    for (const c of cs) {
      const u = update(c);
      const w = u.fields.numExamples;
      const kept = u.tensors.get(name)!.kept;
      for (let j = 0; j < g.length; j++) sums[j] += w * kept[j];
      weight += w;
    }
    out.set(
      name,
      g.map((x, j) => x + sums[j] / weight),
    );
  }
  return out;
}

let server: CoordinatorHandle | undefined;
let proxy: TcpProxy | undefined;
const clients: CoordinatorClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await proxy?.close();
  await server?.stop();
  proxy = server = undefined;
});

/** A coordinator waiting for two members per round (quorum 1, no deadline in reach); A behind the proxy, B direct unless told. */
async function setup(options: { bBehindProxy?: boolean } = {}) {
  const log = memoryLogger();
  server = await startCoordinator(
    {
      rounds: 2,
      fraction: 1,
      minClients: 2,
      quorum: 1,
      roundDeadlineMs: 600_000,
      enrollmentToken: TOKEN,
      http: { enabled: false },
      liveness: 'off',
    },
    { manifest: MANIFEST, initial: initialModel() },
    { logger: log.logger },
  );
  proxy = await TcpProxy.start(server.grpcAddress);
  const a = CoordinatorClient.connect(proxy.address, { chunkBytes: CHUNK, retry: FAST_RETRY });
  const b = CoordinatorClient.connect(options.bBehindProxy === true ? proxy.address : server.grpcAddress, {
    chunkBytes: CHUNK,
    retry: FAST_RETRY,
  });
  clients.push(a, b);
  await a.join(TOKEN, 'a', 10);
  await b.join(TOKEN, 'b', 20);
  for (const c of [a, b]) expect((await c.pullTask(0)).kind).toBe('task');
  return { server, proxy, a, b, log };
}

async function accepted(s: CoordinatorHandle): Promise<number> {
  return (await s.metrics.updatesAccepted.get()).values[0]?.value ?? 0;
}

function expectGlobal(s: CoordinatorHandle, expected: TensorMap): void {
  const global = s.coordinator.globalModel();
  for (const [name, values] of expected) expect(global.get(name), name).toEqual(values);
}

describe('a connection cut in the middle of a chunked stream', () => {
  it('cut mid-upload: the client retries on a new connection and its update is folded once', async () => {
    const { server, proxy, a, b, log } = await setup();
    const first = proxy.last;
    const u = update(0);
    // Join and pull went through this connection already; the upload adds ~66 KB. Cut halfway into it.
    const cut = proxy.cutWhenUp(first, first.up + 33_000);
    const ack = await a.pushUpdate(u.fields, u.tensors);
    await cut;
    expect(ack).toMatchObject({ accepted: true });
    // A new connection for the retry (and one more for each TLS probe the client makes after
    // UNAVAILABLE, to tell an outage from a TLS disagreement).
    expect(proxy.connections.length).toBeGreaterThanOrEqual(2);
    // The server saw the first attempt's stream end early (grpc-js ends the call's stream when its
    // connection drops) and refused what had arrived.
    const rejects = log.lines().filter((l) => l.event === 'reject' && l.clientId === a.clientId);
    expect(rejects).toHaveLength(1);
    expect(rejects[0]).toMatchObject({ code: 'INVALID_ARGUMENT', reason: 'bad_stream' });
    expect(rejects[0].msg).toMatch(/tensor "fc\/kernel" incomplete at end of stream \(\d\/9 pieces\)/);
    expect(await accepted(server)).toBe(1);

    const v = update(1);
    await b.pushUpdate(v.fields, v.tensors);
    await server.waitForRound(1);
    const [round] = server.coordinator.rounds(1);
    expect(round.reporters.sort()).toEqual([a.clientId, b.clientId].sort());
    expect(await accepted(server)).toBe(2);
    expectGlobal(server, expectedGlobal([0, 1]));
  });

  it('ack lost after the update was accepted, with the round still open and at its commit: the retry gets the receipt, nothing is folded twice', async () => {
    const { server, proxy, a, b } = await setup({ bBehindProxy: true });
    const coord = server.coordinator;
    // Cut the links the moment the coordinator accepts a client's first update, before the ack is written back.
    // Every upload attempt's header passes checkUpdateHeader, and every whole upload reaches
    // pushUpdate: the first is folded, a retry of it is answered from its receipt (its digest
    // compared) and not folded again.
    const headers = new Map<string, Set<object>>();
    const attempts = (id: string | undefined) => headers.get(id!)?.size;
    const folds = new Map<string, number>();
    const check = coord.checkUpdateHeader.bind(coord);
    coord.checkUpdateHeader = (header) => {
      headers.set(header.clientId, (headers.get(header.clientId) ?? new Set()).add(header));
      return check(header);
    };
    const push = coord.pushUpdate.bind(coord);
    coord.pushUpdate = (header, tensors) => {
      const before = coord.status();
      const ack = push(header, tensors);
      const after = coord.status();
      // Folded: the open round gained a report, or the round committed with it.
      const folded =
        after.lastCommittedRound > before.lastCommittedRound || (after.round?.reported ?? 0) > (before.round?.reported ?? 0);
      if (folded) folds.set(header.clientId, (folds.get(header.clientId) ?? 0) + 1);
      // Only the first upload's ack is lost: the retry's gets through.
      if (attempts(header.clientId) === 1) proxy.cutAll();
      return ack;
    };
    const u = update(0);
    expect(await a.pushUpdate(u.fields, u.tensors)).toMatchObject({ accepted: true });
    expect([attempts(a.clientId), folds.get(a.clientId!)]).toEqual([2, 1]);
    expect(await accepted(server)).toBe(1);
    expect(coord.status().round).toMatchObject({ id: 1, reported: 1 });

    // B completes the round: the commit happens inside its push, and its ack is lost too.
    const v = update(1);
    expect(await b.pushUpdate(v.fields, v.tensors)).toMatchObject({ accepted: true });
    expect([attempts(b.clientId), folds.get(b.clientId!)]).toEqual([2, 1]);
    expect(coord.status().lastCommittedRound).toBe(1);
    expect(await accepted(server)).toBe(2);
    const [round] = coord.rounds(1);
    expect(round.reporters.sort()).toEqual([a.clientId, b.clientId].sort());
    expectGlobal(server, expectedGlobal([0, 1]));
  });
});
