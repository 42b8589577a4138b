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
import type {
  Conv2DBackpropFilterAttrs,
  KernelBackend,
  KernelConfig,
  KernelFunc,
  NamedAttrMap,
  NamedTensorInfoMap,
  TensorInfo,
} from '@tensorflow/tfjs-core';
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
    const { x, dy } = inputs;
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
    if (backendName === 'wasm' && wideRowsApplicable(info)) return filterGradientWideRows(backend, x, dy, info);
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
  const out = runKernel(
    'Conv2D',
    backend,
    { x: xT, filter: dyT },
    {
      strides: 1,
      dilations: 1,
      pad: [
        [0, 0],
        [top, bottom],
        [left, right],
        [0, 0],
      ],
      dataFormat: 'NHWC',
    },
  );
  const dw = runKernel('Transpose', backend, { x: out }, { perm: [1, 2, 0, 3] });
  const wasm = backend as unknown as { disposeData(id: object): boolean };
  for (const t of [xT, dyT, out]) wasm.disposeData(t.dataId);
  return dw;
}

/**
 * Single input channel, stride 1, no padding (LeNet's first conv): im2col with "wide" rows.
 * Output positions are numbered (b, oh, w) over the full input width W instead of the
 * output width; then row (kh, kw) of the transposed patch matrix is, per image, one
 * contiguous run of the input, x[b, kh.., kw..] for OH*W values, copied with
 * copyWithin (a memmove inside the wasm heap) instead of element by element, and dy is
 * widened to [B, OH, W, outC] with zeros in the columns w >= OW. Those columns of the
 * patches hold other input values (the next row's start), which meet only zeros of dy:
 * the product equals the exact one for finite inputs. Measured (batch 10, 28x28 -> 10
 * channels) ~0.25 ms against ~0.55 ms for the element-wise gather; 17% more multiply-adds.
 */
function wideRowsApplicable(info: backend_util.Conv2DInfo): boolean {
  const { top, bottom, left, right } = info.padInfo;
  return (
    info.inChannels === 1 &&
    info.strideHeight === 1 &&
    info.strideWidth === 1 &&
    info.dilationHeight === 1 &&
    info.dilationWidth === 1 &&
    top === 0 &&
    bottom === 0 &&
    left === 0 &&
    right === 0 &&
    // tfjs sizes numeric-pad outputs of non-square filters with the filter height: such
    // windows hang over the right edge, which this path cannot express.
    info.outHeight === info.inHeight - info.filterHeight + 1 &&
    info.outWidth === info.inWidth - info.filterWidth + 1 &&
    info.outWidth < info.inWidth
  );
}

function filterGradientWideRows(
  backend: KernelBackend,
  x: TensorInfo,
  dy: TensorInfo,
  info: backend_util.Conv2DInfo,
): TensorInfo {
  const { batchSize, inHeight, inWidth, outHeight, outWidth, outChannels, filterHeight, filterWidth } = info;
  const access = tensorAccess('wasm', backend);
  const wide = batchSize * outHeight * inWidth;
  const taps = filterHeight * filterWidth;
  const patches = access.alloc([1, taps, wide]);
  const dyWide = access.alloc([1, wide, outChannels]);
  // Views after the allocations (the heap may grow); one view of the whole heap for copyWithin.
  const xView = access.read(x);
  const heap = new Float32Array(xView.buffer);
  const xBase = xView.byteOffset / 4;
  const xEnd = xBase + xView.length;
  const dyBase = access.read(dy).byteOffset / 4;
  const dyWideBase = access.read(dyWide).byteOffset / 4;
  const pBase = access.read(patches).byteOffset / 4;
  const outRow = outWidth * outChannels;
  const wideRow = inWidth * outChannels;
  for (let r = 0; r < batchSize * outHeight; r++) {
    heap.copyWithin(dyWideBase + r * wideRow, dyBase + r * outRow, dyBase + (r + 1) * outRow);
    heap.fill(0, dyWideBase + r * wideRow + outRow, dyWideBase + (r + 1) * wideRow);
  }
  const run = outHeight * inWidth;
  for (let kh = 0; kh < filterHeight; kh++) {
    for (let kw = 0; kw < filterWidth; kw++) {
      const row = pBase + (kh * filterWidth + kw) * wide;
      for (let b = 0; b < batchSize; b++) {
        const src = xBase + b * inHeight * inWidth + kh * inWidth + kw;
        const dst = row + b * run;
        const available = Math.min(run, xEnd - src);
        heap.copyWithin(dst, src, src + available);
        // Past the end of x (last image, wide columns only): zeros.
        if (available < run) heap.fill(0, dst + available, dst + run);
      }
    }
  }
  const product = backendMatMul('wasm', backend, patches, dyWide);
  access.dispose(patches);
  access.dispose(dyWide);
  return { dataId: product.dataId, shape: [filterHeight, filterWidth, 1, outChannels], dtype: 'float32' };
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
