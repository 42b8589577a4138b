import fc from 'fast-check';
import { SeededRandom } from '../../proto/random.js';
import { describe, expect, it } from 'vitest';
import {
  CodecError,
  decodeMask,
  decodeSparseTensor,
  decodeValues,
  encodeMask,
  encodeMaskAs,
  encodeSparseTensor,
  encodeValues,
  f16BitsToF32,
  f32BitsToF16Bits,
  parseValueEncoding,
} from '../../proto/codec.js';
import { Mask } from '../../proto/mask.js';
import { MaskEncoding, ValueEncoding, type MaskPart } from '../../proto/messages.js';

/** Small deterministic PRNG so a fast-check seed fully determines a mask. */
function randomMask(n: number, density: number, seed: number): Mask {
  const r = new SeededRandom(seed);
  return Mask.build(n, (bits) => {
    for (let i = 0; i < n; i++) bits[i] = r.next() < density ? 1 : 0;
  });
}

/** Prunes a further fraction of the kept entries, so the result is a subset of `mask`. */
function pruneFurther(mask: Mask, fraction: number, seed: number): Mask {
  const r = new SeededRandom(seed + 7);
  return mask.derive((bits) => {
    for (let i = 0; i < bits.length; i++) if (bits[i] === 1 && r.next() < fraction) bits[i] = 0;
  });
}

/** A mask of 0/1 entries written out, e.g. bits([1, 0, 1]). */
const bits = (entries: number[]) => Mask.fromBytes(entries);
/** Nothing kept. */
const none = (n: number) => Mask.build(n, () => {});

const ALL_MASK_ENCODINGS = [
  MaskEncoding.FULL,
  MaskEncoding.UNCHANGED,
  MaskEncoding.DIFF,
  MaskEncoding.BITMAP,
  MaskEncoding.INDEX_DELTA,
  MaskEncoding.CHANNEL,
  MaskEncoding.PERSONAL,
];

const sizeArb = fc.oneof(fc.constantFrom(0, 1, 7, 8, 9, 1023, 1024), fc.integer({ min: 0, max: 3000 }));
const densityArb = fc.oneof(fc.constantFrom(0, 0.01, 0.5, 0.99, 1), fc.double({ min: 0, max: 1, noNaN: true }));

function tryEncode(mask: Mask, shape: number[], enc: MaskEncoding, previous?: Mask): MaskPart | undefined {
  try {
    return encodeMaskAs(mask, shape, enc, previous);
  } catch (err) {
    if (err instanceof CodecError) return undefined;
    throw err;
  }
}

describe('mask encodings', () => {
  it('round-trips every applicable encoding, and encodeMask picks the smallest', () => {
    fc.assert(
      fc.property(sizeArb, densityArb, fc.double({ min: 0, max: 1, noNaN: true }), fc.integer(), (n, density, further, seed) => {
        const previous = randomMask(n, density, seed);
        const mask = pruneFurther(previous, further, seed);
        const shape = [n];
        let applicable = 0;
        const sizes: number[] = [];
        for (const enc of ALL_MASK_ENCODINGS) {
          const part = tryEncode(mask, shape, enc, previous);
          if (part === undefined) continue;
          applicable++;
          sizes.push(part.data.length);
          expect(decodeMask(part, shape, previous)).toEqual(mask);
        }
        expect(applicable).toBeGreaterThanOrEqual(3); // BITMAP, INDEX_DELTA, DIFF always apply here
        const chosen = encodeMask(mask, shape, previous);
        expect(chosen.data.length).toBe(Math.min(...sizes));
        expect(decodeMask(chosen, shape, previous)).toEqual(mask);
      }),
      { numRuns: 200 },
    );
  });

  it('round-trips masks that are not subsets of the previous one (DIFF inapplicable)', () => {
    fc.assert(
      fc.property(sizeArb, densityArb, fc.integer(), (n, density, seed) => {
        const previous = randomMask(n, density, seed);
        const mask = randomMask(n, density, seed + 1);
        const part = encodeMask(mask, [n], previous);
        expect(decodeMask(part, [n], previous)).toEqual(mask);
        const isSubset = mask.keptIndices().every((i) => previous.has(i));
        if (!isSubset) expect(tryEncode(mask, [n], MaskEncoding.DIFF, previous)).toBeUndefined();
      }),
      { numRuns: 100 },
    );
  });

  it('uses CHANNEL for channel-structured masks of conv kernels', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 2, max: 70 }),
        fc.integer(),
        (k, inC, outC, seed) => {
          const shape = [k, k, inC, outC];
          // at least one channel removed, so not FULL
          const channels = randomMask(outC, 0.5, seed).derive((b) => (b[0] = 0));
          const mask = Mask.build(k * k * inC * outC, (b) => {
            for (let i = 0; i < b.length; i++) b[i] = channels.has(i % outC) ? 1 : 0;
          });
          const part = encodeMask(mask, shape);
          expect(part.data.length).toBeLessThanOrEqual(Math.ceil(outC / 8));
          expect(decodeMask(part, shape)).toEqual(mask);
        },
      ),
      { numRuns: 100 },
    );
  });

  it('picks CHANNEL for a realistic pruned conv kernel', () => {
    const outC = 32;
    const mask = Mask.build(3 * 3 * 16 * outC, (b) => {
      for (let i = 0; i < b.length; i++) b[i] = (i % outC) % 3 === 0 ? 0 : 1;
    });
    const part = encodeMask(mask, [3, 3, 16, outC]);
    expect(part.encoding).toBe(MaskEncoding.CHANNEL);
    expect(part.data.length).toBe(4);
  });

  it('encodes all-ones as FULL with zero bytes and an equal mask as UNCHANGED', () => {
    const ones = Mask.full(100);
    expect(encodeMask(ones, [10, 10])).toEqual({ encoding: MaskEncoding.FULL, data: new Uint8Array(0) });
    const m = randomMask(100, 0.3, 5);
    // equal by value, not the same object
    const part = encodeMask(m, [10, 10], Mask.fromBytes(m.toBytes()));
    expect(part.encoding).toBe(MaskEncoding.UNCHANGED);
    expect(part.data.length).toBe(0);
    expect(encodeMask(Mask.full(0), [0, 3]).encoding).toBe(MaskEncoding.FULL);
    expect(decodeMask({ encoding: MaskEncoding.FULL, data: new Uint8Array(0) }, [])).toEqual(Mask.full(1));
    // UNCHANGED hands back the receiver's own (immutable) mask
    expect(decodeMask(part, [10, 10], m)).toBe(m);
  });

  it('prefers DIFF when a few more weights were pruned', () => {
    const previous = randomMask(10_000, 0.7, 3);
    const mask = pruneFurther(previous, 0.01, 3);
    const part = encodeMask(mask, [100, 100], previous);
    expect(part.encoding).toBe(MaskEncoding.DIFF);
    expect(decodeMask(part, [100, 100], previous)).toEqual(mask);
  });

  it('writes multi-byte varints for long gaps', () => {
    const n = 300_000;
    const mask = Mask.fromKeptIndices(n, [0, 200, n - 1]); // gap > 2^14 needs 3 bytes
    const part = encodeMaskAs(mask, [n], MaskEncoding.INDEX_DELTA);
    expect(part.data.length).toBe(1 + 2 + 3);
    expect(decodeMask(part, [n])).toEqual(mask);
  });
});

describe('mask decoding rejects malformed input', () => {
  const shape = [4, 5];
  const prev = Mask.full(20);
  const bad = (part: MaskPart | null, pattern: RegExp, previous?: Mask, s: number[] = shape) =>
    expect(() => decodeMask(part, s, previous)).toThrow(pattern);
  const part = (encoding: number, bytes: number[]): MaskPart => ({
    encoding: encoding as MaskEncoding,
    data: new Uint8Array(bytes),
  });

  it('names each problem', () => {
    bad(null, /mask part is missing/);
    bad(part(MaskEncoding.FULL, [1]), /FULL carries 1 bytes, expected none/);
    bad(part(MaskEncoding.UNCHANGED, []), /UNCHANGED needs the previous mask/);
    bad(part(MaskEncoding.UNCHANGED, [0]), /UNCHANGED carries 1 bytes/, prev);
    bad(part(MaskEncoding.DIFF, [0]), /DIFF needs the previous mask/);
    bad(part(MaskEncoding.DIFF, [0]), /previous mask has 3 elements, shape needs 20/, none(3));
    bad(
      part(MaskEncoding.DIFF, [0, 0]),
      /DIFF mask: prunes position 1, which the previous mask already pruned/,
      Mask.full(20).derive((b) => (b[1] = 0)),
    );
    bad(part(MaskEncoding.DIFF, [3]), /prunes position 3, which the previous mask already pruned/, none(20));
    bad(part(MaskEncoding.INDEX_DELTA, [0x80]), /varint runs past the end/);
    bad(part(MaskEncoding.INDEX_DELTA, [0x80, 0x80, 0x80, 0x80, 0x80, 0x01]), /varint longer than 5 bytes/);
    bad(part(MaskEncoding.INDEX_DELTA, [19, 0]), /index 20 out of range for 20 elements/);
    bad(part(MaskEncoding.INDEX_DELTA, [0xff, 0xff, 0xff, 0xff, 0x0f]), /out of range/);
    bad(part(MaskEncoding.BITMAP, [0xff, 0xff]), /bitmap has 2 bytes, 20 elements need 3/);
    bad(part(MaskEncoding.BITMAP, [0xff, 0xff, 0x1f]), /padding bits after element 20 are not zero/);
    bad(part(MaskEncoding.CHANNEL, [0x1f]), /a scalar has no channel axis/, undefined, []);
    bad(part(MaskEncoding.CHANNEL, [0x1f, 0]), /CHANNEL mask over 5 channels: bitmap has 2 bytes, 5 elements need 1/);
    bad(part(MaskEncoding.CHANNEL, [0x3f]), /padding bits after element 5/);
    bad(part(MaskEncoding.UNSPECIFIED, []), /unknown mask encoding 0/);
    bad(part(99, []), /unknown mask encoding 99/);
    expect(() => decodeMask(part(MaskEncoding.FULL, []), [2, -1])).toThrow(/invalid dimension -1/);
    expect(() => decodeMask(part(MaskEncoding.FULL, []), [2.5])).toThrow(CodecError);
  });

  it('never throws anything but CodecError on random bytes', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 8 }), fc.uint8Array({ maxLength: 40 }), (encoding, data) => {
        try {
          const m = decodeMask({ encoding: encoding as MaskEncoding, data }, [3, 7], Mask.full(21));
          expect(m.length).toBe(21);
          expect(m.toBytes().every((v) => v === 0 || v === 1)).toBe(true);
        } catch (err) {
          expect(err).toBeInstanceOf(CodecError);
        }
      }),
    );
  });

  it('rejects bad masks on encode', () => {
    expect(() => encodeMask(none(5), [2, 3])).toThrow(/mask has 5 elements, shape \[2, 3\] needs 6/);
    // entries other than 0 and 1 cannot even become a Mask
    expect(() => bits([0, 2])).toThrow(/mask entry 1 is 2/);
    expect(() => encodeMask(none(2), [2], none(3))).toThrow(/previous mask has 3 elements/);
    expect(() => bits([1, 3])).toThrow(/mask entry 1 is 3/);
    expect(() => encodeMaskAs(bits([1, 0]), [2], MaskEncoding.FULL)).toThrow(/FULL cannot represent this mask: not all ones/);
    expect(() => encodeMaskAs(bits([1, 0]), [2], MaskEncoding.UNCHANGED)).toThrow(/UNCHANGED cannot/);
    expect(() => encodeMaskAs(bits([1, 0]), [2], MaskEncoding.DIFF)).toThrow(/no previous mask/);
    expect(() => encodeMaskAs(bits([1, 1]), [2], MaskEncoding.DIFF, bits([1, 0]))).toThrow(
      /keeps positions the previous mask pruned/,
    );
    expect(() => encodeMaskAs(bits([1, 0, 0, 0]), [2, 2], MaskEncoding.CHANNEL)).toThrow(/not constant along/);
    expect(() => encodeMaskAs(bits([1]), [1], 42 as MaskEncoding)).toThrow(/unknown mask encoding 42/);
  });
});

describe('half precision', () => {
  const bitsOf = (x: number) => new Uint32Array(new Float32Array([x]).buffer)[0];
  const toHalf = (x: number) => f32BitsToF16Bits(bitsOf(x));

  it('converts known values with round to nearest even', () => {
    expect(toHalf(1)).toBe(0x3c00);
    expect(toHalf(-2)).toBe(0xc000);
    expect(toHalf(65504)).toBe(0x7bff);
    expect(toHalf(0)).toBe(0);
    expect(toHalf(-0)).toBe(0x8000);
    expect(toHalf(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(toHalf(2 ** -25)).toBe(0); // tie between 0 and 2^-24 goes to even (0)
    expect(toHalf(3 * 2 ** -25)).toBe(0x0002); // tie between 1 and 2 subnormal steps goes to 2
    expect(toHalf(2 ** -25 * 1.0001)).toBe(0x0001);
    expect(toHalf(1 + 2 ** -11)).toBe(0x3c00); // tie, even mantissa stays
    expect(toHalf(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie, odd mantissa rounds up
    expect(toHalf(2 ** -14 - 2 ** -25)).toBe(0x0400); // rounds up into the smallest normal
    expect(toHalf(Infinity)).toBe(0x7c00);
    expect(toHalf(-Infinity)).toBe(0xfc00);
    expect(Number.isNaN(f16BitsToF32(toHalf(NaN)))).toBe(true);
  });

  it('saturates finite overflow at the largest half instead of infinity', () => {
    expect(toHalf(65519)).toBe(0x7bff);
    expect(toHalf(65520)).toBe(0x7bff);
    expect(toHalf(1e9)).toBe(0x7bff);
    expect(toHalf(-3.4e38)).toBe(0xfbff);
  });

  it('maps every finite half back to itself', () => {
    for (let h = 0; h < 0x10000; h++) {
      const x = f16BitsToF32(h);
      if (Number.isFinite(x)) expect(f32BitsToF16Bits(bitsOf(x))).toBe(h);
    }
  });
});

describe('value encodings', () => {
  const valuesArb = (max: number) =>
    fc
      .oneof(fc.constantFrom(0, 1, 7, 9, 1023), fc.integer({ min: 0, max: 2000 }))
      .chain((n) => fc.float32Array({ minLength: n, maxLength: n, min: -max, max, noNaN: true, noDefaultInfinity: true }));

  it('F32 is exact', () => {
    fc.assert(
      fc.property(fc.float32Array({ maxLength: 2000 }), (values) => {
        const part = encodeValues(values, 'f32');
        expect(part.encoding).toBe(ValueEncoding.F32);
        expect(part.data.length).toBe(values.length * 4);
        const back = decodeValues(part, values.length);
        expect(new Uint32Array(back.buffer)).toEqual(new Uint32Array(values.buffer, values.byteOffset, values.length));
      }),
    );
  });

  it('F16 errs at most half a unit in the last place', () => {
    fc.assert(
      fc.property(valuesArb(65504), (values) => {
        const part = encodeValues(values, 'f16');
        expect(part.data.length).toBe(values.length * 2);
        const back = decodeValues(part, values.length);
        for (let i = 0; i < values.length; i++) {
          const x = values[i];
          const bound = Math.max(Math.abs(x) * 2 ** -11, 2 ** -25);
          expect(Math.abs(back[i] - x)).toBeLessThanOrEqual(bound);
        }
      }),
    );
  });

  it('INT8 errs at most half a quantization step', () => {
    fc.assert(
      fc.property(valuesArb(1e6), (values) => {
        const part = encodeValues(values, 'int8');
        expect(part.data.length).toBe(values.length);
        const back = decodeValues(part, values.length);
        const maxAbs = values.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        const step = maxAbs / 127;
        for (let i = 0; i < values.length; i++) {
          expect(Math.abs(back[i] - values[i])).toBeLessThanOrEqual(step * 0.5 * (1 + 1e-5) + 1e-30 + Math.abs(values[i]) * 1e-6);
        }
      }),
    );
  });

  it('INT8 of all zeros is all zeros with scale 0', () => {
    const part = encodeValues(new Float32Array(5), 'int8');
    expect(part.scale).toBe(0);
    expect(decodeValues(part, 5)).toEqual(new Float32Array(5));
  });

  it('rejects bad value parts', () => {
    const four = new Uint8Array(4);
    expect(() => decodeValues(null, 1)).toThrow(/value part is missing/);
    expect(() => decodeValues({ encoding: ValueEncoding.F32, data: four, scale: 0 }, 2)).toThrow(
      /F32 values: 4 bytes hold 1 values, the mask keeps 2/,
    );
    expect(() => decodeValues({ encoding: ValueEncoding.F16, data: new Uint8Array(3), scale: 0 }, 2)).toThrow(
      /F16 values: 3 bytes/,
    );
    expect(() => decodeValues({ encoding: ValueEncoding.INT8, data: four, scale: 1 }, 3)).toThrow(/INT8 values: 4 bytes/);
    expect(() => decodeValues({ encoding: ValueEncoding.INT8, data: four, scale: NaN }, 4)).toThrow(/scale NaN/);
    expect(() => decodeValues({ encoding: ValueEncoding.INT8, data: four, scale: -1 }, 4)).toThrow(/scale -1/);
    expect(() => decodeValues({ encoding: ValueEncoding.UNSPECIFIED, data: four, scale: 0 }, 1)).toThrow(
      /unknown value encoding 0/,
    );
    expect(() => encodeValues(new Float32Array([1, Infinity]), 'int8')).toThrow(/kept value 1 is Infinity/);
    expect(() => encodeValues(new Float32Array(1), 'bf16' as 'f32')).toThrow(/unknown value encoding "bf16"/);
    expect(parseValueEncoding('f16')).toBe('f16');
    expect(() => parseValueEncoding('toString')).toThrow(/unknown value encoding "toString"/);
  });
});

describe('sparse tensors', () => {
  it('round-trips a tensor and scatters back the kept values', () => {
    fc.assert(
      fc.property(
        sizeArb,
        densityArb,
        fc.integer(),
        fc.constantFrom('f32' as const, 'f16' as const, 'int8' as const),
        (n, density, seed, values) => {
          const r = new SeededRandom(seed);
          const dense = new Float32Array(n).map(() => r.next() * 2 - 1);
          const mask = randomMask(n, density, seed);
          const msg = encodeSparseTensor('layer/kernel', { mask, kept: mask.gather(dense) }, [n], { values });
          const { mask: m, kept } = decodeSparseTensor(msg, [n]);
          expect(m).toEqual(mask);
          const rebuilt = m.scatter(kept);
          const tolerance = values === 'f32' ? 0 : values === 'f16' ? 1e-3 : 1 / 127;
          for (let i = 0; i < n; i++) {
            if (mask.has(i)) expect(Math.abs(rebuilt[i] - dense[i])).toBeLessThanOrEqual(tolerance);
            else expect(rebuilt[i]).toBe(0);
          }
        },
      ),
      { numRuns: 100 },
    );
  });

  it('names the tensor in decode and encode errors', () => {
    const mask = bits([1, 0, 1, 1]);
    const msg = encodeSparseTensor('conv1/kernel', { mask, kept: new Float32Array(3) }, [4], { values: 'f32' });
    expect(() => decodeSparseTensor({ ...msg, values: { ...msg.values!, data: new Uint8Array(8) } }, [4])).toThrow(
      /tensor "conv1\/kernel": F32 values: 8 bytes hold 2 values, the mask keeps 3/,
    );
    expect(() => encodeSparseTensor('b', { mask: none(3), kept: new Float32Array(0) }, [4], { values: 'f32' })).toThrow(
      /tensor "b": mask has 3 elements, shape \[4\] needs 4/,
    );
    expect(() => encodeSparseTensor('c', { mask, kept: new Float32Array(4) }, [4], { values: 'f32' })).toThrow(
      /tensor "c": 4 values for 3 kept positions/,
    );
  });
});
