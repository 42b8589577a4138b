/**
 * `npm run bench:sim-hy`: seconds per round of the `paper` preset with subfedavg-hy
 * (lenet5-bn-mnist, 100 clients, 10 a round, 5 local epochs, batch 10, the test-data
 * gate) on full Fashion-MNIST, with the default workers, and what an evaluation round
 * (every client evaluated, every 10th round) costs against a plain one.
 *
 *   npm run bench:sim-hy [-- --rounds 12 --workers 2 --engine native|tfjs]
 *
 * The reference implementation (MMorafah/Sub-FedAvg, PyTorch) took 23.6 s a round on
 * average on this machine (issue 12). A full 50-round run takes long; the default 12
 * rounds include the evaluation round 10 and the final evaluation of round 12. Writes
 * bench/results/sim-hy.json.
 */
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { resolveSimConfig } from '../sim/presets.js';
import { runSimulation } from '../sim/run.js';
import { writeBenchResult } from './results.js';

const REFERENCE_SECONDS_PER_ROUND = 23.6;

function arg(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
}

interface RoundTime {
  round: number;
  seconds: number;
  /** CPU seconds of the busiest thread (a worker) during the round, and of all threads. */
  busiestThreadCpuSeconds: number | null;
  processCpuSeconds: number;
  evaluation: boolean;
  accuracy: number;
}

/**
 * CPU seconds per thread of this process (Linux /proc; the workers are threads). On a
 * shared machine the wall-clock time of a round depends on what else runs; the CPU
 * time of the busiest thread (the worker on the round's critical path) does not, and is
 * what the round would take on an otherwise idle machine, give or take the waits.
 */
function threadCpuSeconds(): Map<string, number> | null {
  try {
    const out = new Map<string, number>();
    for (const tid of readdirSync('/proc/self/task')) {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // fields[11], fields[12]: utime, stime in clock ticks (100 per second on Linux).
      out.set(tid, (Number(fields[11]) + Number(fields[12])) / 100);
    }
    return out;
  } catch {
    return null;
  }
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const engine = arg(argv, '--engine');
  if (engine !== undefined) process.env.SUBFED_ENGINE = engine;
  const rounds = arg(argv, '--rounds') ?? process.env.SUBFED_BENCH_ROUNDS ?? '12';
  const config = resolveSimConfig({
    preset: 'paper',
    algorithm: 'subfedavg-hy',
    rounds,
    ...(arg(argv, '--workers') !== undefined ? { workers: arg(argv, '--workers') } : {}),
    data: process.env.SUBFED_DATA_DIR,
  });
  const times: RoundTime[] = [];
  const started = Date.now();
  let threadsBefore = threadCpuSeconds();
  let cpuBefore = process.cpuUsage();
  for await (const round of runSimulation(config, {
    onEvent: (e) => {
      if (e.kind === 'setup') process.stderr.write(`${e.notes.join('\n')}\n`);
    },
  })) {
    const evaluation = round.evaluation !== null;
    const acc = round.evaluation?.personalized ?? round.membersAccuracy;
    const threadsAfter = threadCpuSeconds();
    let busiest: number | null = null;
    if (threadsBefore !== null && threadsAfter !== null) {
      busiest = 0;
      for (const [tid, cpu] of threadsAfter) busiest = Math.max(busiest, cpu - (threadsBefore.get(tid) ?? 0));
    }
    const cpu = process.cpuUsage(cpuBefore);
    threadsBefore = threadsAfter;
    cpuBefore = process.cpuUsage();
    const processCpu = (cpu.user + cpu.system) / 1e6;
    times.push({
      round: round.round,
      seconds: round.wallSeconds,
      busiestThreadCpuSeconds: busiest,
      processCpuSeconds: processCpu,
      evaluation,
      accuracy: acc.mean,
    });
    process.stderr.write(
      `round ${round.round}/${config.rounds}: ${round.wallSeconds.toFixed(2)} s${evaluation ? ' (evaluation round)' : ''} ` +
        `(busiest thread ${busiest === null ? '-' : busiest.toFixed(2)} cpu-s, process ${processCpu.toFixed(2)} cpu-s), ` +
        `acc ${(acc.mean * 100).toFixed(1)}% (${evaluation ? 'all clients' : 'members'}), ` +
        `sparsity ${(round.meanSparsity * 100).toFixed(1)}%, total ${((Date.now() - started) / 1000).toFixed(0)} s\n`,
    );
  }
  const mean = (xs: number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN);
  const plain = times.filter((t) => !t.evaluation).map((t) => t.seconds);
  const evaluationRounds = times.filter((t) => t.evaluation);
  const all = mean(times.map((t) => t.seconds));
  const plainMean = mean(plain);
  const busiest = (t: RoundTime): number => t.busiestThreadCpuSeconds ?? Number.NaN;
  const cpuAll = mean(times.map(busiest));
  const cpuPlain = mean(times.filter((t) => !t.evaluation).map(busiest));
  const result = {
    preset: 'paper',
    algorithm: 'subfedavg-hy',
    engine: process.env.SUBFED_ENGINE ?? 'auto',
    workers: config.workers,
    rounds: times.length,
    secondsPerRound: all,
    plainRoundSeconds: plainMean,
    evaluationRounds: evaluationRounds.map((t) => ({
      round: t.round,
      seconds: t.seconds,
      ratioToPlain: t.seconds / plainMean,
      busiestThreadCpuSeconds: t.busiestThreadCpuSeconds,
      cpuRatioToPlain: busiest(t) / cpuPlain,
    })),
    busiestThreadCpuSecondsPerRound: cpuAll,
    plainRoundBusiestThreadCpuSeconds: cpuPlain,
    loadAverage: os.loadavg(),
    referenceSecondsPerRound: REFERENCE_SECONDS_PER_ROUND,
    times,
  };
  const file = writeBenchResult('sim-hy', result);
  console.log(
    `subfedavg-hy paper preset, ${times.length} rounds, ${config.workers} workers, engine ${result.engine}:\n` +
      `  mean ${all.toFixed(2)} s/round (reference ${REFERENCE_SECONDS_PER_ROUND} s: ${(REFERENCE_SECONDS_PER_ROUND / all).toFixed(2)}x; goal <= ${(REFERENCE_SECONDS_PER_ROUND / 2).toFixed(1)} s)\n` +
      `  plain rounds ${plainMean.toFixed(2)} s` +
      evaluationRounds
        .map((t) => `; evaluation round ${t.round} ${t.seconds.toFixed(2)} s = ${(t.seconds / plainMean).toFixed(2)}x plain`)
        .join('') +
      `\nwrote ${file}`,
  );
}

await main();
