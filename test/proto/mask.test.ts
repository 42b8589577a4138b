import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CodecError } from '../../proto/errors.js';
import { Mask } from '../../proto/mask.js';

// The reference model of a mask: a plain array of 0/1 entries.
const entriesArb = (maxLength = 300) =>
  fc.oneof(
    fc.array(fc.constantFrom(0, 1), { maxLength }),
    fc.array(fc.constant(1), { maxLength }),
    fc.array(fc.constant(0), { maxLength }),
  );
/** Two masks of the same length. */
const pairArb = fc
  .integer({ min: 0, max: 300 })
  .chain((n) =>
    fc.tuple(
      fc.array(fc.constantFrom(0, 1), { minLength: n, maxLength: n }),
      fc.array(fc.constantFrom(0, 1), { minLength: n, maxLength: n }),
    ),
  );

const kept = (entries: number[]) => entries.flatMap((v, i) => (v === 1 ? [i] : []));

function expectCodecError(fn: () => unknown, pattern: RegExp): void {
  expect(fn).toThrow(CodecError);
  expect(fn).toThrow(pattern);
}

describe('Mask construction', () => {
  it('fromBytes holds exactly its entries, whatever the array type', () => {
    fc.assert(
      fc.property(entriesArb(), (entries) => {
        for (const m of [Mask.fromBytes(entries), Mask.fromBytes(Uint8Array.from(entries))]) {
          expect(m.length).toBe(entries.length);
          expect([...m.toBytes()]).toEqual(entries);
          expect(m.keptCount).toBe(kept(entries).length);
          expect(m.isFull).toBe(entries.every((v) => v === 1));
          expect([...m.keptIndices()]).toEqual(kept(entries));
          for (let i = 0; i < entries.length; i++) expect(m.has(i)).toBe(entries[i] === 1);
          expect(m.has(-1)).toBe(false);
          expect(m.has(entries.length)).toBe(false);
        }
      }),
    );
  });

  it('fromBytes copies its input, also from a Buffer', () => {
    const source = Uint8Array.from([1, 0, 1]);
    const m = Mask.fromBytes(source);
    source[1] = 1;
    expect([...m.toBytes()]).toEqual([1, 0, 1]);
    const buffer = Buffer.from([0, 1]);
    const b = Mask.fromBytes(buffer);
    buffer[0] = 1;
    expect([...b.toBytes()]).toEqual([0, 1]);
    const out = m.toBytes();
    out[1] = 1;
    expect(m.has(1)).toBe(false); // toBytes is a copy too
  });

  it('fromBytes names the first entry that is neither 0 nor 1', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom(0, 1), { minLength: 1, maxLength: 80 }),
        fc.nat(),
        fc.integer({ min: 2, max: 255 }),
        (entries, at, value) => {
          const j = at % entries.length;
          const hostile: number[] = [...entries];
          hostile[j] = value;
          // number[] and Uint8Array take different paths (the latter checks 4 bytes at a time)
          expectCodecError(() => Mask.fromBytes(hostile), new RegExp(`mask entry ${j} is ${value}, masks hold only 0 and 1`));
          expectCodecError(() => Mask.fromBytes(Uint8Array.from(hostile)), new RegExp(`mask entry ${j} is ${value}`));
        },
      ),
    );
    for (const v of [-1, 0.5, NaN, 256, 1.0000001]) {
      expectCodecError(() => Mask.fromBytes([0, v]), /mask entry 1 is/);
    }
  });

  it('full keeps everything; bad lengths are refused everywhere', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2000 }), (n) => {
        const m = Mask.full(n);
        expect(m.length).toBe(n);
        expect(m.isFull).toBe(true);
        expect(m.keptCount).toBe(n);
        expect(m).toEqual(Mask.fromBytes(new Array<number>(n).fill(1)));
      }),
    );
    for (const n of [-1, 1.5, NaN, Infinity]) {
      expectCodecError(() => Mask.full(n), /invalid mask length/);
      expectCodecError(() => Mask.build(n, () => {}), /invalid mask length/);
      expectCodecError(() => Mask.fromKeptIndices(n, []), /invalid mask length/);
      expectCodecError(() => Mask.unpack(new Uint8Array(0), n), /invalid mask length/);
    }
  });

  it('fromKeptIndices is the inverse of keptIndices', () => {
    fc.assert(
      fc.property(entriesArb(), (entries) => {
        const m = Mask.fromKeptIndices(entries.length, kept(entries));
        expect(m).toEqual(Mask.fromBytes(entries));
        expect([...m.keptIndices()]).toEqual(kept(entries));
        expect(m.keptCount).toBe(kept(entries).length);
      }),
    );
  });

  it('fromKeptIndices refuses unsorted, repeated, fractional and out-of-range indices', () => {
    expectCodecError(() => Mask.fromKeptIndices(5, [1, 0]), /kept indices must ascend: entry 1 is 0, after 1/);
    expectCodecError(() => Mask.fromKeptIndices(5, [2, 2]), /entry 1 is 2, after 2/);
    expectCodecError(() => Mask.fromKeptIndices(5, [5]), /kept index 5 \(entry 0\) is out of range for 5 elements/);
    expectCodecError(() => Mask.fromKeptIndices(5, [-1]), /kept index -1/);
    expectCodecError(() => Mask.fromKeptIndices(5, [0.5]), /kept index 0.5/);
    expectCodecError(() => Mask.fromKeptIndices(5, [NaN]), /kept index NaN/);
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 50 }),
        fc.array(fc.integer({ min: -5, max: 60 }), { maxLength: 20 }),
        (n, indices) => {
          const valid = indices.every((i, k) => i >= 0 && i < n && (k === 0 || i > indices[k - 1]));
          if (valid) expect([...Mask.fromKeptIndices(n, indices).keptIndices()]).toEqual(indices);
          else expect(() => Mask.fromKeptIndices(n, indices)).toThrow(CodecError);
        },
      ),
    );
  });

  it('build fills fresh zero bits and checks them', () => {
    fc.assert(
      fc.property(entriesArb(), (entries) => {
        let seen: number[] = [];
        const m = Mask.build(entries.length, (bits) => {
          seen = [...bits];
          bits.set(entries);
        });
        expect(seen).toEqual(new Array<number>(entries.length).fill(0));
        expect(m).toEqual(Mask.fromBytes(entries));
      }),
    );
    expectCodecError(
      () =>
        Mask.build(9, (bits) => {
          bits[6] = 2;
        }),
      /built mask entry 6 is 2/,
    );
  });

  it('derive edits a copy and leaves the original as it was', () => {
    fc.assert(
      fc.property(pairArb, ([a, b]) => {
        const original = Mask.fromBytes(a);
        const edited = original.derive((bits) => {
          expect([...bits]).toEqual(a);
          bits.set(b);
        });
        expect(edited).toEqual(Mask.fromBytes(b));
        expect([...original.toBytes()]).toEqual(a);
      }),
    );
    expectCodecError(() => Mask.full(3).derive((bits) => (bits[2] = 7)), /derived mask entry 2 is 7/);
  });
});

describe('Mask comparisons', () => {
  it('equals is equality of the entries', () => {
    fc.assert(
      fc.property(pairArb, ([a, b]) => {
        const x = Mask.fromBytes(a);
        const y = Mask.fromBytes(b);
        const same = a.every((v, i) => v === b[i]);
        expect(x.equals(y)).toBe(same);
        expect(y.equals(x)).toBe(same);
        expect(x.equals(x)).toBe(true);
        expect(x.equals(Mask.fromBytes(a))).toBe(true);
        // counted first or not, the answer is the same
        void x.keptCount;
        expect(x.equals(y)).toBe(same);
      }),
    );
    expect(Mask.full(3).equals(Mask.full(4))).toBe(false);
    expect(Mask.full(0).equals(Mask.build(0, () => {}))).toBe(true);
  });

  it('the test suite compares Masks by value', () => {
    expect(Mask.fromBytes([1, 0, 1, 1, 0])).toEqual(Mask.fromBytes([1, 0, 1, 1, 0]));
    expect(Mask.fromBytes([1, 0, 1, 1, 0])).not.toEqual(Mask.fromBytes([1, 0, 1, 1, 1]));
    expect({ m: Mask.full(2) }).toMatchObject({ m: Mask.full(2) });
    expect({ m: Mask.full(2) }).not.toMatchObject({ m: Mask.fromBytes([1, 0]) });
    expect(Mask.full(2)).not.toEqual(Uint8Array.from([1, 1]));
  });

  it('isSubsetOf: keeps nothing the other prunes', () => {
    fc.assert(
      fc.property(pairArb, ([a, b]) => {
        const expected = a.every((v, i) => v <= b[i]);
        expect(Mask.fromBytes(a).isSubsetOf(Mask.fromBytes(b))).toBe(expected);
        expect(Mask.fromBytes(a).isSubsetOf(Mask.fromBytes(a))).toBe(true);
        expect(Mask.fromBytes(a).isSubsetOf(Mask.full(a.length))).toBe(true);
      }),
    );
    expect(Mask.full(3).isSubsetOf(Mask.full(4))).toBe(false);
  });

  it('distance counts the differing positions; and keeps what both keep', () => {
    fc.assert(
      fc.property(pairArb, ([a, b]) => {
        const x = Mask.fromBytes(a);
        const y = Mask.fromBytes(b);
        expect(x.distance(y)).toBe(a.filter((v, i) => v !== b[i]).length);
        expect(x.distance(x)).toBe(0);
        const both = x.and(y);
        expect([...both.toBytes()]).toEqual(a.map((v, i) => v & b[i]));
        expect(both.isSubsetOf(x) && both.isSubsetOf(y)).toBe(true);
      }),
    );
    expectCodecError(() => Mask.full(2).distance(Mask.full(3)), /mask lengths differ: 2 vs 3/);
    expectCodecError(() => Mask.full(2).and(Mask.full(3)), /mask lengths differ: 2 vs 3/);
  });
});

describe('Mask kept indices', () => {
  it('are derived once and owned by the mask', () => {
    const m = Mask.fromBytes([0, 1, 1, 0, 1]);
    const indices = m.keptIndices();
    expect([...indices]).toEqual([1, 2, 4]);
    expect(m.keptIndices()).toBe(indices);
    // Compile-time only (never called): writing into the list does not typecheck.
    const writes = () => {
      // @ts-expect-error the list is read-only
      indices[0] = 3;
      // @ts-expect-error no mutating methods either
      indices.fill(0); // eslint-disable-line @typescript-eslint/no-unsafe-call -- the point: fill does not exist on the type
    };
    expect(typeof writes).toBe('function');
  });
});

describe('Mask and values', () => {
  it('gathers and scatters at kept positions only', () => {
    const mask = Mask.fromBytes([0, 1, 1, 0, 1]);
    expect(mask.gather(new Float32Array([9, 1, 2, 9, 3]))).toEqual(new Float32Array([1, 2, 3]));
    const into = new Float32Array([5, 5, 5, 5, 5]);
    expect(mask.scatter(new Float32Array([1, 2, 3]), into)).toBe(into);
    expect(into).toEqual(new Float32Array([5, 1, 2, 5, 3]));
    expectCodecError(() => mask.gather(new Float32Array(4)), /gather: tensor has 4 elements, mask has 5/);
    expectCodecError(() => mask.scatter(new Float32Array(2)), /scatter: 2 values for 3 kept positions/);
    expectCodecError(() => mask.scatter(new Float32Array(3), new Float32Array(4)), /scatter: target has 4 elements/);
    expectCodecError(() => Mask.full(5).scatter(new Float32Array(4)), /scatter: 4 values for 5 kept positions/);
  });

  it('scatter(gather(x)) is x at kept positions and 0 elsewhere; applyTo is the same', () => {
    fc.assert(
      fc.property(
        entriesArb().chain((entries) =>
          fc.tuple(fc.constant(entries), fc.float32Array({ minLength: entries.length, maxLength: entries.length })),
        ),
        ([entries, dense]) => {
          const m = Mask.fromBytes(entries);
          const kept = m.gather(dense);
          expect(kept.length).toBe(m.keptCount);
          expect(kept).not.toBe(dense);
          const back = m.scatter(kept);
          const applied = m.applyTo(dense);
          expect(applied).not.toBe(dense);
          for (let i = 0; i < entries.length; i++) {
            const expected = entries[i] === 1 ? dense[i] : 0;
            expect(Object.is(back[i], expected)).toBe(true);
            expect(Object.is(applied[i], expected)).toBe(true); // pruned entries are +0, even for NaN or -0
          }
        },
      ),
    );
    expectCodecError(() => Mask.full(2).applyTo(new Float32Array(3)), /mask has 2 entries, tensor has 3/);
  });
});

describe('Mask bit packing', () => {
  it('packs 1 bit per element, least significant bit first, and unpacks exactly', () => {
    expect([...Mask.fromBytes([1, 0, 0, 0, 0, 0, 0, 0, 1]).pack()]).toEqual([1, 1]);
    expect([...Mask.fromBytes([0, 1, 1, 0, 0, 0, 0, 1]).pack()]).toEqual([0b10000110]);
    fc.assert(
      fc.property(entriesArb(2000), (entries) => {
        const m = Mask.fromBytes(entries);
        const packed = m.pack();
        expect(packed.length).toBe(Math.ceil(entries.length / 8));
        for (let i = 0; i < entries.length; i++) expect((packed[i >> 3] >> (i & 7)) & 1).toBe(entries[i]);
        if (entries.length % 8 !== 0) expect(packed[packed.length - 1] >> (entries.length % 8)).toBe(0);
        expect(Mask.unpack(packed, entries.length)).toEqual(m);
      }),
    );
  });

  it('unpack names a wrong size and nonzero padding', () => {
    expectCodecError(() => Mask.unpack(new Uint8Array(2), 20), /bitmap has 2 bytes, 20 elements need 3/);
    expectCodecError(() => Mask.unpack(new Uint8Array(1), 0), /bitmap has 1 bytes, 0 elements need 0/);
    expectCodecError(() => Mask.unpack(Uint8Array.from([0xff, 0xff, 0x1f]), 20), /padding bits after element 20 are not zero/);
    expectCodecError(() => Mask.unpack(Uint8Array.from([0x80]), 7), /padding bits after element 7/);
  });

  it('unpack of hostile bytes is a CodecError or a mask that packs back to them', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), fc.integer({ min: -3, max: 330 }), (data, length) => {
        let m: Mask;
        try {
          m = Mask.unpack(data, length);
        } catch (err) {
          expect(err).toBeInstanceOf(CodecError);
          return;
        }
        expect(m.length).toBe(length);
        expect(m.pack()).toEqual(data);
      }),
    );
  });
});

describe('Mask channels', () => {
  const shapeArb = fc.tuple(fc.array(fc.integer({ min: 1, max: 4 }), { maxLength: 3 }), fc.integer({ min: 1, max: 20 }));

  it('fromChannels keeps element i iff channel i % C is kept, and toChannels gives the channels back', () => {
    fc.assert(
      fc.property(
        shapeArb.chain(([lead, c]) =>
          fc.tuple(fc.constant([...lead, c]), fc.array(fc.constantFrom(0, 1), { minLength: c, maxLength: c })),
        ),
        ([shape, channelEntries]) => {
          const c = shape[shape.length - 1];
          const channels = Mask.fromBytes(channelEntries);
          const m = Mask.fromChannels(channels, shape);
          const n = shape.reduce((a, b) => a * b, 1);
          expect(m.length).toBe(n);
          for (let i = 0; i < n; i++) expect(m.has(i)).toBe(channelEntries[i % c] === 1);
          expect(m.keptCount).toBe(m.toBytes().reduce((a, b) => a + b, 0));
          expect(m.toChannels(shape)).toEqual(channels);
        },
      ),
    );
  });

  it('toChannels is undefined unless the mask is constant along every axis but the last', () => {
    expect(Mask.fromBytes([1, 0, 0, 0]).toChannels([2, 2])).toBeUndefined();
    expect(Mask.fromBytes([1, 0, 1, 0]).toChannels([2, 2])).toEqual(Mask.fromBytes([1, 0]));
    expect(Mask.fromBytes([1]).toChannels([])).toBeUndefined();
    expect(Mask.fromBytes([1, 0, 1]).toChannels([3])).toEqual(Mask.fromBytes([1, 0, 1])); // one row: every mask is
    expect(Mask.full(0).toChannels([0, 3])).toEqual(Mask.full(3));
    expectCodecError(() => Mask.full(5).toChannels([2, 3]), /mask has 5 elements, shape \[2, 3\] needs 6/);
    fc.assert(
      fc.property(entriesArb(60), fc.integer({ min: 1, max: 6 }), (entries, c) => {
        if (entries.length % c !== 0) return;
        const shape = [entries.length / c, c];
        const structured = entries.every((v, i) => v === entries[i % c]);
        const channels = Mask.fromBytes(entries).toChannels(shape);
        expect(channels !== undefined).toBe(structured);
      }),
    );
  });

  it('fromChannels refuses a scalar, a mismatched channel count and a bad shape', () => {
    expectCodecError(() => Mask.fromChannels(Mask.full(1), []), /a scalar has no channel axis/);
    expectCodecError(() => Mask.fromChannels(Mask.full(3), [2, 4]), /channel mask has 3 entries, shape \[2, 4\] has 4 channels/);
    expectCodecError(() => Mask.fromChannels(Mask.full(3), [-1, 3]), /invalid dimension -1/);
    expect(Mask.fromChannels(Mask.full(3), [0, 3]).length).toBe(0);
  });
});

describe('Mask.toJSON', () => {
  it('shows the bits of a small mask and the counts of a large one', () => {
    expect(JSON.stringify(Mask.fromBytes([1, 0, 1]))).toBe('"Mask(101)"');
    expect(Mask.build(100, (b) => b.fill(1, 0, 10)).toJSON()).toBe('Mask(100 elements, 10 kept)');
  });
});
