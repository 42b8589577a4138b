/**
 * Validated configuration of each client algorithm, with the reference defaults
 * (MMorafah/Sub-FedAvg: SGD lr 0.01 momentum 0.5, 5 local epochs, batch 10,
 * p 10%, target 30% (Un) / 50% (Hy dense layers), dist thresh 1e-4 (Un) /
 * 5e-4 (Hy dense), channel quantile 0.45, L1 on gamma 1e-4, channel Hamming
 * thresh 0.01, accuracy gate 50%).
 *
 * Every schema is strict: an unknown or misspelt key is an error, not a silently
 * ignored setting.
 */
import { z } from 'zod';
import { formatZodIssues } from '../../proto/zod-issues.js';

export const ALGORITHM_NAMES = ['subfedavg-un', 'subfedavg-hy', 'fedavg', 'fedavg-ft', 'local'] as const;
export type AlgorithmName = (typeof ALGORITHM_NAMES)[number];

export function isAlgorithmName(name: string): name is AlgorithmName {
  return (ALGORITHM_NAMES as readonly string[]).includes(name);
}

const epochs = z.number().int().min(1);
const batchSize = z.number().int().min(1);
const lr = z.number().positive();
const momentum = z.number().min(0).lt(1);

const training = {
  epochs: epochs.default(5),
  batchSize: batchSize.default(10),
  lr: lr.default(0.01),
  momentum: momentum.default(0.5),
};

/** Where the "accuracy after pruning" gate is measured. */
const gate = {
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

const unstructured = {
  /** Prune step: percent of the alive weights of each layer removed per accepted step. */
  p: z.number().gt(0).max(100).default(10),
  /** Stop pruning once this percent of the prunable weights is pruned. */
  target: z.number().min(0).lt(100).default(30),
  /** Prune only while the candidate masks of epoch 1 and the last epoch still differ by more than this. */
  distThresh: z.number().min(0).default(1e-4),
};

export const subfedavgUnConfig = z.strictObject({ ...training, ...gate, ...unstructured });

export const subfedavgHyConfig = z.strictObject({
  ...training,
  ...gate,
  // The unstructured rule on dense layers, with the hybrid defaults.
  p: unstructured.p,
  target: z.number().min(0).lt(100).default(50),
  distThresh: z.number().min(0).default(5e-4),
  /** Channels with |gamma| at or below the q-quantile of their layer are removed. */
  q: z.number().gt(0).lt(1).default(0.45),
  /** L1 penalty s*sign(gamma) added to gamma's gradient (0 disables). */
  l1: z.number().min(0).default(1e-4),
  /** Channel decision only when the epoch-1 and last-epoch channel masks differ by more than this. */
  channelDistThresh: z.number().min(0).default(0.01),
  /**
   * Per-layer floor, as a fraction of the layer's channels (rounded up): a layer
   * never keeps fewer. 0.5 gives the reference's cfg_prune [3, 8] on LeNet-5 CIFAR (6, 16 channels).
   */
  channelFloor: z.number().gt(0).max(1).default(0.5),
});

export const fedavgConfig = z.strictObject({ ...training });

export const fedavgFtConfig = z.strictObject({
  ...training,
  /** Local fine-tuning epochs applied to a copy of the global model before evaluation. */
  ftEpochs: z.number().int().min(1).default(5),
});

export const localConfig = z.strictObject({ ...training });

export type SubFedAvgUnConfig = z.infer<typeof subfedavgUnConfig>;
export type SubFedAvgHyConfig = z.infer<typeof subfedavgHyConfig>;
export type FedAvgConfig = z.infer<typeof fedavgConfig>;
export type FedAvgFtConfig = z.infer<typeof fedavgFtConfig>;
export type LocalConfig = z.infer<typeof localConfig>;
export type TrainingConfig = FedAvgConfig;
export type GateConfig = Pick<SubFedAvgUnConfig, 'accThresh' | 'gateOn' | 'valFraction'>;

/** Thrown for an invalid algorithm configuration; the message names every bad field. */
export class AlgorithmConfigError extends Error {
  override readonly name = 'AlgorithmConfigError';
}

export function parseConfig<S extends z.ZodType>(algorithm: string, schema: S, input: unknown): z.infer<S> {
  const result = schema.safeParse(input ?? {});
  if (!result.success) {
    const problems = formatZodIssues(result.error, { input: input ?? {}, root: '(config)' });
    throw new AlgorithmConfigError(`invalid ${algorithm} config: ${problems.join('; ')}`);
  }
  return result.data;
}

/** The training fields a coordinator may set per round (its task config). */
export const roundOverrides = z.object({
  epochs: epochs.optional(),
  batchSize: batchSize.optional(),
  lr: lr.optional(),
  momentum: momentum.optional(),
});
