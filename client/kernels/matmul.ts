/**
 * Dense float32 matrix product for the cpu backend, whose own BatchMatMul runs at about
 * 0.4 GMAC/s here; this one at about 1 GMAC/s on the shapes of our models.
 */
import type { BatchMatMulAttrs, KernelBackend, KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import { BatchMatMul, getKernel, Transpose, util } from '@tensorflow/tfjs-core';
import { tensorAccess } from './tensor_access.js';

/**
 * c[n, m] = a[n, k] · b[k, m], all row-major; c is overwritten. Four rows of `a` go
 * together so that every element of `b` loaded serves four multiply-adds, and the inner
 * loop walks rows of `b` and `c` contiguously.
 */
export function matmulInto(a: Float32Array, b: Float32Array, c: Float32Array, n: number, k: number, m: number): void {
  if (a.length < n * k || b.length < k * m || c.length < n * m) {
    throw new Error(
      `matmulInto: arrays of ${a.length}, ${b.length}, ${c.length} values are too short for [${n}x${k}]·[${k}x${m}]`,
    );
  }
  c.fill(0, 0, n * m);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const c0 = i * m;
    const c1 = c0 + m;
    const c2 = c1 + m;
    const c3 = c2 + m;
    const a0 = i * k;
    for (let p = 0; p < k; p++) {
      const v0 = a[a0 + p];
      const v1 = a[a0 + k + p];
      const v2 = a[a0 + 2 * k + p];
      const v3 = a[a0 + 3 * k + p];
      const bp = p * m;
      for (let j = 0; j < m; j++) {
        const bv = b[bp + j];
        c[c0 + j] += v0 * bv;
        c[c1 + j] += v1 * bv;
        c[c2 + j] += v2 * bv;
        c[c3 + j] += v3 * bv;
      }
    }
  }
  for (; i < n; i++) {
    const ci = i * m;
    for (let p = 0; p < k; p++) {
      const v = a[i * k + p];
      const bp = p * m;
      for (let j = 0; j < m; j++) c[ci + j] += v * b[bp + j];
    }
  }
}

/** [rows, cols] -> [cols, rows] for `count` matrices stored back to back. */
function transposeBatch(src: Float32Array, count: number, rows: number, cols: number): Float32Array {
  const out = new Float32Array(count * rows * cols);
  for (let m = 0; m < count; m++) {
    const base = m * rows * cols;
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[base + c * rows + r] = src[base + r * cols + c];
  }
  return out;
}

function batchMatMulKernel(stock: KernelFunc): KernelFunc {
  return (args) => {
    const { a, b } = args.inputs;
    const { transposeA, transposeB } = args.attrs as unknown as BatchMatMulAttrs;
    if (a === undefined || b === undefined) throw new Error('BatchMatMul needs inputs a and b');
    const rank = a.shape.length;
    const batchShape = a.shape.slice(0, -2);
    // Broadcast batches and non-float inputs stay with the stock kernel.
    if (
      a.dtype !== 'float32' ||
      b.dtype !== 'float32' ||
      rank < 2 ||
      b.shape.length !== rank ||
      !util.arraysEqual(batchShape, b.shape.slice(0, -2))
    ) {
      return stock(args);
    }
    const count = util.sizeFromShape(batchShape);
    const [aRows, aCols] = a.shape.slice(-2);
    const [bRows, bCols] = b.shape.slice(-2);
    const n = transposeA ? aCols : aRows;
    const k = transposeA ? aRows : aCols;
    const m = transposeB ? bRows : bCols;
    if ((transposeB ? bCols : bRows) !== k) {
      throw new Error(
        `BatchMatMul: inner dimensions ${k} and ${transposeB ? bCols : bRows} of shapes [${String(a.shape)}] and [${String(b.shape)}] differ`,
      );
    }
    const access = tensorAccess('cpu', args.backend as KernelBackend);
    const aValues = transposeA ? transposeBatch(access.read(a), count, aRows, aCols) : access.read(a);
    const bValues = transposeB ? transposeBatch(access.read(b), count, bRows, bCols) : access.read(b);
    const out = access.alloc([...batchShape, n, m]);
    const outValues = access.read(out);
    for (let i = 0; i < count; i++) {
      matmulInto(aValues.subarray(i * n * k), bValues.subarray(i * k * m), outValues.subarray(i * n * m), n, k, m);
    }
    return out;
  };
}

/** cpu BatchMatMul through matmulInto; wraps the stock kernel for broadcast batches. */
export function cpuBatchMatMulConfig(): KernelConfig {
  const stock = getKernel(BatchMatMul, 'cpu');
  if (stock === undefined) throw new Error('no stock BatchMatMul on cpu to fall back to');
  return { kernelName: BatchMatMul, backendName: 'cpu', kernelFunc: batchMatMulKernel(stock.kernelFunc) };
}

interface WasmBackendLike {
  disposeData(dataId: object): boolean;
}

/**
 * wasm BatchMatMul as XNNPACK likes it. Its cost follows the size of the right operand
 * (repacked on every call: our weights change every step) and its transposed-A path is a
 * plain loop (x^T·dy [10,320]^T·[10,50]: 0.19 ms; transposing x first, then the untransposed
 * product: 0.04 ms). So transposes are made explicit, and when the output has fewer rows
 * than columns we compute Cᵀ = op(B)ᵀ·op(A)ᵀ and transpose that back: the dense layers'
 * x·W [10,320]·[320,50] becomes Wᵀ·xᵀ with a [320,10] right operand (0.18 -> ~0.07 ms).
 * Only single matrices (rank 2, or rank 3 with batch 1) are rerouted; anything else goes
 * to the stock kernel as is.
 */
function wasmBatchMatMulKernel(stock: KernelFunc): KernelFunc {
  return (args) => {
    const { a, b } = args.inputs;
    const { transposeA, transposeB } = args.attrs as unknown as BatchMatMulAttrs;
    if (a === undefined || b === undefined) throw new Error('BatchMatMul needs inputs a and b');
    const rank = a.shape.length;
    const single = (t: TensorInfo): boolean => t.shape.length === 2 || (t.shape.length === 3 && t.shape[0] === 1);
    if (a.dtype !== 'float32' || b.dtype !== 'float32' || b.shape.length !== rank || !single(a) || !single(b)) return stock(args);
    const [aRows, aCols] = a.shape.slice(-2);
    const [bRows, bCols] = b.shape.slice(-2);
    const m = transposeA ? aCols : aRows;
    const k = transposeA ? aRows : aCols;
    const n = transposeB ? bRows : bCols;
    if ((transposeB ? bCols : bRows) !== k) return stock(args);
    const backend = args.backend as KernelBackend;
    const transpose = getKernel(Transpose, 'wasm');
    if (transpose === undefined) throw new Error('Transpose is not registered on wasm');
    const temporaries: TensorInfo[] = [];
    const matrix = (t: TensorInfo, rows: number, cols: number): TensorInfo => ({
      dataId: t.dataId,
      shape: [rows, cols],
      dtype: 'float32',
    });
    const transposed = (t: TensorInfo): TensorInfo => {
      const out = transpose.kernelFunc({ inputs: { x: t }, backend, attrs: { perm: [1, 0] } }) as TensorInfo;
      temporaries.push(out);
      return out;
    };
    const product = (left: TensorInfo, right: TensorInfo): TensorInfo =>
      stock({ inputs: { a: left, b: right }, backend, attrs: { transposeA: false, transposeB: false } }) as TensorInfo;
    const aMatrix = matrix(a, aRows, aCols);
    const bMatrix = matrix(b, bRows, bCols);
    let out: TensorInfo;
    if (m < n) {
      // Cᵀ [n, m] = op(B)ᵀ [n, k] · op(A)ᵀ [k, m]
      const ct = product(transposeB ? bMatrix : transposed(bMatrix), transposeA ? aMatrix : transposed(aMatrix));
      temporaries.push(ct);
      out = transpose.kernelFunc({ inputs: { x: ct }, backend, attrs: { perm: [1, 0] } }) as TensorInfo;
    } else {
      out = product(transposeA ? transposed(aMatrix) : aMatrix, transposeB ? transposed(bMatrix) : bMatrix);
    }
    const wasm = backend as unknown as WasmBackendLike;
    for (const t of temporaries) wasm.disposeData(t.dataId);
    return { dataId: out.dataId, shape: rank === 3 ? [1, m, n] : [m, n], dtype: 'float32' };
  };
}

/** wasm BatchMatMul (wasmBatchMatMulKernel) around the stock kernel. */
export function wasmBatchMatMulConfig(): KernelConfig {
  const stock = getKernel(BatchMatMul, 'wasm');
  if (stock === undefined) throw new Error('no stock BatchMatMul on wasm to fall back to');
  return { kernelName: BatchMatMul, backendName: 'wasm', kernelFunc: wasmBatchMatMulKernel(stock.kernelFunc) };
}
