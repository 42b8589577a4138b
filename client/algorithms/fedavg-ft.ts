/**
 * FedAvg + local fine-tuning: trains and uploads exactly like FedAvg; its
 * personalized accuracy is that of the last received global model after
 * `ftEpochs` local epochs on the client's own data, on a copy that is never
 * uploaded.
 */
import { z } from 'zod';
import { createModel, type Model } from '../model.js';
import type { Dataset } from '../data/dataset.js';
import type { MaskMap, TensorMap } from '../prune.js';
import { evaluate, trainLocal } from '../train.js';
import { prepareAtKept, roundTrainOptions, trainDense } from './common.js';
import { trainingDefaults } from './config.js';
import { FederatedAlgorithmBase, defineAlgorithm } from './define.js';
import type { FederatedAlgorithm, EvalResult, RoundContext, TrainOutcome } from './types.js';

export const fedavgFtConfig = z.strictObject({
  ...trainingDefaults,
  /** Local fine-tuning epochs applied to a copy of the global model before evaluation. */
  ftEpochs: z.number().int().min(1).default(5),
});
export type FedAvgFtConfig = z.infer<typeof fedavgFtConfig>;

export class FedAvgFt extends FederatedAlgorithmBase<FedAvgFtConfig> implements FederatedAlgorithm {
  /** The received model the current weights are exactly a fine-tune of (see evaluate). */
  #prepared: TensorMap | undefined;
  #trainedFrom: TensorMap | undefined;

  override prepare(model: Model, masks: MaskMap, global: TensorMap): void {
    prepareAtKept(model, masks, global);
    this.#prepared = global;
    this.#trainedFrom = undefined;
  }

  async train(ctx: RoundContext): Promise<TrainOutcome> {
    const outcome = await trainDense(ctx);
    // Local training from the received model for ftEpochs epochs IS the fine-tune:
    // remember it so evaluate() need not train a copy a second time.
    this.#trainedFrom = ctx.training.epochs === this.config.ftEpochs ? this.#prepared : undefined;
    return outcome;
  }

  override async evaluate(ctx: RoundContext, dataset: Dataset, received: TensorMap | undefined): Promise<EvalResult> {
    if (received === undefined || received === this.#trainedFrom) return evaluate(ctx.model, dataset);
    const copy = createModel(ctx.model.name, 0);
    try {
      copy.setWeights(received);
      copy.setPersonal(ctx.model.getPersonal());
      await trainLocal(copy, ctx.data.train, { ...roundTrainOptions(ctx), epochs: this.config.ftEpochs });
      return evaluate(copy, dataset);
    } finally {
      copy.dispose();
    }
  }
}

export const fedavgFt = defineAlgorithm({
  name: 'fedavg-ft',
  summary: 'FedAvg + local fine-tuning: FedAvg, evaluated after ftEpochs local epochs on a copy of the global model',
  reference: 'Wang et al., "Federated Evaluation of On-device Personalization", arXiv:1910.10252, 2019',
  kind: 'federated',
  schema: fedavgFtConfig,
  evaluatesGlobalModel: true,
  implementation: FedAvgFt,
});
