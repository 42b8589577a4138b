import { CodecError, decodeMask, decodeValues, encodeSparseTensor, keptCount, valueEncodingName } from '../proto/codec.js';
import { MaskEncoding, ValueEncoding, type SparseTensor, type ValueEncodingName } from '../proto/messages.js';
import { invalid } from './errors.js';
import type { TensorSpec } from './model.js';
import { elementCount } from './model.js';

export interface DecodedUpdateTensor {
  name: string;
  /** The client's mask after this update; null = every position kept. */
  mask: Uint8Array | null;
  /** Deltas at the kept positions, in index order. */
  values: Float32Array;
  /** The mask was given relative to the server's copy (UNCHANGED or DIFF). */
  usesReference: boolean;
}

const onesCache = new Map<number, Uint8Array>();

/** A shared all-ones mask of length n (never mutated; its kept-index list is cached by proto/codec). */
export function onesMask(n: number): Uint8Array {
  let m = onesCache.get(n);
  if (m === undefined) {
    m = new Uint8Array(n).fill(1);
    onesCache.set(n, m);
  }
  return m;
}

/**
 * Decodes one uploaded tensor against the mask the server holds for the
 * client (`reference`, null = all kept). Any encoding fault is INVALID_ARGUMENT
 * naming the tensor.
 */
export function decodeUpdateTensor(t: SparseTensor, spec: TensorSpec, reference: Uint8Array | null): DecodedUpdateTensor {
  const n = elementCount(spec.shape);
  const previous = reference ?? onesMask(n);
  let mask: Uint8Array;
  try {
    mask = decodeMask(t.mask, spec.shape, previous);
  } catch (err) {
    if (err instanceof CodecError)
      throw invalid('bad_mask', `tensor "${t.name}" (shape [${spec.shape.join(', ')}]): ${err.message}`);
    throw err;
  }
  const kept = keptCount(mask);
  let values: Float32Array;
  try {
    values = decodeValues(t.values, kept);
  } catch (err) {
    if (err instanceof CodecError)
      throw invalid('bad_values', `tensor "${t.name}" (shape [${spec.shape.join(', ')}]): ${err.message}`);
    throw err;
  }
  const encoding = t.mask?.encoding;
  return {
    name: t.name,
    mask,
    values,
    usesReference: encoding === MaskEncoding.UNCHANGED || encoding === MaskEncoding.DIFF,
  };
}

/** The value encoding a client asked for; unspecified means f32. */
export function requestedValueEncoding(encoding: number): ValueEncodingName {
  if (encoding === ValueEncoding.UNSPECIFIED) return 'f32';
  try {
    return valueEncodingName(encoding as ValueEncoding);
  } catch (err) {
    if (err instanceof CodecError) throw invalid('value_encoding', `value_encoding ${encoding} is not f32, f16 or int8`);
    throw err;
  }
}

/**
 * One tensor of a task: the whole tensor (FULL mask) when `dense`, else the
 * global values at the client's kept positions with an UNCHANGED mask (the
 * client holds that mask already; a tensor it keeps whole goes FULL).
 */
export function encodeTaskTensor(
  spec: TensorSpec,
  global: Float32Array,
  dense: boolean,
  clientMask: Uint8Array | null,
  encoding: ValueEncodingName,
): SparseTensor {
  const ones = onesMask(global.length);
  if (dense || clientMask === null) return encodeSparseTensor(spec.name, global, ones, spec.shape, { values: encoding });
  return encodeSparseTensor(spec.name, global, clientMask, spec.shape, { values: encoding, previousMask: clientMask });
}
