/**
 * LG-FedAvg: "think locally, act globally". Each client keeps a personal body
 * (the lower layers: its own representation of its own data) and shares only
 * the head (the last layers), which the coordinator averages. The client trains
 * every layer each round and uploads the head; the body goes PERSONAL
 * (proto/PROTOCOL.md, section 5.1) and never leaves the client. FedRep's mirror
 * image.
 *
 * Reference: P. P. Liang, T. Liu, L. Ziyin, N. B. Allen, R. P. Auerbach,
 * D. Brent, R. Salakhutdinov, L.-P. Morency, "Think Locally, Act Globally:
 * Federated Learning with Local and Global Representations", arXiv:2001.01523,
 * 2020; github.com/pliang279/LG-FedAvg.
 *
 * Knobs: `sharedLayers`, default 2 (the reference's `--num_layers_keep 2` for
 * its CIFAR-10 CNN, a LeNet-5 like ours). Left out: the reference starts every
 * client from a model pre-trained with FedAvg; here they start from the
 * initial model. No pruning.
 */
import { z } from 'zod';
import type { Model } from '../model.js';
import { lastLayersTensors, layerSplitProblem, trainDense } from './common.js';
import { trainingDefaults } from './config.js';
import { FederatedAlgorithmBase, defineAlgorithm } from './define.js';
import type { FederatedAlgorithm, RoundContext, TrainOutcome } from './types.js';

export const lgFedavgConfig = z.strictObject({
  ...trainingDefaults,
  /** The last this many weight layers are shared (the global head); the layers below stay personal. */
  sharedLayers: z.int().min(1).default(2),
});
export type LgFedAvgConfig = z.infer<typeof lgFedavgConfig>;

export class LgFedAvg extends FederatedAlgorithmBase<LgFedAvgConfig> implements FederatedAlgorithm {
  override personalTensors(model: Model): ReadonlySet<string> {
    const shared = lastLayersTensors(model, this.config.sharedLayers);
    return new Set(model.manifest.map((s) => s.name).filter((name) => !shared.has(name)));
  }

  /** Every layer trains; only the head is uploaded (the participant sends the body as PERSONAL). */
  train(ctx: RoundContext): Promise<TrainOutcome> {
    return trainDense(ctx);
  }
}

export const lgFedavg = defineAlgorithm({
  name: 'lg-fedavg',
  summary: 'LG-FedAvg: a personal body (never uploaded) and a shared head, averaged by the coordinator',
  reference:
    'Liang et al., "Think Locally, Act Globally: Federated Learning with Local and Global Representations", arXiv:2001.01523, 2020; github.com/pliang279/LG-FedAvg',
  kind: 'federated',
  schema: lgFedavgConfig,
  modelProblem: (model, config) => layerSplitProblem('lg-fedavg', 'sharedLayers', model, config.sharedLayers),
  implementation: LgFedAvg,
});
