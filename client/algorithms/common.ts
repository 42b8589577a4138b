/** Pieces every client algorithm shares: receiving the model, masked training, the gate. */
import * as tf from '@tensorflow/tfjs-core';
import type { Dataset } from '../data/dataset.js';
import type { Model } from '../model.js';
import { applyMasks, type MaskMap, type TensorMap } from '../prune.js';
import { evaluate, trainLocal, type EpochStats } from '../train.js';
import type { RoundContext, TrainOutcome } from './types.js';

/**
 * w = global at the kept positions, zero elsewhere. BatchNorm running statistics
 * are not part of the manifest, so they stay the client's own.
 */
export function prepareAtKept(model: Model, masks: MaskMap, global: TensorMap): void {
  model.setWeights(applyMasks(global, masks));
}

export interface MaskedTrainingOptions {
  /** Gradients of these tensors get s*sign(value) added before masking (L1 on BN gamma). */
  readonly l1?: { readonly names: ReadonlySet<string>; readonly s: number };
  readonly onEpochEnd?: (epoch: number, stats: EpochStats) => void | Promise<void>;
}

/**
 * Local epochs with every gradient multiplied by its mask before the SGD step, so
 * pruned weights (zero) stay exactly zero. Masks without a zero are skipped.
 */
export async function trainMasked(ctx: RoundContext, opts: MaskedTrainingOptions = {}): Promise<EpochStats[]> {
  const maskTensors = new Map<string, tf.Tensor>();
  for (const spec of ctx.model.manifest) {
    const mask = ctx.masks.get(spec.name);
    if (mask === undefined) throw new Error(`no mask for tensor '${spec.name}'`);
    if (!mask.isFull) maskTensors.set(spec.name, tf.tensor(Float32Array.from(mask.toBytes()), spec.shape, 'float32'));
  }
  const l1 = opts.l1 !== undefined && opts.l1.s > 0 ? opts.l1 : undefined;
  const needsHook = maskTensors.size > 0 || l1 !== undefined;
  try {
    return await trainLocal(ctx.model, ctx.data.train, {
      ...ctx.training,
      seed: ctx.seed,
      ...(needsHook
        ? {
            gradTransform: (name: string, grad: tf.Tensor): tf.Tensor => {
              let g = grad;
              if (l1 !== undefined && l1.names.has(name)) {
                const value = ctx.model.params.get(name);
                if (value !== undefined) g = tf.add(g, tf.mul(tf.sign(value), l1.s));
              }
              const mask = maskTensors.get(name);
              return mask === undefined ? g : tf.mul(g, mask);
            },
          }
        : {}),
      ...(opts.onEpochEnd !== undefined ? { onEpochEnd: opts.onEpochEnd } : {}),
    });
  } finally {
    for (const t of maskTensors.values()) t.dispose();
  }
}

/** Masked local training without a mask decision: the dense baselines (their masks stay all ones). */
export async function trainDense(ctx: RoundContext): Promise<TrainOutcome> {
  const history = await trainMasked(ctx);
  return {
    masks: ctx.masks,
    loss: meanLoss(history),
    trainAccuracy: history[history.length - 1]?.accuracy ?? 0,
    decisions: [],
  };
}

export function meanLoss(history: readonly EpochStats[]): number {
  return history.length === 0 ? 0 : history.reduce((sum, e) => sum + e.loss, 0) / history.length;
}

/**
 * The gate: accuracy of `weights` on the gate data. Leaves the model holding
 * `weights`; the caller restores whatever it decides to keep.
 */
export function gateAccuracy(model: Model, data: Dataset | undefined): (weights: TensorMap) => number {
  return (weights) => {
    if (data === undefined) throw new Error('this algorithm prunes but the participant gave it no gate data');
    model.setWeights(weights);
    return evaluate(model, data).accuracy;
  };
}

/** Names of the manifest's prunable tensors (conv kernels and dense matrices). */
export function prunableNames(model: Model): string[] {
  return model.manifest.filter((s) => s.prunable).map((s) => s.name);
}

export function shapesOf(model: Model): Map<string, readonly number[]> {
  return new Map(model.manifest.map((s) => [s.name, s.shape]));
}
