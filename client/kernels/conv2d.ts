/**
 * Conv2D (forward) for the cpu backend as im2col + matmul: the stock kernel is a direct
 * six-deep loop through generic index helpers. In NHWC the product
 * patches[N, K] · W[K, outC] (N = batch*outH*outW, K = kh*kw*inC) is already the output.
 */
import type { Conv2DAttrs, KernelBackend, KernelConfig, KernelFunc } from '@tensorflow/tfjs-core';
import { backend_util, Conv2D, getKernel } from '@tensorflow/tfjs-core';
import { matmulInto } from './matmul.js';
import { tensorAccess } from './tensor_access.js';

/**
 * Writes the im2col matrix of `x` (NHWC) for the convolution `info` into `patches`,
 * row-major [N, K]: row n = output position (b, oh, ow), column k = tap (kh, kw, ci);
 * zero where the window hangs over the padding.
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

function conv2dKernel(stock: KernelFunc): KernelFunc {
  return (args) => {
    const { inputs, attrs } = args;
    const { x, filter } = inputs;
    const { strides, pad, dataFormat, dilations, dimRoundingMode } = attrs as unknown as Conv2DAttrs;
    if (x === undefined || filter === undefined) throw new Error('Conv2D needs inputs x and filter');
    if ((dataFormat !== undefined && dataFormat !== 'NHWC') || x.dtype !== 'float32' || filter.dtype !== 'float32')
      return stock(args);
    const info = backend_util.computeConv2DInfo(
      x.shape as [number, number, number, number],
      filter.shape as [number, number, number, number],
      strides,
      dilations,
      pad,
      dimRoundingMode,
      false,
      'channelsLast',
    );
    const n = info.batchSize * info.outHeight * info.outWidth;
    const k = info.filterHeight * info.filterWidth * info.inChannels;
    const access = tensorAccess('cpu', args.backend as KernelBackend);
    const patches = new Float32Array(n * k);
    im2col(access.read(x), info, patches);
    const out = access.alloc([...info.outShape]);
    matmulInto(patches, access.read(filter), access.read(out), n, k, info.outChannels);
    return out;
  };
}

/** Wraps the stock cpu kernel, which keeps the cases we leave to it (NCHW, other dtypes). */
export function cpuConv2dConfig(): KernelConfig {
  const stock = getKernel(Conv2D, 'cpu');
  if (stock === undefined) throw new Error('no stock Conv2D on cpu to fall back to');
  return { kernelName: Conv2D, backendName: 'cpu', kernelFunc: conv2dKernel(stock.kernelFunc) };
}
