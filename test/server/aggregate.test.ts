import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { IntersectionAggregator } from '../../server/aggregate.js';
import { Mask } from '../../proto/mask.js';
import type { TensorMap, TensorSpec } from '../../server/model.js';

const toyManifest: TensorSpec[] = [{ name: 'w', shape: [3], prunable: true }];

function gatherDelta(weights: number[], mask: number[], global: number[]): Float32Array {
  const out: number[] = [];
  for (let j = 0; j < mask.length; j++) if (mask[j]) out.push(weights[j] - global[j]);
  return Float32Array.from(out);
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
      agg.foldTensor('w', gatherDelta(c.weights, c.mask, globalInit), Mask.fromBytes(c.mask).keptIndices(), 1);
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
      agg.foldTensor('w', gatherDelta(c.weights, c.mask, globalInit), Mask.fromBytes(c.mask).keptIndices(), 1);
    }
    agg.commit(global);
    expect(Array.from(global.get('w')!)).toEqual(reference);
  });

  it('weights by num_examples', () => {
    const global: TensorMap = new Map([['w', Float32Array.from([0, 0, 0])]]);
    const agg = new IntersectionAggregator(toyManifest);
    // client A (n=1) keeps all: delta [4,4,4]; client B (n=3) keeps [1,1,0]: delta [8,0]
    agg.foldTensor('w', Float32Array.from([4, 4, 4]), null, 1);
    agg.foldTensor('w', Float32Array.from([8, 0]), Mask.fromBytes([1, 1, 0]).keptIndices(), 3);
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
    agg.foldTensor('a', Float32Array.from([1]), Mask.fromBytes([0, 1, 0, 0]).keptIndices(), 2);
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
    agg.foldTensor('w', Float32Array.from([1, 1, 1]), null, 1);
    agg.commit(global);
    agg.commit(global);
    expect(Array.from(global.get('w')!)).toEqual([1, 1, 1]);
  });

  it('rejects mismatched lengths and unknown tensors', () => {
    const agg = new IntersectionAggregator(toyManifest);
    expect(() => agg.foldTensor('nope', Float32Array.from([1]), null, 1)).toThrow(/unknown tensor "nope"/);
    expect(() => agg.foldTensor('w', Float32Array.from([1]), null, 1)).toThrow(/needs 3 values/);
    expect(() => agg.foldTensor('w', Float32Array.from([1]), Int32Array.from([0, 1]), 1)).toThrow(/1 values for 2/);
    expect(() => agg.foldTensor('w', Float32Array.from([1]), Int32Array.from([5]), 1)).toThrow(/beyond size 3/);
    expect(() => agg.foldTensor('w', Float32Array.from([1, 1, 1]), null, 0)).toThrow(/positive/);
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
            const kept = Mask.fromBytes(Uint8Array.from({ length: size }, () => (rand() < 0.5 ? 1 : 0))).keptIndices();
            const vals = Float32Array.from(kept, () => rand() * 2 - 1);
            agg.foldTensor('t', vals, kept, n);
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
