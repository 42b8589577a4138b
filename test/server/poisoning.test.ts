// Poisoned updates: one client sending huge deltas cannot move any global
// value past updateNormBound under `clip`, and the trimmed mean drops it.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeSparseTensor } from '../../proto/codec.js';
import { Mask } from '../../proto/mask.js';
import { parseConfig, type CoordinatorConfigInput } from '../../server/config.js';
import { inProcessCoordinator, updateHeader } from './harness.js';

const MAX_F32 = 3.4028234663852886e38;

/** A whole toy update: kernel [2,3] and bias [3] deltas, dense. */
function deltas(kernel: number[], bias: number[]) {
  return [
    encodeSparseTensor('dense/kernel', { mask: Mask.full(6), kept: Float32Array.from(kernel) }, [2, 3], { values: 'f32' }),
    encodeSparseTensor('dense/bias', { mask: Mask.full(3), kept: Float32Array.from(bias) }, [3], { values: 'f32' }),
  ];
}

/** One round: clients 1..3 send `honest`, client 0 sends `attack`; returns the largest |change| of any global value. */
function largestMove(config: Partial<CoordinatorConfigInput>, attack: number[], honest = 0.01): number {
  const { coord, clients } = inProcessCoordinator({ rounds: 1, weighting: 'examples', ...config });
  const before = coord.globalModel();
  coord.pushUpdate(updateHeader(clients[0], 1, { numExamples: 1000 }), deltas(attack.slice(0, 6), attack.slice(6, 9)));
  for (const c of clients.slice(1)) {
    coord.pushUpdate(updateHeader(c, 1), deltas(new Array<number>(6).fill(honest), new Array<number>(3).fill(-honest)));
  }
  expect(coord.status().lastCommittedRound).toBe(1);
  const after = coord.globalModel();
  coord.stop();
  let largest = 0;
  for (const [name, t] of after) {
    const b = before.get(name)!;
    for (let j = 0; j < t.length; j++) largest = Math.max(largest, Math.abs(t[j] - b[j]));
  }
  return largest;
}

const attackValue = fc.oneof(
  fc.constantFrom(MAX_F32, -MAX_F32, 1e30, -1e30),
  fc.float({ noNaN: true, noDefaultInfinity: true, min: -MAX_F32, max: MAX_F32 }),
);

describe('poisoned updates', () => {
  it('under clip, one client (with 100 times the examples) cannot move any global value past the bound', () => {
    fc.assert(
      fc.property(fc.array(attackValue, { minLength: 9, maxLength: 9 }), (attack) => {
        const bound = 0.5;
        // Float32 storage of global + delta can round by half an ulp of the value (|w| < 4 here).
        expect(largestMove({ updateNormBound: bound, updateNormMode: 'clip' }, attack)).toBeLessThanOrEqual(bound + 1e-6);
      }),
      { numRuns: 100 },
    );
  });

  it('under reject, the same update is refused and moves nothing', () => {
    const { coord, clients } = inProcessCoordinator({ updateNormBound: 0.5 });
    const before = coord.globalModel();
    expect(() => coord.pushUpdate(updateHeader(clients[0], 1), deltas(new Array<number>(6).fill(1e30), [0, 0, 0]))).toThrow(
      /update L2 norm .* exceeds the bound 0\.5/,
    );
    expect(coord.globalModel()).toEqual(before);
    coord.stop();
  });

  it('the trimmed mean drops the outlier: no global value moves more than the honest deltas', () => {
    fc.assert(
      fc.property(fc.array(attackValue, { minLength: 9, maxLength: 9 }), (attack) => {
        // 4 reporters, trim 0.25: one value cut at each end of every position. The norm bound is no help here.
        const moved = largestMove({ aggregation: { kind: 'trimmed-mean', trim: 0.25 }, updateNormBound: 1e300 }, attack);
        expect(moved).toBeLessThanOrEqual(0.01 + 1e-6);
      }),
      { numRuns: 100 },
    );
  });

  it('reads the norm mode and the aggregation with field-named errors', () => {
    const base = { rounds: 1, fraction: 1, enrollmentToken: 't' };
    expect(parseConfig(base)).toMatchObject({ updateNormMode: 'reject', aggregation: 'mean' });
    expect(parseConfig({ ...base, aggregation: { kind: 'trimmed-mean', trim: 0.2 } }).aggregation).toEqual({
      kind: 'trimmed-mean',
      trim: 0.2,
    });
    expect(() => parseConfig({ ...base, updateNormMode: 'scale' })).toThrow(
      'config: updateNormMode: expected "reject" or "clip", got "scale"',
    );
    expect(() => parseConfig({ ...base, aggregation: { kind: 'trimmed-mean', trim: 0.5 } })).toThrow(
      'config: aggregation.trim: expected a fraction in [0, 0.5), got 0.5',
    );
    expect(() => parseConfig({ ...base, aggregation: 'median' })).toThrow(
      'config: aggregation: expected "mean" or { "kind": "trimmed-mean", "trim": fraction }, got "median"',
    );
  });
});
