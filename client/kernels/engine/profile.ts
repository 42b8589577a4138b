/**
 * A per-stage timer for the native engine (bench/profile-step.ts): runs training steps
 * of `model` on `data` with a mark after every stage and reports the time per stage and
 * step. The marks cost a performance.now() each (~0.1 µs), which the step time includes.
 */
import type { ImageDataset } from '../../data/dataset.js';
import { createModel } from '../../model.js';
import type { ModelName } from '../../model-names.js';
import { normalizationFor } from '../../train.js';
import { nativePlan, openSession } from './index.js';

export interface StageRow {
  kernel: string;
  count: number;
  /** Median over the profiled steps of the stage's time in one step. */
  totalMs: number;
}

export interface NativeProfile {
  stepMs: number;
  kernelMs: number;
  kernels: StageRow[];
}

function tablesOf(data: ImageDataset): Float32Array[] {
  const norm = normalizationFor(data);
  return norm.mean.map((mean, c) => {
    const table = new Float32Array(256);
    for (let v = 0; v < 256; v++) table[v] = (v / 255 - mean) / norm.std[c];
    return table;
  });
}

/** Null when the engine does not cover the model. */
export function nativeStepProfile(modelName: ModelName, batch: number, data: ImageDataset, steps = 200): NativeProfile | null {
  const model = createModel(modelName, 1);
  try {
    const plan = nativePlan(model, 'auto');
    if (plan === null) return null;
    // Per stage, its time in every profiled step; the median filters out the steps in
    // which another process had the core.
    const samples = new Map<string, number[]>();
    let step = -1;
    let last = 0;
    const record = (stage: string, ms: number): void => {
      if (step < 0) return;
      const list = samples.get(stage) ?? [];
      list[step] = (list[step] ?? 0) + ms;
      samples.set(stage, list);
    };
    const session = openSession(plan, {
      batch,
      training: true,
      profile: (stage) => {
        const now = performance.now();
        record(stage, now - last);
        last = now;
      },
    });
    try {
      session.setNormalization(tablesOf(data));
      session.load(model.getWeights(), model.getPersonal());
      session.resetMomentum();
      const order = Int32Array.from({ length: data.count }, (_, i) => i);
      const batches = Math.floor(data.count / batch);
      const stepTimes: number[] = [];
      const run = (n: number, recorded: boolean): void => {
        for (let s = 0; s < n; s++) {
          step = recorded ? s : -1;
          const t0 = performance.now();
          last = t0;
          session.loadBatch(data, order, (s % batches) * batch, batch);
          const now = performance.now();
          record('load batch', now - last);
          last = now;
          session.trainStep(batch, 0.01, 0.5);
          if (recorded) stepTimes.push(performance.now() - t0);
        }
      };
      run(50, false);
      run(steps, true);
      const median = (xs: number[]): number => {
        const sorted = [...xs].sort((a, b) => a - b);
        return sorted[sorted.length >> 1] ?? 0;
      };
      const kernels = [...samples].map(([kernel, xs]) => ({ kernel, count: 1, totalMs: median(xs) }));
      kernels.sort((a, b) => b.totalMs - a.totalMs);
      return { stepMs: median(stepTimes), kernelMs: kernels.reduce((s, k) => s + k.totalMs, 0), kernels };
    } finally {
      session.dispose();
    }
  } finally {
    model.dispose();
  }
}
