import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { PRUNING_EPOCHS_REASON, PRUNING_MIN_EPOCHS, trainingOverridesSchema } from '../proto/training-config.js';
import { formatZodIssues } from '../proto/zod-issues.js';
import type { TensorMap, TensorSpec } from './model.js';
import { validateInitialModel } from './model.js';

const positiveInt = z.int({ error: 'expected a positive integer' }).positive({ error: 'expected a positive integer' });
const port = z
  .int({ error: 'expected a port number (0..65535)' })
  .min(0, { error: 'expected a port number (0..65535)' })
  .max(65535, { error: 'expected a port number (0..65535)' });
const nonEmpty = (what: string) => z.string({ error: `expected ${what}` }).min(1, { error: `expected ${what}` });

// Node timers cap at 2^31-1 ms (~24.8 days); a longer one would fire at once.
const timerMs = positiveInt.max(2 ** 31 - 1, { error: 'expected at most 2147483647 ms' });

/** Defaults sized for clients that heartbeat every 5 s: stale after 6 missed beats, gone after 5 minutes of silence. */
export const DEFAULT_LIVENESS = { staleAfterMs: 30_000, goneAfterMs: 300_000 } as const;

const livenessSchema = z.union(
  [
    z.literal('off'),
    z
      .object({
        staleAfterMs: timerMs.default(DEFAULT_LIVENESS.staleAfterMs),
        goneAfterMs: timerMs.default(DEFAULT_LIVENESS.goneAfterMs),
      })
      .strict()
      .refine((t) => t.goneAfterMs > t.staleAfterMs, {
        error: 'expected more than staleAfterMs (a client is stale before it is gone)',
        path: ['goneAfterMs'],
      }),
  ],
  { error: 'expected "off" or { "staleAfterMs": ms, "goneAfterMs": ms }' },
);

const positiveNumber = z.number({ error: 'expected a positive number' }).positive({ error: 'expected a positive number' });

/** Joins: a token bucket per peer address (burst, then perSecond), and a cap on enrolled clients. */
export const DEFAULT_JOINS = { maxClients: 10_000, perPeer: { burst: 20, perSecond: 1 } } as const;

const joinsSchema = z
  .object({
    /** Enrolled clients that have not left; a join beyond it is RESOURCE_EXHAUSTED. */
    maxClients: positiveInt.default(DEFAULT_JOINS.maxClients),
    /** Join attempts per peer address (token bucket); "off" for a simulation whose clients all join from one process. */
    perPeer: z
      .union(
        [
          z.literal('off'),
          z
            .object({
              burst: positiveInt.default(DEFAULT_JOINS.perPeer.burst),
              perSecond: positiveNumber.default(DEFAULT_JOINS.perPeer.perSecond),
            })
            .strict(),
        ],
        { error: 'expected "off" or { "burst": n, "perSecond": n }' },
      )
      .default(DEFAULT_JOINS.perPeer),
  })
  .strict();

/**
 * Open gRPC streams (PullTask and PushUpdate): how many a client may hold and
 * all clients together, how long one may sit without progress, and how many
 * bytes of tensor pieces and prepared tasks they may buffer together.
 */
export const DEFAULT_STREAMS = { perClient: 4, total: 2048, idleMs: 30_000, maxBufferedBytes: 256 * 1024 * 1024 } as const;

const streamsSchema = z
  .object({
    perClient: positiveInt.default(DEFAULT_STREAMS.perClient),
    total: positiveInt.default(DEFAULT_STREAMS.total),
    idleMs: timerMs.default(DEFAULT_STREAMS.idleMs),
    maxBufferedBytes: positiveInt.default(DEFAULT_STREAMS.maxBufferedBytes),
  })
  .strict();

const aggregationSchema = z.union(
  [
    z.literal('mean'),
    z
      .object({
        kind: z.literal('trimmed-mean', { error: 'expected "trimmed-mean"' }),
        /** Share of the values of a position dropped at each end, in [0, 0.5). */
        trim: z
          .number({ error: 'expected a fraction in [0, 0.5)' })
          .min(0, { error: 'expected a fraction in [0, 0.5)' })
          .lt(0.5, { error: 'expected a fraction in [0, 0.5)' }),
      })
      .strict(),
  ],
  { error: 'expected "mean" or { "kind": "trimmed-mean", "trim": fraction }' },
);
export type AggregationConfig = z.output<typeof aggregationSchema>;

export const coordinatorConfigSchema = z
  .object({
    /** Model file (JSON: manifest + initial values), relative to the config file. The sim passes the model in-process instead. */
    model: nonEmpty('a path to a model JSON file').optional(),
    grpc: z
      .object({
        host: nonEmpty('a host name or address').default('127.0.0.1'),
        port: port.default(0),
        /** Largest single gRPC message either way; tensors travel in pieces below this. */
        maxMessageBytes: positiveInt.default(4 * 1024 * 1024),
      })
      .strict()
      .prefault({}),
    http: z
      .object({
        host: nonEmpty('a host name or address').default('127.0.0.1'),
        port: port.default(0),
        enabled: z.boolean({ error: 'expected true or false' }).default(true),
      })
      .strict()
      .prefault({}),
    rounds: positiveInt,
    /** Share of the alive clients sampled per round: K = max(round(fraction * alive), 1). */
    fraction: z
      .number({ error: 'expected a fraction in (0, 1]' })
      .gt(0, { error: 'expected a fraction in (0, 1]' })
      .max(1, { error: 'expected a fraction in (0, 1]' }),
    /** A round opens only once this many clients are registered. */
    minClients: positiveInt.default(1),
    /** Fraction of the round's members that must report for a commit at the deadline. */
    quorum: z
      .number({ error: 'expected a fraction in (0, 1]' })
      .gt(0, { error: 'expected a fraction in (0, 1]' })
      .max(1, { error: 'expected a fraction in (0, 1]' })
      .default(0.5),
    roundDeadlineMs: timerMs.default(60_000),
    /**
     * When a silent client turns stale (not sampled) and gone (not sampled, and
     * no longer awaited by its round); "off" = every enrolled client is alive.
     * See liveness.ts.
     */
    liveness: livenessSchema.default(DEFAULT_LIVENESS),
    /** How long a client without a task waits before pulling again. */
    retryAfterMs: positiveInt.default(500),
    seed: z.int({ error: 'expected an integer' }).min(0, { error: 'expected a non-negative integer' }).default(0),
    weighting: z.enum(['examples', 'unweighted'], { error: 'expected "examples" or "unweighted"' }).default('examples'),
    /** Largest L2 norm of one update's delta (all tensors together). */
    updateNormBound: z
      .number({ error: 'expected a positive number' })
      .positive({ error: 'expected a positive number' })
      .default(1000),
    /** Beyond updateNormBound: refuse the update (INVALID_ARGUMENT), or scale its delta down to the bound. */
    updateNormMode: z.enum(['reject', 'clip'], { error: 'expected "reject" or "clip"' }).default('reject'),
    /**
     * How the reporters' deltas become one per position: the (weighted)
     * intersection mean, or a coordinate-wise trimmed mean over the reporters
     * that keep each position (aggregate.ts).
     */
    aggregation: aggregationSchema.default('mean'),
    /** Largest accepted num_examples of one update, so one client cannot outweigh the rest at will. */
    maxExamples: positiveInt.default(1_000_000),
    enrollmentToken: nonEmpty('a non-empty enrollment token'),
    joins: joinsSchema.prefault({}),
    streams: streamsSchema.prefault({}),
    tls: z
      .object({
        cert: nonEmpty('a path to a PEM certificate'),
        key: nonEmpty('a path to a PEM private key'),
        /**
         * Mutual TLS: a PEM CA certificate; every client must present a certificate it signed, and the
         * certificate's subject CN is the client's name: joining records it, every later call must present it.
         */
        clientCa: nonEmpty('a path to a PEM CA certificate').optional(),
      })
      .strict()
      .optional(),
    /** SQLite file; omitted = in memory (nothing survives a restart). */
    sqlite: nonEmpty('a path to a SQLite file').optional(),
    /**
     * Sent to every client with each task; the fields set override the client
     * algorithm's own. The same strict schema the clients parse it with
     * (proto/training-config.ts), so a typo or a bad value fails here, at start-up.
     */
    training: trainingOverridesSchema.default({}),
    logLevel: z
      .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { error: 'expected a pino log level' })
      .default('info'),
  })
  .strict();

export type CoordinatorConfig = z.output<typeof coordinatorConfigSchema>;

/** A config or model file the coordinator cannot use; the message names the file and field. `subfed server` exits 2. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}
export type CoordinatorConfigInput = z.input<typeof coordinatorConfigSchema>;

/**
 * Fields that were renamed so that one concept has one name across files and
 * flags (`subfed sim --fraction`): an old spelling is refused with the new one.
 */
const RENAMED_FIELDS: Readonly<Record<string, string>> = { frac: 'fraction' };

/** Parses a config object; a bad one throws naming each field: `rounds: expected a positive integer, got -3`. */
export function parseConfig(data: unknown, source = 'config'): CoordinatorConfig {
  const renamed =
    data !== null && typeof data === 'object' ? Object.keys(data).filter((key) => Object.hasOwn(RENAMED_FIELDS, key)) : [];
  const result = coordinatorConfigSchema.safeParse(data);
  if (result.success) return result.data;
  // An old spelling is said once, with its new name, not also as an unknown field and a missing one.
  const newNames = new Set(renamed.map((key) => RENAMED_FIELDS[key]));
  const issues: typeof result.error.issues = [];
  for (const issue of result.error.issues) {
    if (issue.path.length === 1 && newNames.has(String(issue.path[0]))) continue;
    if (issue.code !== 'unrecognized_keys') issues.push(issue);
    else {
      const keys = issue.keys.filter((key) => !renamed.includes(key));
      if (keys.length > 0) issues.push({ ...issue, keys });
    }
  }
  const problems = [
    ...renamed.map((key) => `${key}: renamed to "${RENAMED_FIELDS[key]}"`),
    ...formatZodIssues(new z.ZodError(issues), { input: data }),
  ];
  throw new ConfigError(`${source}: ${problems.join('; ')}`);
}

/**
 * What a valid config may still get wrong, said once at start-up. The
 * coordinator does not know its clients' algorithms, so it cannot refuse:
 * `training.epochs` below PRUNING_MIN_EPOCHS suits dense clients, while every
 * Sub-FedAvg client refuses each task with it (proto/training-config.ts).
 */
export function configWarnings(config: CoordinatorConfig): string[] {
  const epochs = config.training.epochs;
  if (epochs === undefined || epochs >= PRUNING_MIN_EPOCHS) return [];
  return [
    `training.epochs is ${epochs}: every Sub-FedAvg client will refuse its tasks (${PRUNING_EPOCHS_REASON}); ` +
      `set at least ${PRUNING_MIN_EPOCHS} unless every client runs an algorithm without pruning`,
  ];
}

/** Reads and validates a config file; relative paths inside it are resolved against its folder. */
export function loadConfigFile(path: string): CoordinatorConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`${path}: cannot read config file (${(err as Error).message})`);
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${path}: not valid JSON (${(err as Error).message})`);
  }
  const config = parseConfig(data, path);
  const base = dirname(resolve(path));
  const rel = (p: string) => resolve(base, p);
  return {
    ...config,
    model: config.model === undefined ? undefined : rel(config.model),
    sqlite: config.sqlite === undefined || config.sqlite === ':memory:' ? config.sqlite : rel(config.sqlite),
    tls:
      config.tls === undefined
        ? undefined
        : {
            cert: rel(config.tls.cert),
            key: rel(config.tls.key),
            ...(config.tls.clientCa !== undefined ? { clientCa: rel(config.tls.clientCa) } : {}),
          },
  };
}

/** The PEM files `tls` names; a file that cannot be read is named with its field (`tls.cert: cannot read ...`). */
export function readTlsFiles(tls: { cert: string; key: string; clientCa?: string | undefined }): {
  cert: Buffer;
  key: Buffer;
  clientCa: Buffer | undefined;
} {
  const read = (field: 'cert' | 'key' | 'clientCa', path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new ConfigError(`tls.${field}: cannot read '${path}' (${(err as Error).message})`);
    }
  };
  return {
    cert: read('cert', tls.cert),
    key: read('key', tls.key),
    clientCa: tls.clientCa === undefined ? undefined : read('clientCa', tls.clientCa),
  };
}

// ------------------------------------------------------------------ model file

const modelFileSchema = z
  .object({
    manifest: z
      .array(
        z
          .object({
            name: nonEmpty('a tensor name'),
            shape: z.array(positiveInt, { error: 'expected an array of positive integers' }),
            prunable: z.boolean({ error: 'expected true or false' }),
          })
          .strict(),
        { error: 'expected an array of tensor specs' },
      )
      .min(1, { error: 'expected at least one tensor' }),
    /** Per tensor: a number array, or base64 of little-endian float32. */
    values: z.record(z.string(), z.union([z.array(z.number()), z.string()]), {
      error: 'expected an object of tensor values',
    }),
  })
  .strict();

export interface InitialModel {
  manifest: TensorSpec[];
  initial: TensorMap;
}

function decodeValues(name: string, raw: number[] | string): Float32Array {
  if (typeof raw !== 'string') return Float32Array.from(raw);
  const bytes = Buffer.from(raw, 'base64');
  if (bytes.length % 4 !== 0) throw new Error(`values.${name}: base64 payload is not a whole number of float32s`);
  const out = new Float32Array(bytes.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = bytes.readFloatLE(i * 4);
  return out;
}

/** Model file: `{ manifest: TensorSpec[], values: { [name]: number[] | base64 float32 LE } }`. */
export function parseModelFile(data: unknown, source = 'model'): InitialModel {
  const result = modelFileSchema.safeParse(data);
  if (!result.success) {
    throw new ConfigError(`${source}: ${formatZodIssues(result.error, { input: data }).join('; ')}`);
  }
  const manifest: TensorSpec[] = result.data.manifest.map((t) => ({ name: t.name, shape: [...t.shape], prunable: t.prunable }));
  const initial: TensorMap = new Map();
  try {
    for (const [name, raw] of Object.entries(result.data.values)) initial.set(name, decodeValues(name, raw));
    validateInitialModel(manifest, initial);
  } catch (err) {
    throw new ConfigError(`${source}: ${(err as Error).message}`);
  }
  return { manifest, initial };
}

export function loadModelFile(path: string): InitialModel {
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new ConfigError(`${path}: cannot read model file (${(err as Error).message})`);
  }
  return parseModelFile(data, path);
}

/** The JSON a model file holds, with values as base64 float32 (exact and compact). */
export function modelFileJson(manifest: readonly TensorSpec[], tensors: TensorMap): string {
  const values: Record<string, string> = {};
  for (const spec of manifest) {
    const t = tensors.get(spec.name);
    if (t === undefined) throw new Error(`model file: tensor "${spec.name}" has no values`);
    values[spec.name] = Buffer.from(t.buffer, t.byteOffset, t.byteLength).toString('base64');
  }
  return JSON.stringify({ manifest, values });
}
