/**
 * Conv2DBackpropInput (the input gradient of a 2-D convolution) for wasm, where the
 * stock kernel is a plain C loop about 10x slower than the forward conv, and for cpu.
 *
 * wasm:
 * For stride 1 the input gradient is itself a convolution ("full" correlation):
 *   dx = conv2d(dy, W'),  W'[a, c, co, ci] = W[kh-1-a, kw-1-c, ci, co],
 * padded by (kh-1-padTop, kh-1-padBottom, kw-1-padLeft, kw-1-padRight), which gives back
 * the input's height and width. So we flip the small filter in TypeScript and run the
 * backend's forward Conv2D (XNNPACK). Other cases (strides > 1, padding wider than the
 * kernel, non-square kernels, on which XNNPACK's conv has been seen to abort) go to the
 * stock kernel.
 */
import type { Conv2DBackpropInputAttrs, KernelBackend, KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import { backend_util, Conv2D, Conv2DBackpropInput, getKernel } from '@tensorflow/tfjs-core';
import { matmulInto } from './matmul.js';
import { tensorAccess, type LocalBackendName } from './tensor_access.js';

/** W [kh, kw, inC, outC] -> W' [kh, kw, outC, inC], rotated by 180 degrees in (kh, kw). */
export function flipFilter(w: Float32Array, [kh, kw, inC, outC]: readonly number[], out: Float32Array): void {
  for (let a = 0; a < kh; a++) {
    for (let c = 0; c < kw; c++) {
      const src = ((kh - 1 - a) * kw + (kw - 1 - c)) * inC * outC;
      const dst = (a * kw + c) * outC * inC;
      for (let ci = 0; ci < inC; ci++) {
        for (let co = 0; co < outC; co++) out[dst + co * inC + ci] = w[src + ci * outC + co];
      }
    }
  }
}

/**
 * Adds the patch gradients dPatches [N, K] (row n = output position, column k = tap
 * (kh, kw, ci), the layout of conv2d.ts's im2col) back onto the input positions they were
 * gathered from: dx (zeroed by the caller) NHWC.
 */
export function col2imAdd(dPatches: Float32Array, info: backend_util.Conv2DInfo, dx: Float32Array): void {
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, filterHeight, filterWidth } = info;
  const { strideHeight, strideWidth, dilationHeight, dilationWidth } = info;
  const padTop = info.padInfo.top;
  const padLeft = info.padInfo.left;
  const rowLength = filterHeight * filterWidth * inChannels;
  let row = 0;
  for (let b = 0; b < batchSize; b++) {
    const xBatch = b * inHeight * inWidth * inChannels;
    for (let oh = 0; oh < outHeight; oh++) {
      for (let ow = 0; ow < outWidth; ow++, row += rowLength) {
        for (let kh = 0; kh < filterHeight; kh++) {
          const ih = oh * strideHeight - padTop + kh * dilationHeight;
          if (ih < 0 || ih >= inHeight) continue;
          for (let kw = 0; kw < filterWidth; kw++) {
            const iw = ow * strideWidth - padLeft + kw * dilationWidth;
            if (iw < 0 || iw >= inWidth) continue;
            const src = row + (kh * filterWidth + kw) * inChannels;
            const dst = xBatch + (ih * inWidth + iw) * inChannels;
            for (let c = 0; c < inChannels; c++) dx[dst + c] += dPatches[src + c];
          }
        }
      }
    }
  }
}

/**
 * cpu: dPatches = dy[N, outC] · Wᵀ[outC, K] with our matmul, then col2im; the stock cpu
 * kernel loops over every input pixel, tap and channel pair through index helpers.
 */
function cpuConv2dBackpropInputKernel(stock: KernelFunc): KernelFunc {
  return (args) => {
    const { inputs, attrs } = args;
    const { dy, filter } = inputs;
    const { strides, pad, dataFormat, dimRoundingMode, inputShape } = attrs as unknown as Conv2DBackpropInputAttrs;
    if (dy === undefined || filter === undefined) throw new Error('Conv2DBackpropInput needs inputs dy and filter');
    if ((dataFormat !== undefined && dataFormat !== 'NHWC') || dy.dtype !== 'float32' || filter.dtype !== 'float32')
      return stock(args);
    const [kh, kw, inC, outC] = filter.shape;
    const info = backend_util.computeConv2DInfo(
      inputShape,
      [kh, kw, inC, outC],
      strides,
      1,
      pad,
      dimRoundingMode,
      false,
      'channelsLast',
    );
    const n = info.batchSize * info.outHeight * info.outWidth;
    const k = kh * kw * inC;
    const access = tensorAccess('cpu', args.backend as KernelBackend);
    const w = access.read(filter);
    const wT = new Float32Array(k * outC);
    for (let r = 0; r < k; r++) for (let c = 0; c < outC; c++) wT[c * k + r] = w[r * outC + c];
    const dPatches = new Float32Array(n * k);
    matmulInto(access.read(dy), wT, dPatches, n, outC, k);
    const dx = access.alloc([...inputShape]);
    const out = access.read(dx);
    out.fill(0);
    col2imAdd(dPatches, info, out);
    return dx;
  };
}

function conv2dBackpropInputKernel(backendName: LocalBackendName, stock: KernelFunc): KernelFunc {
  return (args) => {
    const { inputs, attrs } = args;
    const backend = args.backend as KernelBackend;
    const { dy, filter } = inputs;
    const { strides, pad, dataFormat, dimRoundingMode, inputShape } = attrs as unknown as Conv2DBackpropInputAttrs;
    if (dy === undefined || filter === undefined) throw new Error('Conv2DBackpropInput needs inputs dy and filter');
    const [kh, kw, inC, outC] = filter.shape;
    const info = backend_util.computeConv2DInfo(
      inputShape,
      [kh, kw, inC, outC],
      strides,
      1,
      pad,
      dimRoundingMode,
      false,
      'channelsLast',
    );
    const { top, bottom, left, right } = info.padInfo;
    const padding = [kh - 1 - top, kh - 1 - bottom, kw - 1 - left, kw - 1 - right];
    const fast =
      (dataFormat === undefined || dataFormat === 'NHWC') &&
      dy.dtype === 'float32' &&
      filter.dtype === 'float32' &&
      info.strideHeight === 1 &&
      info.strideWidth === 1 &&
      kh === kw &&
      padding.every((p) => p >= 0);
    if (!fast) return stock(args);

    const access = tensorAccess(backendName, backend);
    const flipped = access.alloc([kh, kw, outC, inC]);
    flipFilter(access.read(filter), filter.shape, access.read(flipped));
    const conv = getKernel(Conv2D, backendName);
    if (conv === undefined) throw new Error(`Conv2D is not registered on ${backendName}`);
    const dx = conv.kernelFunc({
      inputs: { x: dy, filter: flipped },
      backend,
      attrs: {
        strides: 1,
        dilations: 1,
        pad: [
          [0, 0],
          [padding[0], padding[1]],
          [padding[2], padding[3]],
          [0, 0],
        ],
        dataFormat: 'NHWC',
      },
    }) as TensorInfo;
    access.dispose(flipped);
    return dx;
  };
}

/** Wraps the stock kernel registered for `backendName`, which handles the cases we do not. */
export function conv2dBackpropInputConfig(backendName: LocalBackendName): KernelConfig {
  const stock = getKernel(Conv2DBackpropInput, backendName);
  if (stock === undefined) throw new Error(`no stock Conv2DBackpropInput on ${backendName} to fall back to`);
  const kernelFunc =
    backendName === 'cpu'
      ? cpuConv2dBackpropInputKernel(stock.kernelFunc)
      : conv2dBackpropInputKernel(backendName, stock.kernelFunc);
  return { kernelName: Conv2DBackpropInput, backendName, kernelFunc };
}
