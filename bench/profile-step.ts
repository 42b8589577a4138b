/**
 * `npm run bench:profile`: where one training step goes, per model (batch 10 by default).
 *
 * For the tfjs path: tf.profile of one trainLocal step after warm-up, grouped by kernel
 * (count per step, summed kernel time), the step's wall time, and the fixed cost of one
 * tiny tfjs op measured in a loop. For the native engine (client/kernels/engine): its own
 * per-stage timer over many steps. Writes bench/results/profile-step.json.
 *
 *   npm run bench:profile [-- --backend wasm --batch-size 10 --models lenet5-mnist,lenet5-bn-mnist --engine tfjs|native|both]
 */
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, type BackendChoice } from '../client/backend.js';
import type { ImageDataset } from '../client/data/dataset.js';
import { SeededRandom } from '../proto/random.js';
import { createModel } from '../client/model.js';
import type { ModelName } from '../client/model-names.js';
import { trainLocal } from '../client/train.js';
import { nativeStepProfile } from '../client/kernels/engine/profile.js';
import { writeBenchResult } from './results.js';

interface KernelRow {
  kernel: string;
  count: number;
  totalMs: number;
}

interface StepProfile {
  model: ModelName;
  batch: number;
  engine: string;
  stepMs: number;
  kernelMs: number;
  kernels: KernelRow[];
}

function syntheticImages(count: number, side: number, channels: number, seed: number): ImageDataset {
  const rng = new SeededRandom(seed);
  const images = new Uint8Array(count * side * side * channels);
  for (let i = 0; i < images.length; i++) images[i] = rng.int(256);
  const labels = new Uint8Array(count).map(() => rng.int(10));
  return { kind: 'images', images, labels, count, height: side, width: side, channels, numClasses: 10, name: 'synthetic' };
}

function datasetFor(model: ModelName, count: number, seed: number): ImageDataset {
  return model.endsWith('cifar') ? syntheticImages(count, 32, 3, seed) : syntheticImages(count, 28, 1, seed);
}

const PROFILED_STEPS = 20;

const opts = (batch: number, seed: number) => ({
  epochs: 1,
  batchSize: batch,
  lr: 0.01,
  momentum: 0.5,
  seed,
  engine: 'tfjs' as const,
});

async function tfjsProfile(modelName: ModelName, batch: number): Promise<StepProfile> {
  const model = createModel(modelName, 1);
  const one = datasetFor(modelName, batch, 2);
  for (let i = 0; i < 20; i++) await trainLocal(model, one, opts(batch, i));
  // Wall time of one step, median of 50.
  const times: number[] = [];
  for (let i = 0; i < 50; i++) {
    const t0 = performance.now();
    await trainLocal(model, one, opts(batch, i));
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  // Profiled over PROFILED_STEPS steps (one trainLocal call of that many batches), reported per step.
  const many = datasetFor(modelName, batch * PROFILED_STEPS, 3);
  const info = await tf.profile(async () => {
    await trainLocal(model, many, opts(batch, 99));
  });
  const rows = new Map<string, KernelRow>();
  let kernelMs = 0;
  for (const k of info.kernels) {
    const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
    const row = rows.get(k.name) ?? { kernel: k.name, count: 0, totalMs: 0 };
    row.count += 1 / PROFILED_STEPS;
    row.totalMs += ms / PROFILED_STEPS;
    kernelMs += ms / PROFILED_STEPS;
    rows.set(k.name, row);
  }
  model.dispose();
  return {
    model: modelName,
    batch,
    engine: `tfjs-${tf.getBackend()}`,
    stepMs: times[times.length >> 1],
    kernelMs,
    kernels: [...rows.values()].sort((a, b) => b.totalMs - a.totalMs),
  };
}

/** Wall time of one tiny tfjs op (an add of two 10-element tensors plus its dispose). */
function fixedOpCostUs(): number {
  const a = tf.ones([10]);
  const b = tf.ones([10]);
  const run = (n: number): number => {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) tf.add(a, b).dispose();
    return ((performance.now() - t0) * 1000) / n;
  };
  run(2000);
  const us = Math.min(run(5000), run(5000), run(5000));
  tf.dispose([a, b]);
  return us;
}

function printProfile(p: StepProfile): void {
  const ops = Math.round(p.kernels.reduce((n, k) => n + k.count, 0));
  console.log(
    `\n${p.model} batch ${p.batch} [${p.engine}]: step ${p.stepMs.toFixed(3)} ms (median), ` +
      `${ops} kernels/step, kernel time ${p.kernelMs.toFixed(3)} ms, outside kernels ${(p.stepMs - p.kernelMs).toFixed(3)} ms`,
  );
  console.log(`  ${'kernel'.padEnd(28)} ${'count'.padStart(5)} ${'total ms'.padStart(9)} ${'ms/call'.padStart(8)}`);
  for (const k of p.kernels) {
    console.log(
      `  ${k.kernel.padEnd(28)} ${String(Math.round(k.count * 100) / 100).padStart(5)} ${k.totalMs.toFixed(3).padStart(9)} ${(k.totalMs / k.count).toFixed(4).padStart(8)}`,
    );
  }
}

function arg(argv: string[], name: string, fallback: string): string {
  const i = argv.indexOf(name);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : fallback;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  // The flag is the kebab-case of the training field it sets (batchSize), as everywhere else.
  if (argv.includes('--batch')) throw new Error('--batch: renamed to --batch-size');
  const backend = arg(argv, '--backend', 'wasm') as BackendChoice;
  const batch = Number(arg(argv, '--batch-size', '10'));
  const models = arg(argv, '--models', 'lenet5-mnist,lenet5-bn-mnist').split(',') as ModelName[];
  const engine = arg(argv, '--engine', 'both');
  await initBackend(backend, { logger: { info: () => {} } });
  const profiles: StepProfile[] = [];
  if (engine !== 'native') {
    console.log(
      `fixed cost of one tiny tfjs op on ${tf.getBackend()}: ${fixedOpCostUs().toFixed(2)} µs (add of two [10] tensors + dispose)`,
    );
    for (const model of models) {
      const p = await tfjsProfile(model, batch);
      printProfile(p);
      profiles.push(p);
    }
  }
  if (engine !== 'tfjs') {
    for (const model of models) {
      const p = nativeStepProfile(model, batch, datasetFor(model, batch * 50, 5));
      if (p === null) {
        console.log(`\n${model}: the native engine does not cover it on ${tf.getBackend()}`);
        continue;
      }
      const profile: StepProfile = { model, batch, engine: 'native', ...p };
      printProfile(profile);
      profiles.push(profile);
    }
  }
  writeBenchResult('profile-step', profiles);
}

await main();
