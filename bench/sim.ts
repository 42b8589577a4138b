/**
 * `npm run bench:sim`: the `paper` preset (100 clients, shards of 250, 10 per
 * round, 5 local epochs, 50 rounds) on Fashion-MNIST for subfedavg-un, with
 * dense FedAvg and local-only measured in the same run on the identical split
 * and seeds as the baselines. Writes bench/results/sim.json and prints a table.
 *
 * SUBFED_BENCH_ROUNDS shortens the run (e.g. for a smoke test); the JSON says
 * how many rounds were run.
 */
import path from 'node:path';
import { resolveSimConfig } from '../sim/presets.js';
import { formatSummaryTable, type AlgorithmSummary } from '../sim/report.js';
import { RunWriter } from '../sim/run-folder.js';
import { runSimulation } from '../sim/run.js';
import { writeBenchResult } from './results.js';

interface SimBenchRecord {
  algorithm: string;
  rounds: number;
  personalizedAcc: number | null;
  receivedAccLast10: number | null;
  globalAcc: number | null;
  uploadBytes: number;
  downloadBytes: number;
  denseUploadBytes: number;
  denseDownloadBytes: number;
  meanSparsity: number;
  meanReceivedSparsity: number;
  finalSparsity: number;
  wallSeconds: number;
}

function record(s: AlgorithmSummary): SimBenchRecord {
  return {
    algorithm: s.algorithm,
    rounds: s.rounds,
    personalizedAcc: s.personalizedAcc,
    receivedAccLast10: s.receivedAccLast10,
    globalAcc: s.globalAcc,
    uploadBytes: s.uploadBytes,
    downloadBytes: s.downloadBytes,
    denseUploadBytes: s.denseUploadBytes,
    denseDownloadBytes: s.denseDownloadBytes,
    meanSparsity: s.meanSparsity,
    meanReceivedSparsity: s.meanReceivedSparsity,
    finalSparsity: s.finalSparsity,
    wallSeconds: s.wallSeconds,
  };
}

async function main(): Promise<void> {
  const config = resolveSimConfig({
    preset: 'paper',
    compare: 'subfedavg-un,fedavg,local',
    rounds: process.env.SUBFED_BENCH_ROUNDS,
    data: process.env.SUBFED_DATA_DIR,
    out: path.join('runs', 'bench-sim'),
  });
  const writer = new RunWriter(config.out!, config);
  let notes: string[] = [];
  const started = Date.now();
  for await (const round of runSimulation(config, {
    onEvent: (e) => {
      if (e.kind === 'setup') {
        notes = e.notes;
        process.stderr.write(`${[...e.notes, e.labelTable].join('\n')}\n`);
      }
    },
  })) {
    writer.appendRound(round);
    const acc = round.evaluation?.personalized ?? round.membersAccuracy;
    process.stderr.write(
      `${round.algorithm} round ${round.round}/${config.rounds}: acc ${(acc.mean * 100).toFixed(1)}% ` +
        `(${round.evaluation ? 'sampled clients' : 'members'}), received ${round.receivedAccuracy ? (round.receivedAccuracy.mean * 100).toFixed(1) + '%' : '-'}, ` +
        `sparsity ${(round.meanSparsity * 100).toFixed(1)}%, ${round.wallSeconds.toFixed(1)} s, total ${((Date.now() - started) / 1000).toFixed(0)} s\n`,
    );
  }
  const summaries = writer.finish(notes);
  const records = summaries.map(record);
  const file = writeBenchResult('sim', records);
  process.stdout.write(`${formatSummaryTable(summaries)}\n`);
  const fed = summaries.find((s) => s.algorithm === 'fedavg');
  const sub = summaries.find((s) => s.algorithm === 'subfedavg-un');
  if (fed && sub) {
    const ratio = (sub.uploadBytes + sub.downloadBytes) / (fed.uploadBytes + fed.downloadBytes);
    process.stdout.write(`subfedavg-un moved ${(ratio * 100).toFixed(1)}% of FedAvg's bytes (measured in this run)\n`);
    // Each direction against the sparsity of the masks it was cut to: uploads carry the mask after
    // training, downloads the one held before it (one pruning step behind, and dense on first contact).
    const pctOf = (x: number): string => `${(x * 100).toFixed(1)}%`;
    process.stdout.write(
      `subfedavg-un upload ${pctOf(sub.uploadBytes / sub.denseUploadBytes)} of dense f32 ` +
        `(mean sparsity after training ${pctOf(sub.meanSparsity)}: 1 - sparsity = ${pctOf(1 - sub.meanSparsity)}); ` +
        `download ${pctOf(sub.downloadBytes / fed.downloadBytes)} of FedAvg's ` +
        `(mean sparsity on arrival ${pctOf(sub.meanReceivedSparsity)}: 1 - sparsity = ${pctOf(1 - sub.meanReceivedSparsity)})\n`,
    );
  }
  process.stdout.write(`wrote ${file}; report: ${path.join(config.out!, 'report.html')}\n`);
}

await main();
