/**
 * Ditto: two models per client. The global-track model trains as in FedAvg and
 * is the one uploaded; the personal model v never leaves the client and trains
 * on the same batches with a proximal pull toward the global model it received,
 * F_k(v) + lambda/2 ||v - w_global||^2, so that lambda slides from local-only
 * (0) to the global model (large). Personalized accuracy is v's.
 *
 * Reference: T. Li, S. Hu, A. Beirami, V. Smith, "Ditto: Fair and Robust
 * Federated Learning Through Personalization", ICML 2021;
 * github.com/litian96/ditto (flearn/trainers_MTL/ditto.py).
 *
 * Knobs: `lambda`, default 1 (the reference's Fashion-MNIST runs, `--lam=1`).
 * Both models train for the round's epochs on the same shuffled batches, as the
 * reference's local iterations do. The personal model starts as the first
 * global model received, and is part of the client's saved state. Masks stay
 * all ones, so the coordinator's average is FedAvg's.
 */
import { z } from 'zod';
import type { Dataset } from '../data/dataset.js';
import { createModel, type Model } from '../model.js';
import type { TensorMap } from '../prune.js';
import { evaluate } from '../train.js';
import { historyMetrics, prefixed, takePrefixed, trainDense, trainMasked } from './common.js';
import { trainingDefaults } from './config.js';
import { FederatedAlgorithmBase, defineAlgorithm } from './define.js';
import type { EvalResult, FederatedAlgorithm, HeldModel, RoundContext, TrainOutcome } from './types.js';

export const dittoConfig = z.strictObject({
  ...trainingDefaults,
  /** Weight of the personal model's pull toward the global one, lambda/2 ||v - w_global||^2. */
  lambda: z.number().min(0).default(1),
});
export type DittoConfig = z.infer<typeof dittoConfig>;

/** The personal model: weights and its own BatchNorm running statistics. */
interface PersonalModel {
  readonly weights: TensorMap;
  readonly statistics: TensorMap;
}

export class Ditto extends FederatedAlgorithmBase<DittoConfig> implements FederatedAlgorithm {
  #personal: PersonalModel | undefined;

  /** The personal model (undefined before the first round). */
  get personalModel(): PersonalModel | undefined {
    return this.#personal;
  }

  async train(ctx: RoundContext): Promise<TrainOutcome> {
    // The model holds the received global model: the anchor, and the personal model's start in round 1.
    const global = ctx.model.getWeights();
    const start = this.#personal ?? { weights: global, statistics: ctx.model.getPersonal() };
    const personalHistory = await this.#withPersonal(ctx.model, start, async (personal) => {
      const history = await trainMasked({ ...ctx, model: personal }, { proximal: { anchor: global, mu: this.config.lambda } });
      this.#personal = { weights: personal.getWeights(), statistics: personal.getPersonal() };
      return history;
    });
    // The global track: FedAvg's local update, which the participant uploads.
    await trainDense(ctx);
    // What this client's own model did this round.
    return { masks: ctx.masks, ...historyMetrics(personalHistory), decisions: [] };
  }

  /** The personal model's accuracy (the global one's before the first round). */
  override evaluate(ctx: RoundContext, dataset: Dataset): Promise<EvalResult> {
    const personal = this.#personal;
    if (personal === undefined) return Promise.resolve(evaluate(ctx.model, dataset));
    return this.#withPersonal(ctx.model, personal, (model) => Promise.resolve(evaluate(model, dataset)));
  }

  /** The personal model, not the global track the client holds and uploads (that one before the first round). */
  override personalizedModel(held: HeldModel): HeldModel {
    const p = this.#personal;
    return p === undefined ? held : { weights: p.weights, personal: p.statistics };
  }

  override exportState(): TensorMap {
    const p = this.#personal;
    return new Map(p === undefined ? [] : [...prefixed('personal', p.weights), ...prefixed('statistics', p.statistics)]);
  }

  override restoreState(state: TensorMap, model: Model): void {
    if (state.size === 0) {
      this.#personal = undefined;
      return;
    }
    const sizes = new Map([...model.params, ...model.personal].map(([name, v]) => [name, v.size]));
    const size = (name: string): number => sizes.get(name) as number;
    const weights = takePrefixed(state, 'personal', [...model.params.keys()], size);
    const statistics = takePrefixed(state, 'statistics', [...model.personal.keys()], size);
    const known = new Set([...prefixed('personal', weights), ...prefixed('statistics', statistics)].map(([key]) => key));
    const unknown = [...state.keys()].filter((key) => !known.has(key));
    if (unknown.length > 0) throw new Error(`the saved ditto state holds tensors it does not know: ${unknown.join(', ')}`);
    this.#personal = { weights, statistics };
  }

  /** Runs `fn` on a scratch model of `like`'s architecture holding `personal`, then frees it. */
  async #withPersonal<T>(like: Model, personal: PersonalModel, fn: (model: Model) => Promise<T>): Promise<T> {
    const model = createModel(like.name, 0);
    try {
      model.setWeights(personal.weights);
      model.setPersonal(personal.statistics);
      return await fn(model);
    } finally {
      model.dispose();
    }
  }
}

export const ditto = defineAlgorithm({
  name: 'ditto',
  summary: 'Ditto: a FedAvg global model plus a personal model pulled toward it by lambda/2 ||v - w_global||^2',
  reference:
    'Li et al., "Ditto: Fair and Robust Federated Learning Through Personalization", ICML 2021; github.com/litian96/ditto',
  kind: 'federated',
  schema: dittoConfig,
  evaluatesGlobalModel: true,
  implementation: Ditto,
});
