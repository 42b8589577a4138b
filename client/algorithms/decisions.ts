/**
 * The Sub-FedAvg mask decisions, as pure rules over arrays plus one callback
 * that measures the gate accuracy of candidate weights. Kept apart from the
 * training loop so each branch (stable, at target, capped step, gate accept or
 * reject) is tested on hand-made masks.
 */
import {
  applyChannelMask,
  applyMasks,
  cappedPruneStep,
  channelDistance,
  channelMaskOf,
  maskDistance,
  prunePercentile,
  prunedFraction,
  type MaskMap,
  type TensorMap,
} from '../prune.js';
import type { Mask } from '../../proto/mask.js';
import type { ChannelGroup } from '../model.js';
import type { MaskDecisionReport } from './types.js';

/** Accuracy (fraction) of the model holding `weights` on the gate data. */
export type GateAccuracy = (weights: TensorMap) => number | Promise<number>;

export interface Decision {
  readonly masks: MaskMap;
  readonly weights: TensorMap;
  readonly report: MaskDecisionReport;
}

export interface UnstructuredInput {
  /** Weights after the last local epoch. */
  readonly weights: TensorMap;
  /** The mask before this round. */
  readonly masks: MaskMap;
  /** Candidate computed after epoch 1: prune(p) of the epoch-1 weights. */
  readonly m1: MaskMap;
  /** Layers the rule prunes (and measures the distance over). */
  readonly names: readonly string[];
  /** The client's pruned percent that is compared with the target. */
  readonly prunedPercent: number;
  readonly p: number;
  readonly target: number;
  readonly distThresh: number;
  readonly accThresh: number;
  readonly gateAccuracy: GateAccuracy;
}

/**
 * Sub-FedAvg (Un) rule: m2 = prune(p) of the final weights; if
 * dist(m1, m2) > distThresh and pruned < target, prune (with the capped step
 * near the target), apply, and accept only if gate accuracy > accThresh; else
 * keep the old mask and weights.
 */
export async function decideUnstructured(input: UnstructuredInput): Promise<Decision> {
  const { weights, masks, names, prunedPercent } = input;
  let m2 = prunePercentile(weights, masks, input.p, names);
  const distance = maskDistance(input.m1, m2, names);
  const keep = (outcome: MaskDecisionReport['outcome'], step: number, gateAccuracy?: number): Decision => ({
    masks,
    weights,
    report: { kind: 'unstructured', outcome, distance, step, ...(gateAccuracy === undefined ? {} : { gateAccuracy }) },
  });
  if (!(distance > input.distThresh)) return keep('stable', input.p);
  if (!(prunedPercent < input.target)) return keep('at-target', input.p);
  const step = cappedPruneStep(input.p, input.target, prunedPercent);
  if (step !== input.p) m2 = prunePercentile(weights, masks, step, names);
  const pruned = applyMasks(weights, m2);
  const accuracy = await input.gateAccuracy(pruned);
  if (!(accuracy > input.accThresh)) return keep('rejected', step, accuracy);
  return {
    masks: m2,
    weights: pruned,
    report: { kind: 'unstructured', outcome: 'accepted', distance, step, gateAccuracy: accuracy },
  };
}

export interface ChannelInput {
  readonly weights: TensorMap;
  readonly masks: MaskMap;
  readonly groups: readonly ChannelGroup[];
  readonly shapes: ReadonlyMap<string, readonly number[]>;
  /** Channel selections computed after epoch 1 and after the last epoch, one per group. */
  readonly first: readonly Mask[];
  readonly last: readonly Mask[];
  readonly q: number;
  readonly channelDistThresh: number;
  readonly accThresh: number;
  readonly gateAccuracy: GateAccuracy;
}

/**
 * Sub-FedAvg (Hy) channel rule: if the epoch-1 and last-epoch channel selections
 * differ on more than channelDistThresh of the alive channels, remove the
 * last-epoch selection's channels (zeroing every tensor they touch) and accept
 * only if gate accuracy > accThresh.
 */
export async function decideChannels(input: ChannelInput): Promise<Decision> {
  const { weights, masks, groups } = input;
  const alive = groups.map((g) => channelMaskOf(masks, g));
  const distance = channelDistance(input.first, input.last, alive);
  const keep = (outcome: MaskDecisionReport['outcome'], gateAccuracy?: number): Decision => ({
    masks,
    weights,
    report: { kind: 'channel', outcome, distance, step: input.q, ...(gateAccuracy === undefined ? {} : { gateAccuracy }) },
  });
  if (!(distance > input.channelDistThresh)) return keep('stable');
  let candidate = masks;
  groups.forEach((group, g) => {
    candidate = applyChannelMask(candidate, group, input.last[g], input.shapes);
  });
  const pruned = applyMasks(weights, candidate);
  const accuracy = await input.gateAccuracy(pruned);
  if (!(accuracy > input.accThresh)) return keep('rejected', accuracy);
  return {
    masks: candidate,
    weights: pruned,
    report: { kind: 'channel', outcome: 'accepted', distance, step: input.q, gateAccuracy: accuracy },
  };
}

/** Pruned percent over the named tensors; re-exported for the algorithms' bookkeeping. */
export { prunedFraction };
