/**
 * Weight quantization in the tfjs weights-manifest scheme, so that tfjs's own
 * loader (tf.io.decodeWeights, used by tf.loadLayersModel) dequantizes it:
 *
 * - `int8`: per-tensor affine 8-bit, manifest `quantization: {dtype: 'uint8', scale, min}`,
 *   value = q * scale + min. The range is widened to hold 0 and min is moved onto the
 *   grid (min = -zeroPoint * scale), so a pruned weight stays exactly 0.
 * - `f16`: IEEE half, manifest `quantization: {dtype: 'float16'}` (bits from the wire
 *   codec's converter, proto/codec.ts).
 */
import { encodeValues } from '../../proto/codec.js';

export const QUANTIZATIONS = ['f32', 'f16', 'int8'] as const;
export type Quantization = (typeof QUANTIZATIONS)[number];

/** The manifest's quantization field (tfjs-core io WeightsManifestEntry.quantization). */
export type ManifestQuantization = { dtype: 'uint8'; scale: number; min: number } | { dtype: 'float16' };

export interface QuantizedTensor {
  readonly bytes: Uint8Array;
  readonly quantization: ManifestQuantization | undefined;
}

/** Affine uint8 with 0 exactly representable. */
export function quantizeAffineUint8(values: Float32Array): QuantizedTensor {
  let lo = 0;
  let hi = 0;
  for (const v of values) {
    if (!Number.isFinite(v)) throw new RangeError(`int8 quantization: value ${v} is not finite`);
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const scale = hi > lo ? (hi - lo) / 255 : 1;
  const zeroPoint = Math.round(-lo / scale);
  const min = -zeroPoint * scale;
  const bytes = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const q = Math.round(values[i] / scale) + zeroPoint;
    bytes[i] = q < 0 ? 0 : q > 255 ? 255 : q;
  }
  return { bytes, quantization: { dtype: 'uint8', scale, min } };
}

/** IEEE half, little-endian: the wire codec's f16 values. */
export function quantizeFloat16(values: Float32Array): QuantizedTensor {
  return { bytes: encodeValues(values, 'f16').data, quantization: { dtype: 'float16' } };
}

/** Little-endian float32 bytes (a copy). */
export function float32Bytes(values: Float32Array): Uint8Array {
  const bytes = new Uint8Array(values.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < values.length; i++) view.setFloat32(4 * i, values[i], true);
  return bytes;
}

/**
 * One tensor as the file stores it. Only kernels and weight matrices (rank >= 2) are
 * quantized: biases and BatchNorm vectors are a few hundred values, and an 8-bit
 * running variance would shift every activation of its channel.
 */
export function encodeTensor(values: Float32Array, shape: readonly number[], quantization: Quantization): QuantizedTensor {
  if (quantization === 'f32' || shape.length < 2) return { bytes: float32Bytes(values), quantization: undefined };
  return quantization === 'int8' ? quantizeAffineUint8(values) : quantizeFloat16(values);
}
