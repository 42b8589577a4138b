/**
 * The local-training hyperparameters, one schema for both sides of the wire.
 *
 * A coordinator sets them in server.json's `training` (validated at start-up)
 * and sends them with every task as `config_json`; each client parses that JSON
 * with this same schema and lays the fields that are set over its algorithm's
 * own config (an absent field keeps the client's value). The object is strict:
 * a misspelt field (`"epoch": 5`) is an error on both sides, never a silently
 * dropped setting, which is also why a field added here reaches server and
 * client together.
 *
 * What a field must hold for a given client algorithm is the algorithm's rule,
 * not the wire's: the coordinator does not know which algorithm its clients
 * run. Sub-FedAvg needs `epochs` >= 2 (it compares the candidate masks after
 * epoch 1 and after the last epoch, so with one epoch it could never prune);
 * its clients refuse a task whose `epochs` is 1, naming the field, rather than
 * train without ever pruning (client/algorithms/config.ts), and a coordinator
 * configured with 1 says so when it starts (server/config.ts, configWarnings).
 */
import { z } from 'zod';
import { formatZodIssues } from './zod-issues.js';

const positiveInt = () => z.int({ error: 'expected a positive integer' }).min(1, { error: 'expected a positive integer' });

/** The rule of each field, shared by the client algorithms' own config schemas. */
export const trainingFields = {
  /** Local epochs per round. */
  epochs: positiveInt(),
  batchSize: positiveInt(),
  /** SGD learning rate. */
  lr: z.number({ error: 'expected a positive number' }).positive({ error: 'expected a positive number' }),
  /** SGD momentum. */
  momentum: z
    .number({ error: 'expected a number in [0, 1)' })
    .min(0, { error: 'expected a number in [0, 1)' })
    .lt(1, { error: 'expected a number in [0, 1)' }),
  /**
   * Stop a round's local training once the accuracy on the client's validation
   * split (held out of its training data, the same examples every round) has not
   * risen by more than `minDelta` for `patience` epochs. Absent: every epoch runs.
   */
  earlyStopping: z.strictObject(
    {
      /** Epochs without improvement before stopping. */
      patience: positiveInt().default(2),
      /** An epoch improves when its validation accuracy beats the best so far by more than this (a fraction). */
      minDelta: z
        .number({ error: 'expected a number in [0, 1)' })
        .min(0, { error: 'expected a number in [0, 1)' })
        .lt(1, { error: 'expected a number in [0, 1)' })
        .default(0),
    },
    { error: 'expected an object { patience, minDelta }' },
  ),
  /**
   * Seeded image augmentation of every training epoch: a random shift of up to
   * `shift` pixels on each axis with black fill (a random crop of the image padded
   * by `shift`), and with `flip` a left-right mirror half of the time. MNIST-like
   * data: { "shift": 2 }; CIFAR: { "shift": 4, "flip": true }. Absent: none.
   */
  augmentation: z.strictObject(
    {
      shift: z.int({ error: 'expected an integer in [0, 16]' }).min(0, { error: 'expected an integer in [0, 16]' }).max(16, {
        error: 'expected an integer in [0, 16]',
      }),
      flip: z.boolean({ error: 'expected true or false' }).default(false),
    },
    { error: 'expected an object { shift, flip }' },
  ),
};

export type EarlyStoppingConfig = z.output<typeof trainingFields.earlyStopping>;
export type AugmentationConfig = z.output<typeof trainingFields.augmentation>;

/** The fewest local epochs Sub-FedAvg trains with, and why: the client's rule, which the coordinator warns about. */
export const PRUNING_MIN_EPOCHS = 2;
export const PRUNING_EPOCHS_REASON = 'Sub-FedAvg compares the masks after epoch 1 and the last epoch, so 1 epoch never prunes';

export type TrainingField = keyof typeof trainingFields;
export const TRAINING_FIELDS: readonly TrainingField[] = [
  'epochs',
  'batchSize',
  'lr',
  'momentum',
  'earlyStopping',
  'augmentation',
];

/** What a coordinator sets: every field optional, unknown fields refused. */
export const trainingOverridesSchema = z.strictObject(
  {
    epochs: trainingFields.epochs.optional(),
    batchSize: trainingFields.batchSize.optional(),
    lr: trainingFields.lr.optional(),
    momentum: trainingFields.momentum.optional(),
    earlyStopping: trainingFields.earlyStopping.optional(),
    augmentation: trainingFields.augmentation.optional(),
  },
  { error: 'expected a JSON object' },
);
export type TrainingOverrides = z.output<typeof trainingOverridesSchema>;

/** What one round of local training runs with: every field set but the optional techniques (absent = off). */
export const trainingConfigSchema = z.strictObject(
  {
    epochs: trainingFields.epochs,
    batchSize: trainingFields.batchSize,
    lr: trainingFields.lr,
    momentum: trainingFields.momentum,
    earlyStopping: trainingFields.earlyStopping.optional(),
    augmentation: trainingFields.augmentation.optional(),
  },
  { error: 'expected a JSON object' },
);
export type TrainingConfig = z.output<typeof trainingConfigSchema>;

/** A training config that does not parse; the message names every bad field. */
export class TrainingConfigError extends Error {
  override readonly name = 'TrainingConfigError';

  constructor(readonly problems: readonly string[]) {
    super(problems.join('; '));
  }
}

/**
 * The fields a coordinator set (`undefined` and `null` set none). `root` names
 * the whole value in an error about it ("task config: expected a JSON object, got 5").
 */
export function parseTrainingOverrides(input: unknown, root = '(root)'): TrainingOverrides {
  const value = input ?? {};
  const result = trainingOverridesSchema.safeParse(value);
  if (!result.success) throw new TrainingConfigError(formatZodIssues(result.error, { input: value, root }));
  return result.data;
}

/** `base` with every field `overrides` sets laid over it. */
export function applyTrainingOverrides<T extends TrainingConfig>(base: T, overrides: TrainingOverrides): T {
  const set = Object.entries(overrides).filter(([, value]) => value !== undefined);
  return { ...base, ...Object.fromEntries(set) };
}

/** The training fields of a larger config (an algorithm's), without the rest. */
export function pickTraining(config: TrainingConfig): TrainingConfig {
  return {
    epochs: config.epochs,
    batchSize: config.batchSize,
    lr: config.lr,
    momentum: config.momentum,
    ...(config.earlyStopping !== undefined ? { earlyStopping: config.earlyStopping } : {}),
    ...(config.augmentation !== undefined ? { augmentation: config.augmentation } : {}),
  };
}
