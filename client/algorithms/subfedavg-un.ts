/**
 * Sub-FedAvg (Un): unstructured magnitude pruning of every conv kernel and dense
 * matrix (biases never), decided once per round from the candidate masks of
 * epoch 1 and the last epoch ("Sub-FedAvg, as implemented" in ARCHITECTURE.md at the repository root).
 */
import { z } from 'zod';
import { prunePercentile, prunedFraction, type MaskMap, type TensorMap } from '../prune.js';
import { gateAccuracy, historyMetrics, prunableNames, trainMasked } from './common.js';
import { SUB_FEDAVG_REFERENCE, gateFields, pickGate, pruningTrainingDefaults, unstructuredFields } from './config.js';
import { decideUnstructured } from './decisions.js';
import { FederatedAlgorithmBase, defineAlgorithm } from './define.js';
import type { FederatedAlgorithm, RoundContext, TrainOutcome } from './types.js';

/** Reference defaults: p 10%, target 30%, dist thresh 1e-4, gate 50%. */
export const subfedavgUnConfig = z.strictObject({ ...pruningTrainingDefaults, ...gateFields, ...unstructuredFields });
export type SubFedAvgUnConfig = z.infer<typeof subfedavgUnConfig>;

export class SubFedAvgUn extends FederatedAlgorithmBase<SubFedAvgUnConfig> implements FederatedAlgorithm {
  async train(ctx: RoundContext): Promise<TrainOutcome> {
    const { model } = ctx;
    const names = prunableNames(model);
    let m1: MaskMap = ctx.masks;
    const history = await trainMasked(ctx, {
      onEpochEnd: (epoch) => {
        if (epoch === 1) m1 = prunePercentile(model.getWeights(), ctx.masks, this.config.p, names);
      },
    });
    const trained: TensorMap = model.getWeights();
    const decision = await decideUnstructured({
      weights: trained,
      masks: ctx.masks,
      m1,
      names,
      prunedPercent: prunedFraction(ctx.masks, names),
      p: this.config.p,
      target: this.config.target,
      distThresh: this.config.distThresh,
      accThresh: this.config.accThresh,
      gateAccuracy: gateAccuracy(model, ctx.data.gate),
    });
    model.setWeights(decision.weights);
    const r = decision.report;
    ctx.log?.(
      `unstructured: ${r.outcome} (dist ${r.distance.toExponential(2)}, step ${r.step.toFixed(2)}%` +
        `${r.gateAccuracy === undefined ? '' : `, gate acc ${(100 * r.gateAccuracy).toFixed(1)}%`}` +
        `, pruned ${prunedFraction(decision.masks, names).toFixed(1)}%)`,
    );
    return {
      masks: decision.masks,
      ...historyMetrics(history),
      decisions: [r],
    };
  }
}

export const subfedavgUn = defineAlgorithm({
  name: 'subfedavg-un',
  summary: 'Sub-FedAvg (Un): each client prunes single weights (magnitude) into a personal subnetwork',
  reference: SUB_FEDAVG_REFERENCE,
  kind: 'federated',
  schema: subfedavgUnConfig,
  gate: pickGate,
  implementation: SubFedAvgUn,
});
