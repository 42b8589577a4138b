/**
 * Column sums of a row-major [rows, cols] float32 tensor, as a kernel for cpu and wasm:
 * the bias gradient (dy summed over every axis but the last). wasm's BatchMatMul spends
 * ~0.2 ms on ones[1, 1440]·dy[1440, 10] (XNNPACK repacks its "weights", here dy, on every
 * call), cpu's Sum transposes first; one pass in TypeScript over the heap is a few µs.
 */
import type { KernelBackend, KernelConfig, KernelFunc, Tensor } from '@tensorflow/tfjs-core';
import * as tf from '@tensorflow/tfjs-core';
import { tensorAccess, type LocalBackendName } from './tensor_access.js';

export const COLUMN_SUM_KERNEL = 'SubfedColumnSum';

/** out[c] = sum over r of x[r*cols + c], accumulated in row order (float32 per addition). */
export function columnSumInto(x: Float32Array, rows: number, cols: number, out: Float32Array): void {
  out.fill(0, 0, cols);
  for (let r = 0, i = 0; r < rows; r++) for (let c = 0; c < cols; c++, i++) out[c] += x[i];
}

function columnSumKernel(backendName: LocalBackendName): KernelFunc {
  return ({ inputs, backend }) => {
    const { x } = inputs;
    if (x === undefined) throw new Error(`${COLUMN_SUM_KERNEL} needs input x`);
    if (x.dtype !== 'float32') throw new Error(`${COLUMN_SUM_KERNEL}: float32 input expected, got ${x.dtype}`);
    const cols = x.shape.length === 0 ? 1 : x.shape[x.shape.length - 1];
    const rows = cols === 0 ? 0 : tf.util.sizeFromShape(x.shape) / cols;
    const access = tensorAccess(backendName, backend as KernelBackend);
    const out = access.alloc([cols]);
    // Allocate before taking views: on wasm an allocation can grow (and detach) the heap.
    columnSumInto(access.read(x), rows, cols, access.read(out));
    return out;
  };
}

export function columnSumConfig(backendName: LocalBackendName): KernelConfig {
  return { kernelName: COLUMN_SUM_KERNEL, backendName, kernelFunc: columnSumKernel(backendName) };
}

/**
 * `x` summed over all axes but the last ([cols]): the fused kernel where the active
 * backend has it, else ones[1, rows]·x[rows, cols] (one matmul, no transposing Sum).
 */
export function columnSum(x: Tensor): Tensor {
  if (tf.getKernel(COLUMN_SUM_KERNEL, tf.getBackend()) !== undefined && x.dtype === 'float32') {
    return tf.engine().runKernel<Tensor>(COLUMN_SUM_KERNEL, { x });
  }
  const cols = x.shape[x.rank - 1];
  const rows = x.size / cols;
  return tf.reshape(tf.matMul(tf.ones([1, rows]), tf.reshape(x, [rows, cols])), [cols]);
}
