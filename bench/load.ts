// Load benchmark: 1,000 concurrent clients (the real CoordinatorClient of
// client/remote.ts, each on its own connection) on one coordinator over
// loopback gRPC, 5 rounds of a tiny model, every client a member of every
// round. The coordinator runs as deployed, in a process of its own (`subfed
// server` with SQLite and HTTP on, see coordinator-process.ts); the clients
// share this process. A seeded 10%
// of the clients drop once, at a random round and point: before pulling, in
// the middle of the download (the stream cancelled after its header), after
// the download (it never pushes, as if killed while training) or in the middle
// of the upload (the stream cancelled after its header and one piece). A
// dropped client stays silent until its round is closed, then reconnects and
// carries on. Liveness turns its silence into "gone", so a round stops waiting
// for it and commits once everybody else reported.
//
// Measured: the latency of every RPC (p50/p99, per method and over all),
// errors other than the injected drops (client side, and the coordinator's
// refusals other than the cancelled uploads), and whether every update a
// client saw acknowledged was counted exactly once by the coordinator (the
// reporters of its committed rounds from /api/rounds, and its accepted-updates
// counter from /metrics). Peak RSS is the coordinator's (VmHWM).
// Baseline in the same run: the same rounds with a single client.
// Writes bench/results/load.json and prints a table.
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { CoordinatorClient, RemoteError, type ClientIdentity, type SharedOutgoingTensor } from '../client/remote.js';
import { encodeSparseTensor } from '../proto/codec.js';
import { Mask } from '../proto/mask.js';
import { SeededRandom } from '../proto/random.js';
import {
  DEFAULT_MAX_MESSAGE_BYTES,
  PROTOCOL_VERSION,
  createCoordinatorDefinition,
  messageLimitOptions,
  splitTensor,
  type TaskChunk,
  type UpdateChunk,
} from '../proto/rpc.js';
import { elementCount } from '../proto/shape.js';
import type { TensorMap, TensorSpec } from '../server/model.js';
import { startCoordinatorProcess } from './coordinator-process.js';
import { writeBenchResult } from './results.js';

const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 1000);
const ROUNDS = 5;
const DROP_FRACTION = 0.1;
const SEED = 7;
const TOKEN = 'load-bench';
const MANIFEST: TensorSpec[] = [
  { name: 'fc/kernel', shape: [16, 8], prunable: true },
  { name: 'fc/bias', shape: [8], prunable: false },
]; // 136 parameters
/** How long a client without a task waits before pulling again (the coordinator's retryAfterMs). */
const RETRY_MS = 1000;
/** Clients join spread over this long. */
const JOIN_SPREAD_MS = 2000;
/** Bytes per uploaded piece of a dropping upload: small, so its update is several pieces and it stops after one. */
const DROP_CHUNK = 64;

const DROP_POINTS = ['before-pull', 'mid-download', 'after-download', 'mid-upload'] as const;
type DropPoint = (typeof DROP_POINTS)[number];
type Rpc = 'Join' | 'PullTask' | 'PushUpdate';

interface Drop {
  readonly round: number;
  readonly point: DropPoint;
}

interface RunResult {
  clients: number;
  rounds: number;
  seconds: number;
  latencies: Record<Rpc, number[]>;
  unexpected: string[];
  injectedDrops: number;
  dropsByPoint: Record<DropPoint, number>;
  /** (client, round) pairs the clients saw acknowledged as accepted. */
  accepted: Set<string>;
  /** (client, round) pairs among the committed rounds' reporters. */
  counted: string[];
  /** The coordinator's accepted-updates counter. */
  acceptedCounter: number;
  /** The coordinator's refusals, by reason. */
  refusals: Record<string, number>;
  /** Peak RSS of the coordinator's process. */
  coordinatorPeakRssMB: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function stats(values: number[]): { count: number; p50: number; p99: number } {
  const sorted = [...values].sort((a, b) => a - b);
  return { count: sorted.length, p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
}

function update(rand: SeededRandom): Map<string, SharedOutgoingTensor> {
  const tensors = new Map<string, SharedOutgoingTensor>();
  for (const spec of MANIFEST) {
    const n = elementCount(spec.shape);
    tensors.set(spec.name, { mask: Mask.full(n), kept: Float32Array.from({ length: n }, () => rand.next() * 0.02 - 0.01) });
  }
  return tensors;
}

const FIELDS = {
  numExamples: 10,
  baseMaskVersion: 0,
  maskChange: { kind: 'unchanged' as const },
  metrics: { loss: 1, localAccuracy: 0.5, sparsity: 0, receivedAccuracy: 0.4, channelsKept: [] },
};

/**
 * grpc-js pools connections across channels whose target and options are the
 * same, so 1,000 clients in one process would share one HTTP/2 connection. A
 * message limit a few bytes apart per client gives each its own connection, as
 * 1,000 devices have.
 */
function ownConnection(i: number): number {
  return DEFAULT_MAX_MESSAGE_BYTES + i;
}

/** Raw calls for the drops: a stream started as a real client would, then cancelled at the chosen point. */
class Dropper {
  readonly #channel: grpc.Client;
  readonly #def = createCoordinatorDefinition();

  constructor(address: string, i: number) {
    this.#channel = new grpc.Client(address, grpc.credentials.createInsecure(), {
      ...messageLimitOptions(ownConnection(i)),
      'grpc.use_local_subchannel_pool': 1,
    });
  }

  /** Connects (so a stream started next goes out at once). */
  ready(): Promise<void> {
    return new Promise((resolve, reject) =>
      this.#channel.waitForReady(Date.now() + 30_000, (err) => (err ? reject(err) : resolve())),
    );
  }

  /** Starts PullTask and cancels it once the header came; returns what the header said. */
  async cancelDownload(identity: ClientIdentity): Promise<'task' | 'wait' | 'finished'> {
    const call = this.#channel.makeServerStreamRequest(
      this.#def.pullTask.path,
      this.#def.pullTask.requestSerialize,
      this.#def.pullTask.responseDeserialize,
      {
        protocolVersion: PROTOCOL_VERSION,
        clientId: identity.clientId,
        clientToken: identity.clientToken,
        maskVersion: 0,
        valueEncoding: 1,
      },
    );
    call.on('error', () => undefined); // CANCELLED: ours
    for await (const chunk of call as AsyncIterable<TaskChunk>) {
      call.cancel();
      const header = chunk.kind === 'header' ? chunk.header : undefined;
      return header?.hasTask === true ? 'task' : header?.finished === true ? 'finished' : 'wait';
    }
    return 'wait';
  }

  /** Sends an update's header and first piece, then cancels the stream; resolves once the call is over. */
  async cancelUpload(identity: ClientIdentity, round: number, tensors: Map<string, SharedOutgoingTensor>): Promise<void> {
    let done!: () => void;
    const over = new Promise<void>((resolve) => (done = resolve));
    const call = this.#channel.makeClientStreamRequest<UpdateChunk, unknown>(
      this.#def.pushUpdate.path,
      this.#def.pushUpdate.requestSerialize,
      (b: Buffer) => b,
      () => done(), // CANCELLED: ours
    );
    call.write({
      kind: 'header',
      header: {
        protocolVersion: PROTOCOL_VERSION,
        clientId: identity.clientId,
        clientToken: identity.clientToken,
        roundId: round,
        numExamples: FIELDS.numExamples,
        baseMaskVersion: 0,
        maskChanged: false,
        newMaskVersion: 0,
        metrics: FIELDS.metrics,
        tensorCount: tensors.size,
      },
    });
    const [name, t] = [...tensors][0];
    const spec = MANIFEST.find((s) => s.name === name)!;
    const [first] = splitTensor(encodeSparseTensor(name, t, spec.shape, { values: 'f32' }), DROP_CHUNK);
    // Sent, then given a moment to arrive, then cut.
    call.write({ kind: 'piece', piece: first }, () => setTimeout(() => call.cancel(), 50));
    await over;
  }

  close(): void {
    this.#channel.close();
  }
}

async function run(n: number, dropFraction: number, onSample: () => void): Promise<RunResult> {
  const initial: TensorMap = new Map(MANIFEST.map((s) => [s.name, new Float32Array(elementCount(s.shape)).fill(0.1)]));
  const server = await startCoordinatorProcess(
    {
      rounds: ROUNDS,
      fraction: 1,
      minClients: n,
      quorum: 0.5,
      // Far off: a round closes when every member still awaited has reported, the dropped ones gone.
      roundDeadlineMs: 120_000,
      // A waiting client pulls again every second; one silent for 8 s is gone (far more than a busy
      // process delays a pull), and its round stops waiting for it.
      liveness: { staleAfterMs: 4000, goneAfterMs: 8000 },
      retryAfterMs: RETRY_MS,
      enrollmentToken: TOKEN,
      updateNormBound: 1e6,
    },
    { manifest: MANIFEST, initial },
  );
  const rand = new SeededRandom(SEED);
  const drops = new Map<number, Drop>();
  for (let i = 0; i < n; i++) {
    if (rand.next() < dropFraction)
      drops.set(i, { round: 1 + rand.int(ROUNDS), point: DROP_POINTS[rand.int(DROP_POINTS.length)] });
  }
  const latencies: Record<Rpc, number[]> = { Join: [], PullTask: [], PushUpdate: [] };
  const unexpected: string[] = [];
  const accepted = new Set<string>();
  const dropsByPoint = Object.fromEntries(DROP_POINTS.map((p) => [p, 0])) as Record<DropPoint, number>;
  let injectedDrops = 0;
  const timed = async <T>(rpc: Rpc, call: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    const result = await call();
    latencies[rpc].push(performance.now() - t0);
    onSample();
    return result;
  };

  const t0 = performance.now();
  const participant = async (i: number): Promise<void> => {
    const connect = () =>
      CoordinatorClient.connect(server.grpcAddress, { retry: { maxAttempts: 1 }, maxMessageBytes: ownConnection(i) });
    let client = connect();
    const data = new SeededRandom(SEED * 100_003 + i);
    const drop = drops.get(i);
    /** The drop: the device goes silent until `round` is closed, then reconnects under the same identity. */
    const vanish = async (round: number, point: DropPoint) => {
      const identity = client.identity!;
      client.close();
      injectedDrops++;
      dropsByPoint[point]++;
      await server.waitForRound(round);
      client = connect();
      client.resume(identity);
    };
    try {
      // Devices arrive over JOIN_SPREAD_MS, not in the same millisecond (1,000 simultaneous connects
      // would mostly measure the loopback listen backlog).
      await sleep((i / n) * JOIN_SPREAD_MS);
      await timed('Join', () => client.join(TOKEN, `load-${i}`, FIELDS.numExamples));
      // Every client is a member of every round, so its next round is the one after the last it took part in.
      let next = 1;
      for (;;) {
        if (drop?.round === next && (drop.point === 'before-pull' || drop.point === 'mid-download')) {
          if (drop.point === 'mid-download') {
            // Its download of round `next` starts, the header arrives, and the device is gone.
            const dropper = new Dropper(server.grpcAddress, i);
            await dropper.ready();
            for (let said = await dropper.cancelDownload(client.identity!); said !== 'task';) {
              if (said === 'finished') throw new Error(`client ${i}: training finished before its drop in round ${next}`);
              await sleep(RETRY_MS);
              said = await dropper.cancelDownload(client.identity!);
            }
            dropper.close();
          }
          await vanish(next, drop.point);
          next++;
          continue;
        }
        const pulled = await timed('PullTask', () => client.pullTask(0));
        if (pulled.kind === 'finished') return;
        if (pulled.kind === 'wait') {
          await sleep(pulled.retryAfterMs);
          continue;
        }
        const round = pulled.task.round;
        next = round + 1;
        const tensors = update(data);
        if (drop?.round === round) {
          // after-download: it never pushes (killed while training); mid-upload: its upload is cut.
          if (drop.point === 'mid-upload') {
            const dropper = new Dropper(server.grpcAddress, i);
            await dropper.ready();
            await dropper.cancelUpload(client.identity!, round, tensors);
            dropper.close();
          }
          await vanish(round, drop.point);
          continue;
        }
        const ack = await timed('PushUpdate', () => client.pushUpdate({ ...FIELDS, roundId: round }, tensors));
        if (ack.accepted) accepted.add(`${client.clientId}@${round}`);
        else unexpected.push(`client ${i} round ${round}: not accepted (${ack.message})`);
      }
    } catch (err) {
      unexpected.push(`client ${i}: ${err instanceof RemoteError ? err.message : String(err)}`);
    } finally {
      client.close();
    }
  };
  await Promise.all(Array.from({ length: n }, (_, i) => participant(i)));
  const seconds = (performance.now() - t0) / 1000;

  const counted = (await server.rounds()).flatMap((r) => r.reporters.map((id) => `${id}@${r.round}`));
  const metrics = await server.metrics();
  const acceptedCounter = metrics.get('subfed_updates_accepted_total') ?? 0;
  const refusals: Record<string, number> = {};
  for (const [name, value] of metrics) {
    const reason = /^subfed_rejected_requests_total\{reason="([^"]+)"\}$/.exec(name)?.[1];
    if (reason !== undefined) refusals[reason] = value;
  }
  const rounds = (await server.status()).lastCommittedRound;
  const coordinatorPeakRssMB = server.peakRssMB();
  await server.stop();
  return {
    clients: n,
    rounds,
    seconds,
    latencies,
    unexpected,
    injectedDrops,
    dropsByPoint,
    accepted,
    counted,
    acceptedCounter,
    refusals,
    coordinatorPeakRssMB,
  };
}

async function main(): Promise<void> {
  let peakRss = process.memoryUsage().rss;
  const sample = () => {
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
  };
  const timer = setInterval(sample, 100);
  const baseline = await run(1, 0, sample);
  const load = await run(CLIENTS, DROP_FRACTION, sample);
  clearInterval(timer);
  sample();

  const all = (r: RunResult) => stats(Object.values(r.latencies).flat());
  const perRpc = (r: RunResult) => Object.fromEntries(Object.entries(r.latencies).map(([rpc, v]) => [rpc, stats(v)]));
  // Each accepted (client, round) must be among the reporters exactly once, and nothing else counted.
  const countedSet = new Set(load.counted);
  const missing = [...load.accepted].filter((k) => !countedSet.has(k));
  const extra = load.counted.filter((k) => !load.accepted.has(k));
  const duplicates = load.counted.length - countedSet.size;
  // The coordinator's refusals: a cancelled upload reaches it as a stream that ended early (Node ends a
  // reset HTTP/2 stream like a finished one), refused as incomplete (bad_stream), or as round_closed when
  // it arrived after its round; one per such drop is the injected fault. A healthy client's refusal also
  // fails its call, so it is among the client-side errors already; only refusals beyond both are added.
  const refusedTotal = Object.values(load.refusals).reduce((a, b) => a + b, 0);
  const refusedSeenByClients = load.unexpected.filter((e) => /PushUpdate failed|PullTask failed|Join failed/.test(e)).length;
  const unexplained = refusedTotal - load.dropsByPoint['mid-upload'] - refusedSeenByClients;
  const unexpectedRefusals = unexplained > 0 ? [['refusals beyond the injected drops', unexplained] as const] : [];
  const unexpectedErrors = load.unexpected.length + unexpectedRefusals.reduce((a, [, n]) => a + n, 0);
  const overall = all(load);
  const base = all(baseline);
  const result = {
    clients: load.clients,
    rounds: load.rounds,
    p50Ms: overall.p50,
    p99Ms: overall.p99,
    unexpectedErrors,
    injectedDrops: load.injectedDrops,
    acceptedUpdates: load.accepted.size,
    countedUpdates: load.counted.length,
    peakRssMB: load.coordinatorPeakRssMB,
    clientsProcessPeakRssMB: peakRss / 2 ** 20,
    // Details.
    seconds: load.seconds,
    perRpc: perRpc(load),
    dropsByPoint: load.dropsByPoint,
    coordinatorAcceptedCounter: load.acceptedCounter,
    coordinatorRefusals: load.refusals,
    countCheck: { missing: missing.length, extra: extra.length, duplicates },
    unexpected: [...load.unexpected.slice(0, 20), ...unexpectedRefusals.map(([r, n]) => `coordinator refused ${n} as ${r}`)],
    baseline: { clients: baseline.clients, rounds: baseline.rounds, p50Ms: base.p50, p99Ms: base.p99, perRpc: perRpc(baseline) },
    p50Ratio: overall.p50 / base.p50,
    p99Ratio: overall.p99 / base.p99,
    parameters: MANIFEST.reduce((a, s) => a + elementCount(s.shape), 0),
    node: process.version,
  };
  writeBenchResult('load', result);

  const f = (x: number) => x.toFixed(2);
  console.log(
    `load benchmark: ${load.clients} concurrent clients, ${ROUNDS} rounds, ${result.parameters}-parameter model, loopback gRPC, ` +
      `${load.injectedDrops} injected drops (${Object.entries(load.dropsByPoint)
        .map(([p, n]) => `${p} ${n}`)
        .join(', ')})`,
  );
  const rows: Record<string, Record<string, string | number>> = {};
  for (const rpc of ['Join', 'PullTask', 'PushUpdate'] as Rpc[]) {
    const b = stats(baseline.latencies[rpc]);
    const l = stats(load.latencies[rpc]);
    rows[rpc] = {
      calls: l.count,
      'p50 ms': f(l.p50),
      'p99 ms': f(l.p99),
      '1-client p50 ms': f(b.p50),
      'p50 ratio': f(l.p50 / b.p50),
    };
  }
  rows['all RPCs'] = {
    calls: overall.count,
    'p50 ms': f(overall.p50),
    'p99 ms': f(overall.p99),
    '1-client p50 ms': f(base.p50),
    'p50 ratio': f(result.p50Ratio),
  };
  console.table(rows);
  console.log(
    `${load.rounds}/${ROUNDS} rounds committed in ${load.seconds.toFixed(1)} s; accepted ${result.acceptedUpdates}, counted ${result.countedUpdates} ` +
      `(coordinator counter ${load.acceptedCounter}; missing ${missing.length}, extra ${extra.length}, duplicates ${duplicates}); ` +
      `unexpected errors ${unexpectedErrors}; coordinator refusals ${JSON.stringify(load.refusals)}; peak RSS: coordinator ${result.peakRssMB.toFixed(0)} MB, the clients' process ${result.clientsProcessPeakRssMB.toFixed(0)} MB`,
  );
  for (const line of result.unexpected) console.log(`  unexpected: ${line}`);
  const ok =
    unexpectedErrors === 0 &&
    result.acceptedUpdates === result.countedUpdates &&
    missing.length === 0 &&
    extra.length === 0 &&
    duplicates === 0 &&
    load.rounds === ROUNDS;
  if (!ok) process.exitCode = 1;
}

void main();
