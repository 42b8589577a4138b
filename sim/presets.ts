/**
 * The simulator's configuration: one zod schema for every knob, the presets
 * (files of the experiment format in sim/presets/, shipped with the package),
 * and how an experiment is assembled from layers: a preset, an experiment
 * file (`subfed sim --config`), the flags, `--set path=value`. Each layer
 * overrides the one before (sim/config-layers.ts), and every error names the
 * layer and the field at fault (`experiment.json: partition.alpha: expected a
 * positive number, got -1`; `--rounds: expected a positive integer, got 'abc'`).
 *
 * Two shapes of the same fields: an Experiment has `seeds` (a list: the run is
 * repeated once per seed, sim/experiment.ts), a SimConfig is one of those runs
 * and has `seed`. The file format is the Experiment's.
 */
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { formatZodIssues } from '../proto/zod-issues.js';
import { packageRoot } from '../proto/package-root.js';
import { TRAINING_FIELDS, trainingConfigSchema, type TrainingConfig, type TrainingField } from '../proto/training-config.js';
import {
  algorithmNames,
  describeAlgorithm,
  isAlgorithmName,
  type AlgorithmConfigInput,
  type AlgorithmName,
} from '../client/algorithms/registry.js';
import { BACKEND_CHOICES } from '../client/backend.js';
import { modelStructure, zooArchitecture } from '../client/model.js';
import { MODEL_NAMES, type ModelName } from '../client/model-names.js';
import { VALUE_ENCODING_NAMES } from '../proto/messages.js';
import { DATASET_IMAGE_SHAPES, DATASET_NAMES } from './datasets.js';
import { SeededRandom, deriveSeed } from '../proto/random.js';
import {
  ConfigLayerError,
  LayeredConfig,
  parseFieldPath,
  parseSetValue,
  readJsonObject,
  type ConfigObject,
} from './config-layers.js';

export type { AlgorithmName };

export const PRESET_NAMES = ['quick', 'paper', 'paper-mnist', 'paper-cifar10', 'dirichlet'] as const;
export type PresetName = (typeof PRESET_NAMES)[number];

const positiveInt = z.int({ error: 'expected a positive integer' }).min(1, { error: 'expected a positive integer' });
const positiveNumber = z.number({ error: 'expected a positive number' }).positive({ error: 'expected a positive number' });
const fraction = z
  .number({ error: 'expected a number in (0, 1]' })
  .gt(0, { error: 'expected a number in (0, 1]' })
  .lte(1, { error: 'expected a number in (0, 1]' });
const seedSchema = z.int({ error: 'expected a non-negative integer' }).min(0, { error: 'expected a non-negative integer' });

export const PARTITION_KINDS = ['shards', 'dirichlet', 'iid'] as const;
const partitionSchema = z.discriminatedUnion(
  'kind',
  [
    z.strictObject({ kind: z.literal('shards'), shardSize: positiveInt, shardsPerClient: positiveInt }),
    z.strictObject({ kind: z.literal('dirichlet'), alpha: positiveNumber }),
    z.strictObject({ kind: z.literal('iid') }),
  ],
  { error: `expected kind ${PARTITION_KINDS.join(', ')}` },
);
export type PartitionConfig = z.infer<typeof partitionSchema>;

/**
 * Where each client's test set comes from: `test-split`, the partitioner's
 * slice of the dataset's test split (shards: every test example of the
 * client's labels; dirichlet: dealt by the client's label shares; iid: an even
 * cut); `held-out`, a share of the client's own training examples, per label.
 */
export const TEST_SET_KINDS = ['test-split', 'held-out'] as const;
const testSetSchema = z.discriminatedUnion(
  'kind',
  [
    z.strictObject({ kind: z.literal('test-split') }),
    z.strictObject({
      kind: z.literal('held-out'),
      testFraction: z
        .number({ error: 'expected a number in (0, 1)' })
        .gt(0, { error: 'expected a number in (0, 1)' })
        .lt(1, { error: 'expected a number in (0, 1)' }),
    }),
  ],
  { error: `expected kind ${TEST_SET_KINDS.join(', ')}` },
);
export type TestSetConfig = z.infer<typeof testSetSchema>;

/**
 * Per algorithm, its own fields (client/algorithms/<name>.ts: prune step and
 * target, gate, fine-tuning epochs, ...), each optional: an absent one takes
 * the algorithm's reference default. The training fields are not among them:
 * the coordinator sends `training` to every client, so they are set once, run-wide.
 */
export type AlgorithmConfigs = { readonly [N in AlgorithmName]?: Omit<AlgorithmConfigInput<N>, TrainingField> };

/** Every field but the seed(s): what a run and an experiment share. */
const runFields = {
  /** The preset this config started from (an experiment file's base; default quick). */
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
  testSet: testSetSchema,
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
  values: z.enum(VALUE_ENCODING_NAMES),
  workers: positiveInt,
  backend: z.enum(BACKEND_CHOICES),
  /** The run folder (default runs/<timestamp>-<name>/); not recorded in the run folder's config.json. */
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
};

/** One run: `seed` drives the split, the initial models, the sampling and every client's shuffling (README "Seeds"). */
export const simConfigSchema = z.strictObject({ ...runFields, seed: seedSchema });

/** An experiment, the format of an experiment file: the run repeated once per seed. */
export const experimentSchema = z.strictObject({
  ...runFields,
  seeds: z
    .array(seedSchema, { error: 'expected a list of non-negative integers' })
    .min(1, { error: 'expected at least one seed' })
    .refine((seeds) => new Set(seeds).size === seeds.length, { error: 'expected distinct seeds' }),
});

type WithAlgorithmConfigs<T> = Omit<T, 'algorithmConfigs'> & { readonly algorithmConfigs: AlgorithmConfigs };
export type SimConfig = WithAlgorithmConfigs<z.infer<typeof simConfigSchema>>;
export type Experiment = WithAlgorithmConfigs<z.infer<typeof experimentSchema>>;
/** What a run and an experiment share (every field but the seed or seeds). */
export type RunFields = Omit<SimConfig, 'seed'>;

/** The run of `experiment` for one of its seeds. */
export function seedRun(experiment: Experiment, seed: number): SimConfig {
  const { seeds: _, ...fields } = experiment;
  return { ...fields, seed };
}

/** A run as a one-seed experiment. */
export function experimentOf(config: SimConfig): Experiment {
  const { seed, ...fields } = config;
  return { ...fields, seeds: [seed] };
}

/**
 * What a run folder's config.json holds: the experiment, resolved (every
 * field), as an experiment file, so `subfed sim --config <run>/config.json`
 * runs it again. `out` is left out: the folder is where the file lies.
 */
export function recordedConfig(experiment: Experiment): ConfigObject {
  const { out: _, ...fields } = experiment;
  return fields;
}

/** A bad flag value, a bad preset or experiment file, or an inconsistent combination. */
export class SimConfigError extends Error {
  override readonly name = 'SimConfigError';
}

// ------------------------------------------------------------------ presets

const defaultWorkers = Math.max(1, os.availableParallelism());

/** The preset files (sim/presets/<name>.json), found from the package root so they work from sources and dist/. */
export function presetFile(name: PresetName): string {
  return join(packageRoot(), 'sim', 'presets', `${name}.json`);
}

const presetCache = new Map<PresetName, ConfigObject>();

/**
 * A preset file's fields, complete (it names itself in `preset`): what an
 * experiment file based on it starts from. `workers` is the machine's (one per
 * core) unless the file sets it.
 */
function presetValue(name: PresetName): ConfigObject {
  const cached = presetCache.get(name);
  if (cached !== undefined) return structuredClone(cached);
  const file = presetFile(name);
  const value: ConfigObject = { workers: defaultWorkers, ...readJsonObject(file, `the ${name} preset`) };
  if (value.preset !== name)
    throw new SimConfigError(`${file}: preset: expected '${name}' (the file's own name), got ${JSON.stringify(value.preset)}`);
  const layers = new LayeredConfig();
  layers.overlay(value, file);
  experimentOfLayers(layers);
  presetCache.set(name, value);
  return structuredClone(value);
}

/** A preset as an experiment. */
export function loadPreset(name: PresetName): Experiment {
  return experimentSchema.parse(presetValue(name));
}

// ------------------------------------------------------------------ layers

/**
 * The layers of an experiment given as a partial one (`patch`, from `source`):
 * the preset it names (`preset`, default quick), then the patch itself.
 */
export function experimentLayers(patch: ConfigObject, source: string): LayeredConfig {
  const name = patch.preset ?? 'quick';
  if (typeof name !== 'string' || !(PRESET_NAMES as readonly string[]).includes(name)) {
    throw new SimConfigError(`${source}: preset: expected one of ${PRESET_NAMES.join(', ')}, got ${JSON.stringify(name)}`);
  }
  const layers = new LayeredConfig();
  layers.overlay(presetValue(name as PresetName), `preset ${name}`);
  layers.overlay(patch, source);
  return layers;
}

/**
 * An experiment file's fields, with its relative paths (`data`, `out`)
 * resolved against the file's folder, as a client config's are.
 */
export function readExperimentFile(file: string): ConfigObject {
  const json = readJsonObject(file, 'an experiment: see README "Experiment files"');
  const folder = dirname(resolve(file));
  for (const key of ['data', 'out']) {
    if (typeof json[key] === 'string' && json[key] !== '') json[key] = resolve(folder, json[key]);
  }
  return json;
}

/** The validated experiment the layers make; an error names the layer and the field of each problem. */
export function experimentOfLayers(layers: LayeredConfig, fallback = '(config)'): Experiment {
  const value = layers.value;
  const problems = configProblems(experimentSchema, value);
  if (problems.length > 0) throw new SimConfigError(labelled(problems, layers, fallback));
  // Parsed again for its field order (the schema's), which config.json keeps.
  return experimentSchema.parse(value);
}

/** A field that failed validation: its path, and the line saying so ("partition.alpha: expected ..., got -1"). */
interface Problem {
  readonly path: readonly PropertyKey[];
  readonly text: string;
  /** Other fields the problem is about (a model and the dataset): named as its source when the user set one. */
  readonly related?: readonly (readonly PropertyKey[])[];
}

/** Each problem prefixed with the layer that set its field: a user's layer (file, flag) before a preset. */
function labelled(problems: readonly Problem[], layers: LayeredConfig, fallback: string): string {
  return problems
    .map((p) => {
      const sources = [p.path, ...(p.related ?? [])].map((path) => layers.sourceOf(path));
      const source = sources.find((s) => s !== undefined && !s.startsWith('preset ')) ?? sources[0] ?? fallback;
      return `${source}: ${p.text.replace(/^\(config\): /, '')}`;
    })
    .join('; ');
}

/** The schema's problems, then (when it parses) the algorithms' and the models' rules. */
function configProblems(schema: typeof simConfigSchema | typeof experimentSchema, value: unknown): Problem[] {
  const result = schema.safeParse(value);
  if (!result.success) {
    return result.error.issues.map((issue) => ({
      // An unknown field is where it was written.
      path: issue.code === 'unrecognized_keys' ? [...issue.path, issue.keys[0]] : issue.path,
      text: formatZodIssues(new z.ZodError([issue]), { input: value, root: '(config)' })[0],
    }));
  }
  return [...algorithmConfigProblems(result.data), ...modelProblems(result.data)];
}

/**
 * Schema check plus the rules that belong to the algorithms: each configured
 * algorithm's block through its own schema (for the algorithms that run, with
 * the run's `training`, so Sub-FedAvg with 1 local epoch is refused here, not on
 * every client), and each running algorithm's model against what it requires
 * and against the dataset's images. For configs built in code (tests, bench).
 */
export function validateSimConfig(config: unknown): SimConfig {
  const problems = configProblems(simConfigSchema, config);
  if (problems.length > 0) throw new SimConfigError(problems.map((p) => p.text).join('; '));
  return config as SimConfig;
}

/** validateSimConfig for an experiment (seeds): a run folder's recorded config.json (recordedConfig). */
export function validateExperiment(config: unknown): Experiment {
  const problems = configProblems(experimentSchema, config);
  if (problems.length > 0) throw new SimConfigError(problems.map((p) => p.text).join('; '));
  return config as Experiment;
}

type ParsedRunFields = Omit<z.infer<typeof simConfigSchema>, 'seed'>;

function algorithmConfigProblems(c: ParsedRunFields): Problem[] {
  const configured = Object.keys(c.algorithmConfigs).filter(isAlgorithmName);
  const problems: Problem[] = [];
  for (const name of new Set([...c.algorithms, ...configured])) {
    const own = c.algorithmConfigs[name] ?? {};
    for (const field of TRAINING_FIELDS) {
      if (field in own) {
        problems.push({
          path: ['algorithmConfigs', name, field],
          text: `algorithmConfigs.${name}.${field}: set training.${field} instead (the coordinator sends it to every client)`,
        });
      }
    }
    const runs = c.algorithms.includes(name);
    const result = describeAlgorithm(name).schema.safeParse(runs ? { ...own, ...c.training } : own);
    if (result.success) continue;
    // Name each field where this config sets it: a training field of a running algorithm comes from `training`.
    for (const issue of result.error.issues) {
      const path =
        runs && isTrainingField(issue.path[0]) ? ['training', ...issue.path] : ['algorithmConfigs', name, ...issue.path];
      const located = { ...issue, path };
      problems.push({
        path: issue.code === 'unrecognized_keys' ? [...path, issue.keys[0]] : path,
        text: formatZodIssues(new z.ZodError([located]), { input: c })[0],
      });
    }
  }
  return problems;
}

function isTrainingField(key: PropertyKey | undefined): key is TrainingField {
  return (TRAINING_FIELDS as readonly PropertyKey[]).includes(key as PropertyKey);
}

const shapeText = (shape: readonly number[]): string => shape.join('x');

/** The running algorithms' models: BatchNorm where required, and images of the dataset's shape (synthetic takes the models'). */
function modelProblems(c: ParsedRunFields): Problem[] {
  const problems: Problem[] = [];
  const used = new Map<'model' | 'batchNormModel', ModelName>();
  for (const name of c.algorithms) {
    const descriptor = describeAlgorithm(name);
    const field = descriptor.requiresBatchNorm ? 'batchNormModel' : 'model';
    used.set(field, c[field]);
    const problem = descriptor.modelProblem(modelStructure(c[field]));
    if (problem !== undefined) problems.push({ path: [field], text: `${field}: ${problem}` });
  }
  const datasetShape = DATASET_IMAGE_SHAPES[c.dataset];
  const shapes = [...used].map(([field, model]) => ({ field, model, shape: zooArchitecture(model).inputShape }));
  for (const { field, model, shape } of shapes) {
    if (datasetShape !== null && shapeText(shape) !== shapeText(datasetShape)) {
      const fitting = MODEL_NAMES.filter(
        (m) =>
          shapeText(zooArchitecture(m).inputShape) === shapeText(datasetShape) &&
          modelStructure(m).channelGroups.length > 0 === (field === 'batchNormModel'),
      );
      problems.push({
        path: [field],
        related: [['dataset']],
        text: `${field}: ${model} takes ${shapeText(shape)} images, but ${c.dataset} has ${shapeText(datasetShape)} (${fitting.join(' or ')} fits)`,
      });
    }
  }
  if (datasetShape === null && shapes.length === 2 && shapeText(shapes[0].shape) !== shapeText(shapes[1].shape)) {
    problems.push({
      path: ['batchNormModel'],
      text:
        `batchNormModel: ${shapes[1].model} takes ${shapeText(shapes[1].shape)} images and model ${shapes[0].model} ` +
        `${shapeText(shapes[0].shape)}, but the algorithms share one ${c.dataset} dataset`,
    });
  }
  return problems;
}

// ------------------------------------------------------------------ flags

/** How a flag's text becomes a value: a parser below, or one of a list of choices. */
export type FlagReading = 'positive-int' | 'number' | 'fraction' | 'path' | 'seeds' | 'test-cap' | readonly string[];

export interface FlagField {
  /** The field it sets: the flag is the kebab-case of the last key (`--shard-size` sets partition.shardSize). */
  readonly path: readonly string[];
  readonly reading: FlagReading;
  readonly description: string;
}

/**
 * The flags that set one field each, in the order they apply (a kind before
 * its fields: `--partition dirichlet --alpha 0.3`). Two set a union's kind:
 * `--partition` (partition.kind) and `--test-set` (testSet.kind); a kind other
 * than the one before replaces that object whole, so its fields must follow.
 */
export const FLAG_FIELDS = {
  dataset: { path: ['dataset'], reading: DATASET_NAMES, description: DATASET_NAMES.join(' | ') },
  data: { path: ['data'], reading: 'path', description: 'folder holding the dataset files' },
  clients: { path: ['clients'], reading: 'positive-int', description: 'number of clients' },
  partition: {
    path: ['partition', 'kind'],
    reading: PARTITION_KINDS,
    description: `non-IID split: ${PARTITION_KINDS.join(' | ')} (partition.kind)`,
  },
  shardSize: { path: ['partition', 'shardSize'], reading: 'positive-int', description: 'shards: examples per shard' },
  shardsPerClient: { path: ['partition', 'shardsPerClient'], reading: 'positive-int', description: 'shards: shards per client' },
  alpha: { path: ['partition', 'alpha'], reading: 'number', description: 'dirichlet: concentration (small = skewed)' },
  testSet: {
    path: ['testSet', 'kind'],
    reading: TEST_SET_KINDS,
    description: `clients' test sets: ${TEST_SET_KINDS.join(' | ')} (testSet.kind)`,
  },
  testFraction: {
    path: ['testSet', 'testFraction'],
    reading: 'number',
    description: "held-out: share of each client's own data it tests on",
  },
  maxTestPerClient: {
    path: ['maxTestPerClient'],
    reading: 'test-cap',
    description: "cap on each client's test set (a seeded subset), or 'all'",
  },
  model: { path: ['model'], reading: MODEL_NAMES, description: 'model of the algorithms without BatchNorm' },
  batchNormModel: { path: ['batchNormModel'], reading: MODEL_NAMES, description: 'model of the algorithms needing BatchNorm' },
  rounds: { path: ['rounds'], reading: 'positive-int', description: 'rounds per algorithm' },
  fraction: { path: ['fraction'], reading: 'fraction', description: 'fraction of clients sampled per round, in (0, 1]' },
  epochs: { path: ['training', 'epochs'], reading: 'positive-int', description: 'local epochs per round (training.epochs)' },
  batchSize: { path: ['training', 'batchSize'], reading: 'positive-int', description: 'local batch size (training.batchSize)' },
  lr: { path: ['training', 'lr'], reading: 'number', description: 'SGD learning rate (training.lr)' },
  momentum: { path: ['training', 'momentum'], reading: 'number', description: 'SGD momentum, in [0, 1) (training.momentum)' },
  weighting: {
    path: ['weighting'],
    reading: ['examples', 'unweighted'],
    description: 'aggregation weights: examples | unweighted',
  },
  evalEvery: {
    path: ['evalEvery'],
    reading: 'positive-int',
    description: 'evaluate every client every n rounds and at the end',
  },
  values: { path: ['values'], reading: VALUE_ENCODING_NAMES, description: 'value encoding on the wire: f32 | f16 | int8' },
  seeds: {
    path: ['seeds'],
    reading: 'seeds',
    description: 'comma-separated seeds: the run is repeated for each (split, initialisation, sampling)',
  },
  workers: { path: ['workers'], reading: 'positive-int', description: 'training worker threads (default one per core)' },
  backend: { path: ['backend'], reading: BACKEND_CHOICES, description: 'tfjs backend: auto | node | wasm | cpu' },
  out: { path: ['out'], reading: 'path', description: 'run folder (default runs/<timestamp>-<preset or file name>)' },
} as const satisfies Record<string, FlagField>;

export type FlagFieldName = keyof typeof FLAG_FIELDS;

/** What a flag's help shows for its value: `--rounds <n>`. */
export function flagPlaceholder(reading: FlagReading): string {
  if (typeof reading !== 'string') return '<name>';
  const placeholders: Record<Exclude<FlagReading, readonly string[]>, string> = {
    'positive-int': '<n>',
    number: '<x>',
    fraction: '<f>',
    path: '<dir>',
    seeds: '<list>',
    'test-cap': '<n|all>',
  };
  return placeholders[reading];
}

/** `shardsPerClient` -> `--shards-per-client`. */
export function flagOf(name: string): string {
  return `--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/**
 * Flags as commander hands them over: every value a string, absent when not
 * given. Each flag is the kebab-case of the field it sets (FLAG_FIELDS);
 * `--algorithm x` and `--compare a,b` both set `algorithms`; `--set path=value`
 * (repeatable) sets any field, after every other flag.
 */
export type SimFlags = { [K in FlagFieldName]?: string | undefined } & {
  /** An experiment file (README "Experiment files"); the flags override it. */
  config?: string | undefined;
  preset?: string | undefined;
  compare?: string | undefined;
  algorithm?: string | undefined;
  set?: readonly string[] | undefined;
  /** Old spellings, refused with the new one (RENAMED_FLAGS). */
  dataDir?: string | undefined;
  localEpochs?: string | undefined;
  seed?: string | undefined;
};

/** Flags that were renamed so that one concept has one name across commands: the old spelling is refused with the new. */
export const RENAMED_FLAGS = {
  dataDir: { old: '--data-dir', now: '--data' },
  localEpochs: { old: '--local-epochs', now: '--epochs' },
  seed: { old: '--seed', now: '--seeds (a list: --seeds 1,2,3)' },
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

function parseNumber(flag: string, value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) fail(flag, value, 'a number');
  return n;
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

function parseSeeds(flag: string, value: string): number[] {
  const parts = value.split(',').map((s) => s.trim());
  if (parts.some((p) => !/^\d+$/.test(p) || !Number.isSafeInteger(Number(p)))) {
    fail(flag, value, 'a comma-separated list of non-negative integers');
  }
  const seeds = parts.map(Number);
  if (new Set(seeds).size !== seeds.length) fail(flag, value, 'distinct seeds');
  return seeds;
}

function readFlag(flag: string, text: string, reading: FlagReading): unknown {
  if (typeof reading !== 'string') return parseChoice(flag, text, reading);
  switch (reading) {
    case 'positive-int':
      return parsePositiveInt(flag, text);
    case 'number':
      return parseNumber(flag, text);
    case 'fraction':
      return parseFraction(flag, text);
    case 'path':
      return parseNonEmpty(flag, text);
    case 'seeds':
      return parseSeeds(flag, text);
    case 'test-cap':
      return text === 'all' ? null : parsePositiveInt(flag, text);
  }
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

/** The flags laid over `layers`, each as its own layer (named `--lr '0.05'` in errors), `--set` last. */
function applyFlags(layers: LayeredConfig, flags: SimFlags): void {
  if (flags.compare !== undefined && flags.algorithm !== undefined) {
    throw new SimConfigError(`--compare '${flags.compare}' and --algorithm '${flags.algorithm}' are exclusive: give one`);
  }
  if (flags.compare !== undefined) {
    layers.set(['algorithms'], parseAlgorithms('--compare', flags.compare), `--compare '${flags.compare}'`);
  }
  if (flags.algorithm !== undefined) {
    layers.set(
      ['algorithms'],
      [parseChoice('--algorithm', flags.algorithm, algorithmNames())],
      `--algorithm '${flags.algorithm}'`,
    );
  }
  for (const [name, field] of Object.entries(FLAG_FIELDS) as [FlagFieldName, FlagField][]) {
    const text = flags[name];
    if (text === undefined) continue;
    const flag = flagOf(name);
    layers.set(field.path, readFlag(flag, text, field.reading), `${flag} '${text}'`);
  }
  for (const assignment of flags.set ?? []) setField(layers, assignment);
}

/** `--set path=value`: any field, the value read as JSON when it is JSON (`0.05`, `{"kind":"iid"}`), else as text. */
function setField(layers: LayeredConfig, assignment: string): void {
  const source = `--set '${assignment}'`;
  const at = assignment.indexOf('=');
  if (at < 0) throw new SimConfigError(`${source}: expected path=value, e.g. --set algorithmConfigs.subfedavg-un.target=50`);
  const path = parseFieldPath(assignment.slice(0, at), source);
  if (path[0] === 'preset') throw new SimConfigError(`${source}: the preset is the base, not a field to set: use --preset`);
  layers.set(path, parseSetValue(assignment.slice(at + 1)), source);
}

/**
 * The experiment the command line describes: the preset (`--preset`, or the
 * experiment file's `preset`, default quick), the file (`--config`), then the
 * flags. Throws SimConfigError naming the flag, file or field at fault.
 */
export function resolveExperiment(flags: SimFlags): Experiment {
  for (const [key, { old, now }] of Object.entries(RENAMED_FLAGS)) {
    if (flags[key as keyof typeof RENAMED_FLAGS] !== undefined) throw new SimConfigError(`${old}: renamed to ${now}`);
  }
  if (flags.config !== undefined && flags.preset !== undefined) {
    throw new SimConfigError(
      `--preset '${flags.preset}' and --config '${flags.config}': the experiment file names its preset in its "preset" field; give one`,
    );
  }
  try {
    const layers =
      flags.config !== undefined
        ? experimentLayers(readExperimentFile(flags.config), flags.config)
        : experimentLayers(
            flags.preset === undefined ? {} : { preset: parseChoice('--preset', flags.preset, PRESET_NAMES) },
            '--preset',
          );
    applyFlags(layers, flags);
    return experimentOfLayers(layers);
  } catch (error) {
    if (error instanceof ConfigLayerError) throw new SimConfigError(error.message);
    throw error;
  }
}

/** The one run the flags describe (tests, benchmarks); an error when they give several seeds. */
export function resolveSimConfig(flags: SimFlags): SimConfig {
  const experiment = resolveExperiment(flags);
  if (experiment.seeds.length !== 1) {
    throw new SimConfigError(`--seeds: expected one seed for a single run, got ${experiment.seeds.join(',')}`);
  }
  return seedRun(experiment, experiment.seeds[0]);
}

// ------------------------------------------------------------------ what a run derives from its config

/** Model a given algorithm trains. */
export function modelFor(config: Pick<RunFields, 'model' | 'batchNormModel'>, algorithm: AlgorithmName): ModelName {
  return describeAlgorithm(algorithm).requiresBatchNorm ? config.batchNormModel : config.model;
}

/**
 * The algorithm's whole config for this run, as its schema parses it: its
 * block of `algorithmConfigs` (defaults for the rest) with the run's `training`.
 */
export function algorithmConfig(config: RunFields, algorithm: AlgorithmName): TrainingConfig {
  return describeAlgorithm(algorithm).parseConfig({ ...config.algorithmConfigs[algorithm], ...config.training });
}

/** Number of members per round, the coordinator's rule: K = max(round(fraction*N), 1). */
export function membersPerRound(config: Pick<RunFields, 'fraction' | 'clients'>): number {
  return Math.max(Math.round(config.fraction * config.clients), 1);
}

/** The clients that attack under `config.attack` (seeded; round(fraction * clients), at least one); none without it. */
export function attackers(config: Pick<SimConfig, 'attack' | 'clients' | 'seed'>): ReadonlySet<number> {
  if (config.attack === undefined) return new Set();
  const count = Math.max(1, Math.round(config.attack.fraction * config.clients));
  const order = new SeededRandom(deriveSeed(config.seed, 0xa77ac)).permutation(config.clients);
  return new Set(order.subarray(0, count));
}

// Last: reading the presets validates them, which needs everything above.
/**
 * `paper` reproduces MMorafah/Sub-FedAvg's setting on Fashion-MNIST (the
 * algorithms' own defaults are the reference's: p 10%, target 30% Un / 50% Hy,
 * ..., plus its choice of gating pruning on the client's TEST accuracy);
 * `paper-mnist` and `paper-cifar10` are the reference's own scripts (300
 * rounds) on MNIST and CIFAR-10 (lenet5-cifar, 3 channels). `quick` is the
 * README's first command: 20 clients on the embedded 10k-image split, a few
 * minutes on two cores; `dirichlet` is quick with a Dirichlet(0.5) split.
 * Each preset at its first seed, as a run config (tests, benchmarks).
 */
export const PRESETS: Record<PresetName, SimConfig> = Object.fromEntries(
  PRESET_NAMES.map((name) => {
    const experiment = loadPreset(name);
    return [name, seedRun(experiment, experiment.seeds[0])];
  }),
) as Record<PresetName, SimConfig>;
