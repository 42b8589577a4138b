/**
 * FedProx: FedAvg whose local objective adds a proximal term toward the model
 * the client received, F_k(w) + mu/2 ||w - w_global||^2, so each gradient gets
 * mu (w - w_global) before the SGD step. It keeps clients with heterogeneous
 * data from drifting far from the global model during their local epochs.
 *
 * Reference: T. Li, A. K. Sahu, M. Zaheer, M. Sanjabi, A. Talwalkar, V. Smith,
 * "Federated Optimization in Heterogeneous Networks", MLSys 2020;
 * github.com/litian96/FedProx.
 *
 * Knobs: `mu`, default 0.01, from the paper's grid {0.001, 0.01, 0.1, 1} (its
 * best value depends on the dataset; the reference code's own default, 0, is
 * FedAvg). Masks stay all ones, so the coordinator's intersection average is
 * FedAvg's. Left out: the paper's partial work (stragglers running fewer local
 * epochs); every client trains the round's epochs.
 */
import { z } from 'zod';
import { trainDense } from './common.js';
import { trainingDefaults } from './config.js';
import { FederatedAlgorithmBase, defineAlgorithm } from './define.js';
import type { FederatedAlgorithm, RoundContext, TrainOutcome } from './types.js';

export const fedproxConfig = z.strictObject({
  ...trainingDefaults,
  /** Weight of the proximal term mu/2 ||w - w_global||^2 (0 is FedAvg). */
  mu: z.number().min(0).default(0.01),
});
export type FedProxConfig = z.infer<typeof fedproxConfig>;

export class FedProx extends FederatedAlgorithmBase<FedProxConfig> implements FederatedAlgorithm {
  train(ctx: RoundContext): Promise<TrainOutcome> {
    // The model holds the received global model: the anchor of the proximal term.
    return trainDense(ctx, { proximal: { anchor: ctx.model.getWeights(), mu: this.config.mu } });
  }
}

export const fedprox = defineAlgorithm({
  name: 'fedprox',
  summary: 'FedProx: FedAvg with a proximal term mu/2 ||w - w_global||^2 in each local objective',
  reference: 'Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020; github.com/litian96/FedProx',
  kind: 'federated',
  schema: fedproxConfig,
  evaluatesGlobalModel: true,
  implementation: FedProx,
});
