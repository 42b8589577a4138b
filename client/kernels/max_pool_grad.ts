/**
 * MaxPoolGrad for cpu and wasm: routes each output gradient to the input that won its
 * pooling window (the first maximum in row-major window order, as the stock kernels do).
 * The stock kernels revisit every window once per input pixel through generic index
 * helpers; this is one pass over the windows, NHWC.
 */
import type { KernelBackend, KernelConfig, KernelFunc, MaxPoolGradAttrs } from '@tensorflow/tfjs-core';
import { backend_util, MaxPoolGrad } from '@tensorflow/tfjs-core';
import { tensorAccess, type LocalBackendName } from './tensor_access.js';

/** dx (zeroed by the caller) += dy routed to each window's first maximum of x. */
export function maxPoolBackprop(x: Float32Array, dy: Float32Array, info: backend_util.Conv2DInfo, dx: Float32Array): void {
  if (isTwoByTwoTiling(info)) {
    twoByTwoBackprop(x, dy, info, dx);
    return;
  }
  const {
    batchSize,
    inHeight,
    inWidth,
    inChannels: channels,
    outHeight,
    outWidth,
    filterHeight,
    filterWidth,
    strideHeight,
    strideWidth,
  } = info;
  const padTop = info.padInfo.top;
  const padLeft = info.padInfo.left;
  let o = 0;
  for (let b = 0; b < batchSize; b++) {
    const xBatch = b * inHeight * inWidth * channels;
    for (let oh = 0; oh < outHeight; oh++) {
      const h0 = Math.max(0, oh * strideHeight - padTop);
      const h1 = Math.min(inHeight, oh * strideHeight - padTop + filterHeight);
      for (let ow = 0; ow < outWidth; ow++) {
        const w0 = Math.max(0, ow * strideWidth - padLeft);
        const w1 = Math.min(inWidth, ow * strideWidth - padLeft + filterWidth);
        for (let c = 0; c < channels; c++, o++) {
          let best = -1;
          let bestValue = Number.NEGATIVE_INFINITY;
          for (let h = h0; h < h1; h++) {
            let i = xBatch + (h * inWidth + w0) * channels + c;
            for (let w = w0; w < w1; w++, i += channels) {
              if (x[i] > bestValue) {
                bestValue = x[i];
                best = i;
              }
            }
          }
          if (best >= 0) dx[best] += dy[o];
        }
      }
    }
  }
}

function maxPoolGradKernel(backendName: LocalBackendName): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const { dy, input } = inputs;
    const { filterSize, strides, pad, dimRoundingMode } = attrs as unknown as MaxPoolGradAttrs;
    if (dy === undefined || input === undefined) throw new Error('MaxPoolGrad needs inputs dy and input');
    if (dy.dtype !== 'float32' || input.dtype !== 'float32') {
      throw new Error(`MaxPoolGrad on ${backendName}: float32 inputs expected, got ${dy.dtype} and ${input.dtype}`);
    }
    const info = backend_util.computePool2DInfo(
      input.shape as [number, number, number, number],
      filterSize,
      strides,
      1,
      pad,
      dimRoundingMode,
    );
    const access = tensorAccess(backendName, backend as KernelBackend);
    const dx = access.alloc([...input.shape]);
    const out = access.read(dx);
    out.fill(0);
    maxPoolBackprop(access.read(input), access.read(dy), info, out);
    return dx;
  };
}

export function maxPoolGradConfig(backendName: LocalBackendName): KernelConfig {
  return { kernelName: MaxPoolGrad, backendName, kernelFunc: maxPoolGradKernel(backendName) };
}

/** 2x2 windows at stride 2 without padding (every LeNet pool): the windows tile the input. */
function isTwoByTwoTiling(info: backend_util.Conv2DInfo): boolean {
  return (
    info.filterHeight === 2 &&
    info.filterWidth === 2 &&
    info.strideHeight === 2 &&
    info.strideWidth === 2 &&
    info.padInfo.top === 0 &&
    info.padInfo.left === 0 &&
    info.outHeight * 2 <= info.inHeight &&
    info.outWidth * 2 <= info.inWidth
  );
}

/** The same routing as the general loop, unrolled for 2x2 tiles (scan order: a, b, c, d). */
function twoByTwoBackprop(x: Float32Array, dy: Float32Array, info: backend_util.Conv2DInfo, dx: Float32Array): void {
  const { batchSize, inHeight, inWidth, inChannels: channels, outHeight, outWidth } = info;
  const rowStride = inWidth * channels;
  let o = 0;
  for (let b = 0; b < batchSize; b++) {
    for (let oh = 0; oh < outHeight; oh++) {
      let base = (b * inHeight + oh * 2) * rowStride;
      for (let ow = 0; ow < outWidth; ow++, base += 2 * channels) {
        for (let c = 0; c < channels; c++, o++) {
          let best = base + c;
          const right = best + channels;
          const below = best + rowStride;
          const diagonal = below + channels;
          if (x[right] > x[best]) best = right;
          if (x[below] > x[best]) best = below;
          if (x[diagonal] > x[best]) best = diagonal;
          dx[best] += dy[o];
        }
      }
    }
  }
}
