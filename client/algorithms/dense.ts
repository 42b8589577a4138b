/**
 * The dense baselines: FedAvg, FedAvg + local fine-tuning, and local-only
 * training. None of them prunes: their masks stay all ones, so the same
 * intersection average on the coordinator is plain FedAvg.
 */
import type { Dataset } from '../data/dataset.js';
import { createModel, type Model } from '../model.js';
import type { MaskMap, TensorMap } from '../prune.js';
import { evaluate, trainLocal } from '../train.js';
import { meanLoss, prepareAtKept, trainMasked } from './common.js';
import {
  fedavgConfig,
  fedavgFtConfig,
  localConfig,
  parseConfig,
  type FedAvgConfig,
  type FedAvgFtConfig,
  type LocalConfig,
} from './config.js';
import type { ClientAlgorithm, EvalResult, RoundContext, TrainOutcome } from './types.js';

async function trainDense(ctx: RoundContext): Promise<TrainOutcome> {
  const history = await trainMasked(ctx);
  return {
    masks: ctx.masks,
    loss: meanLoss(history),
    trainAccuracy: history[history.length - 1]?.accuracy ?? 0,
    decisions: [],
  };
}

/** FedAvg: train the received global model locally and upload the delta. */
export class FedAvg implements ClientAlgorithm {
  readonly name = 'fedavg' as const;
  readonly communicates = true;
  readonly config: Readonly<FedAvgConfig>;

  constructor(config: unknown = {}) {
    this.config = parseConfig(this.name, fedavgConfig, config);
  }

  get training(): FedAvgConfig {
    return this.config;
  }

  prepare = prepareAtKept;

  train(ctx: RoundContext): Promise<TrainOutcome> {
    return trainDense(ctx);
  }

  evaluate(ctx: RoundContext, dataset: Dataset): Promise<EvalResult> {
    return Promise.resolve(evaluate(ctx.model, dataset));
  }
}

/**
 * FedAvg + local fine-tuning: trains and uploads exactly like FedAvg; its
 * personalized accuracy is that of the last received global model after
 * `ftEpochs` local epochs on the client's own data, on a copy that is never
 * uploaded.
 */
export class FedAvgFt implements ClientAlgorithm {
  readonly name = 'fedavg-ft' as const;
  readonly communicates = true;
  readonly config: Readonly<FedAvgFtConfig>;
  /** The received model the current weights are exactly a fine-tune of (see evaluate). */
  #prepared: TensorMap | undefined;
  #trainedFrom: TensorMap | undefined;

  constructor(config: unknown = {}) {
    this.config = parseConfig(this.name, fedavgFtConfig, config);
  }

  get training(): FedAvgFtConfig {
    return this.config;
  }

  prepare(model: Model, masks: MaskMap, global: TensorMap): void {
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

  async evaluate(ctx: RoundContext, dataset: Dataset, received: TensorMap | undefined): Promise<EvalResult> {
    if (received === undefined || received === this.#trainedFrom) return evaluate(ctx.model, dataset);
    const copy = createModel(ctx.model.name, 0);
    try {
      copy.setWeights(received);
      copy.setPersonal(ctx.model.getPersonal());
      await trainLocal(copy, ctx.data.train, { ...ctx.training, epochs: this.config.ftEpochs, seed: ctx.seed });
      return evaluate(copy, dataset);
    } finally {
      copy.dispose();
    }
  }
}

/** Local-only training: never communicates; the lower bound on collaboration. */
export class LocalOnly implements ClientAlgorithm {
  readonly name = 'local' as const;
  readonly communicates = false;
  readonly config: Readonly<LocalConfig>;

  constructor(config: unknown = {}) {
    this.config = parseConfig(this.name, localConfig, config);
  }

  get training(): LocalConfig {
    return this.config;
  }

  prepare(): void {
    throw new Error('the local algorithm never receives a model');
  }

  train(ctx: RoundContext): Promise<TrainOutcome> {
    return trainDense(ctx);
  }

  evaluate(ctx: RoundContext, dataset: Dataset): Promise<EvalResult> {
    return Promise.resolve(evaluate(ctx.model, dataset));
  }
}
