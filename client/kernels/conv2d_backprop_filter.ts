/**
 * Conv2DBackpropFilter (the weight gradient of a 2-D convolution) for the cpu and wasm
 * backends. wasm ships no such kernel at all and cpu's is a naive six-deep loop.
 *
 * dW[kh,kw,ci,co] = sum over (b,oh,ow) of x[b, oh*sh+kh-padTop, ow*sw+kw-padLeft, ci] * dy[b,oh,ow,co]
 *
 * which is one matrix product: dW[K, outC] = patches[K, N] · dy[N, outC] with
 * N = batch*outH*outW output positions and K = kh*kw*inC. We gather the input patches
 * (im2col, transposed) in TypeScript, then hand the product to XNNPACK's matmul on wasm
 * and to our own (matmul.ts) on cpu. The gather is O(N*K) copies, the product
 * O(N*K*outC) multiply-adds.
 */
import type { Conv2DBackpropFilterAttrs, KernelBackend, KernelConfig, KernelFunc, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs-core';
import { backend_util, BatchMatMul, Conv2DBackpropFilter, getKernel } from '@tensorflow/tfjs-core';
import { matmulInto } from './matmul.js';
import { tensorAccess, type LocalBackendName } from './tensor_access.js';

/**
 * Writes the transposed im2col matrix of `x` (NHWC) for the convolution `info` into
 * `patches`, row-major [K, N]: row k = filter tap (kh, kw, ci), column n = output position
 * (b, oh, ow); zero where the window hangs over the padding. Transposed because the
 * backends multiply [K, N]·[N, M] far faster than with a transposed operand (wasm's
 * XNNPACK path takes only untransposed inputs).
 */
export function im2colTransposed(x: Float32Array, info: backend_util.Conv2DInfo, patches: Float32Array): void {
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, filterHeight, filterWidth } = info;
  const { strideHeight, strideWidth, dilationHeight, dilationWidth } = info;
  const padTop = info.padInfo.top;
  const padLeft = info.padInfo.left;
  const positions = batchSize * outHeight * outWidth;
  const rowStride = inWidth * inChannels;
  const batchStride = inHeight * rowStride;
  for (let kh = 0; kh < filterHeight; kh++) {
    for (let kw = 0; kw < filterWidth; kw++) {
      // Output columns whose input column iw = ow*sw - padLeft + kw*dw lies inside the image.
      const colOffset = kw * dilationWidth - padLeft;
      const owBegin = Math.min(outWidth, Math.max(0, Math.ceil(-colOffset / strideWidth)));
      const owEnd = Math.max(owBegin, Math.min(outWidth, Math.ceil((inWidth - colOffset) / strideWidth)));
      for (let ci = 0; ci < inChannels; ci++) {
        let dst = ((kh * filterWidth + kw) * inChannels + ci) * positions;
        for (let b = 0; b < batchSize; b++) {
          for (let oh = 0; oh < outHeight; oh++, dst += outWidth) {
            const ih = oh * strideHeight - padTop + kh * dilationHeight;
            if (ih < 0 || ih >= inHeight) {
              patches.fill(0, dst, dst + outWidth);
              continue;
            }
            if (owBegin > 0) patches.fill(0, dst, dst + owBegin);
            if (owEnd < outWidth) patches.fill(0, dst + owEnd, dst + outWidth);
            const step = strideWidth * inChannels;
            let src = b * batchStride + ih * rowStride + (owBegin * strideWidth + colOffset) * inChannels + ci;
            for (let ow = owBegin; ow < owEnd; ow++, src += step) patches[dst + ow] = x[src];
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
    if (backendName === 'wasm' && convolvable(info)) return filterGradientAsConv(backend, x, dy, info);
    const n = info.batchSize * info.outHeight * info.outWidth;
    const k = info.filterHeight * info.filterWidth * info.inChannels;
    const access = tensorAccess(backendName, backend);
    if (backendName === 'cpu') {
      // cpu's BatchMatMul is slower than our own product on these shapes.
      const patchesT = new Float32Array(k * n);
      im2colTransposed(access.read(x), info, patchesT);
      const dw = access.alloc([...filterShape]);
      matmulInto(patchesT, access.read(dy), access.read(dw), k, n, info.outChannels);
      return dw;
    }
    const patches = access.alloc([1, k, n]);
    // Allocate before taking views: on wasm an allocation can grow (and detach) the heap.
    im2colTransposed(access.read(x), info, access.read(patches));
    const dy3d: TensorInfo = { dataId: dy.dataId, shape: [1, n, info.outChannels], dtype: 'float32' };
    const product = backendMatMul(backendName, backend, patches, dy3d);
    access.dispose(patches);
    // [1, K, outC] and [kh, kw, inC, outC] share one row-major layout; only the shape differs.
    return { dataId: product.dataId, shape: [...filterShape], dtype: 'float32' };
  };
}

function runKernel(name: string, backend: KernelBackend, inputs: NamedTensorInfoMap, attrs: Record<string, unknown>): TensorInfo {
  const kernel = getKernel(name, 'wasm');
  if (kernel === undefined) throw new Error(`${name} is not registered on wasm`);
  return kernel.kernelFunc({ inputs, backend, attrs: attrs as NamedAttrMap }) as TensorInfo;
}

/**
 * At stride 1 the filter gradient is itself a convolution with batch and channels swapped:
 * dW[kh,kw,ci,co] = conv2d(xᵀ[ci, h, w, b], dyᵀ[oh, ow, b, co]) at (ci, kh, kw, co),
 * which wasm runs in XNNPACK without an im2col copy. Measured (LeNet conv2, batch 10:
 * 12x12x10 -> 20 channels) 0.40 ms against 0.62 ms for im2col + matmul; with a single
 * input channel (conv1) the "batch" is 1 and it loses (0.64 vs 0.49 ms). dy becomes the
 * filter, so we keep it square: XNNPACK's conv was seen to abort on some tall filters.
 */
function convolvable(info: backend_util.Conv2DInfo): boolean {
  return info.strideHeight === 1 && info.strideWidth === 1 && info.outHeight === info.outWidth && info.inChannels > 1;
}

function filterGradientAsConv(backend: KernelBackend, x: TensorInfo, dy: TensorInfo, info: backend_util.Conv2DInfo): TensorInfo {
  const xT = runKernel('Transpose', backend, { x }, { perm: [3, 1, 2, 0] });
  const dyT = runKernel('Transpose', backend, { x: dy }, { perm: [1, 2, 0, 3] });
  const { top, bottom, left, right } = info.padInfo;
  const out = runKernel('Conv2D', backend, { x: xT, filter: dyT }, {
    strides: 1,
    dilations: 1,
    pad: [[0, 0], [top, bottom], [left, right], [0, 0]],
    dataFormat: 'NHWC',
  });
  const dw = runKernel('Transpose', backend, { x: out }, { perm: [1, 2, 0, 3] });
  const wasm = backend as unknown as { disposeData(id: object): boolean };
  for (const t of [xT, dyT, out]) wasm.disposeData(t.dataId);
  return dw;
}

/** a·b through the backend's own BatchMatMul kernel (a: [1, K, N], b: [1, N, M]). */
function backendMatMul(backendName: LocalBackendName, backend: KernelBackend, a: TensorInfo, b: TensorInfo): TensorInfo {
  const kernel = getKernel(BatchMatMul, backendName);
  if (kernel === undefined) throw new Error(`BatchMatMul is not registered on ${backendName}`);
  const out = kernel.kernelFunc({ inputs: { a, b }, backend, attrs: { transposeA: false, transposeB: false } });
  if (Array.isArray(out)) throw new Error('BatchMatMul returned several tensors');
  return out;
}

export function conv2dBackpropFilterConfig(backendName: LocalBackendName): KernelConfig {
  return { kernelName: Conv2DBackpropFilter, backendName, kernelFunc: conv2dBackpropFilterKernel(backendName) };
}
