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
import { ALGORITHM_NAMES, type AlgorithmName } from '../client/algorithms/config.js';
import type { BackendChoice } from '../client/backend.js';
import { MODEL_NAMES, type ModelName } from '../client/model.js';
import type { ValueEncodingName } from '../proto/messages.js';
import { DATASET_NAMES } from './datasets.js';

export type { AlgorithmName };

const VALUE_ENCODINGS = ['f32', 'f16', 'int8'] as const satisfies readonly ValueEncodingName[];
const BACKENDS = ['auto', 'node', 'wasm', 'cpu'] as const satisfies readonly BackendChoice[];
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
 * Pruning knobs, in the units of the client algorithm configs
 * (client/algorithms/config.ts): percentages like the reference (p = 10,
 * target 30 / 50). `gateOn` says which data the post-prune accuracy check runs
 * on: 'test' is the reference's choice, 'val' a split of the client's training data.
 */
const pruningSchema = z.object({
  p: z.number().gt(0).max(100),
  targetUn: z.number().min(0).lt(100),
  targetHy: z.number().min(0).lt(100),
  distThreshUn: z.number().min(0),
  distThreshHy: z.number().min(0),
  channelDistThresh: z.number().min(0),
  q: z.number().gt(0).lt(1),
  l1: z.number().min(0),
  accThresh: z.number().min(0).max(1),
  gateOn: z.enum(['test', 'val']),
});
export type PruningConfig = z.infer<typeof pruningSchema>;

export const simConfigSchema = z.object({
  preset: z.enum(PRESET_NAMES),
  algorithms: z.array(z.enum(ALGORITHM_NAMES)).min(1),
  dataset: z.enum(DATASET_NAMES),
  dataDir: z.string().min(1).optional(),
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
  localEpochs: positiveInt,
  /** Local fine-tuning epochs of fedavg-ft before evaluation. */
  fineTuneEpochs: positiveInt,
  batchSize: positiveInt,
  learningRate: z.number().positive(),
  momentum: z.number().gte(0).lt(1),
  pruning: pruningSchema,
  weighting: z.enum(['examples', 'unweighted']),
  /** Model of every algorithm except subfedavg-hy, which needs BatchNorm. */
  model: z.enum(MODEL_NAMES),
  hybridModel: z.enum(MODEL_NAMES),
  evalEvery: positiveInt,
  workers: positiveInt,
  values: z.enum(VALUE_ENCODINGS),
  seed: z.number().int().min(0),
  backend: z.enum(BACKENDS),
  out: z.string().min(1).optional(),
});
export type SimConfig = z.infer<typeof simConfigSchema>;

const REFERENCE_PRUNING: PruningConfig = {
  p: 10,
  targetUn: 30,
  targetHy: 50,
  distThreshUn: 1e-4,
  distThreshHy: 5e-4,
  channelDistThresh: 0.01,
  q: 0.45,
  l1: 1e-4,
  accThresh: 0.5,
  gateOn: 'test',
};

const defaultWorkers = Math.max(1, os.availableParallelism());

/**
 * `paper` reproduces MMorafah/Sub-FedAvg's Fashion-MNIST setting, including its
 * choice of gating pruning on the client's TEST accuracy.
 * `quick` is the README's first command: 20 clients on the embedded 10k-image
 * split, finishing in a few minutes on two cores while still showing accuracy
 * rising and the byte savings. Its gate uses a validation split (our default).
 */
export const PRESETS: Record<PresetName, SimConfig> = {
  paper: {
    preset: 'paper',
    algorithms: ['subfedavg-un'],
    dataset: 'fashion-mnist',
    clients: 100,
    partition: { kind: 'shards', shardSize: 250, shardsPerClient: 2 },
    maxTestPerClient: null,
    fraction: 0.1,
    rounds: 50,
    localEpochs: 5,
    fineTuneEpochs: 1,
    batchSize: 10,
    learningRate: 0.01,
    momentum: 0.5,
    pruning: REFERENCE_PRUNING,
    weighting: 'unweighted',
    model: 'lenet5-mnist',
    hybridModel: 'lenet5-bn-mnist',
    evalEvery: 10,
    workers: defaultWorkers,
    values: 'f32',
    seed: 1,
    backend: 'auto',
  },
  quick: {
    preset: 'quick',
    algorithms: ['subfedavg-un'],
    dataset: 'fashion-mnist',
    clients: 20,
    partition: { kind: 'shards', shardSize: 200, shardsPerClient: 2 },
    maxTestPerClient: 400,
    fraction: 0.5,
    rounds: 10,
    localEpochs: 2,
    fineTuneEpochs: 1,
    batchSize: 10,
    learningRate: 0.01,
    momentum: 0.5,
    // A larger step than the paper so that sparsity visibly grows within 10 rounds.
    pruning: { ...REFERENCE_PRUNING, p: 15, gateOn: 'val' },
    weighting: 'unweighted',
    model: 'lenet5-mnist',
    hybridModel: 'lenet5-bn-mnist',
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

/** Flags as commander hands them over: every value a string, absent when not given. */
export interface SimFlags {
  preset?: string | undefined;
  compare?: string | undefined;
  algorithm?: string | undefined;
  rounds?: string | undefined;
  clients?: string | undefined;
  dataDir?: string | undefined;
  dataset?: string | undefined;
  out?: string | undefined;
  evalEvery?: string | undefined;
  workers?: string | undefined;
  values?: string | undefined;
  seed?: string | undefined;
  backend?: string | undefined;
  localEpochs?: string | undefined;
  fraction?: string | undefined;
}

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

function parseAlgorithms(flag: string, value: string): AlgorithmName[] {
  const names = value.split(',').map((s) => s.trim());
  if (names.length === 0 || names.some((n) => n === ''))
    fail(flag, value, `a comma-separated list of ${ALGORITHM_NAMES.join(', ')}`);
  const parsed = names.map((n) => {
    if (!(ALGORITHM_NAMES as readonly string[]).includes(n)) {
      throw new SimConfigError(`${flag}: unknown algorithm '${n}' in '${value}' (known: ${ALGORITHM_NAMES.join(', ')})`);
    }
    return n as AlgorithmName;
  });
  if (new Set(parsed).size !== parsed.length) fail(flag, value, 'each algorithm at most once');
  return parsed;
}

/**
 * Preset values overridden by the flags given. Throws SimConfigError naming the
 * first bad flag and its value.
 */
export function resolveSimConfig(flags: SimFlags): SimConfig {
  const presetName = flags.preset === undefined ? 'quick' : parseChoice('--preset', flags.preset, PRESET_NAMES);
  const config: SimConfig = structuredClone(PRESETS[presetName]);

  if (flags.compare !== undefined && flags.algorithm !== undefined) {
    throw new SimConfigError(`--compare '${flags.compare}' and --algorithm '${flags.algorithm}' are exclusive: give one`);
  }
  if (flags.compare !== undefined) config.algorithms = parseAlgorithms('--compare', flags.compare);
  if (flags.algorithm !== undefined) config.algorithms = [parseChoice('--algorithm', flags.algorithm, ALGORITHM_NAMES)];
  if (flags.rounds !== undefined) config.rounds = parsePositiveInt('--rounds', flags.rounds);
  if (flags.clients !== undefined) config.clients = parsePositiveInt('--clients', flags.clients);
  if (flags.dataDir !== undefined) config.dataDir = parseNonEmpty('--data-dir', flags.dataDir);
  if (flags.dataset !== undefined) config.dataset = parseChoice('--dataset', flags.dataset, DATASET_NAMES);
  if (flags.out !== undefined) config.out = parseNonEmpty('--out', flags.out);
  if (flags.evalEvery !== undefined) config.evalEvery = parsePositiveInt('--eval-every', flags.evalEvery);
  if (flags.workers !== undefined) config.workers = parsePositiveInt('--workers', flags.workers);
  if (flags.values !== undefined) config.values = parseChoice('--values', flags.values, VALUE_ENCODINGS);
  if (flags.seed !== undefined) config.seed = parseNonNegativeInt('--seed', flags.seed);
  if (flags.backend !== undefined) config.backend = parseChoice('--backend', flags.backend, BACKENDS);
  if (flags.localEpochs !== undefined) config.localEpochs = parsePositiveInt('--local-epochs', flags.localEpochs);
  if (flags.fraction !== undefined) config.fraction = parseFraction('--fraction', flags.fraction);

  return validateSimConfig(config);
}

/**
 * Schema check plus the cross-field rules a schema cannot express. Used for
 * configs built in code (tests, bench) as well as from flags.
 */
export function validateSimConfig(config: unknown): SimConfig {
  const result = simConfigSchema.safeParse(config);
  if (!result.success) {
    throw new SimConfigError(formatZodIssues(result.error, { input: config, root: '(config)' }).join('; '));
  }
  const c = result.data;
  if (c.algorithms.includes('subfedavg-hy') && !c.hybridModel.includes('bn')) {
    throw new SimConfigError(`hybridModel: subfedavg-hy prunes channels through BatchNorm, '${c.hybridModel}' has none`);
  }
  return c;
}

/** Model a given algorithm trains. */
export function modelFor(config: SimConfig, algorithm: AlgorithmName): ModelName {
  return algorithm === 'subfedavg-hy' ? config.hybridModel : config.model;
}

/** The client algorithm's own config (client/algorithms/config.ts) for this run. */
export function algorithmConfig(config: SimConfig, algorithm: AlgorithmName): Record<string, unknown> {
  const training = {
    epochs: config.localEpochs,
    batchSize: config.batchSize,
    lr: config.learningRate,
    momentum: config.momentum,
  };
  const pr = config.pruning;
  const gate = { accThresh: pr.accThresh, gateOn: pr.gateOn };
  switch (algorithm) {
    case 'subfedavg-un':
      return { ...training, ...gate, p: pr.p, target: pr.targetUn, distThresh: pr.distThreshUn };
    case 'subfedavg-hy':
      return {
        ...training,
        ...gate,
        p: pr.p,
        target: pr.targetHy,
        distThresh: pr.distThreshHy,
        q: pr.q,
        l1: pr.l1,
        channelDistThresh: pr.channelDistThresh,
      };
    case 'fedavg-ft':
      return { ...training, ftEpochs: config.fineTuneEpochs };
    case 'fedavg':
    case 'local':
      return training;
  }
}

/** Number of members per round, the coordinator's rule: K = max(round(frac*N), 1). */
export function membersPerRound(config: Pick<SimConfig, 'fraction' | 'clients'>): number {
  return Math.max(Math.round(config.fraction * config.clients), 1);
}
