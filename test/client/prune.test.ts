import { describe, expect, it } from 'vitest';
import { elementCount } from '../../proto/shape.js';
import fc from 'fast-check';
import type { ChannelGroup } from '../../client/model.js';
import {
  applyChannelMask,
  applyMasks,
  cappedPruneStep,
  channelDistance,
  hammingFraction,
  maskDistance,
  percentile,
  pruneLayer,
  prunePercentile,
  prunedFraction,
  selectChannels,
} from '../../client/prune.js';
import { Mask } from '../../proto/mask.js';

const f32 = (xs: number[]) => Float32Array.from(xs);
const u8 = (xs: number[]) => Mask.fromBytes(xs);
const bitsOf = (m: Mask | undefined) => [...m!.toBytes()];

describe('percentile (numpy linear)', () => {
  it('matches np.percentile on known arrays', () => {
    // np.percentile([1,2,3,4], 10) == 1.3; np.percentile([.5,.1,.9,.3,.7], 37.5) == 0.4
    expect(percentile([1, 2, 3, 4], 10)).toBeCloseTo(1.3, 12);
    expect(percentile([0.5, 0.1, 0.9, 0.3, 0.7], 37.5)).toBeCloseTo(0.4, 12);
    expect(percentile([7], 50)).toBe(7);
    expect(percentile([3, 1, 2], 0)).toBe(1);
    expect(percentile([3, 1, 2], 100)).toBe(3);
  });

  it('rejects empty input and bad p', () => {
    expect(() => percentile([], 10)).toThrow(/empty/);
    expect(() => percentile([1], 101)).toThrow(/\[0, 100\]/);
    expect(() => percentile([1], Number.NaN)).toThrow(/percentage/);
  });
});

describe('pruneLayer / prunePercentile', () => {
  it('prunes entries below the percentile of the alive |w| only', () => {
    // alive |w| = 1..10 (index 10 is masked, index 11 is an exact zero: neither counts)
    const w = f32([-1, 2, -3, 4, 5, -6, 7, 8, -9, 10, 0.01, 0]);
    const m = u8([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1]);
    // 30th percentile of 1..10 = 1 + 0.3*9 = 3.7 -> prune |w| < 3.7: 1, 2, 3 (and the zero)
    const next = pruneLayer(w, m, 30);
    expect(bitsOf(next)).toEqual([0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
    expect(bitsOf(m)).toEqual([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1]); // input untouched
  });

  it('never revives a pruned entry even when its stale value is large', () => {
    const w = f32([100, 1, 2, 3]);
    const next = pruneLayer(w, u8([0, 1, 1, 1]), 10);
    expect(next.has(0)).toBe(false);
  });

  it('is per layer, not a global ranking, and leaves unnamed tensors (biases) alone', () => {
    const weights = new Map([
      ['small', f32([0.001, 0.002, 0.003, 0.004])],
      ['large', f32([10, 20, 30, 40])],
      ['bias', f32([0.0001, 0.0002])],
    ]);
    const masks = new Map([
      ['small', u8([1, 1, 1, 1])],
      ['large', u8([1, 1, 1, 1])],
      ['bias', u8([1, 1])],
    ]);
    const next = prunePercentile(weights, masks, 50, ['small', 'large']);
    expect(bitsOf(next.get('small'))).toEqual([0, 0, 1, 1]);
    expect(bitsOf(next.get('large'))).toEqual([0, 0, 1, 1]);
    expect(bitsOf(next.get('bias'))).toEqual([1, 1]);
    // masks are immutable, so an untouched one is passed on as it is; the input map is not changed
    expect(next.get('bias')).toBe(masks.get('bias'));
    expect(next).not.toBe(masks);
    expect(bitsOf(masks.get('small'))).toEqual([1, 1, 1, 1]);
  });

  it('names the missing tensor', () => {
    expect(() => prunePercentile(new Map(), new Map([['a', u8([1])]]), 10, ['a'])).toThrow(/'a'/);
  });

  it('property: result is a subset of the old mask and removes about p% of the alive entries', () => {
    fc.assert(
      fc.property(
        fc.array(fc.float({ min: -10, max: 10, noNaN: true, noDefaultInfinity: true }), { minLength: 1, maxLength: 200 }),
        fc.integer({ min: 0, max: 100 }),
        (values, p) => {
          const w = f32(values);
          const m = Mask.build(w.length, (bits) => {
            for (let i = 0; i < bits.length; i++) bits[i] = i % 3 === 0 ? 0 : 1;
          });
          const next = pruneLayer(w, m, p);
          expect(next.isSubsetOf(m)).toBe(true);
          for (let i = 0; i < m.length; i++) if (!m.has(i)) expect(next.has(i)).toBe(false);
          const aliveBefore = [...w].filter((x, i) => m.has(i) && x !== 0).length;
          const kept = [...w].filter((x, i) => next.has(i) && x !== 0).length;
          // strictly-below rule: at most ceil(p% * n) + ties removed, never more than all
          expect(kept).toBeLessThanOrEqual(aliveBefore);
          if (aliveBefore > 0 && p < 100) expect(kept).toBeGreaterThan(0);
        },
      ),
    );
  });
});

describe('distances and pruned fraction', () => {
  it('hamming fraction and mean over layers', () => {
    expect(hammingFraction(u8([1, 0, 1, 1]), u8([1, 1, 1, 0]))).toBe(0.5);
    const a = new Map([
      ['x', u8([1, 1, 1, 1])],
      ['y', u8([1, 0])],
    ]);
    const b = new Map([
      ['x', u8([1, 1, 1, 0])],
      ['y', u8([1, 0])],
    ]);
    expect(maskDistance(a, b, ['x', 'y'])).toBeCloseTo((0.25 + 0) / 2, 12);
    expect(() => hammingFraction(u8([1]), u8([1, 1]))).toThrow(/lengths differ/);
  });

  it('pruned fraction is a percentage over the named tensors', () => {
    const masks = new Map([
      ['w', u8([0, 1, 1, 1])],
      ['b', u8([0, 0])],
    ]);
    expect(prunedFraction(masks, ['w'])).toBe(25);
    expect(prunedFraction(masks, ['w', 'b'])).toBeCloseTo(50, 12);
  });
});

describe('cappedPruneStep', () => {
  it('keeps p while the gap to the target is at least p', () => {
    expect(cappedPruneStep(10, 30, 0)).toBe(10);
    expect(cappedPruneStep(10, 30, 20)).toBe(10);
  });
  it('uses the exact remaining step, capped at 5, near the target', () => {
    // gap 30 - 27.1 = 2.9 < 10: (2.9 / 72.9) * 100 = 3.978...
    expect(cappedPruneStep(10, 30, 27.1)).toBeCloseTo((2.9 / 72.9) * 100, 10);
    // gap 30 - 21 = 9 < 10: 9 / 79 * 100 = 11.39 -> capped to 5
    expect(cappedPruneStep(10, 30, 21)).toBe(5);
    // Hy dense target: 50 - 45 = 5 < 10: 5/55*100 = 9.09 -> 5
    expect(cappedPruneStep(10, 50, 45)).toBe(5);
  });
  it('rejects percentages out of range', () => {
    expect(() => cappedPruneStep(10, 130, 0)).toThrow(/pruning target/);
  });
});

describe('applyMasks', () => {
  it('zeroes pruned positions and copies the rest', () => {
    const out = applyMasks(
      new Map([
        ['w', f32([1, 2, 3])],
        ['n', f32([4])],
      ]),
      new Map([['w', u8([1, 0, 1])]]),
    );
    expect([...out.get('w')!]).toEqual([1, 0, 3]);
    expect([...out.get('n')!]).toEqual([4]);
  });
});

describe('channel pruning', () => {
  it('keeps channels with |gamma| above the q-quantile of the alive ones', () => {
    const gamma = f32([0.9, -0.1, 0.5, 0.05, -0.7, 0.3, 0.2, 0.8, 0.6, 0.4]);
    // sorted |g|: .05 .1 .2 .3 .4 .5 .6 .7 .8 .9; floor(10*.45)=4 -> thr .4 -> keep > .4
    const next = selectChannels(gamma, Mask.full(10), 0.45, 3);
    expect(bitsOf(next)).toEqual([1, 0, 1, 0, 1, 0, 0, 1, 1, 0]);
  });

  it('considers alive channels only and never revives one', () => {
    const gamma = f32([0, 0.2, 0.3, 0.9, 0.8]);
    const alive = u8([0, 1, 1, 1, 1]);
    // alive sorted: .2 .3 .8 .9; floor(4*.45)=1 -> thr .3 -> keep .8, .9
    expect(bitsOf(selectChannels(gamma, alive, 0.45, 1))).toEqual([0, 0, 0, 1, 1]);
  });

  it('leaves a layer alone when it would fall below the floor', () => {
    const gamma = f32([0.1, 0.2, 0.3, 0.4]);
    const alive = u8([1, 1, 1, 1]);
    // thr = sorted[1] = .2 -> would keep 2 < floor 3 -> unchanged
    expect(bitsOf(selectChannels(gamma, alive, 0.45, 3))).toEqual([1, 1, 1, 1]);
    // already at the floor
    expect(bitsOf(selectChannels(gamma, u8([1, 1, 0, 0]), 0.45, 2))).toEqual([1, 1, 0, 0]);
  });

  it('channel distance counts alive channels only', () => {
    const alive = [u8([1, 1, 0, 1])];
    expect(channelDistance([u8([1, 0, 0, 1])], [u8([1, 1, 0, 1])], alive)).toBeCloseTo(1 / 3, 12);
  });

  const shapes = new Map<string, number[]>([
    ['c1/kernel', [2, 2, 1, 3]],
    ['c1/bias', [3]],
    ['bn1/gamma', [3]],
    ['bn1/beta', [3]],
    ['c2/kernel', [1, 1, 3, 2]],
    ['d/kernel', [4 * 3, 2]],
  ]);
  const ones = () => new Map([...shapes].map(([n, s]) => [n, Mask.full(elementCount(s))]));
  const groupTo = (next: ChannelGroup['next']): ChannelGroup => ({
    gamma: 'bn1/gamma',
    beta: 'bn1/beta',
    kernel: 'c1/kernel',
    bias: 'c1/bias',
    channels: 3,
    next,
  });

  it('removing a channel zeroes its kernel slice, bias, gamma, beta and the next conv in-channel slice', () => {
    const out = applyChannelMask(ones(), groupTo({ weight: 'c2/kernel', kind: 'conv', spatial: 1 }), u8([1, 0, 1]), shapes);
    // c1 kernel [2,2,1,3]: every element with index % 3 == 1
    expect(bitsOf(out.get('c1/kernel'))).toEqual([1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1]);
    expect(bitsOf(out.get('c1/bias'))).toEqual([1, 0, 1]);
    expect(bitsOf(out.get('bn1/gamma'))).toEqual([1, 0, 1]);
    expect(bitsOf(out.get('bn1/beta'))).toEqual([1, 0, 1]);
    // c2 kernel [1,1,3,2]: in-channel 1 = elements 2, 3
    expect(bitsOf(out.get('c2/kernel'))).toEqual([1, 1, 0, 0, 1, 1]);
    expect(bitsOf(out.get('d/kernel')).every((v) => v === 1)).toBe(true);
  });

  it('removing a channel zeroes the flatten-dense rows pixel*C + c', () => {
    const out = applyChannelMask(
      ones(),
      groupTo({ weight: 'd/kernel', kind: 'flatten-dense', spatial: 4 }),
      u8([0, 1, 1]),
      shapes,
    );
    const d = bitsOf(out.get('d/kernel')); // [12, 2]: rows 0, 3, 6, 9 are channel 0
    for (let row = 0; row < 12; row++) {
      const expected = row % 3 === 0 ? 0 : 1;
      expect([d[row * 2], d[row * 2 + 1]]).toEqual([expected, expected]);
    }
  });

  it('property: selection only removes alive channels and respects the floor', () => {
    fc.assert(
      fc.property(
        fc.array(fc.float({ min: -2, max: 2, noNaN: true }), { minLength: 1, maxLength: 40 }),
        fc.integer({ min: 0, max: 40 }),
        (values, floorSeed) => {
          const gamma = f32(values);
          const alive = Mask.fromBytes(values.map((_, i) => (i % 5 === 4 ? 0 : 1)));
          const floor = floorSeed % (values.length + 1);
          const next = selectChannels(gamma, alive, 0.45, floor);
          for (let c = 0; c < next.length; c++) if (!alive.has(c)) expect(next.has(c)).toBe(false);
          const kept = next.keptCount;
          const unchanged = next.equals(alive);
          expect(unchanged || kept >= floor).toBe(true);
        },
      ),
    );
  });

  it('property: channel masks only remove entries and applying one twice changes nothing more', () => {
    fc.assert(
      fc.property(fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }), (bits) => {
        const channelMask = Mask.fromBytes(bits.map((b) => (b ? 1 : 0)));
        const group = groupTo({ weight: 'c2/kernel', kind: 'conv', spatial: 1 });
        const start = ones();
        start.set(
          'c2/kernel',
          start.get('c2/kernel')!.derive((b) => (b[5] = 0)),
        ); // an earlier unstructured prune stays
        const once = applyChannelMask(start, group, channelMask, shapes);
        const twice = applyChannelMask(once, group, channelMask, shapes);
        for (const [name, m] of once) {
          const before = start.get(name)!;
          for (let i = 0; i < m.length; i++) if (!before.has(i)) expect(m.has(i)).toBe(false);
          expect(twice.get(name)).toEqual(m);
        }
        expect(once.get('d/kernel')).toEqual(start.get('d/kernel'));
      }),
    );
  });

  it('names a shape mismatch', () => {
    const bad = new Map(shapes);
    bad.set('d/kernel', [10, 2]);
    expect(() =>
      applyChannelMask(ones(), groupTo({ weight: 'd/kernel', kind: 'flatten-dense', spatial: 4 }), u8([1, 1, 1]), bad),
    ).toThrow(/d\/kernel/);
  });
});
