// validateUpdate is pure: each case builds a header, tensors and a context by
// hand, and checks the exact code, reason and message of the refusal, or the
// value it returns. Nothing here starts a coordinator.
import { describe, expect, it } from 'vitest';
import { encodePersonalTensor, encodeSparseTensor, encodeValues } from '../../proto/codec.js';
import { Mask } from '../../proto/mask.js';
import { MaskEncoding, PROTOCOL_VERSION, ValueEncoding, type SparseTensor, type UpdateHeader } from '../../proto/rpc.js';
import type { CoordinatorError } from '../../server/errors.js';
import type { MaskMap, TensorSpec } from '../../server/model.js';
import { refusal } from './harness.js';
import { maskChangeOf, masksAfter, validateUpdate, type ValidationContext } from '../../server/validate.js';

const specs: ReadonlyMap<string, TensorSpec> = new Map([
  ['dense/kernel', { name: 'dense/kernel', shape: [2, 3], prunable: true }],
  ['dense/bias', { name: 'dense/bias', shape: [3], prunable: false }],
]);

const HELD = Mask.fromBytes([1, 1, 0, 1, 1, 1]);

function context(
  o: { maskVersion?: number; masks?: MaskMap; weighting?: 'examples' | 'unweighted'; normMode?: 'reject' | 'clip' } = {},
): ValidationContext {
  return {
    specs,
    limits: {
      weighting: o.weighting ?? 'examples',
      maxExamples: 1000,
      updateNormBound: 100,
      updateNormMode: o.normMode ?? 'reject',
    },
    held: { maskVersion: o.maskVersion ?? 0, masks: o.masks ?? new Map() },
  };
}

/** The held state of a client at mask version 3 that pruned kernel position 2. */
const pruned = () => context({ maskVersion: 3, masks: new Map([['dense/kernel', HELD]]) });

function header(o: Partial<UpdateHeader> = {}, tensorCount = 2): UpdateHeader {
  return {
    protocolVersion: PROTOCOL_VERSION,
    clientId: 'c7',
    clientToken: 't',
    roundId: 4,
    numExamples: 10,
    baseMaskVersion: 0,
    maskChanged: false,
    newMaskVersion: 0,
    metrics: { loss: 0.5, localAccuracy: 0.75, sparsity: 0.25, receivedAccuracy: 0.5, channelsKept: [] },
    tensorCount,
    ...o,
  };
}

/** `values` at the kept positions of `mask` (default all six kept), encoded as the encoder picks (relative to `previous` if given). */
function kernel(values: number[], mask: number[] = [1, 1, 1, 1, 1, 1], previous?: Mask): SparseTensor {
  return encodeSparseTensor('dense/kernel', { mask: Mask.fromBytes(mask), kept: Float32Array.from(values) }, [2, 3], {
    values: 'f32',
    previousMask: previous,
  });
}

/** A kernel tensor with an explicit mask part. */
function kernelWith(encoding: MaskEncoding, data: number[], values: number[]): SparseTensor {
  return {
    name: 'dense/kernel',
    mask: { encoding, data: Uint8Array.from(data) },
    values: encodeValues(Float32Array.from(values), 'f32'),
  };
}

const bias = (values = [0, 0, 0]) =>
  encodeSparseTensor('dense/bias', { mask: Mask.full(3), kept: Float32Array.from(values) }, [3], { values: 'f32' });

/** One refused update; header, tensors and context default to a valid header, all-zero dense tensors and a fresh client. */
interface Refused {
  name: string;
  header?: UpdateHeader;
  tensors?: SparseTensor[];
  context?: ValidationContext;
  code: CoordinatorError['code'];
  reason: string;
  message: string;
}

const zeros = [0, 0, 0, 0, 0, 0];

const refused: Refused[] = [
  {
    name: 'a tensor count the stream does not carry',
    header: header({}, 3),
    code: 'INVALID_ARGUMENT',
    reason: 'tensor_count',
    message: 'header announces 3 tensors, the stream carried 2',
  },
  {
    name: 'no examples under examples weighting',
    header: header({ numExamples: 0 }),
    code: 'INVALID_ARGUMENT',
    reason: 'num_examples',
    message: 'num_examples must be at least 1, got 0',
  },
  {
    name: 'more examples than the limit',
    header: header({ numExamples: 1001 }),
    code: 'INVALID_ARGUMENT',
    reason: 'num_examples',
    message: 'num_examples 1001 exceeds the limit of 1000',
  },
  {
    name: 'a new mask version not above the held one',
    header: header({ baseMaskVersion: 3, maskChanged: true, newMaskVersion: 3 }),
    context: pruned(),
    code: 'INVALID_ARGUMENT',
    reason: 'mask_version',
    message: 'new_mask_version 3 must be greater than the held mask version 3',
  },
  {
    name: 'an unknown tensor name',
    header: header({}, 1),
    tensors: [encodeSparseTensor('dense/nope', { mask: Mask.full(1), kept: Float32Array.from([1]) }, [1], { values: 'f32' })],
    code: 'INVALID_ARGUMENT',
    reason: 'unknown_tensor',
    message: 'unknown tensor "dense/nope"',
  },
  {
    name: 'the same tensor twice',
    header: header({}, 2),
    tensors: [kernel(zeros), kernel(zeros)],
    code: 'INVALID_ARGUMENT',
    reason: 'duplicate_tensor',
    message: 'tensor "dense/kernel" appears more than once',
  },
  {
    name: 'values for another shape',
    header: header({}, 1),
    tensors: [encodeSparseTensor('dense/kernel', { mask: Mask.full(20), kept: new Float32Array(20) }, [4, 5], { values: 'f32' })],
    code: 'INVALID_ARGUMENT',
    reason: 'bad_values',
    message: 'tensor "dense/kernel" (shape [2, 3]): F32 values: 80 bytes hold 20 values, the mask keeps 6',
  },
  {
    name: 'a bitmap of the wrong length',
    header: header({}, 1),
    tensors: [kernelWith(MaskEncoding.BITMAP, [0xff, 0x03], new Array<number>(10).fill(0))],
    code: 'INVALID_ARGUMENT',
    reason: 'bad_mask',
    message: 'tensor "dense/kernel" (shape [2, 3]): BITMAP mask: bitmap has 2 bytes, 6 elements need 1',
  },
  {
    name: 'fewer values than kept positions',
    header: header({}, 1),
    tensors: [kernelWith(MaskEncoding.BITMAP, [0b000111], [0, 0])],
    code: 'INVALID_ARGUMENT',
    reason: 'bad_values',
    message: 'tensor "dense/kernel" (shape [2, 3]): F32 values: 8 bytes hold 2 values, the mask keeps 3',
  },
  {
    name: 'an unknown value encoding',
    header: header({}, 1),
    tensors: [
      {
        name: 'dense/kernel',
        mask: { encoding: MaskEncoding.FULL, data: new Uint8Array(0) },
        values: { encoding: 9 as ValueEncoding, data: new Uint8Array(24), scale: 0 },
      },
    ],
    code: 'INVALID_ARGUMENT',
    reason: 'bad_values',
    message: 'tensor "dense/kernel" (shape [2, 3]): unknown value encoding 9',
  },
  {
    name: 'DIFF pruning a position the held mask pruned already',
    header: header({ baseMaskVersion: 3, maskChanged: true, newMaskVersion: 4 }, 1),
    tensors: [kernelWith(MaskEncoding.DIFF, [2], [0, 0, 0, 0])],
    context: pruned(),
    code: 'INVALID_ARGUMENT',
    reason: 'bad_mask',
    message: 'tensor "dense/kernel" (shape [2, 3]): DIFF mask: prunes position 2, which the previous mask already pruned',
  },
  {
    name: 'a new mask while mask_changed is false',
    header: header({}, 1),
    tensors: [kernel([1, 1], [1, 1, 0, 0, 0, 0])],
    code: 'INVALID_ARGUMENT',
    reason: 'mask_changed',
    message: 'tensor "dense/kernel" carries a new mask but mask_changed is false',
  },
  {
    name: 'a dense tensor for a pruned one while mask_changed is false',
    header: header({ baseMaskVersion: 3 }),
    context: pruned(),
    code: 'INVALID_ARGUMENT',
    reason: 'mask_changed',
    message: 'tensor "dense/kernel" carries a new mask but mask_changed is false',
  },
  {
    name: 'NaN',
    header: header({}, 1),
    tensors: [kernel([0, 0, Number.NaN, 0, 0, 0])],
    code: 'INVALID_ARGUMENT',
    reason: 'non_finite',
    message: 'tensor "dense/kernel" has a non-finite value (NaN) at kept entry 2',
  },
  {
    name: '-Infinity in the second tensor',
    header: header({}, 2),
    tensors: [kernel(zeros), bias([0, -Infinity, 0])],
    code: 'INVALID_ARGUMENT',
    reason: 'non_finite',
    message: 'tensor "dense/bias" has a non-finite value (-Infinity) at kept entry 1',
  },
  {
    name: 'an L2 norm over the bound, over all tensors together',
    header: header({}, 2),
    tensors: [kernel([60, 60, 0, 0, 0, 0]), bias([60, 0, 0])],
    code: 'INVALID_ARGUMENT',
    reason: 'norm_bound',
    message: 'update L2 norm 103.923 exceeds the bound 100',
  },
  {
    name: 'an update with no tensors',
    header: header({}, 0),
    tensors: [],
    code: 'INVALID_ARGUMENT',
    reason: 'missing_tensor',
    message:
      'the update lacks 2 of the model\'s 2 tensors (first: "dense/kernel"); an update carries every tensor, with its delta at the kept positions',
  },
  {
    name: 'an update without one of the tensors',
    header: header({}, 1),
    tensors: [bias()],
    code: 'INVALID_ARGUMENT',
    reason: 'missing_tensor',
    message:
      'the update lacks 1 of the model\'s 2 tensors (first: "dense/kernel"); an update carries every tensor, with its delta at the kept positions',
  },
  {
    name: 'a prunable tensor with every position pruned',
    header: header({ maskChanged: true, newMaskVersion: 1 }),
    tensors: [kernel([], [0, 0, 0, 0, 0, 0]), bias()],
    code: 'INVALID_ARGUMENT',
    reason: 'empty_mask',
    message:
      'tensor "dense/kernel" keeps no position; a layer pruned entirely cuts the network (a personal tensor is sent PERSONAL)',
  },
  {
    name: 'a bias with every channel pruned (CHANNEL mask of zeros)',
    header: header({ maskChanged: true, newMaskVersion: 1 }),
    tensors: [
      kernel(zeros),
      {
        name: 'dense/bias',
        mask: { encoding: MaskEncoding.CHANNEL, data: Uint8Array.from([0]) },
        values: encodeValues(new Float32Array(0), 'f32'),
      },
    ],
    code: 'INVALID_ARGUMENT',
    reason: 'empty_mask',
    message:
      'tensor "dense/bias" keeps no position; a layer pruned entirely cuts the network (a personal tensor is sent PERSONAL)',
  },
  ...(
    [
      ['loss', Number.NaN, 'metrics.loss is NaN; expected a finite number >= 0'],
      ['loss', Infinity, 'metrics.loss is Infinity; expected a finite number >= 0'],
      ['loss', -0.5, 'metrics.loss is -0.5; expected a finite number >= 0'],
      ['localAccuracy', Number.NaN, 'metrics.local_accuracy is NaN; expected a fraction in [0, 1]'],
      ['localAccuracy', 1.5, 'metrics.local_accuracy is 1.5; expected a fraction in [0, 1]'],
      ['receivedAccuracy', -Infinity, 'metrics.received_accuracy is -Infinity; expected a fraction in [0, 1]'],
      ['sparsity', Infinity, 'metrics.sparsity is Infinity; expected a fraction in [0, 1]'],
      ['sparsity', -0.1, 'metrics.sparsity is -0.1; expected a fraction in [0, 1]'],
    ] as const
  ).map(([field, value, message]): Refused => ({
    name: `metrics.${field} ${value}`,
    header: header({
      metrics: { loss: 0.5, localAccuracy: 0.75, sparsity: 0.25, receivedAccuracy: 0.5, channelsKept: [], [field]: value },
    }),
    code: 'INVALID_ARGUMENT',
    reason: 'metrics',
    message,
  })),
];

describe('validateUpdate refuses', () => {
  for (const c of refused) {
    it(`${c.name}: ${c.code} ${c.reason}`, () => {
      const ctx = c.context ?? context();
      const heldBefore = new Map(ctx.held.masks);
      const err = refusal(() => validateUpdate(c.header ?? header(), c.tensors ?? [kernel(zeros), bias()], ctx));
      expect({ code: err.code, reason: err.reason, message: err.message }).toEqual({
        code: c.code,
        reason: c.reason,
        message: c.message,
      });
      // Pure: the context it was given is as it was.
      expect(ctx.held.masks).toEqual(heldBefore);
      expect(ctx.held.maskVersion).toBe(c.context === undefined ? 0 : 3);
    });
  }

  it('UNCHANGED or DIFF against a base version the server does not hold: FAILED_PRECONDITION mask_version_mismatch', () => {
    const stale = [
      { base: 2, change: {}, tensor: kernelWith(MaskEncoding.UNCHANGED, [], [0, 0, 0, 0, 0]) },
      // The new version is fine (4 > 3); the base it is relative to is not.
      { base: 1, change: { maskChanged: true, newMaskVersion: 4 }, tensor: kernelWith(MaskEncoding.DIFF, [5], [0, 0, 0, 0]) },
    ];
    for (const { base, change, tensor } of stale) {
      const err = refusal(() => validateUpdate(header({ baseMaskVersion: base, ...change }), [tensor, bias()], pruned()));
      expect({ code: err.code, reason: err.reason, message: err.message }).toEqual({
        code: 'FAILED_PRECONDITION',
        reason: 'mask_version_mismatch',
        message: `tensor "dense/kernel" refers to mask version ${base}, the server holds 3; pull again`,
      });
    }
  });

  it('reports the first fault when there are several (header first, then tensor by tensor, the norm last)', () => {
    const bad = [kernel(zeros), kernel([1e6, Number.NaN, 0, 0, 0, 0])];
    expect(refusal(() => validateUpdate(header({}, 3), bad, context())).reason).toBe('tensor_count');
    expect(refusal(() => validateUpdate(header({}, 2), bad, context())).reason).toBe('duplicate_tensor');
    expect(refusal(() => validateUpdate(header({}, 1), bad.slice(1), context())).reason).toBe('non_finite');
    // A missing tensor is found after every tensor sent was read, before the norm.
    expect(refusal(() => validateUpdate(header({}, 1), [kernel([1e6, 0, 0, 0, 0, 0])], context())).reason).toBe('missing_tensor');
  });
});

describe('validateUpdate returns', () => {
  it('the update decoded, weighted by num_examples, with its metrics and an unchanged mask change', () => {
    const u = validateUpdate(header({ numExamples: 12 }, 2), [kernel([1, 2, 3, 4, 5, 6]), bias([7, 8, 9])], context());
    expect(u).toMatchObject({
      clientId: 'c7',
      round: 4,
      weight: 12,
      metrics: { numExamples: 12, loss: 0.5, localAccuracy: 0.75, sparsity: 0.25, receivedAccuracy: 0.5 },
      maskChange: { kind: 'unchanged' },
    });
    expect(u.tensors.map((t) => [t.name, t.mask.isFull, Array.from(t.deltas)])).toEqual([
      ['dense/kernel', true, [1, 2, 3, 4, 5, 6]],
      ['dense/bias', true, [7, 8, 9]],
    ]);
  });

  it('weight 1 under unweighted averaging (num_examples 0 allowed), zero metrics when none were sent', () => {
    const u = validateUpdate(
      header({ numExamples: 0, metrics: null }),
      [kernel(zeros), bias()],
      context({ weighting: 'unweighted' }),
    );
    expect(u.weight).toBe(1);
    expect(u.metrics).toEqual({ numExamples: 0, loss: 0, localAccuracy: 0, sparsity: 0, receivedAccuracy: 0 });
  });

  it('the held mask object for an unchanged mask (UNCHANGED at the held version), so its kept-index list is reused', () => {
    const u = validateUpdate(
      header({ baseMaskVersion: 3 }),
      [kernelWith(MaskEncoding.UNCHANGED, [], [1, 2, 3, 4, 5]), bias()],
      pruned(),
    );
    expect(u.tensors[0].mask).toBe(HELD);
    expect(Array.from(u.tensors[0].deltas)).toEqual([1, 2, 3, 4, 5]);
    // The same mask sent whole (a bitmap) is the held mask too.
    const whole = validateUpdate(header({ baseMaskVersion: 3 }), [kernel([1, 2, 3, 4, 5], [1, 1, 0, 1, 1, 1]), bias()], pruned());
    expect(whole.tensors[0].mask).toBe(HELD);
  });

  it('a changed mask from a DIFF at the held version, and the masks the client holds once it is adopted', () => {
    const header4 = header({ baseMaskVersion: 3, maskChanged: true, newMaskVersion: 4 }, 2);
    const u = validateUpdate(header4, [kernelWith(MaskEncoding.DIFF, [5], [1, 1, 1, 1]), bias()], pruned());
    expect(u.maskChange).toEqual({ kind: 'changed', version: 4 });
    expect(u.tensors[0].mask).toEqual(Mask.fromBytes([1, 1, 0, 1, 1, 0]));
    expect(masksAfter(pruned().held.masks, u)).toEqual(new Map([['dense/kernel', Mask.fromBytes([1, 1, 0, 1, 1, 0])]]));
    // Back to dense: the full mask is not held (absent = all kept).
    const dense = validateUpdate(
      header({ baseMaskVersion: 3, maskChanged: true, newMaskVersion: 5 }),
      [kernel(zeros), bias()],
      pruned(),
    );
    expect(masksAfter(pruned().held.masks, dense)).toEqual(new Map());
  });

  it('a resync: the whole mask sent explicitly against a stale base version is accepted', () => {
    const u = validateUpdate(
      header({ baseMaskVersion: 1, maskChanged: true, newMaskVersion: 8 }),
      [kernel([1, 1], [1, 1, 0, 0, 0, 0]), bias()],
      pruned(),
    );
    expect(u.maskChange).toEqual({ kind: 'changed', version: 8 });
    expect(u.tensors[0].mask).toEqual(Mask.fromBytes([1, 1, 0, 0, 0, 0]));
  });

  it('under updateNormMode clip, the delta scaled down to the bound (never past it) instead of a refusal', () => {
    const u = validateUpdate(header(), [kernel([60, 60, 0, 0, 0, 0]), bias([60, 0, 0])], context({ normMode: 'clip' }));
    expect(u.clippedFrom).toBeCloseTo(Math.sqrt(3 * 3600), 6);
    const norm = Math.hypot(...u.tensors.flatMap((t) => Array.from(t.deltas)));
    expect(norm).toBeLessThanOrEqual(100);
    expect(norm).toBeGreaterThan(100 * (1 - 1e-6));
    // The largest finite float32 everywhere: clipped to the bound all the same.
    const max = 3.4028234663852886e38;
    const huge = validateUpdate(
      header(),
      [kernel(new Array<number>(6).fill(max)), bias([-max, max, -max])],
      context({ normMode: 'clip' }),
    );
    expect(Math.hypot(...huge.tensors.flatMap((t) => Array.from(t.deltas)))).toBeLessThanOrEqual(100);
    // Within the bound: untouched, not marked.
    const small = validateUpdate(header(), [kernel([1, 2, 3, 4, 5, 6]), bias()], context({ normMode: 'clip' }));
    expect(small.clippedFrom).toBeNull();
    expect(Array.from(small.tensors[0].deltas)).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('a tensor declared PERSONAL: an empty mask without values, held as such, and kept personal by UNCHANGED', () => {
    const declared = validateUpdate(
      header({ maskChanged: true, newMaskVersion: 1 }),
      [encodePersonalTensor('dense/kernel', 'f32'), bias([1, 2, 3])],
      context(),
    );
    expect(declared.tensors[0].mask).toEqual(Mask.none(6));
    expect(declared.tensors[0].deltas).toHaveLength(0);
    const held = masksAfter(new Map(), declared);
    expect(held).toEqual(new Map([['dense/kernel', Mask.none(6)]]));
    // The next update leaves it as it is: UNCHANGED (and an empty DIFF) against the held empty mask.
    const personalContext = context({ maskVersion: 1, masks: held });
    for (const kept of [kernelWith(MaskEncoding.UNCHANGED, [], []), kernelWith(MaskEncoding.DIFF, [], [])]) {
      const next = validateUpdate(header({ baseMaskVersion: 1 }), [kept, bias([1, 1, 1])], personalContext);
      expect(next.maskChange).toEqual({ kind: 'unchanged' });
      expect(next.tensors[0].mask.keptCount).toBe(0);
    }
    // It may become shared again: a full mask with its delta.
    const shared = validateUpdate(
      header({ baseMaskVersion: 1, maskChanged: true, newMaskVersion: 2 }),
      [kernel(zeros), bias()],
      personalContext,
    );
    expect(masksAfter(held, shared)).toEqual(new Map());
  });

  it('reads the wire mask fields as one value', () => {
    expect(maskChangeOf({ maskChanged: false, newMaskVersion: 9 })).toEqual({ kind: 'unchanged' });
    expect(maskChangeOf({ maskChanged: true, newMaskVersion: 9 })).toEqual({ kind: 'changed', version: 9 });
  });
});
