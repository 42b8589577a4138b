/**
 * A tensor's mask: one entry per element, kept or pruned. A Mask is an
 * immutable value: its bits are private and never change once it is built, so
 * it can be shared freely, compared by value (`equals`), and can keep what is
 * derived from it (the kept count, the kept-index list) on the object itself.
 *
 * Every constructor validates, so a Mask in hand is always well formed; the
 * only way to write bits is `Mask.build` / `derive`, whose callback fills fresh
 * bits before the mask exists.
 */
import { CodecError } from './errors.js';
import { elementCount } from './shape.js';

/** Kept positions of a mask, ascending. The mask's own list: readable, never writable. */
export type KeptIndices = Omit<Readonly<Int32Array>, 'buffer' | 'copyWithin' | 'fill' | 'reverse' | 'set' | 'sort' | 'subarray'>;

const UNKNOWN = -1;

function checkLength(length: number): void {
  if (!Number.isSafeInteger(length) || length < 0) throw new CodecError(`invalid mask length ${length}`);
}

/**
 * 32-bit lanes over a mask's bytes (every mask owns a fresh buffer, so they are
 * aligned). Masks are 0/1 bytes, so word-wise AND/XOR act per element, and any
 * byte other than 0 or 1 shows as a bit outside 0x01010101.
 */
function words(bits: Uint8Array): Uint32Array {
  return new Uint32Array(bits.buffer, bits.byteOffset, bits.length >> 2);
}

/** Throws CodecError naming the first entry that is neither 0 nor 1. */
function checkBits(bits: Uint8Array, what: string): void {
  const w = words(bits);
  let stray = 0;
  for (let j = 0; j < w.length; j++) stray |= w[j];
  let from = w.length << 2;
  if ((stray & 0xfefefefe) !== 0) from = 0;
  for (let i = from; i < bits.length; i++) {
    if (bits[i] > 1) throw new CodecError(`${what} entry ${i} is ${bits[i]}, masks hold only 0 and 1`);
  }
}

export class Mask {
  /** One byte per element, 0 or 1; owned by this object and never written after construction. */
  readonly #bits: Uint8Array;
  /** Number of ones, once counted (UNKNOWN before). */
  #count: number;
  /** Kept positions, ascending, once derived. */
  #kept: Int32Array | undefined;

  /** Only the static constructors call this, with fresh, checked bits. */
  private constructor(bits: Uint8Array, count: number) {
    this.#bits = bits;
    this.#count = count;
  }

  // ---------------------------------------------------------------- construction

  /** Every element kept. */
  static full(length: number): Mask {
    checkLength(length);
    return new Mask(new Uint8Array(length).fill(1), length);
  }

  /** No element kept: what the coordinator holds for a tensor the client keeps personal. */
  static none(length: number): Mask {
    checkLength(length);
    return new Mask(new Uint8Array(length), 0);
  }

  /** A copy of 0/1 entries (1 = kept); any other value is a CodecError naming the entry. */
  static fromBytes(bytes: ArrayLike<number>): Mask {
    let bits: Uint8Array;
    if (bytes instanceof Uint8Array) {
      bits = new Uint8Array(bytes); // a copy, also for a Buffer (whose slice() would share memory)
      checkBits(bits, 'mask');
    } else {
      bits = new Uint8Array(bytes.length);
      for (let i = 0; i < bytes.length; i++) {
        const v = bytes[i];
        if (v !== 0 && v !== 1) throw new CodecError(`mask entry ${i} is ${v}, masks hold only 0 and 1`);
        bits[i] = v;
      }
    }
    return new Mask(bits, UNKNOWN);
  }

  /** The mask of `length` elements keeping exactly `indices`, which must ascend strictly and lie in range. */
  static fromKeptIndices(length: number, indices: ArrayLike<number>): Mask {
    checkLength(length);
    const bits = new Uint8Array(length);
    const kept = new Int32Array(indices.length);
    let last = -1;
    for (let k = 0; k < indices.length; k++) {
      const i = indices[k];
      if (!Number.isInteger(i) || i < 0 || i >= length) {
        throw new CodecError(`kept index ${i} (entry ${k}) is out of range for ${length} elements`);
      }
      if (i <= last) throw new CodecError(`kept indices must ascend: entry ${k} is ${i}, after ${last}`);
      bits[i] = 1;
      kept[k] = i;
      last = i;
    }
    const mask = new Mask(bits, kept.length);
    mask.#kept = kept;
    return mask;
  }

  /**
   * The mask of a tensor of `shape` that keeps whole channels: constant along
   * every axis but the last, element i kept iff channel i % C is. This is what
   * the CHANNEL encoding carries and what removing a channel does to its tensors.
   */
  static fromChannels(channels: Mask, shape: readonly number[]): Mask {
    if (shape.length === 0) throw new CodecError('a scalar has no channel axis');
    const n = elementCount(shape);
    const c = shape[shape.length - 1];
    if (channels.length !== c) {
      throw new CodecError(`channel mask has ${channels.length} entries, shape [${shape.join(', ')}] has ${c} channels`);
    }
    const bits = new Uint8Array(n);
    if (c > 0) for (let at = 0; at < n; at += c) bits.set(channels.#bits, at);
    return new Mask(bits, c === 0 ? 0 : channels.keptCount * (n / c));
  }

  /**
   * A mask built in place: `fill` receives `length` zero bytes and sets the kept
   * entries to 1 (nothing else; checked after). The bytes become the mask's own,
   * so `fill` must not keep a reference to them. This is how decoders and the
   * pruning rules make masks without an extra copy.
   */
  static build(length: number, fill: (bits: Uint8Array) => void): Mask {
    checkLength(length);
    const bits = new Uint8Array(length);
    fill(bits);
    checkBits(bits, 'built mask');
    return new Mask(bits, UNKNOWN);
  }

  /** A new mask from a copy of this one's bits, edited by `edit` under the rules of `build`. */
  derive(edit: (bits: Uint8Array) => void): Mask {
    const bits = this.#bits.slice();
    edit(bits);
    checkBits(bits, 'derived mask');
    return new Mask(bits, UNKNOWN);
  }

  /** The inverse of `pack`: `length` elements from 1 bit each, LSB first; validates size and zero padding. */
  static unpack(data: Uint8Array, length: number): Mask {
    checkLength(length);
    const expected = Math.ceil(length / 8);
    if (data.length !== expected) {
      throw new CodecError(`bitmap has ${data.length} bytes, ${length} elements need ${expected}`);
    }
    if (length % 8 !== 0 && data[expected - 1] >> (length % 8) !== 0) {
      throw new CodecError(`bitmap padding bits after element ${length} are not zero`);
    }
    const out = new Uint8Array(length);
    const whole = length >> 3;
    for (let j = 0; j < whole; j++) {
      const b = data[j];
      const i = j << 3;
      out[i] = b & 1;
      out[i + 1] = (b >> 1) & 1;
      out[i + 2] = (b >> 2) & 1;
      out[i + 3] = (b >> 3) & 1;
      out[i + 4] = (b >> 4) & 1;
      out[i + 5] = (b >> 5) & 1;
      out[i + 6] = (b >> 6) & 1;
      out[i + 7] = b >> 7;
    }
    for (let i = whole << 3; i < length; i++) out[i] = (data[i >> 3] >> (i & 7)) & 1;
    return new Mask(out, UNKNOWN);
  }

  // ---------------------------------------------------------------- queries

  get length(): number {
    return this.#bits.length;
  }

  get keptCount(): number {
    if (this.#count === UNKNOWN) {
      const b = this.#bits;
      let count = 0;
      for (let i = 0; i < b.length; i++) count += b[i];
      this.#count = count;
    }
    return this.#count;
  }

  /** Every element kept (true for an empty mask). */
  get isFull(): boolean {
    return this.keptCount === this.#bits.length;
  }

  /** Whether element `index` is kept (false outside the mask). */
  has(index: number): boolean {
    return this.#bits[index] === 1;
  }

  /** Same length, same kept positions. */
  equals(other: Mask): boolean {
    if (other === this) return true;
    const a = this.#bits;
    const b = other.#bits;
    if (a.length !== b.length) return false;
    if (this.#count !== UNKNOWN && other.#count !== UNKNOWN && this.#count !== other.#count) return false;
    const wa = words(a);
    const wb = words(b);
    for (let j = 0; j < wa.length; j++) if (wa[j] !== wb[j]) return false;
    for (let i = wa.length << 2; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }

  /** Same length, and keeps nothing `other` prunes. */
  isSubsetOf(other: Mask): boolean {
    const a = this.#bits;
    const b = other.#bits;
    if (a.length !== b.length) return false;
    const wa = words(a);
    const wb = words(b);
    for (let j = 0; j < wa.length; j++) if ((wa[j] & ~wb[j]) !== 0) return false;
    for (let i = wa.length << 2; i < a.length; i++) if (a[i] > b[i]) return false;
    return true;
  }

  /** Number of positions where the two masks differ (Hamming distance); the lengths must match. */
  distance(other: Mask): number {
    const a = this.#bits;
    const b = other.#bits;
    if (a.length !== b.length) throw new CodecError(`mask lengths differ: ${a.length} vs ${b.length}`);
    let d = 0;
    for (let i = 0; i < a.length; i++) d += a[i] ^ b[i];
    return d;
  }

  /** Kept where both are kept; the lengths must match. */
  and(other: Mask): Mask {
    const a = this.#bits;
    const b = other.#bits;
    if (a.length !== b.length) throw new CodecError(`mask lengths differ: ${a.length} vs ${b.length}`);
    const out = new Uint8Array(a.length);
    const wa = words(a);
    const wb = words(b);
    const wo = words(out);
    for (let j = 0; j < wa.length; j++) wo[j] = wa[j] & wb[j];
    for (let i = wa.length << 2; i < a.length; i++) out[i] = a[i] & b[i];
    return new Mask(out, UNKNOWN);
  }

  /**
   * The channel mask when this mask (of a tensor of `shape`) is constant along
   * every axis but the last, else undefined: the inverse of `fromChannels`.
   */
  toChannels(shape: readonly number[]): Mask | undefined {
    const n = elementCount(shape);
    if (n !== this.length) throw new CodecError(`mask has ${this.length} elements, shape [${shape.join(', ')}] needs ${n}`);
    if (shape.length === 0) return undefined;
    const c = shape[shape.length - 1];
    // Every channel mask gives an empty tensor the same (full) mask.
    if (n === 0) return Mask.full(c);
    const b = this.#bits;
    for (let i = c; i < n; i++) if (b[i] !== b[i - c]) return undefined;
    return new Mask(b.slice(0, c), UNKNOWN);
  }

  /**
   * Positions of the kept elements, ascending; derived once and kept on the
   * mask. Branch-free: at mid densities a data-dependent branch mispredicts half
   * the time. Writes past the end (after the last kept element) are ignored by
   * typed arrays.
   */
  keptIndices(): KeptIndices {
    let kept = this.#kept;
    if (kept === undefined) {
      const b = this.#bits;
      kept = new Int32Array(this.keptCount);
      for (let i = 0, k = 0; i < b.length; i++) {
        kept[k] = i;
        k += b[i];
      }
      this.#kept = kept;
    }
    return kept;
  }

  // ---------------------------------------------------------------- values

  /** The values of `dense` at the kept positions, in index order (a new array). */
  gather(dense: Float32Array): Float32Array {
    if (dense.length !== this.length) {
      throw new CodecError(`gather: tensor has ${dense.length} elements, mask has ${this.length}`);
    }
    if (this.isFull) return dense.slice();
    const indices = this.keptIndices();
    const kept = new Float32Array(indices.length);
    for (let k = 0; k < indices.length; k++) kept[k] = dense[indices[k]];
    return kept;
  }

  /**
   * Writes `kept` (index order) at the kept positions of `into` (default: a new
   * zero tensor) and leaves the other positions as they are. Returns `into`.
   */
  scatter(kept: Float32Array, into: Float32Array = new Float32Array(this.length)): Float32Array {
    if (into.length !== this.length) {
      throw new CodecError(`scatter: target has ${into.length} elements, mask has ${this.length}`);
    }
    if (kept.length !== this.keptCount) {
      throw new CodecError(`scatter: ${kept.length} values for ${this.keptCount} kept positions`);
    }
    if (this.isFull) {
      into.set(kept);
      return into;
    }
    const indices = this.keptIndices();
    for (let k = 0; k < indices.length; k++) into[indices[k]] = kept[k];
    return into;
  }

  /** A copy of `values` with every pruned position exactly 0. */
  applyTo(values: Float32Array): Float32Array {
    if (values.length !== this.length) {
      throw new CodecError(`mask has ${this.length} entries, tensor has ${values.length}`);
    }
    const out = values.slice();
    if (this.isFull) return out;
    const b = this.#bits;
    for (let i = 0; i < out.length; i++) if (b[i] === 0) out[i] = 0;
    return out;
  }

  // ---------------------------------------------------------------- serialization

  /** One bit per element, least significant bit first; padding bits are zero. */
  pack(): Uint8Array {
    const bits = this.#bits;
    const n = bits.length;
    const out = new Uint8Array(Math.ceil(n / 8));
    const whole = n >> 3;
    for (let j = 0; j < whole; j++) {
      const i = j << 3;
      out[j] =
        bits[i] |
        (bits[i + 1] << 1) |
        (bits[i + 2] << 2) |
        (bits[i + 3] << 3) |
        (bits[i + 4] << 4) |
        (bits[i + 5] << 5) |
        (bits[i + 6] << 6) |
        (bits[i + 7] << 7);
    }
    for (let i = whole << 3; i < n; i++) out[i >> 3] |= bits[i] << (i & 7);
    return out;
  }

  /** A copy of the entries as 0/1 bytes (for a file, or a tensor of a training framework). */
  toBytes(): Uint8Array {
    return this.#bits.slice();
  }

  /** Short form for test failures and logs: the bits of a small mask, the counts of a large one. */
  toJSON(): string {
    const n = this.length;
    return n <= 64 ? `Mask(${this.#bits.join('')})` : `Mask(${n} elements, ${this.keptCount} kept)`;
  }
}
