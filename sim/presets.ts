/**
 * The simulator's configuration: one zod schema, the two presets, and the
 * translation of command-line flags (strings) into preset overrides.
 *
 * Every flag is parsed by its own small parser so that a bad value produces an
 * error naming the flag and the value ("--rounds: expected a positive integer,
 * got 'abc'"), never a generic schema dump.
 */
import os from 'node:os';
import { z } from 'zod';
import { formatZodIssues } from '../proto/zod-issues.js';
import { TRAINING_FIELDS, trainingConfigSchema, type TrainingConfig, type TrainingField } from '../proto/training-config.js';
import {
  algorithmNames,
  describeAlgorithm,
  isAlgorithmName,
  type AlgorithmConfigInput,
  type AlgorithmName,
} from '../client/algorithms/registry.js';
import { BACKEND_CHOICES } from '../client/backend.js';
import { modelStructure } from '../client/model.js';
import { MODEL_NAMES, type ModelName } from '../client/model-names.js';
import { VALUE_ENCODING_NAMES } from '../proto/messages.js';
import { DATASET_NAMES } from './datasets.js';
import { SeededRandom, deriveSeed } from '../proto/random.js';

export type { AlgorithmName };

export const PRESET_NAMES = ['quick', 'paper'] as const;
export type PresetName = (typeof PRESET_NAMES)[number];

const positiveInt = z.number().int().min(1);
const fraction = z.number().gt(0).lte(1);

const partitionSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('shards'), shardSize: positiveInt, shardsPerClient: positiveInt }),
  z.object({ kind: z.literal('dirichlet'), alpha: z.number().positive() }),
  z.object({ kind: z.literal('iid') }),
]);
export type PartitionConfig = z.infer<typeof partitionSchema>;

/**
 * Per algorithm, its own fields (client/algorithms/<name>.ts: prune step and
 * target, gate, fine-tuning epochs, ...), each optional: an absent one takes
 * the algorithm's reference default. The training fields are not among them:
 * the coordinator sends `training` to every client, so they are set once, run-wide.
 */
export type AlgorithmConfigs = { readonly [N in AlgorithmName]?: Omit<AlgorithmConfigInput<N>, TrainingField> };

export const simConfigSchema = z.strictObject({
  preset: z.enum(PRESET_NAMES),
  /** The algorithms to run, one after another, on the identical split and seeds. */
  algorithms: z.array(z.enum(algorithmNames())).min(1),
  /** See AlgorithmConfigs; each entry is checked by its algorithm's own schema (validateSimConfig). */
  algorithmConfigs: z.partialRecord(z.enum(algorithmNames()), z.record(z.string(), z.unknown())),
  dataset: z.enum(DATASET_NAMES),
  /** The folder holding the dataset's files (`--data`, as `subfed client --data`); see sim/datasets.ts. */
  data: z.string().min(1).optional(),
  clients: positiveInt,
  partition: partitionSchema,
  /**
   * Cap on each client's test set (a seeded random subset); null keeps all of
   * it. Evaluating dominates a short run: under the shard split every client
   * tests on all test images of its labels (2,000 on full Fashion-MNIST).
   */
  maxTestPerClient: positiveInt.nullable(),
  fraction,
  rounds: positiveInt,
  /** What the coordinator sends with every task (server.json's `training`): every algorithm's local training. */
  training: trainingConfigSchema,
  weighting: z.enum(['examples', 'unweighted']),
  /** Model of every algorithm that needs no BatchNorm. */
  model: z.enum(MODEL_NAMES),
  /** Model of the algorithms that need BatchNorm after their convs (requiresBatchNorm in the registry: subfedavg-hy). */
  batchNormModel: z.enum(MODEL_NAMES),
  evalEvery: positiveInt,
  workers: positiveInt,
  values: z.enum(VALUE_ENCODING_NAMES),
  seed: z.number().int().min(0),
  backend: z.enum(BACKEND_CHOICES),
  out: z.string().min(1).optional(),
  /** How the coordinator aggregates (server.json's `aggregation`); absent = the intersection mean. */
  aggregation: z
    .union([z.literal('mean'), z.strictObject({ kind: z.literal('trimmed-mean'), trim: z.number().min(0).lt(0.5) })])
    .optional(),
  /** The coordinator's updateNormBound and updateNormMode; absent = the server's defaults. */
  updateNorm: z.strictObject({ bound: z.number().positive(), mode: z.enum(['reject', 'clip']) }).optional(),
  /**
   * ATTACK SIMULATION, for robustness experiments only: a seeded share of the
   * clients (attackers(), at least one) upload their delta negated and scaled
   * by `scale` (sign flipping). Lives in sim/ only: no coordinator or
   * `subfed client` code knows of it. Absent = every client is honest.
   */
  attack: z.strictObject({ kind: z.literal('sign-flip'), fraction: fraction, scale: z.number().positive() }).optional(),
});
export type SimConfig = Omit<z.infer<typeof simConfigSchema>, 'algorithmConfigs'> & {
  readonly algorithmConfigs: AlgorithmConfigs;
};

const defaultWorkers = Math.max(1, os.availableParallelism());

/**
 * `paper` reproduces MMorafah/Sub-FedAvg's Fashion-MNIST setting: the
 * algorithms' own defaults are the reference's (p 10%, target 30% Un / 50% Hy,
 * ...), plus its choice of gating pruning on the client's TEST accuracy.
 * `quick` is the README's first command: 20 clients on the embedded 10k-image
 * split, finishing in a few minutes on two cores while still showing accuracy
 * rising and the byte savings. Its gate uses a validation split (our default).
 */
export const PRESETS: Record<PresetName, SimConfig> = {
  paper: {
    preset: 'paper',
    algorithms: ['subfedavg-un'],
    algorithmConfigs: {
      'subfedavg-un': { gateOn: 'test' },
      'subfedavg-hy': { gateOn: 'test' },
      // LotteryFL's reference measures its pruning condition on the client's test data too.
      lotteryfl: { gateOn: 'test' },
      'fedavg-ft': { ftEpochs: 1 },
    },
    dataset: 'fashion-mnist',
    clients: 100,
    partition: { kind: 'shards', shardSize: 250, shardsPerClient: 2 },
    maxTestPerClient: null,
    fraction: 0.1,
    rounds: 50,
    training: { epochs: 5, batchSize: 10, lr: 0.01, momentum: 0.5 },
    weighting: 'unweighted',
    model: 'lenet5-mnist',
    batchNormModel: 'lenet5-bn-mnist',
    evalEvery: 10,
    workers: defaultWorkers,
    values: 'f32',
    seed: 1,
    backend: 'auto',
  },
  quick: {
    preset: 'quick',
    algorithms: ['subfedavg-un'],
    // A larger step than the paper so that sparsity visibly grows within 10 rounds.
    algorithmConfigs: {
      'subfedavg-un': { p: 15, gateOn: 'val' },
      'subfedavg-hy': { p: 15, gateOn: 'val' },
      'fedavg-ft': { ftEpochs: 1 },
    },
    dataset: 'fashion-mnist',
    clients: 20,
    partition: { kind: 'shards', shardSize: 200, shardsPerClient: 2 },
    maxTestPerClient: 400,
    fraction: 0.5,
    rounds: 10,
    training: { epochs: 2, batchSize: 10, lr: 0.01, momentum: 0.5 },
    weighting: 'unweighted',
    model: 'lenet5-mnist',
    batchNormModel: 'lenet5-bn-mnist',
    evalEvery: 5,
    workers: defaultWorkers,
    values: 'f32',
    seed: 1,
    backend: 'auto',
  },
};

/** A bad flag value, a bad preset name, or an inconsistent combination. */
export class SimConfigError extends Error {
  override readonly name = 'SimConfigError';
}

/**
 * Flags as commander hands them over: every value a string, absent when not
 * given. Each flag is the kebab-case of the config field it sets (`--eval-every`
 * sets `evalEvery`), with two exceptions: `--algorithm x` and `--compare a,b`
 * both set `algorithms`, and `--epochs` sets `training.epochs`.
 */
export interface SimFlags {
  preset?: string | undefined;
  compare?: string | undefined;
  algorithm?: string | undefined;
  rounds?: string | undefined;
  clients?: string | undefined;
  data?: string | undefined;
  dataset?: string | undefined;
  out?: string | undefined;
  evalEvery?: string | undefined;
  workers?: string | undefined;
  values?: string | undefined;
  seed?: string | undefined;
  backend?: string | undefined;
  epochs?: string | undefined;
  fraction?: string | undefined;
  /** Old spellings, refused with the new one (RENAMED_FLAGS). */
  dataDir?: string | undefined;
  localEpochs?: string | undefined;
}

/** Flags that were renamed so that one concept has one name across commands: the old spelling is refused with the new. */
export const RENAMED_FLAGS = {
  dataDir: { old: '--data-dir', now: '--data' },
  localEpochs: { old: '--local-epochs', now: '--epochs' },
} as const satisfies Partial<Record<keyof SimFlags, { old: string; now: string }>>;

function fail(flag: string, value: string, expected: string): never {
  throw new SimConfigError(`${flag}: expected ${expected}, got '${value}'`);
}

function parsePositiveInt(flag: string, value: string): number {
  if (!/^\d+$/.test(value.trim()) || Number(value) < 1 || !Number.isSafeInteger(Number(value))) {
    fail(flag, value, 'a positive integer');
  }
  return Number(value);
}

function parseNonNegativeInt(flag: string, value: string): number {
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(Number(value))) fail(flag, value, 'a non-negative integer');
  return Number(value);
}

function parseFraction(flag: string, value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0 || n > 1) fail(flag, value, 'a number in (0, 1]');
  return n;
}

function parseChoice<T extends string>(flag: string, value: string, choices: readonly T[]): T {
  if (!(choices as readonly string[]).includes(value)) fail(flag, value, `one of ${choices.join(', ')}`);
  return value as T;
}

function parseNonEmpty(flag: string, value: string): string {
  if (value.trim() === '') fail(flag, value, 'a non-empty path');
  return value;
}

function parseAlgorithm(flag: string, name: string, value: string): AlgorithmName {
  if (!isAlgorithmName(name)) {
    throw new SimConfigError(`${flag}: unknown algorithm '${name}' in '${value}' (known: ${algorithmNames().join(', ')})`);
  }
  return name;
}

function parseAlgorithms(flag: string, value: string): AlgorithmName[] {
  const names = value.split(',').map((s) => s.trim());
  if (names.length === 0 || names.some((n) => n === ''))
    fail(flag, value, `a comma-separated list of ${algorithmNames().join(', ')}`);
  const parsed = names.map((n) => parseAlgorithm(flag, n, value));
  if (new Set(parsed).size !== parsed.length) fail(flag, value, 'each algorithm at most once');
  return parsed;
}

/**
 * Preset values overridden by the flags given. Throws SimConfigError naming the
 * first bad flag and its value.
 */
export function resolveSimConfig(flags: SimFlags): SimConfig {
  for (const [key, { old, now }] of Object.entries(RENAMED_FLAGS)) {
    if (flags[key as keyof typeof RENAMED_FLAGS] !== undefined) throw new SimConfigError(`${old}: renamed to ${now}`);
  }
  const presetName = flags.preset === undefined ? 'quick' : parseChoice('--preset', flags.preset, PRESET_NAMES);
  const config: SimConfig = structuredClone(PRESETS[presetName]);

  if (flags.compare !== undefined && flags.algorithm !== undefined) {
    throw new SimConfigError(`--compare '${flags.compare}' and --algorithm '${flags.algorithm}' are exclusive: give one`);
  }
  if (flags.compare !== undefined) config.algorithms = parseAlgorithms('--compare', flags.compare);
  if (flags.algorithm !== undefined) config.algorithms = [parseChoice('--algorithm', flags.algorithm, algorithmNames())];
  if (flags.rounds !== undefined) config.rounds = parsePositiveInt('--rounds', flags.rounds);
  if (flags.clients !== undefined) config.clients = parsePositiveInt('--clients', flags.clients);
  if (flags.data !== undefined) config.data = parseNonEmpty('--data', flags.data);
  if (flags.dataset !== undefined) config.dataset = parseChoice('--dataset', flags.dataset, DATASET_NAMES);
  if (flags.out !== undefined) config.out = parseNonEmpty('--out', flags.out);
  if (flags.evalEvery !== undefined) config.evalEvery = parsePositiveInt('--eval-every', flags.evalEvery);
  if (flags.workers !== undefined) config.workers = parsePositiveInt('--workers', flags.workers);
  if (flags.values !== undefined) config.values = parseChoice('--values', flags.values, VALUE_ENCODING_NAMES);
  if (flags.seed !== undefined) config.seed = parseNonNegativeInt('--seed', flags.seed);
  if (flags.backend !== undefined) config.backend = parseChoice('--backend', flags.backend, BACKEND_CHOICES);
  if (flags.epochs !== undefined) config.training.epochs = parsePositiveInt('--epochs', flags.epochs);
  if (flags.fraction !== undefined) config.fraction = parseFraction('--fraction', flags.fraction);

  try {
    return validateSimConfig(config);
  } catch (error) {
    // An algorithm's rule refused the epochs a flag set (Sub-FedAvg needs 2): name the flag too.
    if (error instanceof SimConfigError && flags.epochs !== undefined && error.message.includes('training.epochs:')) {
      throw new SimConfigError(`--epochs '${flags.epochs}': ${error.message}`);
    }
    throw error;
  }
}

/**
 * Schema check plus the rules that belong to the algorithms: each configured
 * algorithm's block through its own schema (for the algorithms that run, with
 * the run's `training`, so Sub-FedAvg with 1 local epoch is refused here, not on
 * every client), and each running algorithm's model against what it requires.
 * Used for configs built in code (tests, bench) as well as from flags.
 */
export function validateSimConfig(config: unknown): SimConfig {
  const result = simConfigSchema.safeParse(config);
  if (!result.success) {
    throw new SimConfigError(formatZodIssues(result.error, { input: config, root: '(config)' }).join('; '));
  }
  const c = result.data;
  const problems = [...algorithmConfigProblems(c), ...modelProblems(c)];
  if (problems.length > 0) throw new SimConfigError(problems.join('; '));
  return c;
}

type ParsedSimConfig = z.infer<typeof simConfigSchema>;

function algorithmConfigProblems(c: ParsedSimConfig): string[] {
  const configured = Object.keys(c.algorithmConfigs).filter(isAlgorithmName);
  const problems: string[] = [];
  for (const name of new Set([...c.algorithms, ...configured])) {
    const own = c.algorithmConfigs[name] ?? {};
    for (const field of TRAINING_FIELDS) {
      if (field in own) {
        problems.push(
          `algorithmConfigs.${name}.${field}: set training.${field} instead (the coordinator sends it to every client)`,
        );
      }
    }
    const runs = c.algorithms.includes(name);
    const result = describeAlgorithm(name).schema.safeParse(runs ? { ...own, ...c.training } : own);
    if (result.success) continue;
    // Name each field where this config sets it: a training field of a running algorithm comes from `training`.
    const located = result.error.issues.map((issue) => ({
      ...issue,
      path: runs && isTrainingField(issue.path[0]) ? ['training', ...issue.path] : ['algorithmConfigs', name, ...issue.path],
    }));
    problems.push(...formatZodIssues(new z.ZodError(located), { input: c }));
  }
  return problems;
}

function isTrainingField(key: PropertyKey | undefined): key is TrainingField {
  return (TRAINING_FIELDS as readonly PropertyKey[]).includes(key as PropertyKey);
}

function modelProblems(c: ParsedSimConfig): string[] {
  return c.algorithms.flatMap((name) => {
    const descriptor = describeAlgorithm(name);
    const problem = descriptor.modelProblem(modelStructure(modelFor(c, name)));
    return problem === undefined ? [] : [`${descriptor.requiresBatchNorm ? 'batchNormModel' : 'model'}: ${problem}`];
  });
}

/** Model a given algorithm trains. */
export function modelFor(config: Pick<SimConfig, 'model' | 'batchNormModel'>, algorithm: AlgorithmName): ModelName {
  return describeAlgorithm(algorithm).requiresBatchNorm ? config.batchNormModel : config.model;
}

/**
 * The algorithm's whole config for this run, as its schema parses it: its
 * block of `algorithmConfigs` (defaults for the rest) with the run's `training`.
 */
export function algorithmConfig(config: SimConfig, algorithm: AlgorithmName): TrainingConfig {
  return describeAlgorithm(algorithm).parseConfig({ ...config.algorithmConfigs[algorithm], ...config.training });
}

/** Number of members per round, the coordinator's rule: K = max(round(fraction*N), 1). */
export function membersPerRound(config: Pick<SimConfig, 'fraction' | 'clients'>): number {
  return Math.max(Math.round(config.fraction * config.clients), 1);
}

/** The clients that attack under `config.attack` (seeded; round(fraction * clients), at least one); none without it. */
export function attackers(config: Pick<SimConfig, 'attack' | 'clients' | 'seed'>): ReadonlySet<number> {
  if (config.attack === undefined) return new Set();
  const count = Math.max(1, Math.round(config.attack.fraction * config.clients));
  const order = new SeededRandom(deriveSeed(config.seed, 0xa77ac)).permutation(config.clients);
  return new Set(order.subarray(0, count));
}
