/**
 * The building blocks of the client algorithms' config schemas, with the
 * reference defaults (MMorafah/Sub-FedAvg: SGD lr 0.01 momentum 0.5, 5 local
 * epochs, batch 10, accuracy gate 50%). Each algorithm composes its own strict
 * schema from these in its own file; every field has a default, so `{}` parses
 * to the reference configuration, and an unknown or misspelt key is an error,
 * not a silently ignored setting.
 */
import { z } from 'zod';
import { PRUNING_EPOCHS_REASON, PRUNING_MIN_EPOCHS, trainingFields, type TrainingConfig } from '../../proto/training-config.js';
import { formatZodIssues } from '../../proto/zod-issues.js';

export type { TrainingConfig };

/** The training fields with the reference values. A coordinator's task config overrides them per round. */
export const trainingDefaults = {
  epochs: trainingFields.epochs.default(5),
  batchSize: trainingFields.batchSize.default(10),
  lr: trainingFields.lr.default(0.01),
  momentum: trainingFields.momentum.default(0.5),
  /** Off unless set (client/train.ts: the validation split, patience, minDelta). */
  earlyStopping: trainingFields.earlyStopping.optional(),
  /** Off unless set (client/data/augment.ts). */
  augmentation: trainingFields.augmentation.optional(),
};

/**
 * Sub-FedAvg decides each round's mask from two candidates, pruned after local
 * epoch 1 and after the last epoch. With a single epoch both are the same mask,
 * their distance is 0, and the client would train dense forever while the user
 * believes it prunes. So 1 is an error naming the field, both in the
 * algorithm's own config and in a coordinator's task config (the client refuses
 * that task rather than train without pruning: see Participant).
 */
const pruningEpochsError = `expected at least ${PRUNING_MIN_EPOCHS}: ${PRUNING_EPOCHS_REASON}`;
export const pruningTrainingDefaults = {
  ...trainingDefaults,
  epochs: z.int({ error: pruningEpochsError }).min(PRUNING_MIN_EPOCHS, { error: pruningEpochsError }).default(5),
};

/** Where the "accuracy after pruning" gate is measured. */
export const gateFields = {
  /** Accept a pruned mask only if accuracy after pruning is strictly above this (fraction). */
  accThresh: z.number().min(0).max(1).default(0.5),
  /**
   * 'val' (default): a held-out split of the client's training data.
   * 'test': the client's test data, as the reference does (the `paper` preset).
   */
  gateOn: z.enum(['val', 'test']).default('val'),
  /** Share of the training data held out for the gate when gateOn = 'val'. */
  valFraction: z.number().gt(0).lt(1).default(0.1),
};

export interface GateConfig {
  readonly accThresh: number;
  readonly gateOn: 'val' | 'test';
  readonly valFraction: number;
}

/** The paper and the reference implementation of both Sub-FedAvg variants. */
export const SUB_FEDAVG_REFERENCE =
  'Vahidian et al., "Personalized Federated Learning by Structured and Unstructured Pruning under Data Heterogeneity", ICDCS Workshops 2021; github.com/MMorafah/Sub-FedAvg';

/** Sub-FedAvg's unstructured rule, with the Un defaults (Hy overrides target and distThresh). */
export const unstructuredFields = {
  /** Prune step: percent of the alive weights of each layer removed per accepted step. */
  p: z.number().gt(0).max(100).default(10),
  /** Stop pruning once this percent of the prunable weights is pruned. */
  target: z.number().min(0).lt(100).default(30),
  /** Prune only while the candidate masks of epoch 1 and the last epoch still differ by more than this. */
  distThresh: z.number().min(0).default(1e-4),
};

/** Thrown for an invalid algorithm configuration (or an unknown algorithm); the message names every bad field. */
export class AlgorithmConfigError extends Error {
  override readonly name = 'AlgorithmConfigError';

  /** @param problems one entry per bad field, `field: what was expected, got value` */
  constructor(
    message: string,
    readonly problems: readonly string[] = [message],
  ) {
    super(message);
  }
}

export function parseConfig<S extends z.ZodType>(algorithm: string, schema: S, input: unknown): z.infer<S> {
  const result = schema.safeParse(input ?? {});
  if (!result.success) {
    const problems = formatZodIssues(result.error, { input: input ?? {}, root: '(config)' });
    throw new AlgorithmConfigError(`invalid ${algorithm} config: ${problems.join('; ')}`, problems);
  }
  return result.data;
}

/** The gate fields of a pruning algorithm's config (its descriptor's `gate`). */
export function pickGate(config: GateConfig): GateConfig {
  return { accThresh: config.accThresh, gateOn: config.gateOn, valFraction: config.valFraction };
}
