/**
 * Conv2DBackpropFilter (the weight gradient of a 2-D convolution) for the cpu and wasm
 * backends. wasm ships no such kernel at all and cpu's is a naive six-deep loop.
 *
 * dW[kh,kw,ci,co] = sum over (b,oh,ow) of x[b, oh*sh+kh-padTop, ow*sw+kw-padLeft, ci] * dy[b,oh,ow,co]
 *
 * which is one matrix product: dW[K, outC] = patchesᵀ[K, N] · dy[N, outC] with
 * N = batch*outH*outW output positions and K = kh*kw*inC. We gather the input patches
 * (im2col, zeros where the window hangs over the padding) in TypeScript, then hand the
 * product to the backend's own BatchMatMul kernel: XNNPACK SIMD on wasm, a blocked
 * matmul on cpu. The gather is O(N*K) copies, the product O(N*K*outC) multiply-adds.
 */
import type { Conv2DBackpropFilterAttrs, KernelBackend, KernelConfig, KernelFunc, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs-core';
import { backend_util, BatchMatMul, Conv2DBackpropFilter, getKernel } from '@tensorflow/tfjs-core';
import { tensorAccess, type LocalBackendName } from './tensor_access.js';

/**
 * Writes the im2col matrix of `x` (NHWC) for the convolution `info` into `patches`,
 * row-major [N, K]: row n = output position (b, oh, ow), column k = (kh, kw, ci).
 */
export function im2col(x: Float32Array, info: backend_util.Conv2DInfo, patches: Float32Array): void {
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, filterHeight, filterWidth } = info;
  const { strideHeight, strideWidth, dilationHeight, dilationWidth } = info;
  const padTop = info.padInfo.top;
  const padLeft = info.padInfo.left;
  const rowLength = filterHeight * filterWidth * inChannels;
  const tapRow = filterWidth * inChannels;
  let row = 0;
  for (let b = 0; b < batchSize; b++) {
    const xBatch = b * inHeight * inWidth * inChannels;
    for (let oh = 0; oh < outHeight; oh++) {
      const ihBase = oh * strideHeight - padTop;
      for (let ow = 0; ow < outWidth; ow++, row += rowLength) {
        const iwBase = ow * strideWidth - padLeft;
        for (let kh = 0; kh < filterHeight; kh++) {
          const ih = ihBase + kh * dilationHeight;
          const dst = row + kh * tapRow;
          if (ih < 0 || ih >= inHeight) {
            patches.fill(0, dst, dst + tapRow);
            continue;
          }
          const xRow = xBatch + ih * inWidth * inChannels;
          if (dilationWidth === 1 && iwBase >= 0 && iwBase + filterWidth <= inWidth) {
            // The whole window row is inside the image: one contiguous run in NHWC.
            const src = xRow + iwBase * inChannels;
            patches.set(x.subarray(src, src + tapRow), dst);
            continue;
          }
          for (let kw = 0; kw < filterWidth; kw++) {
            const iw = iwBase + kw * dilationWidth;
            const d = dst + kw * inChannels;
            if (iw < 0 || iw >= inWidth) {
              patches.fill(0, d, d + inChannels);
            } else {
              const src = xRow + iw * inChannels;
              for (let c = 0; c < inChannels; c++) patches[d + c] = x[src + c];
            }
          }
        }
      }
    }
  }
}

function conv2dBackpropFilterKernel(backendName: LocalBackendName): KernelFunc {
  return ({ inputs, backend: anyBackend, attrs }) => {
    const backend = anyBackend as KernelBackend;
    const { x, dy } = inputs as NamedTensorInfoMap;
    const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs as unknown as Conv2DBackpropFilterAttrs;
    if (x === undefined || dy === undefined) throw new Error('Conv2DBackpropFilter needs inputs x and dy');
    if (dataFormat !== undefined && dataFormat !== 'NHWC') {
      throw new Error(`Conv2DBackpropFilter on ${backendName}: dataFormat ${dataFormat} is not supported, use NHWC`);
    }
    if (x.dtype !== 'float32' || dy.dtype !== 'float32') {
      throw new Error(`Conv2DBackpropFilter on ${backendName}: float32 inputs expected, got ${x.dtype} and ${dy.dtype}`);
    }
    const info = backend_util.computeConv2DInfo(
      x.shape as [number, number, number, number],
      filterShape,
      strides,
      1,
      pad,
      dimRoundingMode,
      false,
      'channelsLast',
    );
    const n = info.batchSize * info.outHeight * info.outWidth;
    const k = info.filterHeight * info.filterWidth * info.inChannels;
    const access = tensorAccess(backendName, backend);
    const patches = access.alloc([1, n, k]);
    // Allocate before taking views: on wasm an allocation can grow (and detach) the heap.
    im2col(access.read(x), info, access.read(patches));
    const dy3d: TensorInfo = { dataId: dy.dataId, shape: [1, n, info.outChannels], dtype: 'float32' };
    const product = backendMatMul(backendName, backend, patches, dy3d);
    access.dispose(patches);
    // [1, K, outC] and [kh, kw, inC, outC] share one row-major layout; only the shape differs.
    return { dataId: product.dataId, shape: [...filterShape], dtype: 'float32' };
  };
}

/** aᵀ·b through the backend's own BatchMatMul kernel (a: [1, N, K], b: [1, N, M]). */
function backendMatMul(backendName: LocalBackendName, backend: KernelBackend, a: TensorInfo, b: TensorInfo): TensorInfo {
  const kernel = getKernel(BatchMatMul, backendName);
  if (kernel === undefined) throw new Error(`BatchMatMul is not registered on ${backendName}`);
  const out = kernel.kernelFunc({ inputs: { a, b }, backend, attrs: { transposeA: true, transposeB: false } });
  if (Array.isArray(out)) throw new Error('BatchMatMul returned several tensors');
  return out;
}

export function conv2dBackpropFilterConfig(backendName: LocalBackendName): KernelConfig {
  return { kernelName: Conv2DBackpropFilter, backendName, kernelFunc: conv2dBackpropFilterKernel(backendName) };
}
