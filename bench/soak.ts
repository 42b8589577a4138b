// Soak benchmark: 300 rounds of a tiny model with 50 clients (the real
// CoordinatorClient of client/remote.ts), against a coordinator as deployed:
// SQLite store on disk, HTTP API and dashboard feed on. The clients pull sparse
// tasks at their own masks and prune a little every 25 rounds (a new mask
// version), so every path of a round runs again and again. After each commit
// the process is garbage-collected (run with --expose-gc) and its RSS sampled.
// Goal: RSS at round 300 at most 10% above RSS at round 30 (the first rounds
// warm up allocators and JIT; what grows after that is a leak). The baseline
// is the same run's round 30. Writes bench/results/soak.json and prints the
// curve every 30 rounds.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { CoordinatorClient, type OutgoingTensor } from '../client/remote.js';
import { Mask } from '../proto/mask.js';
import { SeededRandom } from '../proto/random.js';
import { startCoordinator } from '../server/main.js';
import { elementCount } from '../proto/shape.js';
import type { TensorMap, TensorSpec } from '../server/model.js';
import { writeBenchResult } from './results.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 300);
const CLIENTS = 50;
const WARM_ROUND = 30;
const TOKEN = 'soak-bench';
const MANIFEST: TensorSpec[] = [
  { name: 'fc/kernel', shape: [32, 16], prunable: true },
  { name: 'fc/bias', shape: [16], prunable: false },
]; // 528 parameters

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('bench/soak.ts needs node --expose-gc (npm run bench:soak)');

/** One client: its mask, pruned a little every 25 rounds, and its sparse round trip. */
async function participant(address: string, i: number): Promise<void> {
  const client = CoordinatorClient.connect(address);
  const rand = new SeededRandom(1000 + i);
  const masks = new Map(MANIFEST.map((s) => [s.name, Mask.full(elementCount(s.shape))]));
  let maskVersion = 0;
  try {
    await client.join(TOKEN, `soak-${i}`, 10 + (i % 5));
    for (;;) {
      const pulled = await client.pullTask(maskVersion, masks);
      if (pulled.kind === 'finished') return;
      if (pulled.kind === 'wait') {
        await sleep(pulled.retryAfterMs);
        continue;
      }
      const task = pulled.task;
      // The server holds the version it names; on a dense task the client's own masks stay.
      maskVersion = task.maskVersion;
      const prune = task.round % 25 === i % 25;
      const tensors = new Map<string, OutgoingTensor>();
      for (const spec of MANIFEST) {
        const previous = masks.get(spec.name)!;
        const mask =
          prune && spec.prunable
            ? previous.and(Mask.fromBytes(Array.from({ length: previous.length }, () => (rand.next() < 0.98 ? 1 : 0))))
            : previous;
        masks.set(spec.name, mask);
        const kept = Float32Array.from({ length: mask.keptCount }, () => rand.next() * 0.02 - 0.01);
        tensors.set(spec.name, { mask, kept, previousMask: previous });
      }
      const ack = await client.pushUpdate(
        {
          roundId: task.round,
          numExamples: 10 + (i % 5),
          baseMaskVersion: maskVersion,
          maskChange: prune ? { kind: 'changed', version: maskVersion + 1 } : { kind: 'unchanged' },
          metrics: { loss: 1, localAccuracy: 0.5, sparsity: 0, receivedAccuracy: 0.4, channelsKept: [] },
        },
        tensors,
      );
      maskVersion = ack.maskVersion;
    }
  } finally {
    client.close();
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'subfed-soak-'));
  const initial: TensorMap = new Map(MANIFEST.map((s) => [s.name, new Float32Array(elementCount(s.shape)).fill(0.1)]));
  const server = await startCoordinator(
    {
      rounds: ROUNDS,
      fraction: 1,
      minClients: CLIENTS,
      quorum: 1,
      roundDeadlineMs: 60_000,
      retryAfterMs: 20,
      enrollmentToken: TOKEN,
      sqlite: join(dir, 'soak.db'),
      updateNormBound: 1e6,
    },
    { manifest: MANIFEST, initial },
    { logger: pino({ level: 'silent' }) },
  );
  const samples: { round: number; rssMB: number; heapMB: number }[] = [];
  const t0 = performance.now();
  const clients = Promise.all(Array.from({ length: CLIENTS }, (_, i) => participant(server.grpcAddress, i)));
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      await server.waitForRound(round);
      gc!();
      const m = process.memoryUsage();
      samples.push({ round, rssMB: m.rss / 2 ** 20, heapMB: m.heapUsed / 2 ** 20 });
    }
    await clients;
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const seconds = (performance.now() - t0) / 1000;
  const at = (round: number) => samples[round - 1];
  const warm = at(Math.min(WARM_ROUND, ROUNDS));
  const last = at(ROUNDS);
  const ratio = last.rssMB / warm.rssMB;
  const curve = samples.filter((s) => s.round % 30 === 0 || s.round === 1);
  const result = {
    rounds: ROUNDS,
    clients: CLIENTS,
    parameters: MANIFEST.reduce((a, s) => a + elementCount(s.shape), 0),
    seconds,
    rssMBAtRound30: warm.rssMB,
    rssMBAtLastRound: last.rssMB,
    ratio,
    goal: 1.1,
    heapMBAtRound30: warm.heapMB,
    heapMBAtLastRound: last.heapMB,
    curve,
    samples,
    node: process.version,
  };
  writeBenchResult('soak', result);

  console.log(
    `soak benchmark: ${ROUNDS} rounds, ${CLIENTS} clients, ${result.parameters}-parameter model, SQLite + HTTP on, ` +
      `RSS after a forced GC at each commit (${seconds.toFixed(0)} s)`,
  );
  console.table(
    Object.fromEntries(
      curve.map((s) => [
        `round ${s.round}`,
        { 'RSS MB': s.rssMB.toFixed(1), 'heap MB': s.heapMB.toFixed(1), 'vs round 30': (s.rssMB / warm.rssMB).toFixed(3) },
      ]),
    ),
  );
  console.log(`RSS round ${ROUNDS} / round ${warm.round}: ${ratio.toFixed(3)} (goal <= 1.10)`);
  if (ratio > 1.1) process.exitCode = 1;
}

void main();
