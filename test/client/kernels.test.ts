import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { initBackend, type BackendChoice } from '../../client/backend.js';
import { SeededRandom } from '../../proto/random.js';
import { COLUMN_SUM_KERNEL } from '../../client/kernels/column_sum.js';
import { SGD_MOMENTUM_KERNEL } from '../../client/kernels/sgd_momentum.js';

type Pad = 'same' | 'valid' | number;

interface Case {
  batch: number;
  size: [number, number];
  inC: number;
  outC: number;
  kernel: [number, number];
  strides: [number, number];
  pad: Pad;
}

function randomArray(rng: SeededRandom, n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.next() * 2 - 1;
  return a;
}

function randomCases(seed: number, count: number): Case[] {
  const rng = new SeededRandom(seed);
  const pick = <T>(xs: readonly T[]): T => xs[rng.int(xs.length)];
  const cases: Case[] = [];
  for (let i = 0; i < count; i++) {
    // Square kernels at stride 1 half of the time: the fast path of Conv2DBackpropInput.
    const kh = 1 + rng.int(4);
    const kw = rng.next() < 0.5 ? kh : 1 + rng.int(4);
    const unitStride = rng.next() < 0.5;
    cases.push({
      batch: 1 + rng.int(3),
      size: [kh + rng.int(6), kw + rng.int(6)],
      inC: 1 + rng.int(4),
      outC: 1 + rng.int(5),
      kernel: [kh, kw],
      strides: unitStride ? [1, 1] : [1 + rng.int(3), 1 + rng.int(3)],
      pad: pick<Pad>(['same', 'valid', 0, 1, 2]),
    });
  }
  return cases;
}

/** dL/dW of L(W) = sum(conv2d(x, W) * r), through the registered Conv2DBackpropFilter. */
function kernelGradient(x: tf.Tensor4D, filterShape: number[], r: tf.Tensor4D, c: Case): Float32Array {
  const dw = tf.engine().runKernel<tf.Tensor>(
    'Conv2DBackpropFilter',
    { x, dy: r },
    {
      strides: c.strides,
      pad: c.pad,
      dataFormat: 'NHWC',
      filterShape,
    },
  );
  const values = dw.dataSync() as Float32Array;
  dw.dispose();
  return values;
}

/**
 * Central finite differences of L(W) = sum(conv2d(x, W) * r) computed with the forward
 * conv. L is linear in W, so a large step is exact up to float rounding.
 */
function numericalGradient(x: tf.Tensor4D, w: Float32Array, filterShape: number[], r: tf.Tensor4D, c: Case): Float32Array {
  const loss = (values: Float32Array): number =>
    tf.tidy(
      () =>
        tf
          .sum(tf.mul(tf.conv2d(x, tf.tensor4d(values, filterShape as [number, number, number, number]), c.strides, c.pad), r))
          .dataSync()[0],
    );
  const step = 0.5;
  const grad = new Float32Array(w.length);
  for (let i = 0; i < w.length; i++) {
    const plus = Float32Array.from(w);
    const minus = Float32Array.from(w);
    plus[i] += step;
    minus[i] -= step;
    grad[i] = (loss(plus) - loss(minus)) / (2 * step);
  }
  return grad;
}

interface Problem {
  c: Case;
  x: Float32Array;
  w: Float32Array;
  r: Float32Array;
  outShape: number[];
  filterShape: number[];
  numerical: Float32Array;
  /** Finite-difference input gradient at a few coordinates of x. */
  inputProbes: { index: number; value: number }[];
  /** conv2d(x, w) by the stock cpu kernel. */
  forward: Float32Array;
}

/**
 * Random problems with their finite-difference gradients, computed once on the stock
 * cpu backend. (The stock wasm forward conv cannot be the reference: XNNPACK aborts on
 * some kernels taller than wide, e.g. 3x1.)
 */
async function referenceProblems(): Promise<Problem[]> {
  await initBackend('cpu', { customKernels: false });
  const rng = new SeededRandom(7);
  return randomCases(42, 24).map((c) => {
    const x = randomArray(rng, c.batch * c.size[0] * c.size[1] * c.inC);
    const filterShape = [c.kernel[0], c.kernel[1], c.inC, c.outC];
    const w = randomArray(
      rng,
      filterShape.reduce((a, b) => a * b),
    );
    const xt = tf.tensor4d(x, [c.batch, c.size[0], c.size[1], c.inC]);
    const outShape = tf.tidy(
      () => tf.conv2d(xt, tf.tensor4d(w, filterShape as [number, number, number, number]), c.strides, c.pad).shape,
    );
    const r = randomArray(
      rng,
      outShape.reduce((a, b) => a * b),
    );
    const rt = tf.tensor4d(r, outShape);
    const numerical = numericalGradient(xt, w, filterShape, rt, c);
    const wt = tf.tensor4d(w, filterShape as [number, number, number, number]);
    const inputLoss = (values: Float32Array): number =>
      tf.tidy(() => tf.sum(tf.mul(tf.conv2d(tf.tensor4d(values, xt.shape), wt, c.strides, c.pad), rt)).dataSync()[0]);
    const inputProbes = Array.from({ length: 10 }, () => {
      const index = rng.int(x.length);
      const step = 0.5; // L is linear in x too
      const plus = Float32Array.from(x);
      const minus = Float32Array.from(x);
      plus[index] += step;
      minus[index] -= step;
      return { index, value: (inputLoss(plus) - inputLoss(minus)) / (2 * step) };
    });
    const forward = tf.tidy(() => tf.conv2d(xt, wt, c.strides, c.pad).dataSync() as Float32Array);
    tf.dispose([xt, rt, wt]);
    return { c, x, w, r, outShape, filterShape, numerical, inputProbes, forward };
  });
}

interface PoolProblem {
  shape: [number, number, number, number];
  filterSize: number;
  strides: number;
  pad: 'same' | 'valid' | number;
  x: Float32Array;
  dy: Float32Array;
  dyShape: number[];
  dx: Float32Array; // from the stock cpu kernel
}

/** Random max-pool gradients from the stock cpu kernel; x has many ties (small integers). */
function poolReferences(): PoolProblem[] {
  const rng = new SeededRandom(11);
  const out: PoolProblem[] = [];
  for (let i = 0; i < 24; i++) {
    // Every fourth case is the LeNet pool (2x2, stride 2, no padding), which has its own loop.
    const lenet = i % 4 === 0;
    const filterSize = lenet ? 2 : 1 + rng.int(3);
    const shape: [number, number, number, number] = [
      1 + rng.int(2),
      filterSize + rng.int(6),
      filterSize + rng.int(6),
      1 + rng.int(3),
    ];
    const strides = lenet ? 2 : 1 + rng.int(3);
    const pad = lenet ? 'valid' : (['same', 'valid', 0, 1] as const)[rng.int(4)];
    const ties = i % 2 === 0;
    const x = Float32Array.from({ length: shape.reduce((a, b) => a * b) }, () => (ties ? rng.int(4) : rng.normal()));
    const xt = tf.tensor4d(x, shape);
    const y = tf.maxPool(xt, filterSize, strides, pad);
    const dy = randomArray(rng, y.size);
    const dyt = tf.tensor(dy, y.shape);
    const dxt = tf.engine().runKernel<tf.Tensor>(
      'MaxPoolGrad',
      { dy: dyt, input: xt, output: y },
      {
        filterSize,
        strides,
        pad,
      },
    );
    out.push({ shape, filterSize, strides, pad, x, dy, dyShape: y.shape, dx: dxt.dataSync() as Float32Array });
    tf.dispose([xt, y, dyt, dxt]);
  }
  return out;
}

interface MatMulProblem {
  a: tf.Tensor;
  b: tf.Tensor;
  transposeA: boolean;
  transposeB: boolean;
  product: Float32Array; // from the stock cpu kernel
}

/** Random products from the stock cpu kernel: ranks 2 and 3, every transpose, odd sizes. */
function matMulReferences(): MatMulProblem[] {
  const rng = new SeededRandom(13);
  const out: MatMulProblem[] = [];
  for (let i = 0; i < 32; i++) {
    // Every transpose pair with rank 2, batch 1 (rerouted on wasm) and larger batches; wide and tall outputs.
    const size = i < 16 ? 9 : 40;
    const [n, k, m] = [1 + rng.int(size), 1 + rng.int(size), 1 + rng.int(size)];
    const batch = [[], [1], [2 + rng.int(2)]][i % 3];
    const transposeA = (i & 2) !== 0;
    const transposeB = (i & 4) !== 0;
    const shapeA = [...batch, ...(transposeA ? [k, n] : [n, k])];
    const shapeB = [...batch, ...(transposeB ? [m, k] : [k, m])];
    const a = tf.tensor(
      randomArray(
        rng,
        shapeA.reduce((x, y) => x * y, 1),
      ),
      shapeA,
    );
    const b = tf.tensor(
      randomArray(
        rng,
        shapeB.reduce((x, y) => x * y, 1),
      ),
      shapeB,
    );
    const product = tf.tidy(() => tf.matMul(a, b, transposeA, transposeB).dataSync() as Float32Array);
    out.push({ a, b, transposeA, transposeB, product });
  }
  return out;
}

const problems = referenceProblems();
// Still on the stock cpu kernels: the promises run in order before any test.
const poolProblems = problems.then(poolReferences);
const matMulProblems = poolProblems.then(matMulReferences);

describe.each<BackendChoice>(['cpu', 'wasm'])('BatchMatMul on %s', (backend) => {
  it('matches the stock cpu kernel for ranks 2 and 3 and every transpose', async () => {
    const cases = await matMulProblems;
    await initBackend(backend);
    for (const { a, b, transposeA, transposeB, product } of cases) {
      const got = tf.tidy(() => tf.matMul(a, b, transposeA, transposeB).dataSync());
      const label = `[${String(a.shape)}]${transposeA ? 'ᵀ' : ''}·[${String(b.shape)}]${transposeB ? 'ᵀ' : ''}`;
      expect(got.length, label).toBe(product.length);
      for (let i = 0; i < product.length; i++)
        expect(Math.abs(got[i] - product[i]), `${label}[${i}]`).toBeLessThan(1e-5 * (1 + Math.abs(product[i])));
    }
  });
});

describe('Conv2D (forward) on cpu', () => {
  it('matches the stock cpu kernel on random shapes, strides and paddings', async () => {
    const cases = await problems;
    await initBackend('cpu');
    for (const { c, x, w, filterShape, forward } of cases) {
      const got = tf.tidy(() =>
        tf
          .conv2d(
            tf.tensor4d(x, [c.batch, c.size[0], c.size[1], c.inC]),
            tf.tensor4d(w, filterShape as [number, number, number, number]),
            c.strides,
            c.pad,
          )
          .dataSync(),
      );
      expect(got.length).toBe(forward.length);
      for (let i = 0; i < forward.length; i++)
        expect(Math.abs(got[i] - forward[i]), `${JSON.stringify(c)} y[${i}]`).toBeLessThan(1e-5 * (1 + Math.abs(forward[i])));
    }
  });
});

describe.each<BackendChoice>(['cpu', 'wasm'])('Conv2DBackpropFilter on %s', (backend) => {
  it('matches finite differences of the forward conv on random shapes, strides and paddings', async () => {
    const cases = await problems;
    await initBackend(backend);
    // Every padding mode and stride > 1 appear in the sample.
    expect(new Set(cases.map((p) => p.c.pad)).size).toBe(5);
    expect(cases.some((p) => p.c.strides[0] > 1 && p.c.strides[1] > 1)).toBe(true);
    // ... and so does wasm's convolution path (stride 1, square output, several input channels).
    expect(
      cases.filter((p) => p.c.strides[0] === 1 && p.c.strides[1] === 1 && p.outShape[1] === p.outShape[2] && p.c.inC > 1).length,
    ).toBeGreaterThan(1);
    for (const { c, x, r, outShape, filterShape, numerical } of cases) {
      const xt = tf.tensor4d(x, [c.batch, c.size[0], c.size[1], c.inC]);
      const rt = tf.tensor4d(r, outShape as [number, number, number, number]);
      const got = kernelGradient(xt, filterShape, rt, c);
      expect(got.length).toBe(numerical.length);
      for (let i = 0; i < numerical.length; i++) {
        expect(Math.abs(got[i] - numerical[i]), `${JSON.stringify(c)} element ${i}`).toBeLessThan(
          1e-3 * (1 + Math.abs(numerical[i])),
        );
      }
      tf.dispose([xt, rt]);
    }
  });

  it('computes Conv2DBackpropInput that matches finite differences of the forward conv', async () => {
    const cases = await problems;
    await initBackend(backend);
    expect(
      cases.filter((p) => p.c.kernel[0] === p.c.kernel[1] && p.c.strides[0] === 1 && p.c.strides[1] === 1).length,
    ).toBeGreaterThan(3);
    for (const { c, w, r, outShape, filterShape, inputProbes } of cases) {
      const wt = tf.tensor4d(w, filterShape as [number, number, number, number]);
      const rt = tf.tensor4d(r, outShape as [number, number, number, number]);
      const dx = tf.engine().runKernel<tf.Tensor>(
        'Conv2DBackpropInput',
        { dy: rt, filter: wt },
        {
          strides: c.strides,
          pad: c.pad,
          dataFormat: 'NHWC',
          inputShape: [c.batch, c.size[0], c.size[1], c.inC],
        },
      );
      expect(dx.shape).toEqual([c.batch, c.size[0], c.size[1], c.inC]);
      const got = dx.dataSync();
      for (const { index, value } of inputProbes) {
        expect(Math.abs(got[index] - value), `${JSON.stringify(c)} dx[${index}]`).toBeLessThan(1e-3 * (1 + Math.abs(value)));
      }
      tf.dispose([wt, rt, dx]);
    }
  });

  it('computes MaxPoolGrad like the stock cpu kernel, ties included', async () => {
    const cases = await poolProblems;
    await initBackend(backend);
    for (const p of cases) {
      const xt = tf.tensor4d(p.x, p.shape);
      const y = tf.maxPool(xt, p.filterSize, p.strides, p.pad);
      const dyt = tf.tensor(p.dy, p.dyShape);
      const dx = tf.engine().runKernel<tf.Tensor>(
        'MaxPoolGrad',
        { dy: dyt, input: xt, output: y },
        {
          filterSize: p.filterSize,
          strides: p.strides,
          pad: p.pad,
        },
      );
      const got = dx.dataSync();
      const label = JSON.stringify({ ...p, x: undefined, dy: undefined, dx: undefined });
      // Same routing (same zeros); overlapping windows may sum in another order.
      expect(
        Array.from(got, (v) => v === 0),
        label,
      ).toEqual(Array.from(p.dx, (v) => v === 0));
      for (let i = 0; i < got.length; i++) expect(Math.abs(got[i] - p.dx[i]), `${label} dx[${i}]`).toBeLessThan(1e-5);
      tf.dispose([xt, y, dyt, dx]);
    }
  });

  it('agrees with tf.grad of a conv in a training-sized shape (batch 10, 12x12x10 -> 20 channels)', async () => {
    await initBackend(backend);
    const rng = new SeededRandom(3);
    const x = tf.tensor4d(randomArray(rng, 10 * 12 * 12 * 10), [10, 12, 12, 10]);
    const w = tf.tensor4d(randomArray(rng, 5 * 5 * 10 * 20), [5, 5, 10, 20]);
    const r = tf.tensor4d(randomArray(rng, 10 * 8 * 8 * 20), [10, 8, 8, 20]);
    const got = tf
      .grad((filter: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(x, filter as tf.Tensor4D, 1, 'valid'), r)))(w)
      .dataSync();
    // Reference by the definition, in float64.
    const xs = x.dataSync();
    const rs = r.dataSync();
    for (const [kh, kw, ci, co] of [
      [0, 0, 0, 0],
      [4, 4, 9, 19],
      [2, 3, 5, 7],
      [1, 0, 8, 2],
    ]) {
      let want = 0;
      for (let b = 0; b < 10; b++)
        for (let oh = 0; oh < 8; oh++)
          for (let ow = 0; ow < 8; ow++)
            want += xs[((b * 12 + oh + kh) * 12 + ow + kw) * 10 + ci] * rs[((b * 8 + oh) * 8 + ow) * 20 + co];
      expect(got[((kh * 5 + kw) * 10 + ci) * 20 + co]).toBeCloseTo(want, 3);
    }
    tf.dispose([x, w, r]);
  });
});

describe.each<BackendChoice>(['cpu', 'wasm'])('column sums (bias gradients) on %s', (backend) => {
  it('SubfedColumnSum matches tf.sum over the leading axes', async () => {
    await initBackend(backend);
    const rng = new SeededRandom(11);
    for (const shape of [
      [7, 3],
      [2, 5, 4, 6],
      [1, 1],
      [10, 12, 12, 10],
    ]) {
      const x = tf.tensor(
        randomArray(
          rng,
          shape.reduce((a, b) => a * b, 1),
        ),
        shape,
      );
      const got = tf.engine().runKernel<tf.Tensor>(COLUMN_SUM_KERNEL, { x }).dataSync();
      const want = tf
        .sum(
          x,
          shape.slice(0, -1).map((_, i) => i),
        )
        .dataSync();
      expect(got.length).toBe(shape[shape.length - 1]);
      for (let i = 0; i < want.length; i++) expect(got[i]).toBeCloseTo(want[i], 4);
      x.dispose();
    }
  });

  it('gives the gradient of a broadcast bias add', async () => {
    await initBackend(backend);
    const rng = new SeededRandom(12);
    const x = tf.tensor4d(randomArray(rng, 3 * 4 * 4 * 5), [3, 4, 4, 5]);
    const r = tf.tensor4d(randomArray(rng, 3 * 4 * 4 * 5), [3, 4, 4, 5]);
    const b = tf.tensor1d(randomArray(rng, 5));
    const got = tf
      .grad((bias: tf.Tensor) => tf.sum(tf.mul(tf.add(x, bias), r)))(b)
      .dataSync();
    const want = tf.sum(r, [0, 1, 2]).dataSync();
    for (let i = 0; i < 5; i++) expect(got[i]).toBeCloseTo(want[i], 4);
    tf.dispose([x, r, b]);
  });
});

describe.each<BackendChoice>(['cpu', 'wasm'])('fused SGD-momentum kernel on %s', (backend) => {
  it('gives bit-for-bit the tf-op step, a zero gradient leaving weight and buffer unchanged', async () => {
    await initBackend(backend);
    const rng = new SeededRandom(14);
    const n = 1000;
    const w = tf.tensor1d(randomArray(rng, n));
    const buf = tf.tensor1d(randomArray(rng, n));
    const gValues = randomArray(rng, n).map((v, i) => (i % 3 === 0 ? 0 : v));
    const g = tf.tensor1d(gValues);
    const attrs = { lr: 0.01, momentum: 0.5 };
    const [wOut, bufOut] = tf.engine().runKernel<tf.Tensor[]>(SGD_MOMENTUM_KERNEL, { w, buf: tf.zerosLike(w), g }, attrs);
    const fused = tf.engine().runKernel<tf.Tensor[]>(SGD_MOMENTUM_KERNEL, { w, buf, g }, attrs);
    const next = tf.add(tf.mul(buf, attrs.momentum), g);
    const want = [tf.sub(w, tf.mul(next, attrs.lr)).dataSync(), next.dataSync()];
    const got = [fused[0].dataSync(), fused[1].dataSync()];
    for (let i = 0; i < n; i++) {
      expect(Object.is(got[0][i], want[0][i]), `w[${i}]`).toBe(true);
      expect(Object.is(got[1][i], want[1][i]), `buf[${i}]`).toBe(true);
    }
    // From a zero buffer, a zero gradient keeps the weight bit-for-bit.
    const w0 = w.dataSync();
    const w1 = wOut.dataSync();
    const b1 = bufOut.dataSync();
    for (let i = 0; i < n; i += 3) {
      expect(Object.is(w1[i], w0[i])).toBe(true);
      expect(b1[i]).toBe(0);
    }
    tf.dispose([w, buf, g, wOut, bufOut, ...fused, next]);
  });
});

describe.each<BackendChoice>(['cpu', 'wasm'])('Conv2DBackpropFilter with one input channel on %s', (backend) => {
  it('matches the definition for valid stride-1 convolutions (the wide-row path on wasm), LeNet conv1 included', async () => {
    await initBackend(backend);
    const rng = new SeededRandom(15);
    for (const [batch, side, k, outC] of [
      [3, 9, 3, 4],
      [2, 7, 5, 3],
      [1, 6, 2, 1],
      [10, 28, 5, 10],
    ]) {
      const out = side - k + 1;
      const x = tf.tensor4d(randomArray(rng, batch * side * side), [batch, side, side, 1]);
      const dy = tf.tensor4d(randomArray(rng, batch * out * out * outC), [batch, out, out, outC]);
      const got = tf
        .engine()
        .runKernel<tf.Tensor>(
          'Conv2DBackpropFilter',
          { x, dy },
          {
            strides: 1,
            pad: 'valid',
            dataFormat: 'NHWC',
            filterShape: [k, k, 1, outC],
          },
        )
        .dataSync();
      const xs = x.dataSync();
      const ds = dy.dataSync();
      for (let kh = 0; kh < k; kh++) {
        for (let kw = 0; kw < k; kw++) {
          for (let co = 0; co < outC; co++) {
            let want = 0;
            for (let b = 0; b < batch; b++)
              for (let oh = 0; oh < out; oh++)
                for (let ow = 0; ow < out; ow++)
                  want += xs[(b * side + oh + kh) * side + ow + kw] * ds[((b * out + oh) * out + ow) * outC + co];
            expect(got[(kh * k + kw) * outC + co], `[${batch},${side},${k},${outC}] at ${kh},${kw},${co}`).toBeCloseTo(want, 3);
          }
        }
      }
      tf.dispose([x, dy]);
    }
  });
});
