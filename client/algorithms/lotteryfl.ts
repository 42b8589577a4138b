/**
 * LotteryFL: personalized lottery tickets. Each client grows a sparse
 * subnetwork of its own by iterative magnitude pruning with rewinding (the
 * lottery ticket hypothesis), and the coordinator averages each weight over the
 * clients whose ticket keeps it: the shared intersection rule, as for
 * Sub-FedAvg, its closest pruning-based competitor.
 *
 * The rule, at the start of a round, on the received model (global values at
 * the client's kept positions): if its accuracy on the gate data is above
 * `accThresh` and the pruned share of the prunable weights is below `target`,
 * prune `p` percent of each prunable layer's alive weights by magnitude (the
 * same per-layer percentile operator as Sub-FedAvg: client/prune.ts) and reset
 * every weight to its initial value at the kept positions (the rewind); then
 * train the round's epochs with masked gradients. Unlike Sub-FedAvg there is no
 * comparison of candidate masks and no accuracy check after pruning: pruning
 * happens whenever the received model is good enough, and a step may overshoot
 * the target (the reference's pruning rate goes 1, 0.9, 0.81, ... past 0.5).
 *
 * Reference: A. Li, J. Sun, B. Wang, L. Duan, S. Li, Y. Chen, H. Li,
 * "LotteryFL: Personalized and Communication-Efficient Federated Learning with
 * Lottery Ticket Hypothesis on Non-IID Datasets", arXiv:2008.03371, 2020;
 * github.com/charleslipku/LotteryFL (src/lotteryFL.py, src/options.py).
 *
 * Knobs, with the reference code's defaults: `p` 10 (prune_percent), `target`
 * 50 (prune_end_rate 0.5: stop once half the weights are gone), `accThresh` 0.2
 * (prune_start_acc); the gate measures on a validation split (`gateOn: 'val'`)
 * or, as the reference, on the client's test data (`'test'`). The initial
 * weights are those of the first global model the client received (for a
 * client present from round 1, the coordinator's initial model); they are part
 * of its saved state.
 */
import { z } from 'zod';
import type { Model } from '../model.js';
import { applyMasks, prunePercentile, prunedFraction, type MaskMap, type TensorMap } from '../prune.js';
import { evaluate } from '../train.js';
import { historyMetrics, prefixed, prunableNames, prepareAtKept, takePrefixed, trainMasked } from './common.js';
import { gateFields, pickGate, trainingDefaults } from './config.js';
import { FederatedAlgorithmBase, defineAlgorithm } from './define.js';
import type { FederatedAlgorithm, MaskDecisionReport, RoundContext, TrainOutcome } from './types.js';

export const lotteryflConfig = z.strictObject({
  ...trainingDefaults,
  ...gateFields,
  /** Prune only while the received model's gate accuracy is strictly above this (prune_start_acc). */
  accThresh: z.number().min(0).max(1).default(0.2),
  /** Percent of each prunable layer's alive weights pruned per step (prune_percent). */
  p: z.number().gt(0).max(100).default(10),
  /** No further step once this percent of the prunable weights is pruned (1 - prune_end_rate). */
  target: z.number().min(0).lt(100).default(50),
});
export type LotteryFLConfig = z.infer<typeof lotteryflConfig>;

/** One round's pruning decision on the received model: prune and rewind, or train on as it is. */
export interface LotteryDecision {
  readonly masks: MaskMap;
  /** The weights to train from: the received ones, or the initial ones at the new kept positions. */
  readonly weights: TensorMap;
  readonly report: MaskDecisionReport;
}

/**
 * LotteryFL's rule, pure: `received` (the global values at the kept positions of
 * `masks`), the `initial` weights to rewind to, and the received model's gate
 * accuracy. Prunes `p` percent of each of `names`' alive weights when the
 * accuracy is above `accThresh` and the pruned share below `target`.
 */
export function decideLottery(input: {
  readonly received: TensorMap;
  readonly initial: TensorMap;
  readonly masks: MaskMap;
  readonly names: readonly string[];
  readonly gateAccuracy: number;
  readonly p: number;
  readonly target: number;
  readonly accThresh: number;
}): LotteryDecision {
  const { received, masks, names, gateAccuracy, p } = input;
  const base = { kind: 'unstructured' as const, distance: 0, step: p, gateAccuracy };
  if (prunedFraction(masks, names) >= input.target) {
    return { masks, weights: received, report: { ...base, outcome: 'at-target' } };
  }
  if (!(gateAccuracy > input.accThresh)) return { masks, weights: received, report: { ...base, outcome: 'rejected' } };
  const pruned = prunePercentile(received, masks, p, names);
  return { masks: pruned, weights: applyMasks(input.initial, pruned), report: { ...base, outcome: 'accepted' } };
}

export class LotteryFL extends FederatedAlgorithmBase<LotteryFLConfig> implements FederatedAlgorithm {
  /** The weights a pruning step rewinds to: the first global model received (dense). */
  #initial: TensorMap | undefined;

  override prepare(model: Model, masks: MaskMap, global: TensorMap): void {
    this.#initial ??= new Map([...global].map(([name, w]) => [name, Float32Array.from(w)]));
    prepareAtKept(model, masks, global);
  }

  async train(ctx: RoundContext): Promise<TrainOutcome> {
    const { model } = ctx;
    const initial = this.#initial;
    if (initial === undefined) throw new Error('lotteryfl trains before it received a model');
    if (ctx.data.gate === undefined) throw new Error('lotteryfl prunes but the participant gave it no gate data');
    const names = prunableNames(model);
    const decision = decideLottery({
      received: model.getWeights(),
      initial,
      masks: ctx.masks,
      names,
      gateAccuracy: evaluate(model, ctx.data.gate).accuracy,
      p: this.config.p,
      target: this.config.target,
      accThresh: this.config.accThresh,
    });
    model.setWeights(decision.weights);
    const history = await trainMasked({ ...ctx, masks: decision.masks });
    const r = decision.report;
    ctx.log?.(
      `lotteryfl: ${r.outcome} (gate acc ${(100 * (r.gateAccuracy ?? 0)).toFixed(1)}%, pruned ${prunedFraction(decision.masks, names).toFixed(1)}%)`,
    );
    return { masks: decision.masks, ...historyMetrics(history), decisions: [r] };
  }

  override exportState(): TensorMap {
    return new Map(this.#initial === undefined ? [] : prefixed('initial', this.#initial));
  }

  override restoreState(state: TensorMap, model: Model): void {
    if (state.size === 0) {
      this.#initial = undefined;
      return;
    }
    const names = [...model.params.keys()];
    const initial = takePrefixed(state, 'initial', names, (name) => (model.params.get(name) as { size: number }).size);
    if (initial.size !== state.size) {
      const unknown = [...state.keys()].filter((key) => !names.some((name) => key === `initial/${name}`));
      throw new Error(`the saved lotteryfl state holds tensors it does not know: ${unknown.join(', ')}`);
    }
    this.#initial = initial;
  }
}

export const lotteryfl = defineAlgorithm({
  name: 'lotteryfl',
  summary: 'LotteryFL: personal lottery tickets by magnitude pruning with rewinding to the initial weights',
  reference:
    'Li et al., "LotteryFL: Personalized and Communication-Efficient Federated Learning with Lottery Ticket Hypothesis on Non-IID Datasets", arXiv:2008.03371, 2020; github.com/charleslipku/LotteryFL',
  kind: 'federated',
  schema: lotteryflConfig,
  gate: pickGate,
  implementation: LotteryFL,
});
