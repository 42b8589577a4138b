import { CodecError, decodeMask, decodeValues, encodeSparseTensor, valueEncodingName } from '../proto/codec.js';
import { Mask } from '../proto/mask.js';
import { MaskEncoding, ValueEncoding, type SparseTensor, type ValueEncodingName } from '../proto/messages.js';
import { invalid } from './errors.js';
import type { MaskMap, TensorSpec } from './model.js';
import { elementCount } from '../proto/shape.js';

export interface DecodedUpdateTensor {
  name: string;
  /** The client's mask after this update (full = every position kept). */
  mask: Mask;
  /** Deltas at the kept positions, in index order. */
  values: Float32Array;
  /** The mask was given relative to the server's copy (UNCHANGED or DIFF). */
  usesReference: boolean;
  /**
   * The client keeps this tensor personal: it said so (PERSONAL), or it left
   * unchanged a tensor it had declared personal before (the held mask keeps
   * nothing, which only a PERSONAL upload can make it). Its mask keeps nothing.
   */
  personal: boolean;
}

/**
 * Decodes one uploaded tensor against the mask the server holds for the
 * client (`reference`, null = all kept). Any encoding fault is INVALID_ARGUMENT
 * naming the tensor.
 */
export function decodeUpdateTensor(t: SparseTensor, spec: TensorSpec, reference: Mask | null): DecodedUpdateTensor {
  const previous = reference ?? Mask.full(elementCount(spec.shape));
  let mask: Mask;
  try {
    mask = decodeMask(t.mask, spec.shape, previous);
  } catch (err) {
    if (err instanceof CodecError)
      throw invalid('bad_mask', `tensor "${t.name}" (shape [${spec.shape.join(', ')}]): ${err.message}`);
    throw err;
  }
  let values: Float32Array;
  try {
    values = decodeValues(t.values, mask.keptCount);
  } catch (err) {
    if (err instanceof CodecError)
      throw invalid('bad_values', `tensor "${t.name}" (shape [${spec.shape.join(', ')}]): ${err.message}`);
    throw err;
  }
  const encoding = t.mask?.encoding;
  const usesReference = encoding === MaskEncoding.UNCHANGED || encoding === MaskEncoding.DIFF;
  return {
    name: t.name,
    mask,
    values,
    usesReference,
    personal: encoding === MaskEncoding.PERSONAL || (usesReference && reference !== null && reference.keptCount === 0),
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
 * How a task is laid out, decided once per task: every tensor whole (`dense`:
 * the client's first contact, or it declared another mask version than the one
 * we hold), or the global values at the client's kept positions (`sparse`, on
 * the masks we hold for it, which it holds too).
 */
export type TaskLayout = { readonly kind: 'dense' } | { readonly kind: 'sparse'; readonly masks: MaskMap };

/**
 * One tensor of a task: the whole tensor (FULL mask) under a dense layout, else
 * the global values at the client's kept positions with an UNCHANGED mask (a
 * tensor it keeps whole has no entry in `masks`, and goes FULL).
 */
export function encodeTaskTensor(
  spec: TensorSpec,
  global: Float32Array,
  layout: TaskLayout,
  encoding: ValueEncodingName,
): SparseTensor {
  const clientMask = layout.kind === 'sparse' ? layout.masks.get(spec.name) : undefined;
  if (clientMask === undefined) {
    // The encoder copies the values out, so the global tensor itself serves as the kept values of a full mask.
    return encodeSparseTensor(spec.name, { mask: Mask.full(global.length), kept: global }, spec.shape, { values: encoding });
  }
  const tensor = { mask: clientMask, kept: clientMask.gather(global) };
  return encodeSparseTensor(spec.name, tensor, spec.shape, { values: encoding, previousMask: clientMask });
}
