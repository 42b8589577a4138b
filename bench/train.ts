/**
 * Training throughput of the real trainLocal loop (samples/s): the native engine
 * (`native`, client/kernels/engine) and the tfjs path per backend (`wasm`, `cpu`), next to
 * two baselines measured in the same run: `cpu-stock` (tfjs cpu as shipped, in a child
 * process so that its own Conv2DBackpropFilter is registered) and `torch` (PyTorch on one
 * thread, bench/torch_train.py, the same models including BatchNorm). Writes
 * bench/results/train.json.
 *
 * Two rates per measurement: samplesPerSec (wall clock) and samplesPerCpuSec (divided by
 * the process's CPU time). On a shared machine the wall-clock rate depends on how much of a
 * core the process got; the CPU-time rate of these single-threaded loops does not, so the
 * "vs torch" ratios are given for both.
 *
 *   npm run bench:train [-- --seconds 4 --repeat 2]
 *
 * native and torch are measured alternately, model by model, `repeat` times each, and
 * the best of each is kept (see measureNativeAndTorch).
 */
import { packageRoot } from '../proto/package-root.js';
import { writeBenchResult } from './results.js';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, type BackendChoice } from '../client/backend.js';
import type { Dataset } from '../client/data/dataset.js';
import { SeededRandom } from '../proto/random.js';
import { createModel } from '../client/model.js';
import type { ModelName } from '../client/model-names.js';
import { trainLocal, type EngineChoice } from '../client/train.js';

export interface TrainBenchRecord {
  model: ModelName;
  batch: number;
  backend: string;
  samplesPerSec: number;
  samplesPerCpuSec: number;
}

const MODELS: readonly ModelName[] = ['lenet5-mnist', 'lenet5-bn-mnist', 'lenet5-bn-cifar', 'mlp'];
const BATCHES: readonly number[] = [10, 32];
const MAX_BATCHES = 100;
const quiet = { info: () => {} };

/** Random bytes shaped like the model's input (28x28x1, or 32x32x3 for the cifar models). */
function synthetic(model: ModelName, count: number, seed: number): Dataset {
  const rng = new SeededRandom(seed);
  const [side, channels] = model.endsWith('cifar') ? [32, 3] : [28, 1];
  const images = new Uint8Array(count * side * side * channels);
  for (let i = 0; i < images.length; i++) images[i] = rng.int(256);
  const labels = new Uint8Array(count).map(() => rng.int(10));
  return {
    kind: 'images',
    images,
    labels,
    count,
    height: side,
    width: side,
    channels,
    numClasses: 10,
    name: `${model}/synthetic`,
  };
}

/**
 * Samples/s of trainLocal over `seconds`. One call trains one epoch of a synthetic set
 * sized to take about a quarter second (at least two batches), so slow backends such as
 * cpu-stock still finish in time; calls repeat until the budget is spent.
 */
async function measure(
  model: ModelName,
  batch: number,
  backend: string,
  seconds: number,
  engine: EngineChoice,
): Promise<TrainBenchRecord> {
  const net = createModel(model, 1);
  const opts = { epochs: 1, batchSize: batch, lr: 0.01, momentum: 0.5, seed: 3, engine };
  // Warm-up and calibration on two batches.
  const probe = synthetic(model, 2 * batch, 2);
  await trainLocal(net, probe, opts);
  const t0 = performance.now();
  await trainLocal(net, probe, opts);
  const rate = probe.count / Math.max(1e-3, (performance.now() - t0) / 1000);
  const batches = Math.max(2, Math.min(MAX_BATCHES, Math.round((rate * 0.25) / batch)));
  const data = synthetic(model, batches * batch, 4);
  let samples = 0;
  let elapsed = 0;
  const start = performance.now();
  const cpuStart = process.cpuUsage();
  while (elapsed < seconds * 1000) {
    await trainLocal(net, data, { ...opts, seed: opts.seed + samples });
    samples += data.count;
    elapsed = performance.now() - start;
  }
  const cpu = process.cpuUsage(cpuStart);
  net.dispose();
  return {
    model,
    batch,
    backend,
    samplesPerSec: (samples * 1000) / elapsed,
    samplesPerCpuSec: (samples * 1e6) / (cpu.user + cpu.system),
  };
}

async function measureBackend(
  choice: BackendChoice,
  label: string,
  seconds: number,
  engine: EngineChoice,
  customKernels = true,
): Promise<TrainBenchRecord[]> {
  const name = await initBackend(choice, { logger: quiet, customKernels });
  if (tf.getBackend() !== name) throw new Error(`expected backend ${name}, running ${tf.getBackend()}`);
  const records: TrainBenchRecord[] = [];
  for (const model of MODELS) {
    for (const batch of BATCHES) {
      const record = await measure(model, batch, label, seconds, engine);
      process.stderr.write(`  ${label} ${model} batch ${batch}: ${record.samplesPerSec.toFixed(0)} samples/s\n`);
      records.push(record);
    }
  }
  return records;
}

function runChild(seconds: number): TrainBenchRecord[] {
  const script = fileURLToPath(import.meta.url);
  const child = spawnSync(process.execPath, [...process.execArgv, script, '--child-cpu-stock', '--seconds', String(seconds)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (child.status !== 0) throw new Error(`cpu-stock child failed with status ${child.status}: ${child.error?.message ?? ''}`);
  return JSON.parse(child.stdout) as TrainBenchRecord[];
}

const PYTHON = '/usr/bin/python3';

/** Why the torch baseline cannot run, or null when it can. */
function torchUnavailable(): string | null {
  const probe = spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8' });
  if (probe.status === 0) return null;
  return `torch baseline skipped: ${PYTHON} cannot import torch (${(probe.stderr || probe.error?.message || '').trim().split('\n').pop()})`;
}

function runTorch(model: ModelName, batch: number, seconds: number): TrainBenchRecord {
  const script = path.join(packageRoot(), 'bench', 'torch_train.py');
  const run = spawnSync(PYTHON, [script, '--model', model, '--batch', String(batch), '--seconds', String(seconds)], {
    encoding: 'utf8',
  });
  if (run.status !== 0) throw new Error(`torch_train.py ${model} batch ${batch} failed: ${run.stderr}`);
  const out = JSON.parse(run.stdout) as { samplesPerSec: number; samplesPerCpuSec: number };
  return { model, batch, backend: 'torch', samplesPerSec: out.samplesPerSec, samplesPerCpuSec: out.samplesPerCpuSec };
}

/** The better of two measurements, rate by rate (the best of N filters out the time another process had the core). */
function best(a: TrainBenchRecord | undefined, b: TrainBenchRecord): TrainBenchRecord {
  if (a === undefined) return b;
  return {
    ...a,
    samplesPerSec: Math.max(a.samplesPerSec, b.samplesPerSec),
    samplesPerCpuSec: Math.max(a.samplesPerCpuSec, b.samplesPerCpuSec),
  };
}

/**
 * native and torch, alternating per model and batch, `repeat` times each, best of each:
 * on a shared machine the load changes over minutes, so the two sides of a ratio are
 * measured side by side.
 */
async function measureNativeAndTorch(seconds: number, repeat: number, torch: boolean): Promise<TrainBenchRecord[]> {
  await initBackend('wasm', { logger: quiet });
  const records: TrainBenchRecord[] = [];
  for (const model of MODELS) {
    for (const batch of BATCHES) {
      let native: TrainBenchRecord | undefined;
      let baseline: TrainBenchRecord | undefined;
      for (let r = 0; r < repeat; r++) {
        native = best(native, await measure(model, batch, 'native', seconds, 'native'));
        if (torch) baseline = best(baseline, runTorch(model, batch, seconds));
      }
      const line =
        `  ${model} batch ${batch}: native ${native!.samplesPerSec.toFixed(0)} samples/s` +
        (baseline ? `, torch ${baseline.samplesPerSec.toFixed(0)}` : '');
      process.stderr.write(`${line}\n`);
      records.push(native!);
      if (baseline) records.push(baseline);
    }
  }
  return records;
}

function printTable(records: TrainBenchRecord[]): void {
  const torch = new Map(records.filter((r) => r.backend === 'torch').map((r) => [`${r.model}/${r.batch}`, r]));
  const ratio = (value: number, base: number | undefined): string => (base ? `${(value / base).toFixed(2)}x` : '-');
  const rank = (r: TrainBenchRecord): number[] => [
    MODELS.indexOf(r.model),
    r.batch,
    ['native', 'torch', 'tensorflow', 'wasm', 'cpu', 'cpu-stock'].indexOf(r.backend),
  ];
  const sorted = [...records].sort((a, b) => {
    const [x, y] = [rank(a), rank(b)];
    return x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
  });
  const rows = sorted.map((r) => {
    const base = torch.get(`${r.model}/${r.batch}`);
    return [
      r.model,
      String(r.batch),
      r.backend,
      r.samplesPerSec.toFixed(0),
      ratio(r.samplesPerSec, base?.samplesPerSec),
      r.samplesPerCpuSec.toFixed(0),
      ratio(r.samplesPerCpuSec, base?.samplesPerCpuSec),
    ];
  });
  const header = ['model', 'batch', 'backend', 'samples/s', 'vs torch', 'samples/cpu-s', 'vs torch (cpu)'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i < 3 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const row of rows) console.log(line(row));
}

function parseRepeat(argv: string[]): number {
  const i = argv.indexOf('--repeat');
  if (i < 0) return 2;
  const value = Number(argv[i + 1]);
  if (!Number.isInteger(value) || value < 1) throw new Error(`--repeat must be a positive integer, got ${argv[i + 1]}`);
  return value;
}

function parseSeconds(argv: string[]): number {
  const i = argv.indexOf('--seconds');
  if (i < 0) return 4;
  const value = Number(argv[i + 1]);
  if (!(value > 0)) throw new Error(`--seconds must be a positive number, got ${argv[i + 1]}`);
  return value;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const seconds = parseSeconds(argv);
  if (argv.includes('--child-cpu-stock')) {
    process.stdout.write(JSON.stringify(await measureBackend('cpu', 'cpu-stock', seconds, 'tfjs', false)));
    return;
  }
  const records: TrainBenchRecord[] = [];
  const notes: string[] = [];
  const noTorch = torchUnavailable();
  if (noTorch !== null) notes.push(noTorch);
  // The native engine does not use tfjs kernels; the wasm backend holds the models' variables.
  records.push(...(await measureNativeAndTorch(seconds, parseRepeat(argv), noTorch === null)));
  for (const choice of ['node', 'wasm', 'cpu'] as const) {
    try {
      await initBackend(choice, { logger: quiet });
    } catch (err) {
      notes.push(`${choice} skipped: ${(err as Error).message}`);
      continue;
    }
    records.push(...(await measureBackend(choice, choice === 'node' ? 'tensorflow' : choice, seconds, 'tfjs')));
  }
  records.push(...runChild(seconds));

  writeBenchResult('train', records);
  printTable(records);
  for (const note of notes) console.log(`note: ${note}`);
  console.log(
    `(${seconds}s per measurement, synthetic data, SGD momentum 0.5; native = subfed's wasm engine, wasm/cpu = the tfjs path; ` +
      `load average ${os
        .loadavg()
        .map((x) => x.toFixed(1))
        .join(' ')}; written to bench/results/train.json)`,
  );
}

await main();
