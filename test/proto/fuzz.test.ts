// Fuzzing every decode path of the wire with fast-check: random bytes,
// truncated and bit-flipped encodings, huge declared lengths, varints that
// overflow, out-of-range indices. Each case must end in a value or in the
// decoder's own error (Malformed, CodecError, WireError with a gRPC code):
// never another exception, never a hang (every property is bounded by
// numRuns), and never an allocation sized by what the bytes declare rather
// than by the limits (trackAllocations measures what our code allocates).
import { status } from '@grpc/grpc-js';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { CodecError, decodeMask, decodeSparseTensor, decodeValues } from '../../proto/codec.js';
import { elementCount } from '../../proto/shape.js';
import { Mask } from '../../proto/mask.js';
import { MaskEncoding } from '../../proto/messages.js';
import { TensorAssembler, WireError, splitTensor } from '../../proto/chunking.js';
import { codecs, isMalformed } from '../../proto/schema.js';
import { trackAllocations } from './allocations.js';

const RUNS = 3000;

/** LEB128 of a non-negative integer up to 2^53. */
function varint(value: number): number[] {
  const out: number[] = [];
  while (value >= 0x80) {
    out.push((value % 0x80) | 0x80);
    value = Math.floor(value / 0x80);
  }
  out.push(value);
  return out;
}

/** Valid encodings of every message, to truncate and mutate. */
const samples: { name: keyof typeof codecs; bytes: Buffer }[] = [
  {
    name: 'JoinRequest',
    bytes: codecs.JoinRequest.encode({ protocolVersion: 1, enrollmentToken: 'tok', clientName: 'n', numExamples: 7 }),
  },
  {
    name: 'UpdateChunk',
    bytes: codecs.UpdateChunk.encode({
      kind: 'header',
      header: {
        protocolVersion: 1,
        clientId: 'c1',
        clientToken: 't',
        roundId: 3,
        numExamples: 10,
        baseMaskVersion: 1,
        maskChanged: true,
        newMaskVersion: 2,
        metrics: { loss: 0.5, localAccuracy: 0.5, sparsity: 0.1, receivedAccuracy: 0.4, channelsKept: [3, 4] },
        tensorCount: 2,
      },
    }),
  },
  {
    name: 'UpdateChunk',
    bytes: codecs.UpdateChunk.encode({
      kind: 'piece',
      piece: { name: 'w', index: 1, total: 3, data: new Uint8Array(40).fill(7) },
    }),
  },
  {
    name: 'SparseTensor',
    bytes: codecs.SparseTensor.encode({
      name: 'w',
      mask: { encoding: MaskEncoding.INDEX_DELTA, data: Uint8Array.from([0, 3, 0x81, 0x01]) },
      values: { encoding: 3, data: new Uint8Array(4).fill(9), scale: 0.5 },
    }),
  },
  {
    name: 'TaskRequest',
    bytes: codecs.TaskRequest.encode({ protocolVersion: 1, clientId: 'c1', clientToken: 't', maskVersion: 2, valueEncoding: 2 }),
  },
];

/** Bytes that claim more than they hold: a length-delimited field announcing up to 2^53 bytes, or a varint that never ends. */
const evilBytes = fc.oneof(
  fc
    .tuple(
      fc.integer({ min: 1, max: 12 }),
      fc.constantFrom(2 ** 31 - 1, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1, 1e6),
      fc.uint8Array({ maxLength: 16 }),
    )
    .map(([field, length, tail]) => Buffer.from([(field << 3) | 2, ...varint(length), ...tail])),
  fc
    .tuple(fc.integer({ min: 1, max: 12 }), fc.integer({ min: 6, max: 20 }))
    .map(([field, n]) => Buffer.from([field << 3, ...new Array<number>(n).fill(0xff), 0x01])),
);

/** A valid encoding cut short, or with some bytes overwritten. */
const mangled = fc
  .tuple(fc.constantFrom(...samples), fc.nat(), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }))
  .map(([sample, cut, flips]) => {
    const bytes = Buffer.from(sample.bytes.subarray(0, cut % (sample.bytes.length + 1)));
    for (const [at, value] of flips) if (bytes.length > 0) bytes[at % bytes.length] = value;
    return bytes;
  });

const anyBytes = fc.oneof(
  fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
  evilBytes,
  mangled,
);

describe('the allocation instrumentation', () => {
  it("sees our code's typed arrays, by bytes, and puts the constructors back", () => {
    expect(trackAllocations(() => Mask.full(1000)).largest).toBe(1000);
    expect(trackAllocations(() => decodeValues({ encoding: 1, data: new Uint8Array(400), scale: 0 }, 100)).largest).toBe(400);
    expect(trackAllocations(() => new Uint8Array(3)).result).toBeInstanceOf(Uint8Array);
    expect(new Float32Array(2).constructor.name).toBe('Float32Array');
  });
});

describe('message decoding (proto/schema.ts) never throws', () => {
  it(`returns a message or a Malformed naming it, allocating nothing sized by the bytes' claims (${RUNS} cases per codec)`, () => {
    const names = Object.keys(codecs) as (keyof typeof codecs)[];
    fc.assert(
      fc.property(fc.constantFrom(...names), anyBytes, (name, bytes) => {
        const t = trackAllocations(() => codecs[name].decode(bytes));
        expect(t.error).toBeUndefined();
        const value = t.result;
        expect(typeof value).toBe('object');
        if (isMalformed(value)) expect(value.error.startsWith(`${name}: `)).toBe(true);
        expect(t.largest).toBeLessThanOrEqual(8 * bytes.length + 64);
      }),
      { numRuns: RUNS * names.length },
    );
  });

  it('refuses a length prefix beyond the message and a varint overflow by name', () => {
    const long = codecs.TensorPiece.decode(Buffer.from([0x22, ...varint(2 ** 32 - 1), 1, 2, 3]));
    expect(isMalformed(long) && long.error).toMatch(/^TensorPiece: undecodable protobuf/);
    const endless = codecs.TensorPiece.decode(Buffer.from([0x10, ...new Array<number>(12).fill(0xff), 0x01]));
    expect(isMalformed(endless) && endless.error).toMatch(/^TensorPiece: undecodable protobuf/);
  });
});

const shapeArb = fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 3 });
/** Mask data: random bytes, or varint gaps including huge ones (positions far out of range, 5+ byte varints). */
const maskDataArb = fc.oneof(
  fc.uint8Array({ maxLength: 260 }),
  fc
    .array(fc.oneof(fc.integer({ min: 0, max: 20 }), fc.constantFrom(2 ** 31, 2 ** 35, 2 ** 53 - 1)), { maxLength: 12 })
    .map((gaps) => Uint8Array.from(gaps.flatMap(varint))),
);

function randomMask(n: number, seed: number): Mask {
  let s = seed >>> 0;
  return Mask.build(n, (bits) => {
    for (let i = 0; i < n; i++) bits[i] = (s = (s * 1103515245 + 12345) >>> 0) & 0x10000 ? 1 : 0;
  });
}

describe('mask, value and tensor decoding (proto/codec.ts)', () => {
  // The half-to-float table (256 KiB, built once on the first F16 decode) is fixed, not sized by any input.
  beforeAll(() => decodeValues({ encoding: 2, data: new Uint8Array(2), scale: 0 }, 1));

  it(`decodeMask returns a mask of the shape's size or throws CodecError, allocating at most 4 bytes per element (${RUNS} cases)`, () => {
    fc.assert(
      fc.property(
        shapeArb,
        fc.integer({ min: -1, max: 8 }),
        maskDataArb,
        fc.oneof(fc.constant(undefined), fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer())),
        (shape, encoding, data, prev) => {
          const n = elementCount(shape);
          // The previous mask: none, one of the right size, or one of another size.
          const previous = prev === undefined ? undefined : randomMask(prev[0] === 2 ? n + 1 : n, prev[1]);
          const t = trackAllocations(() => decodeMask({ encoding: encoding as MaskEncoding, data }, shape, previous));
          if (t.error !== undefined) expect(t.error).toBeInstanceOf(CodecError);
          else expect(t.result?.length).toBe(n);
          expect(t.largest).toBeLessThanOrEqual(4 * n + 64);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it(`decodeValues returns exactly the expected count or throws CodecError, checking the size before allocating (${RUNS} cases)`, () => {
    fc.assert(
      fc.property(
        fc.integer({ min: -1, max: 5 }),
        fc.uint8Array({ maxLength: 80 }),
        fc.oneof(fc.double(), fc.constantFrom(Number.NaN, Infinity, -1, 0)),
        fc.oneof(fc.integer({ min: 0, max: 40 }), fc.constantFrom(2 ** 31, 2 ** 32 - 1, 2 ** 40)),
        (encoding, data, scale, count) => {
          const t = trackAllocations(() => decodeValues({ encoding: encoding as 1, data, scale }, count));
          if (t.error !== undefined) expect(t.error).toBeInstanceOf(CodecError);
          else expect(t.result?.length).toBe(count);
          // A count the data cannot hold is refused before the output exists.
          expect(t.largest).toBeLessThanOrEqual(4 * data.length + 64);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it(`decodeSparseTensor of any decoded SparseTensor bytes ends in a tensor or a CodecError naming it (${RUNS} cases)`, () => {
    fc.assert(
      fc.property(anyBytes, shapeArb, (bytes, shape) => {
        const msg = codecs.SparseTensor.decode(bytes);
        if (isMalformed(msg)) return;
        const t = trackAllocations(() => decodeSparseTensor(msg, shape));
        if (t.error !== undefined) {
          expect(t.error).toBeInstanceOf(CodecError);
          expect((t.error as Error).message.startsWith(`tensor "${msg.name}": `)).toBe(true);
        } else {
          expect(t.result?.mask.length).toBe(elementCount(shape));
        }
        expect(t.largest).toBeLessThanOrEqual(4 * elementCount(shape) + 4 * bytes.length + 64);
      }),
      { numRuns: RUNS },
    );
  });
});

describe('reassembly (proto/chunking.ts)', () => {
  const limits = { maxPieces: 8, maxTensorBytes: 256, maxTensors: 3, maxTotalBytes: 512 };
  const pieceArb = fc.record({
    name: fc.constantFrom('a', 'b', 'c', 'd', ''),
    index: fc.oneof(fc.integer({ min: 0, max: 9 }), fc.constantFrom(2 ** 31, 2 ** 32 - 1)),
    total: fc.oneof(fc.integer({ min: 0, max: 9 }), fc.constantFrom(2 ** 31, 2 ** 32 - 1)),
    data: fc.oneof(
      fc.uint8Array({ maxLength: 96 }),
      mangled.map((b) => new Uint8Array(b)),
    ),
  });

  it(`ends every piece sequence in tensors or a WireError with a gRPC code, within its byte limits (${RUNS} cases)`, () => {
    fc.assert(
      fc.property(fc.array(pieceArb, { maxLength: 24 }), fc.boolean(), (pieces, finish) => {
        const assembler = new TensorAssembler(limits);
        let accepted = 0;
        let completed = 0;
        try {
          for (const piece of pieces) {
            const tensor = assembler.push(piece);
            accepted += piece.data.length;
            if (tensor !== undefined) completed++;
          }
          if (finish) assembler.finish();
        } catch (err) {
          expect(err).toBeInstanceOf(WireError);
          expect([status.INVALID_ARGUMENT, status.RESOURCE_EXHAUSTED]).toContain((err as WireError).code);
        }
        expect(accepted).toBeLessThanOrEqual(limits.maxTotalBytes);
        expect(completed).toBeLessThanOrEqual(limits.maxTensors);
      }),
      { numRuns: RUNS },
    );
  });

  it('refuses a declared piece count beyond the limit on the first piece, before keeping anything', () => {
    const assembler = new TensorAssembler(limits);
    expect(() => assembler.push({ name: 'w', index: 0, total: 2 ** 32 - 1, data: new Uint8Array(1) })).toThrow(
      expect.objectContaining({
        code: status.RESOURCE_EXHAUSTED,
        message: 'tensor piece "w": 4294967295 pieces exceed the limit of 8',
      }),
    );
  });

  it(`reassembles whatever a sender splits, at any chunk size (${RUNS / 3} cases)`, () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 1, max: 60 }), fc.integer(), (chunk, n, seed) => {
        const mask = randomMask(n, seed);
        const tensor = {
          name: 'w',
          mask: { encoding: MaskEncoding.BITMAP, data: mask.pack() },
          values: { encoding: 1 as const, data: new Uint8Array(4 * mask.keptCount).fill(seed & 0xff), scale: 0 },
        };
        const assembler = new TensorAssembler({ maxPieces: 1024 });
        const pieces = splitTensor(tensor, chunk);
        const out = pieces.map((p) => assembler.push(p)).at(-1);
        expect(out && decodeSparseTensor(out, [n]).mask.equals(mask)).toBe(true);
      }),
      { numRuns: RUNS / 3 },
    );
  });
});
