// The sparse tensor codec: mask encodings and value encodings (masks themselves: proto/mask.ts).
// Everything here is hand-written because it decides what crosses the wire and
// what the coordinator folds into the global model; every decoder validates its
// input fully and throws CodecError with the reason.
import {
  MaskEncoding,
  VALUE_ENCODING_BY_NAME,
  ValueEncoding,
  type MaskPart,
  type SparseTensor,
  type ValueEncodingName,
  type ValuePart,
} from './messages.js';
import { CodecError } from './errors.js';
import { Mask, type KeptIndices } from './mask.js';
import { elementCount } from './shape.js';

export { CodecError };

const EMPTY = new Uint8Array(0);
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// ---------------------------------------------------------------- shapes

/** Named float32 tensors, the unit both sides speak in. */
export type TensorMap = Map<string, Float32Array>;
/** Named masks, by tensor name. */
export type MaskMap = ReadonlyMap<string, Mask>;

function checkLength(what: string, length: number, shape: readonly number[]): number {
  const n = elementCount(shape);
  if (length !== n) throw new CodecError(`${what} has ${length} elements, shape [${shape.join(', ')}] needs ${n}`);
  return n;
}

// ---------------------------------------------------------------- varints

function varintSize(value: number): number {
  return value < 0x80 ? 1 : value < 0x4000 ? 2 : value < 0x200000 ? 3 : value < 0x10000000 ? 4 : 5;
}

/** Appends one LEB128 varint at `at`; returns the new offset. */
function writeVarint(out: Uint8Array, at: number, value: number): number {
  while (value >= 0x80) {
    out[at++] = (value & 0x7f) | 0x80;
    value = Math.floor(value / 0x80);
  }
  out[at++] = value;
  return at;
}

/** Ascending positions as varint gaps (the first gap counted from -1): INDEX_DELTA and DIFF data. */
function gapsSize(indices: KeptIndices): number {
  let size = 0;
  for (let k = 0, last = -1; k < indices.length; k++) {
    size += varintSize(indices[k] - last - 1);
    last = indices[k];
  }
  return size;
}

function writeGaps(indices: KeptIndices): Uint8Array {
  const out = new Uint8Array(gapsSize(indices));
  for (let k = 0, at = 0, last = -1; k < indices.length; k++) {
    at = writeVarint(out, at, indices[k] - last - 1);
    last = indices[k];
  }
  return out;
}

/**
 * Positions kept in `previous` but pruned in `mask`, ascending; `mask` must be a
 * subset of `previous`. A merge of the two kept-index lists: O(kept), and the
 * lists are usually derived already (the gather needs the mask's, the previous
 * round needed the previous mask's).
 */
function prunedSince(mask: Mask, previous: Mask): Int32Array {
  const before = previous.keptIndices();
  const after = mask.keptIndices();
  const out = new Int32Array(before.length - after.length);
  for (let i = 0, j = 0, k = 0; i < before.length; i++) {
    if (j < after.length && after[j] === before[i]) j++;
    else out[k++] = before[i];
  }
  return out;
}

/** Calls visit(position) for each varint-gap-encoded position; validates overrun and range. */
function readGaps(what: string, data: Uint8Array, n: number, visit: (position: number) => void): void {
  let at = 0;
  let last = -1;
  while (at < data.length) {
    let gap = 0;
    let scale = 1;
    for (let byteIndex = 0; ; byteIndex++) {
      if (at >= data.length) throw new CodecError(`${what}: varint runs past the end of the data`);
      if (byteIndex >= 5) throw new CodecError(`${what}: varint longer than 5 bytes at byte ${at}`);
      const b = data[at++];
      gap += (b & 0x7f) * scale;
      scale *= 0x80;
      if ((b & 0x80) === 0) break;
    }
    const position = last + 1 + gap;
    if (position >= n) throw new CodecError(`${what}: index ${position} out of range for ${n} elements`);
    visit(position);
    last = position;
  }
}

// ---------------------------------------------------------------- bitmaps

/** Mask.unpack with the part of the message that says which bitmap is at fault. */
function unpackBitmap(what: string, data: Uint8Array, n: number): Mask {
  try {
    return Mask.unpack(data, n);
  } catch (err) {
    if (err instanceof CodecError) throw new CodecError(`${what}: ${err.message}`);
    throw err;
  }
}

// ---------------------------------------------------------------- masks

/** Name of each mask encoding as in subfed.proto, for messages and reports. */
export const MASK_ENCODING_NAMES: Readonly<Record<MaskEncoding, string>> = {
  [MaskEncoding.UNSPECIFIED]: 'UNSPECIFIED',
  [MaskEncoding.FULL]: 'FULL',
  [MaskEncoding.UNCHANGED]: 'UNCHANGED',
  [MaskEncoding.DIFF]: 'DIFF',
  [MaskEncoding.BITMAP]: 'BITMAP',
  [MaskEncoding.INDEX_DELTA]: 'INDEX_DELTA',
  [MaskEncoding.CHANNEL]: 'CHANNEL',
  [MaskEncoding.PERSONAL]: 'PERSONAL',
};

/** Checks the mask (and previous mask) against the shape; returns the element count. */
function checkMasks(mask: Mask, shape: readonly number[], previous: Mask | undefined): number {
  const n = checkLength('mask', mask.length, shape);
  if (previous !== undefined) checkLength('previous mask', previous.length, shape);
  return n;
}

/**
 * Encodes a mask with the given encoding; throws CodecError when that encoding
 * cannot represent it (e.g. DIFF without a previous mask it is a subset of).
 */
export function encodeMaskAs(mask: Mask, shape: readonly number[], encoding: MaskEncoding, previous?: Mask): MaskPart {
  checkMasks(mask, shape, previous);
  const name = MASK_ENCODING_NAMES[encoding] ?? String(encoding);
  const unusable = (why: string) => new CodecError(`mask encoding ${name} cannot represent this mask: ${why}`);
  switch (encoding) {
    case MaskEncoding.FULL:
      if (!mask.isFull) throw unusable('not all ones');
      return { encoding, data: EMPTY };
    case MaskEncoding.UNCHANGED:
      if (previous === undefined || !mask.equals(previous)) throw unusable('differs from the previous mask');
      return { encoding, data: EMPTY };
    case MaskEncoding.DIFF:
      if (previous === undefined) throw unusable('no previous mask');
      if (!mask.isSubsetOf(previous)) throw unusable('keeps positions the previous mask pruned');
      return { encoding, data: writeGaps(prunedSince(mask, previous)) };
    case MaskEncoding.BITMAP:
      return { encoding, data: mask.pack() };
    case MaskEncoding.INDEX_DELTA:
      return { encoding, data: writeGaps(mask.keptIndices()) };
    case MaskEncoding.CHANNEL: {
      const channels = mask.toChannels(shape);
      if (channels === undefined) throw unusable('not constant along all axes but the last');
      return { encoding, data: channels.pack() };
    }
    case MaskEncoding.PERSONAL:
      if (mask.keptCount !== 0) throw unusable('a personal tensor shares no position');
      return { encoding, data: EMPTY };
    // UNSPECIFIED names no encoding; `default` catches numbers outside the enum, which a wire value may hold.
    case MaskEncoding.UNSPECIFIED:
    default:
      throw new CodecError(`unknown mask encoding ${encoding}`);
  }
}

/**
 * Encodes a mask with the smallest applicable encoding: FULL when all ones,
 * UNCHANGED when equal to `previous`, else the smallest of CHANNEL, DIFF,
 * BITMAP and INDEX_DELTA (ties in that order). Never PERSONAL: declaring a
 * tensor personal is an intent, not a size choice (encodePersonalTensor).
 */
export function encodeMask(mask: Mask, shape: readonly number[], previous?: Mask): MaskPart {
  const n = checkMasks(mask, shape, previous);
  if (mask.isFull) return { encoding: MaskEncoding.FULL, data: EMPTY };
  if (previous !== undefined && mask.equals(previous)) return { encoding: MaskEncoding.UNCHANGED, data: EMPTY };

  const candidates: { encoding: MaskEncoding; size: number; data: () => Uint8Array }[] = [];
  const channels = mask.toChannels(shape);
  if (channels !== undefined) {
    candidates.push({ encoding: MaskEncoding.CHANNEL, size: Math.ceil(channels.length / 8), data: () => channels.pack() });
  }
  if (previous !== undefined && mask.isSubsetOf(previous)) {
    const removed = prunedSince(mask, previous);
    candidates.push({ encoding: MaskEncoding.DIFF, size: gapsSize(removed), data: () => writeGaps(removed) });
  }
  candidates.push({ encoding: MaskEncoding.BITMAP, size: Math.ceil(n / 8), data: () => mask.pack() });
  // Every kept entry costs at least one byte, so above n/8 kept entries INDEX_DELTA cannot win.
  if (mask.keptCount < Math.ceil(n / 8)) {
    const kept = mask.keptIndices();
    candidates.push({ encoding: MaskEncoding.INDEX_DELTA, size: gapsSize(kept), data: () => writeGaps(kept) });
  }
  let best = candidates[0];
  for (const c of candidates) if (c.size < best.size) best = c;
  return { encoding: best.encoding, data: best.data() };
}

/** Decodes and validates a mask part; `previous` is the mask the receiver holds. */
export function decodeMask(part: MaskPart | null | undefined, shape: readonly number[], previous?: Mask): Mask {
  if (part === null || part === undefined) throw new CodecError('mask part is missing');
  const n = elementCount(shape);
  const name = MASK_ENCODING_NAMES[part.encoding] ?? String(part.encoding);
  const data = part.data ?? EMPTY;
  const noData = () => {
    if (data.length !== 0) throw new CodecError(`mask encoding ${name} carries ${data.length} bytes, expected none`);
  };
  const needPrevious = (): Mask => {
    if (previous === undefined) throw new CodecError(`mask encoding ${name} needs the previous mask, and there is none`);
    if (previous.length !== n) {
      throw new CodecError(`mask encoding ${name}: previous mask has ${previous.length} elements, shape needs ${n}`);
    }
    return previous;
  };
  switch (part.encoding) {
    case MaskEncoding.FULL:
      noData();
      return Mask.full(n);
    case MaskEncoding.UNCHANGED:
      noData();
      return needPrevious(); // masks are immutable: the receiver's own object serves
    case MaskEncoding.DIFF:
      return needPrevious().derive((bits) =>
        // Gaps make the positions strictly ascending, so each is seen once and the copy still shows the previous bit.
        readGaps('DIFF mask', data, n, (p) => {
          if (bits[p] !== 1) throw new CodecError(`DIFF mask: prunes position ${p}, which the previous mask already pruned`);
          bits[p] = 0;
        }),
      );
    case MaskEncoding.BITMAP:
      return unpackBitmap('BITMAP mask', data, n);
    case MaskEncoding.INDEX_DELTA:
      return Mask.build(n, (bits) =>
        readGaps('INDEX_DELTA mask', data, n, (p) => {
          bits[p] = 1;
        }),
      );
    case MaskEncoding.CHANNEL: {
      if (shape.length === 0) throw new CodecError('CHANNEL mask: a scalar has no channel axis');
      const channels = shape[shape.length - 1];
      return Mask.fromChannels(unpackBitmap(`CHANNEL mask over ${channels} channels`, data, channels), shape);
    }
    case MaskEncoding.PERSONAL:
      // What the coordinator holds for a personal tensor: no shared position (section 14.1 of PROTOCOL.md).
      noData();
      return Mask.none(n);
    // UNSPECIFIED: the sender set no encoding; `default`: a number outside the enum (a newer or hostile sender).
    case MaskEncoding.UNSPECIFIED:
    default:
      throw new CodecError(`unknown mask encoding ${part.encoding}`);
  }
}

// ---------------------------------------------------------------- values

export function valueEncodingName(encoding: ValueEncoding): ValueEncodingName {
  switch (encoding) {
    case ValueEncoding.F32:
      return 'f32';
    case ValueEncoding.F16:
      return 'f16';
    case ValueEncoding.INT8:
      return 'int8';
    // UNSPECIFIED: the sender set no encoding; `default`: a number outside the enum.
    case ValueEncoding.UNSPECIFIED:
    default:
      throw new CodecError(`unknown value encoding ${encoding}`);
  }
}

/** Bit pattern of a float32 as IEEE half, round to nearest even. See f32BitsToF16Bits. */
const F16_MAX_FINITE = 0x7bff;

/**
 * float32 bits -> half bits, round to nearest even (after numpy's
 * npy_floatbits_to_halfbits). One deliberate difference: finite values beyond
 * the half range saturate to +-65504 instead of becoming infinite, because a
 * receiver rejects non-finite updates and the sender asked for finite values.
 * Infinities and NaN are kept.
 */
export function f32BitsToF16Bits(f: number): number {
  const sign = (f >>> 16) & 0x8000;
  const exp = f & 0x7f800000;
  const sig = f & 0x007fffff;
  if (exp === 0x7f800000) return sig === 0 ? sign | 0x7c00 : sign | 0x7e00 | (sig >>> 13);
  if (exp >= 0x47800000) return sign | F16_MAX_FINITE;
  if (exp <= 0x38000000) {
    if (exp < 0x33000000) return sign; // below half the smallest subnormal: signed zero
    const e = exp >>> 23;
    let s = (0x00800000 + sig) >>> (113 - e);
    // Round half to even; bits shifted out above count as "more than half".
    if ((s & 0x3fff) !== 0x1000 || (f & 0x7ff) !== 0) s += 0x1000;
    return sign | (s >>> 13); // a carry into the exponent gives the smallest normal, as it should
  }
  let s = sig;
  if ((s & 0x3fff) !== 0x1000) s += 0x1000;
  const h = ((exp - 0x38000000) >>> 13) + (s >>> 13); // a mantissa carry bumps the exponent
  return sign | (h >= 0x7c00 ? F16_MAX_FINITE : h);
}

let halfTable: Float32Array | undefined;

/** All 65536 half values as float32, built once. */
function halfToFloatTable(): Float32Array {
  if (halfTable === undefined) {
    halfTable = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const sign = h & 0x8000 ? -1 : 1;
      const exp = (h >> 10) & 0x1f;
      const man = h & 0x3ff;
      halfTable[h] =
        exp === 0
          ? sign * man * 2 ** -24
          : exp === 31
            ? man === 0
              ? sign * Infinity
              : NaN
            : sign * (1 + man / 1024) * 2 ** (exp - 15);
    }
  }
  return halfTable;
}

export function f16BitsToF32(h: number): number {
  return halfToFloatTable()[h & 0xffff];
}

/** Bytes of a typed array, copied so the result owns an aligned buffer of its own. */
function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength).slice();
}

/** Encodes the kept values (index order) with the named encoding. */
export function encodeValues(kept: Float32Array, encoding: ValueEncodingName): ValuePart {
  switch (encoding) {
    case 'f32': {
      if (LITTLE_ENDIAN_HOST) return { encoding: ValueEncoding.F32, data: bytesOf(kept), scale: 0 };
      const data = new Uint8Array(kept.length * 4);
      const view = new DataView(data.buffer);
      for (let i = 0; i < kept.length; i++) view.setFloat32(i * 4, kept[i], true);
      return { encoding: ValueEncoding.F32, data, scale: 0 };
    }
    case 'f16': {
      const bits = new Uint32Array(kept.buffer, kept.byteOffset, kept.length);
      const data = new Uint8Array(kept.length * 2);
      for (let i = 0; i < kept.length; i++) {
        const h = f32BitsToF16Bits(bits[i]);
        data[2 * i] = h & 0xff;
        data[2 * i + 1] = h >>> 8;
      }
      return { encoding: ValueEncoding.F16, data, scale: 0 };
    }
    case 'int8': {
      let maxAbs = 0;
      for (let i = 0; i < kept.length; i++) {
        const a = Math.abs(kept[i]);
        if (!Number.isFinite(a))
          throw new CodecError(`INT8 values: kept value ${i} is ${kept[i]}, only finite values can be quantized`);
        if (a > maxAbs) maxAbs = a;
      }
      // The scale travels as float32; quantize with exactly that value.
      const scale = Math.fround(maxAbs / 127);
      const q = new Int8Array(kept.length);
      if (scale > 0) {
        const inverse = 1 / scale;
        for (let i = 0; i < kept.length; i++) {
          const r = Math.floor(kept[i] * inverse + 0.5); // Math.round, but ~3x faster in V8
          // float32 rounding of the scale can push the largest value a hair past 127; an int8 store would wrap.
          q[i] = r > 127 ? 127 : r < -127 ? -127 : r;
        }
      }
      return { encoding: ValueEncoding.INT8, data: new Uint8Array(q.buffer), scale };
    }
    default:
      throw new CodecError(`unknown value encoding "${encoding as string}" (expected f32, f16 or int8)`);
  }
}

/** Decodes a value part holding exactly expectedCount values. */
export function decodeValues(part: ValuePart | null | undefined, expectedCount: number): Float32Array {
  if (part === null || part === undefined) throw new CodecError('value part is missing');
  const data = part.data ?? EMPTY;
  const name = valueEncodingName(part.encoding).toUpperCase();
  const width = part.encoding === ValueEncoding.F32 ? 4 : part.encoding === ValueEncoding.F16 ? 2 : 1;
  if (data.length !== expectedCount * width) {
    throw new CodecError(
      `${name} values: ${data.length} bytes hold ${data.length / width} values, the mask keeps ${expectedCount}`,
    );
  }
  const out = new Float32Array(expectedCount);
  switch (part.encoding) {
    case ValueEncoding.F32:
      if (LITTLE_ENDIAN_HOST) {
        new Uint8Array(out.buffer).set(data);
      } else {
        const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
        for (let i = 0; i < expectedCount; i++) out[i] = view.getFloat32(i * 4, true);
      }
      return out;
    case ValueEncoding.F16: {
      const table = halfToFloatTable();
      for (let i = 0; i < expectedCount; i++) out[i] = table[data[2 * i] | (data[2 * i + 1] << 8)];
      return out;
    }
    case ValueEncoding.INT8: {
      const scale = part.scale;
      if (!Number.isFinite(scale) || scale < 0)
        throw new CodecError(`INT8 values: scale ${scale} is not a finite non-negative number`);
      const q = new Int8Array(data.buffer, data.byteOffset, data.length);
      for (let i = 0; i < expectedCount; i++) out[i] = q[i] * scale;
      return out;
    }
    // Unreachable: valueEncodingName above refused any other encoding; the cases stay exhaustive for the type.
    case ValueEncoding.UNSPECIFIED:
    default:
      throw new CodecError(`unknown value encoding ${part.encoding}`);
  }
}

// ---------------------------------------------------------------- sparse tensors

/** A tensor as the wire carries it: its mask, and its values at the kept positions in index order. */
export interface SparseValues {
  readonly mask: Mask;
  readonly kept: Float32Array;
}

export interface SparseEncodeOptions {
  values: ValueEncodingName;
  /** The mask the receiver holds; enables UNCHANGED and DIFF. */
  previousMask?: Mask | undefined;
}

/** Runs `fn`, prefixing any CodecError with the tensor's name. */
function naming<T>(name: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof CodecError) throw new CodecError(`tensor "${name}": ${err.message}`);
    throw err;
  }
}

/** A tensor's mask and kept values as a SparseTensor message; errors name the tensor. */
export function encodeSparseTensor(
  name: string,
  tensor: SparseValues,
  shape: readonly number[],
  options: SparseEncodeOptions,
): SparseTensor {
  return naming(name, () => {
    const mask = encodeMask(tensor.mask, shape, options.previousMask);
    if (tensor.kept.length !== tensor.mask.keptCount) {
      throw new CodecError(`${tensor.kept.length} values for ${tensor.mask.keptCount} kept positions`);
    }
    return { name, mask, values: encodeValues(tensor.kept, options.values) };
  });
}

/**
 * A tensor the client keeps personal (FedRep's head, LG-FedAvg's body): it
 * shares no position and carries no value, and says so with the PERSONAL
 * mask encoding instead of an empty mask, which the coordinator refuses.
 */
export function encodePersonalTensor(name: string, values: ValueEncodingName): SparseTensor {
  return { name, mask: { encoding: MaskEncoding.PERSONAL, data: EMPTY }, values: encodeValues(new Float32Array(0), values) };
}

/** Decodes a SparseTensor message; errors name the tensor. */
export function decodeSparseTensor(msg: SparseTensor, shape: readonly number[], previousMask?: Mask): SparseValues {
  return naming(msg.name, () => {
    const mask = decodeMask(msg.mask, shape, previousMask);
    return { mask, kept: decodeValues(msg.values, mask.keptCount) };
  });
}

/** Checks a value encoding name from a config or flag. */
export function parseValueEncoding(value: string): ValueEncodingName {
  if (Object.hasOwn(VALUE_ENCODING_BY_NAME, value)) return value as ValueEncodingName;
  throw new CodecError(`unknown value encoding "${value}" (expected f32, f16 or int8)`);
}
