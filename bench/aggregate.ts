// Aggregation benchmark: how fast IntersectionAggregator folds sparse updates,
// next to a plain dense Float32Array add loop measured in the same run.
//
// Model: 1M parameters in four tensors; 100 updates at mask density 0.5, each
// with its own random mask, folded one whole update per add() call. The server
// derives a client's kept-index list once per mask (a Mask keeps it) and reuses
// it every round the mask is unchanged, so the fold is timed with derived lists;
// the one-off derivation is reported separately. elementsPerSec counts kept
// elements folded; denseAddElementsPerSec counts `acc[i] += v[i]` elements.
// Writes bench/results/aggregate.json and prints a table.
import { writeBenchResult } from './results.js';
import { SeededRandom } from '../proto/random.js';
import { Mask } from '../proto/mask.js';
import { IntersectionAggregator } from '../server/aggregate.js';
import type { ValidatedTensor, ValidatedUpdate } from '../server/validate.js';
import type { TensorMap, TensorSpec } from '../server/model.js';
import { elementCount } from '../proto/shape.js';

const MANIFEST: TensorSpec[] = [
  { name: 'conv/kernel', shape: [3, 3, 64, 128], prunable: true }, // 73,728
  { name: 'fc1/kernel', shape: [784, 1024], prunable: true }, // 802,816
  { name: 'fc2/kernel', shape: [1024, 119], prunable: true }, // 121,856
  { name: 'fc2/bias', shape: [1600], prunable: false },
];
const UPDATES = 100;
const DENSITY = 0.5;
const REPEATS = Number(process.env.BENCH_REPEATS ?? 3);

function makeUpdates(): ValidatedUpdate[] {
  const rand = new SeededRandom(42);
  const updates: ValidatedUpdate[] = [];
  for (let u = 0; u < UPDATES; u++) {
    const tensors: ValidatedTensor[] = [];
    for (const spec of MANIFEST) {
      const n = elementCount(spec.shape);
      // Counted here, not with mask.keptCount, so the timed derivation below still includes the count.
      let count = 0;
      const mask = Mask.build(n, (bits) => {
        for (let i = 0; i < n; i++) {
          bits[i] = rand.next() < DENSITY ? 1 : 0;
          count += bits[i];
        }
      });
      const deltas = new Float32Array(count);
      for (let i = 0; i < count; i++) deltas[i] = rand.next() * 0.02 - 0.01;
      tensors.push({ name: spec.name, mask, deltas });
    }
    updates.push({
      clientId: `c${u + 1}`,
      round: 1,
      weight: 10,
      metrics: { numExamples: 10, loss: 0, localAccuracy: 0, sparsity: 1 - DENSITY, receivedAccuracy: 0 },
      maskChange: { kind: 'changed', version: 1 },
      tensors,
      clippedFrom: null,
    });
  }
  return updates;
}

function seconds(fn: () => void): number {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

function main(): void {
  const total = MANIFEST.reduce((a, s) => a + elementCount(s.shape), 0);
  const updates = makeUpdates();

  // One-off per mask: the kept-index lists (kept on the Mask afterwards, which the fold then reads).
  const indexSeconds = seconds(() => {
    for (const u of updates) for (const t of u.tensors) t.mask.keptIndices();
  });
  const keptElements = updates.reduce((a, u) => a + u.tensors.reduce((b, t) => b + t.deltas.length, 0), 0);

  const agg = new IntersectionAggregator(MANIFEST);
  const global: TensorMap = new Map(MANIFEST.map((s) => [s.name, new Float32Array(elementCount(s.shape))]));
  const dense = updates.map((u) =>
    u.tensors.map((t) => new Float32Array(elementCount(MANIFEST.find((s) => s.name === t.name)!.shape)).fill(0.001)),
  );
  const denseAcc = MANIFEST.map((s) => new Float32Array(elementCount(s.shape)));

  const foldAll = () => {
    for (const u of updates) agg.add(u);
  };
  const denseAll = () => {
    for (const d of dense) {
      for (let k = 0; k < d.length; k++) {
        const acc = denseAcc[k];
        const v = d[k];
        for (let i = 0; i < v.length; i++) acc[i] += v[i];
      }
    }
  };

  // Warm-up, then alternate so both see the same machine load; keep the best of each.
  foldAll();
  agg.reset();
  denseAll();
  let foldBest = Infinity;
  let denseBest = Infinity;
  let commitBest = Infinity;
  for (let r = 0; r < REPEATS; r++) {
    foldBest = Math.min(foldBest, seconds(foldAll));
    commitBest = Math.min(
      commitBest,
      seconds(() => agg.commit(global)),
    );
    denseBest = Math.min(denseBest, seconds(denseAll));
  }

  const elementsPerSec = keptElements / foldBest;
  const denseAddElementsPerSec = (UPDATES * total) / denseBest;
  const result = {
    parameters: total,
    updates: UPDATES,
    density: DENSITY,
    keptElements,
    elementsPerSec,
    denseAddElementsPerSec,
    ratio: elementsPerSec / denseAddElementsPerSec,
    foldSeconds: foldBest,
    denseSeconds: denseBest,
    commitSeconds: commitBest,
    indexListSeconds: indexSeconds,
    elementsPerSecIncludingIndexLists: keptElements / (foldBest + indexSeconds),
    repeats: REPEATS,
    node: process.version,
  };

  writeBenchResult('aggregate', result);

  const m = (x: number) => `${(x / 1e6).toFixed(1)} M/s`;
  console.log(`aggregate benchmark: ${total} parameters, ${UPDATES} updates at density ${DENSITY}, best of ${REPEATS}`);
  console.table({
    'intersection fold (cached index lists)': { rate: m(elementsPerSec), seconds: foldBest.toFixed(3) },
    'dense Float32Array add (baseline)': { rate: m(denseAddElementsPerSec), seconds: denseBest.toFixed(3) },
    'fold incl. one-off index lists': {
      rate: m(result.elementsPerSecIncludingIndexLists),
      seconds: (foldBest + indexSeconds).toFixed(3),
    },
    'commit (1 per round)': { rate: m(total / commitBest), seconds: commitBest.toFixed(4) },
  });
  console.log(`ratio fold / dense add = ${result.ratio.toFixed(3)} (goal >= 0.5)`);
}

main();
