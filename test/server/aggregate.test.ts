import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { IntersectionAggregator, TrimmedMeanAggregator } from '../../server/aggregate.js';
import { Mask } from '../../proto/mask.js';
import type { TensorMap, TensorSpec } from '../../server/model.js';
import type { ValidatedTensor, ValidatedUpdate } from '../../server/validate.js';

const toyManifest: TensorSpec[] = [{ name: 'w', shape: [3], prunable: true }];

function gatherDelta(weights: number[], mask: number[], global: number[]): Float32Array {
  const out: number[] = [];
  for (let j = 0; j < mask.length; j++) if (mask[j]) out.push(weights[j] - global[j]);
  return Float32Array.from(out);
}

/** A hand-made validated update (the aggregator trusts its caller, so tests build them directly). */
function update(tensors: ValidatedTensor[], weight = 1, clientId = 'c1'): ValidatedUpdate {
  return {
    clientId,
    round: 1,
    weight,
    metrics: { numExamples: weight, loss: 0, localAccuracy: 0, sparsity: 0, receivedAccuracy: 0 },
    maskChange: { kind: 'unchanged' },
    tensors,
    clippedFrom: null,
  };
}

/** `deltas` at the kept positions of `mask` (0/1 entries; default all kept). */
function tensor(name: string, deltas: number[] | Float32Array, mask?: number[] | Mask): ValidatedTensor {
  const m = mask instanceof Mask ? mask : mask === undefined ? Mask.full(deltas.length) : Mask.fromBytes(mask);
  return { name, mask: m, deltas: Float32Array.from(deltas) };
}

describe('IntersectionAggregator', () => {
  it('reproduces the reference toy case from deltas: [9,9,9] -> [2,5,9]', () => {
    const globalInit = [9, 9, 9];
    const global: TensorMap = new Map([['w', Float32Array.from(globalInit)]]);
    const agg = new IntersectionAggregator(toyManifest);
    const clients = [
      { weights: [1, 0, 0], mask: [1, 0, 0] },
      { weights: [3, 5, 0], mask: [1, 1, 0] },
    ];
    for (const c of clients) {
      agg.add(update([tensor('w', gatherDelta(c.weights, c.mask, globalInit), c.mask)]));
    }
    agg.commit(global);
    expect(Array.from(global.get('w')!)).toEqual([2, 5, 9]);
  });

  it('matches the reference view (averaging kept weights) on the toy case', () => {
    // Reference: new[j] = mean of w_k[j] over clients keeping j, else global[j].
    const globalInit = [9, 9, 9];
    const clients = [
      { weights: [1, 0, 0], mask: [1, 0, 0] },
      { weights: [3, 5, 0], mask: [1, 1, 0] },
    ];
    const reference = globalInit.map((g, j) => {
      const keepers = clients.filter((c) => c.mask[j] === 1);
      return keepers.length === 0 ? g : keepers.reduce((s, c) => s + c.weights[j], 0) / keepers.length;
    });
    expect(reference).toEqual([2, 5, 9]);
    // Delta view: global + mean(w_k - global) == mean(w_k) on every kept position.
    const global: TensorMap = new Map([['w', Float32Array.from(globalInit)]]);
    const agg = new IntersectionAggregator(toyManifest);
    for (const c of clients) {
      agg.add(update([tensor('w', gatherDelta(c.weights, c.mask, globalInit), c.mask)]));
    }
    agg.commit(global);
    expect(Array.from(global.get('w')!)).toEqual(reference);
  });

  it('weights by num_examples', () => {
    const global: TensorMap = new Map([['w', Float32Array.from([0, 0, 0])]]);
    const agg = new IntersectionAggregator(toyManifest);
    // client A (n=1) keeps all: delta [4,4,4]; client B (n=3) keeps [1,1,0]: delta [8,0]
    agg.add(update([tensor('w', [4, 4, 4])], 1));
    agg.add(update([tensor('w', [8, 0], [1, 1, 0])], 3));
    agg.commit(global);
    // pos0: (1*4 + 3*8)/4 = 7; pos1: (4 + 0)/4 = 1; pos2: only A -> 4
    expect(Array.from(global.get('w')!)).toEqual([7, 1, 4]);
  });

  it('leaves positions nobody kept bit-identical, including tensors nobody touched', () => {
    const manifest: TensorSpec[] = [
      { name: 'a', shape: [2, 2], prunable: true },
      { name: 'b', shape: [2], prunable: false },
    ];
    const a = Float32Array.from([0.1, -0.2, 0.3, Number.MIN_VALUE]);
    const b = Float32Array.from([1e-30, -0]);
    const global: TensorMap = new Map([
      ['a', a.slice()],
      ['b', b.slice()],
    ]);
    const agg = new IntersectionAggregator(manifest);
    agg.add(update([tensor('a', [1], [0, 1, 0, 0])], 2));
    const touched = agg.commit(global);
    expect(touched).toBe(1);
    const ga = global.get('a')!;
    expect([ga[0], ga[2], ga[3]]).toEqual([a[0], a[2], a[3]]);
    expect(ga[1]).toBeCloseTo(0.8, 6);
    expect(Object.is(global.get('b')![1], -0)).toBe(true);
    expect(global.get('b')![0]).toBe(b[0]);
  });

  it('resets after commit so the next round starts from zero', () => {
    const global: TensorMap = new Map([['w', Float32Array.from([0, 0, 0])]]);
    const agg = new IntersectionAggregator(toyManifest);
    agg.add(update([tensor('w', [1, 1, 1])]));
    expect(agg.updates).toBe(1);
    agg.commit(global);
    expect(agg.updates).toBe(0);
    agg.commit(global);
    expect(Array.from(global.get('w')!)).toEqual([1, 1, 1]);
  });

  it('rejects mismatched lengths, unknown and repeated tensors, and bad weights, folding nothing of such an update', () => {
    const manifest: TensorSpec[] = [...toyManifest, { name: 'v', shape: [2], prunable: false }];
    const agg = new IntersectionAggregator(manifest);
    const good = tensor('w', [1, 1, 1]);
    const refused =
      (tensors: ValidatedTensor[], weight = 1) =>
      () =>
        agg.add(update(tensors, weight));
    expect(refused([good, tensor('nope', [1])])).toThrow(/unknown tensor "nope"/);
    expect(refused([good, tensor('v', [1])])).toThrow(/tensor "v" has a mask of 1 for size 2/);
    expect(refused([good, { name: 'v', mask: Mask.full(2), deltas: Float32Array.from([1]) }])).toThrow(
      /tensor "v" has 1 values for 2 kept positions/,
    );
    expect(refused([good, { name: 'v', mask: Mask.fromBytes([0, 1]), deltas: Float32Array.from([1, 1]) }])).toThrow(
      /tensor "v" has 2 values for 1 kept positions/,
    );
    expect(refused([good, good])).toThrow(/tensor "w" appears twice/);
    expect(refused([good], 0)).toThrow(/positive/);
    expect(refused([good], Number.NaN)).toThrow(/positive/);
    // Every refusal came before any fold: the sums are still empty.
    expect(agg.updates).toBe(0);
    const global: TensorMap = new Map([
      ['w', Float32Array.from([5, 5, 5])],
      ['v', Float32Array.from([5, 5])],
    ]);
    expect(agg.commit(global)).toBe(0);
    expect(Array.from(global.get('w')!)).toEqual([5, 5, 5]);
  });

  it('folds every tensor of one update with the same weight, and counts the update once', () => {
    const manifest: TensorSpec[] = [...toyManifest, { name: 'v', shape: [2], prunable: false }];
    const agg = new IntersectionAggregator(manifest);
    agg.add(update([tensor('w', [3, 3], [1, 0, 1]), tensor('v', [6, 6])], 3));
    agg.add(update([tensor('w', [1, 1, 1]), tensor('v', [0, 0])], 1));
    expect(agg.updates).toBe(2);
    const global: TensorMap = new Map([
      ['w', new Float32Array(3)],
      ['v', new Float32Array(2)],
    ]);
    expect(agg.commit(global)).toBe(5);
    // w: (3*3 + 1)/4 at kept 0 and 2, 1 at 1; v: (3*6 + 0)/4.
    expect(Array.from(global.get('w')!)).toEqual([2.5, 1, 2.5]);
    expect(Array.from(global.get('v')!)).toEqual([4.5, 4.5]);
  });

  it('equals a naive per-position average for random masks, weights and deltas', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 40 }),
        fc.array(fc.tuple(fc.integer({ min: 1, max: 50 }), fc.integer()), { minLength: 1, maxLength: 6 }),
        (size, clients) => {
          const manifest: TensorSpec[] = [{ name: 't', shape: [size], prunable: true }];
          let seed = 7;
          const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
          const init = Float32Array.from({ length: size }, () => rand() * 2 - 1);
          const global: TensorMap = new Map([['t', init.slice()]]);
          const agg = new IntersectionAggregator(manifest);
          const sum = new Float64Array(size);
          const wsum = new Float64Array(size);
          for (const [n, s] of clients) {
            seed = s >>> 0;
            const mask = Mask.fromBytes(Uint8Array.from({ length: size }, () => (rand() < 0.5 ? 1 : 0)));
            const kept = mask.keptIndices();
            const vals = Float32Array.from(kept, () => rand() * 2 - 1);
            agg.add(update([{ name: 't', mask, deltas: vals }], n));
            kept.forEach((j, i) => {
              sum[j] += n * vals[i];
              wsum[j] += n;
            });
          }
          agg.commit(global);
          const g = global.get('t')!;
          for (let j = 0; j < size; j++) {
            const expected = wsum[j] > 0 ? Math.fround(init[j] + sum[j] / wsum[j]) : init[j];
            expect(g[j]).toBe(expected);
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('TrimmedMeanAggregator', () => {
  it('drops floor(trim * K) values at each end of each position, over the reporters that keep it', () => {
    const manifest: TensorSpec[] = [{ name: 'w', shape: [3], prunable: true }];
    const global: TensorMap = new Map([['w', Float32Array.from([0, 0, 0])]]);
    const agg = new TrimmedMeanAggregator(manifest, 0.25);
    // Position 0: five reporters (cut 1 each end): 1e6 and -50 go, mean of 1, 2, 3 = 2.
    // Position 1: three reporters (cut 0): plain mean of 4, 5, 6 = 5. Position 2: nobody.
    const rows: [number[], number[]][] = [
      [
        [1e6, 4],
        [1, 1, 0],
      ],
      [
        [1, 5],
        [1, 1, 0],
      ],
      [
        [2, 6],
        [1, 1, 0],
      ],
      [[3], [1, 0, 0]],
      [[-50], [1, 0, 0]],
    ];
    rows.forEach(([deltas, mask], i) => agg.add(update([tensor('w', deltas, mask)], 1, `c${i}`)));
    expect(agg.updates).toBe(5);
    expect(agg.commit(global)).toBe(2);
    expect(Array.from(global.get('w')!)).toEqual([2, 5, 0]);
    expect(agg.updates).toBe(0);
  });

  it('weights what is left by num_examples, and breaks ties the same whatever the arrival order', () => {
    const manifest: TensorSpec[] = [{ name: 'w', shape: [1], prunable: true }];
    const run = (order: number[]) => {
      const global: TensorMap = new Map([['w', Float32Array.from([0])]]);
      const agg = new TrimmedMeanAggregator(manifest, 0.2);
      const all = [
        update([tensor('w', [1])], 10, 'a'),
        update([tensor('w', [1])], 1, 'b'),
        update([tensor('w', [3])], 5, 'c'),
        update([tensor('w', [7])], 1, 'd'),
        update([tensor('w', [-9])], 2, 'e'),
      ];
      for (const i of order) agg.add(all[i]);
      agg.commit(global);
      return global.get('w')![0];
    };
    // Sorted: -9 (e), 1 (b, weight 1), 1 (a, weight 10), 3 (c), 7 (d); cut 1 each end: (1*1 + 10*1 + 5*3) / 16.
    const expected = Math.fround((1 + 10 + 15) / 16);
    expect(run([0, 1, 2, 3, 4])).toBe(expected);
    expect(run([4, 3, 2, 1, 0])).toBe(expected);
    expect(run([2, 0, 4, 1, 3])).toBe(expected);
  });

  it('with trim 0 equals the intersection mean; refuses a trim outside [0, 0.5)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 30 }),
        fc.array(fc.tuple(fc.integer({ min: 1, max: 9 }), fc.integer()), { minLength: 1, maxLength: 6 }),
        (size, clients) => {
          const manifest: TensorSpec[] = [{ name: 't', shape: [size], prunable: true }];
          const mean = new IntersectionAggregator(manifest);
          const trimmed = new TrimmedMeanAggregator(manifest, 0);
          clients.forEach(([n, s], i) => {
            let seed = s >>> 0;
            const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
            const mask = Mask.fromBytes(Uint8Array.from({ length: size }, () => (rand() < 0.6 ? 1 : 0)));
            const u = update(
              [{ name: 't', mask, deltas: Float32Array.from(mask.keptIndices(), () => rand() - 0.5) }],
              n,
              `c${i}`,
            );
            mean.add(u);
            trimmed.add(u);
          });
          const a: TensorMap = new Map([['t', new Float32Array(size)]]);
          const b: TensorMap = new Map([['t', new Float32Array(size)]]);
          mean.commit(a);
          trimmed.commit(b);
          const x = a.get('t')!;
          const y = b.get('t')!;
          for (let j = 0; j < size; j++) expect(y[j]).toBeCloseTo(x[j], 6);
        },
      ),
      { numRuns: 200 },
    );
    expect(() => new TrimmedMeanAggregator(toyManifest, 0.5)).toThrow(/trim must be in \[0, 0\.5\)/);
  });
});
