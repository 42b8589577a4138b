/**
 * One fused SGD-with-momentum step per tensor, as a kernel for the cpu and wasm backends:
 *   buf' = momentum*buf + g;  w' = w - lr*buf'
 * (torch.optim.SGD without dampening or weight decay). As tf ops this is four
 * element-wise kernels per tensor per step, and cpu's element-wise kernels call a
 * closure per element: for the 199k-weight mlp they were ~40% of a cpu training step.
 * On wasm the tf-op version is faster for large tensors (see WASM_FUSED_MAX_SIZE).
 * Outputs are new tensors: inputs are never written in place (a variable's storage may
 * be shared with other tensors).
 */
import type { KernelBackend, KernelConfig, KernelFunc, NamedAttrMap, Tensor } from '@tensorflow/tfjs-core';
import * as tf from '@tensorflow/tfjs-core';
import { tensorAccess, type LocalBackendName } from './tensor_access.js';

export const SGD_MOMENTUM_KERNEL = 'SubfedSgdMomentum';

export interface SgdMomentumAttrs {
  lr: number;
  momentum: number;
}

/** The update on arrays of equal length (outputs must not alias inputs), rounded to float32 per operation like the tf ops. */
export function sgdMomentumUpdate(
  w: Float32Array,
  buf: Float32Array,
  g: Float32Array,
  { lr, momentum }: SgdMomentumAttrs,
  wOut: Float32Array,
  bufOut: Float32Array,
): void {
  // tf ops hold the scalars as float32 too.
  const m = Math.fround(momentum);
  const rate = Math.fround(lr);
  for (let i = 0; i < w.length; i++) {
    const b = Math.fround(Math.fround(m * buf[i]) + g[i]);
    bufOut[i] = b;
    wOut[i] = w[i] - Math.fround(rate * b);
  }
}

const sgdMomentumKernel =
  (backendName: LocalBackendName): KernelFunc =>
  ({ inputs, backend, attrs }) => {
    const { w, buf, g } = inputs;
    if (w === undefined || buf === undefined || g === undefined)
      throw new Error(`${SGD_MOMENTUM_KERNEL} needs inputs w, buf and g`);
    const size = tf.util.sizeFromShape(w.shape);
    if (tf.util.sizeFromShape(buf.shape) !== size || tf.util.sizeFromShape(g.shape) !== size) {
      throw new Error(
        `${SGD_MOMENTUM_KERNEL}: w, buf and g must have the same size, got [${String(w.shape)}], [${String(buf.shape)}], [${String(g.shape)}]`,
      );
    }
    const access = tensorAccess(backendName, backend as KernelBackend);
    const wOut = access.alloc([...w.shape]);
    const bufOut = access.alloc([...w.shape]);
    // Views after the allocations: on wasm an allocation can grow (and detach) the heap.
    sgdMomentumUpdate(
      access.read(w),
      access.read(buf),
      access.read(g),
      attrs as unknown as SgdMomentumAttrs,
      access.read(wOut),
      access.read(bufOut),
    );
    return [wOut, bufOut];
  };

export function sgdMomentumConfig(backendName: LocalBackendName): KernelConfig {
  return { kernelName: SGD_MOMENTUM_KERNEL, backendName, kernelFunc: sgdMomentumKernel(backendName) };
}

/**
 * On wasm the four element-wise kernels run in SIMD at a fixed cost per call of a few µs
 * each, the fused loop in TypeScript at ~1-2 ns per value: fused up to this size (LeNet's
 * tensors, 16k values at most; measured +3% lenet training), tf ops above (mlp's 157k-value
 * fc1 was 28% slower fused).
 */
export const WASM_FUSED_MAX_SIZE = 20_000;

/** [w', buf'] for one step: the fused kernel where the active backend has it, else tf ops. */
export function sgdMomentumStep(w: Tensor, buf: Tensor, g: Tensor, attrs: SgdMomentumAttrs): [Tensor, Tensor] {
  const backend = tf.getBackend();
  if (tf.getKernel(SGD_MOMENTUM_KERNEL, backend) !== undefined && (backend !== 'wasm' || w.size <= WASM_FUSED_MAX_SIZE)) {
    const out = tf.engine().runKernel<Tensor[]>(SGD_MOMENTUM_KERNEL, { w, buf, g }, attrs as unknown as NamedAttrMap);
    return [out[0], out[1]];
  }
  return tf.tidy(() => {
    const next = tf.add(tf.mul(buf, attrs.momentum), g);
    return [tf.sub(w, tf.mul(next, attrs.lr)), next];
  });
}
