/**
 * Gradient functions for the ops our models use.
 *
 * The Node build of @tensorflow/tfjs-core registers no gradients at all (the union
 * package @tensorflow/tfjs does that, and we do not depend on it); its per-op gradient
 * files are ESM with extension-less imports that Node cannot load. So we register the
 * few we need here, written against public tfjs ops. Existing registrations (e.g. by
 * tfjs-node or a full tfjs) are left alone.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { GradConfig, NamedAttrMap, Tensor } from '@tensorflow/tfjs-core';
import { backend_util, util } from '@tensorflow/tfjs-core';
import { columnSum } from './column_sum.js';

/** Sums `grad` (of the broadcast output shape) back down to `shape`. */
function unbroadcast(grad: Tensor, shape: number[]): Tensor {
  const axes = backend_util.getReductionAxes(shape, grad.shape);
  if (axes.length === 0) return tf.reshape(grad, shape);
  const leading = axes.every((axis, i) => axis === i);
  if (leading && grad.rank > 1) {
    // A bias gradient: summing the leading axes away. cpu and wasm Sum kernels transpose
    // the reduced axes innermost first (a full copy); columnSum is one pass.
    const outer = axes.reduce((n, axis) => n * grad.shape[axis], 1);
    const inner = grad.size / outer;
    return tf.reshape(columnSum(tf.reshape(grad, [outer, inner])), shape);
  }
  return tf.reshape(tf.sum(grad, axes), shape);
}

/** dy of a reduction over `attrs.axis`, expanded back to x's shape (scaled by `scale`). */
function expandReduced(dy: Tensor, x: Tensor, attrs: NamedAttrMap, scale: number): Tensor {
  const axes = util.parseAxisParam(attrs.axis as number | number[], x.shape);
  const kept = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const expanded = tf.mul(tf.reshape(dy, kept), tf.ones(x.shape, 'float32'));
  return scale === 1 ? expanded : tf.mul(expanded, scale);
}

function reducedSize(x: Tensor, attrs: NamedAttrMap): number {
  const axes = util.parseAxisParam(attrs.axis as number | number[], x.shape);
  return axes.reduce((n, a) => n * x.shape[a], 1);
}

const GRADIENTS: GradConfig[] = [
  {
    kernelName: tf.Add,
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, [a, b]) => ({ a: () => unbroadcast(dy as Tensor, a.shape), b: () => unbroadcast(dy as Tensor, b.shape) }),
  },
  {
    kernelName: tf.Sub,
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, [a, b]) => ({
      a: () => unbroadcast(dy as Tensor, a.shape),
      b: () => unbroadcast(tf.neg(dy as Tensor), b.shape),
    }),
  },
  {
    kernelName: tf.Multiply,
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, [a, b]) => ({
      a: () => unbroadcast(tf.mul(dy as Tensor, tf.cast(b, 'float32')), a.shape),
      b: () => unbroadcast(tf.mul(dy as Tensor, tf.cast(a, 'float32')), b.shape),
    }),
  },
  { kernelName: tf.Neg, gradFunc: (dy) => ({ x: () => tf.neg(dy as Tensor) }) },
  { kernelName: tf.Cast, gradFunc: (dy) => ({ x: () => (dy as Tensor).clone() }) },
  {
    kernelName: tf.Reshape,
    inputsToSave: ['x'],
    gradFunc: (dy, [x]) => ({ x: () => tf.reshape(dy as Tensor, x.shape) }),
  },
  {
    kernelName: tf.Sum,
    inputsToSave: ['x'],
    gradFunc: (dy, [x], attrs) => ({ x: () => expandReduced(dy as Tensor, x, attrs, 1) }),
  },
  {
    kernelName: tf.Mean,
    inputsToSave: ['x'],
    gradFunc: (dy, [x], attrs) => ({ x: () => expandReduced(dy as Tensor, x, attrs, 1 / reducedSize(x, attrs)) }),
  },
  {
    kernelName: tf.Relu,
    inputsToSave: ['x'],
    gradFunc: (dy, [x]) => ({ x: () => tf.mul(dy as Tensor, tf.step(x)) }),
  },
  {
    kernelName: tf.Square,
    inputsToSave: ['x'],
    gradFunc: (dy, [x]) => ({ x: () => tf.mul(dy as Tensor, tf.mul(x, 2)) }),
  },
  {
    kernelName: tf.Rsqrt,
    inputsToSave: ['x'],
    // d/dx x^(-1/2) = -1/2 x^(-3/2) = -1/2 * rsqrt(x) / x
    gradFunc: (dy, [x]) => ({ x: () => tf.mul(dy as Tensor, tf.mul(tf.div(tf.rsqrt(x), x), -0.5)) }),
  },
  {
    kernelName: tf.BatchMatMul,
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, [a, b], attrs) => {
      const g = dy as Tensor;
      const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
      // With C = op(A)·op(B): dA = dC·op(B)ᵀ (transposed back if A was), likewise dB.
      if (!transposeA && !transposeB) return { a: () => tf.matMul(g, b, false, true), b: () => tf.matMul(a, g, true, false) };
      if (!transposeA && transposeB) return { a: () => tf.matMul(g, b, false, false), b: () => tf.matMul(g, a, true, false) };
      if (transposeA && !transposeB) return { a: () => tf.matMul(b, g, false, true), b: () => tf.matMul(a, g, false, false) };
      return { a: () => tf.matMul(b, g, true, true), b: () => tf.matMul(g, a, true, true) };
    },
  },
  {
    kernelName: tf.MaxPool,
    inputsToSave: ['x'],
    outputsToSave: [true],
    gradFunc: (dy, [x, y], attrs) => ({
      x: () =>
        tf.engine().runKernel<Tensor>(
          tf.MaxPoolGrad,
          { dy: dy as Tensor, input: x, output: y },
          {
            filterSize: attrs.filterSize,
            strides: attrs.strides,
            pad: attrs.pad,
            dimRoundingMode: attrs.dimRoundingMode,
          },
        ),
    }),
  },
  {
    kernelName: tf.Conv2D,
    inputsToSave: ['x', 'filter'],
    gradFunc: (dy, [x, filter], attrs) => {
      const dilations = attrs.dilations as number | [number, number];
      if (!(dilations === 1 || (Array.isArray(dilations) && dilations.every((d) => d === 1)))) {
        throw new Error(`conv2d gradient: dilations ${String(dilations)} are not supported (only 1)`);
      }
      const common = {
        strides: attrs.strides,
        pad: attrs.pad,
        dataFormat: attrs.dataFormat,
        dimRoundingMode: attrs.dimRoundingMode,
      };
      return {
        x: () =>
          tf.engine().runKernel<Tensor>(
            tf.Conv2DBackpropInput,
            { dy: dy as Tensor, filter },
            {
              ...common,
              inputShape: x.shape,
            },
          ),
        filter: () =>
          tf.engine().runKernel<Tensor>(
            tf.Conv2DBackpropFilter,
            { x, dy: dy as Tensor },
            {
              ...common,
              filterShape: filter.shape,
            },
          ),
      };
    },
  },
];

let done = false;

/** Idempotent; keeps any gradient someone else registered first. */
export function registerGradients(): void {
  if (done) return;
  for (const config of GRADIENTS) {
    if (tf.getGradient(config.kernelName) === undefined) tf.registerGradient(config);
  }
  done = true;
}
