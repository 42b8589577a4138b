/**
 * Sub-FedAvg (Un): unstructured magnitude pruning of every conv kernel and dense
 * matrix (biases never), decided once per round from the candidate masks of
 * epoch 1 and the last epoch (ARCHITECTURE.md, "Sub-FedAvg, precisely").
 */
import type { Dataset } from '../data/dataset.js';
import { prunePercentile, prunedFraction, type MaskMap, type TensorMap } from '../prune.js';
import { evaluate } from '../train.js';
import { gateAccuracy, meanLoss, prepareAtKept, prunableNames, trainMasked } from './common.js';
import { parseConfig, subfedavgUnConfig, type SubFedAvgUnConfig } from './config.js';
import { decideUnstructured } from './decisions.js';
import type { ClientAlgorithm, EvalResult, RoundContext, TrainOutcome } from './types.js';

export class SubFedAvgUn implements ClientAlgorithm {
  readonly name = 'subfedavg-un' as const;
  readonly communicates = true;
  readonly config: Readonly<SubFedAvgUnConfig>;

  constructor(config: unknown = {}) {
    this.config = parseConfig(this.name, subfedavgUnConfig, config);
  }

  get gate(): SubFedAvgUnConfig {
    return this.config;
  }

  get training(): SubFedAvgUnConfig {
    return this.config;
  }

  prepare = prepareAtKept;

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
      loss: meanLoss(history),
      trainAccuracy: history[history.length - 1]?.accuracy ?? 0,
      decisions: [r],
    };
  }

  evaluate(ctx: RoundContext, dataset: Dataset): Promise<EvalResult> {
    return Promise.resolve(evaluate(ctx.model, dataset));
  }
}
