// Scale benchmark: N light clients (a ~1k-parameter model) join one
// coordinator over loopback gRPC, pull their task and push one update in a
// round where all of them are members. Every client has its own channel
// (CoordinatorClient, the real client). The baseline, measured in the same
// run, is the same round with a single client. Writes
// bench/results/scale.json and prints a table.
import { writeBenchResult } from './results.js';
import { SeededRandom } from '../proto/random.js';
import { Mask } from '../proto/mask.js';
import { pino } from 'pino';
import { CoordinatorClient, type OutgoingTensor } from '../client/remote.js';
import { startCoordinator } from '../server/main.js';
import { elementCount } from '../proto/shape.js';
import type { TensorMap, TensorSpec } from '../server/model.js';

const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 1000);
const TOKEN = 'bench-enrollment';
const MANIFEST: TensorSpec[] = [
  { name: 'fc/kernel', shape: [32, 31], prunable: true },
  { name: 'fc/bias', shape: [31], prunable: false },
]; // 1,023 parameters

interface RoundResult {
  clients: number;
  accepted: number;
  joinSeconds: number;
  roundSeconds: number;
  bytesUp: number;
  bytesDown: number;
}

async function oneRound(n: number, onSample: () => void): Promise<RoundResult> {
  const initial: TensorMap = new Map(MANIFEST.map((s) => [s.name, new Float32Array(elementCount(s.shape)).fill(0.1)]));
  const server = await startCoordinator(
    {
      rounds: 1,
      fraction: 1,
      minClients: n,
      quorum: 1,
      enrollmentToken: TOKEN,
      roundDeadlineMs: 600_000,
      http: { enabled: false },
      updateNormBound: 1e6,
      // Every client joins from this one process: no per-address join limit.
      joins: { perPeer: 'off', maxClients: n },
    },
    { manifest: MANIFEST, initial },
    { logger: pino({ level: 'warn' }) },
  );
  const clients = Array.from({ length: n }, () => CoordinatorClient.connect(server.grpcAddress));
  try {
    const t0 = performance.now();
    await Promise.all(clients.map((c, i) => c.join(TOKEN, `bench-${i}`, 10 + (i % 7))));
    const t1 = performance.now();
    const committed = server.waitForRound(1);
    const acks = await Promise.all(
      clients.map(async (c, i) => {
        const pulled = await c.pullTask(0);
        if (pulled.kind !== 'task') throw new Error(`client ${i} got no task (${pulled.kind})`);
        const task = pulled.task;
        if (task.kind !== 'dense') throw new Error(`client ${i} got a sparse first task`);
        onSample();
        const rand = new SeededRandom(i + 1);
        const tensors = new Map<string, OutgoingTensor>();
        for (const spec of MANIFEST) {
          const size = task.tensors.get(spec.name)!.length;
          const mask = spec.prunable
            ? Mask.fromBytes(Uint8Array.from({ length: size }, () => (rand.next() < 0.5 ? 1 : 0)))
            : Mask.full(size);
          const kept = Float32Array.from({ length: mask.keptCount }, () => rand.next() * 0.02 - 0.01);
          tensors.set(spec.name, { mask, kept });
        }
        return c.pushUpdate(
          {
            roundId: task.round,
            numExamples: 10 + (i % 7),
            baseMaskVersion: 0,
            maskChange: { kind: 'changed', version: 1 },
            metrics: { loss: 1, localAccuracy: 0.5, sparsity: 0.5, receivedAccuracy: 0.4, channelsKept: [] },
          },
          tensors,
        );
      }),
    );
    await committed;
    const t2 = performance.now();
    const [summary] = server.coordinator.rounds(1);
    return {
      clients: n,
      accepted: acks.filter((a) => a.accepted).length,
      joinSeconds: (t1 - t0) / 1000,
      roundSeconds: (t2 - t1) / 1000,
      bytesUp: summary.bytesUp,
      bytesDown: summary.bytesDown,
    };
  } finally {
    for (const c of clients) c.close();
    await server.stop();
  }
}

async function main(): Promise<void> {
  let peakRss = process.memoryUsage().rss;
  const sample = () => {
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
  };
  const timer = setInterval(sample, 25);
  const baseline = await oneRound(1, sample);
  const run = await oneRound(CLIENTS, sample);
  clearInterval(timer);
  sample();

  const result = {
    clients: run.clients,
    accepted: run.accepted,
    roundSeconds: run.roundSeconds,
    peakRssMB: peakRss / 2 ** 20,
    joinSeconds: run.joinSeconds,
    bytesUp: run.bytesUp,
    bytesDown: run.bytesDown,
    parameters: MANIFEST.reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1), 0),
    baseline,
    node: process.version,
  };
  writeBenchResult('scale', result);

  console.log(`scale benchmark: one round, every client a member, ${result.parameters}-parameter model, loopback gRPC`);
  console.table({
    [`${baseline.clients} client (baseline)`]: {
      accepted: baseline.accepted,
      'join s': baseline.joinSeconds.toFixed(3),
      'round s': baseline.roundSeconds.toFixed(3),
      'bytes up': baseline.bytesUp,
      'bytes down': baseline.bytesDown,
    },
    [`${run.clients} clients`]: {
      accepted: run.accepted,
      'join s': run.joinSeconds.toFixed(3),
      'round s': run.roundSeconds.toFixed(3),
      'bytes up': run.bytesUp,
      'bytes down': run.bytesDown,
    },
  });
  console.log(`peak RSS ${result.peakRssMB.toFixed(0)} MB; ${run.accepted}/${run.clients} updates accepted`);
  if (run.accepted !== run.clients) process.exitCode = 1;
}

void main();
