/**
 * The options of `subfed client`, validated once by one schema. Values come
 * from sources layered in order, later ones overriding earlier ones; today the
 * only source is the command line, and a config file or a token taken from a
 * file or the environment is one more OptionSource placed before the flags.
 * Every error names the source's spelling of the field (`--rounds`) and the
 * value it held. Defaults live in the schema, never in commander, so that a
 * flag left out does not shadow what an earlier source says.
 */
import { readFile } from 'node:fs/promises';
import { Option } from 'commander';
import { z } from 'zod';
import { VALUE_ENCODING_NAMES } from '../proto/messages.js';
import { formatZodIssues } from '../proto/zod-issues.js';
import { algorithmNames } from './algorithms/registry.js';
import { BACKEND_CHOICES } from './backend.js';
import { MODEL_NAMES } from './model.js';

/** Bad command input (flags, data folder, the coordinator's model); the message names what is wrong. */
export class ClientCommandError extends Error {
  override readonly name = 'ClientCommandError';
}

const DEFAULTS = { stateDir: '.subfed-client', algorithm: 'subfedavg-un', valueEncoding: 'f32' } as const;

const HOST_PORT = /^[^:\s[\]]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/;
const nonEmpty = (what: string) => z.string({ error: `expected ${what}` }).min(1, { error: `expected ${what}` });
const oneOf = <const T extends readonly string[]>(values: T) => z.enum(values, { error: `expected one of ${values.join(', ')}` });

export const clientOptionsSchema = z.strictObject({
  /** Coordinator address. */
  server: z.string({ error: 'expected host:port' }).regex(HOST_PORT, { error: 'expected host:port' }),
  enrollmentToken: nonEmpty("the coordinator's enrollment token"),
  /** The client's data folder (see client/data/folder.ts). */
  data: nonEmpty('a data folder'),
  /** Where the personal state lives. */
  stateDir: nonEmpty('a folder').default(DEFAULTS.stateDir),
  algorithm: oneOf(algorithmNames()).default(DEFAULTS.algorithm),
  /** The algorithm's config, validated by the algorithm (reference defaults for missing fields). */
  algorithmConfig: z.unknown().optional(),
  /** Value encoding on the wire, both directions. */
  valueEncoding: oneOf(VALUE_ENCODING_NAMES).default(DEFAULTS.valueEncoding),
  /** Default: SUBFED_BACKEND, else auto. */
  backend: oneOf(BACKEND_CHOICES).optional(),
  /** Zoo model; default: the one whose manifest is the coordinator's (`local` needs it named). */
  model: oneOf(MODEL_NAMES).optional(),
  /** Name sent on join. Default `<hostname>-<pid>`. */
  name: nonEmpty('a client name').optional(),
  /** Drives the validation split and shuffling. Default: derived from the name. */
  seed: z.int({ error: 'expected a non-negative integer' }).min(0, { error: 'expected a non-negative integer' }).optional(),
  /** PEM CA certificate file to verify a TLS coordinator. */
  tlsCa: nonEmpty('a PEM certificate file').optional(),
  /** Stop after this many rounds (default: until the coordinator says training is finished, or stopped; for `local`, 1). */
  maxRounds: z.int({ error: 'expected a positive integer' }).positive({ error: 'expected a positive integer' }).optional(),
  /** Leave the federation when done (the next start joins under a new id). Default: stay enrolled and resume. */
  leave: z.boolean({ error: 'expected true or false' }).default(false),
});

export type ClientOptions = z.output<typeof clientOptionsSchema>;
/** What a caller writes: defaults may be left out. */
export type ClientOptionsInput = z.input<typeof clientOptionsSchema>;
export type ClientOptionKey = keyof ClientOptionsInput;

/** Where option values come from, e.g. the command line or (later) a config file. */
export interface OptionSource {
  /** How an error names a field of this source: `--rounds`, `client.json: maxRounds`. */
  readonly fieldName: (key: ClientOptionKey) => string;
  /** Values as the source holds them (unvalidated); undefined = not set here. */
  readonly values: { readonly [K in ClientOptionKey]?: unknown };
}

/**
 * Merges the sources (a later one overrides an earlier one, field by field) and
 * validates the result; a bad or missing value is named as the source that set
 * it (a missing one as the last source would).
 */
export function resolveClientOptions(sources: readonly OptionSource[]): ClientOptions {
  if (sources.length === 0) throw new RangeError('resolveClientOptions: no option source');
  const merged: Partial<Record<ClientOptionKey, unknown>> = {};
  const setBy = new Map<PropertyKey, OptionSource>();
  for (const source of sources) {
    for (const [key, value] of Object.entries(source.values) as [ClientOptionKey, unknown][]) {
      if (value === undefined) continue;
      merged[key] = value;
      setBy.set(key, source);
    }
  }
  const parsed = clientOptionsSchema.safeParse(merged);
  if (parsed.success) return parsed.data;
  const last = sources[sources.length - 1];
  const fieldName = (path: readonly PropertyKey[]): string => {
    const key = path[0] as ClientOptionKey;
    return (setBy.get(key) ?? last).fieldName(key);
  };
  throw new ClientCommandError(formatZodIssues(parsed.error, { input: merged, fieldName, root: 'options' }).join('; '));
}

/** Options written in code (tests, embedding): validated the same way, errors name the fields. */
export function clientOptions(input: ClientOptionsInput): ClientOptions {
  return resolveClientOptions([{ fieldName: (key) => key, values: input }]);
}

// ------------------------------------------------------------------ command line

/** How a flag's text becomes a value for the schema: as typed, a number when it reads as one, or JSON (inline or a file). */
type FlagReading = 'as-typed' | 'number' | 'json';

interface FlagSpec {
  /** Commander's flag syntax. */
  readonly flags: string;
  readonly description: string;
  /** Default 'as-typed'. */
  readonly reading?: FlagReading;
}

/** The command line of `subfed client`: one flag per option. */
export const CLIENT_FLAGS = {
  server: { flags: '--server <host:port>', description: 'coordinator gRPC address (required)' },
  enrollmentToken: { flags: '--token <token>', description: 'enrollment token (required)' },
  data: {
    flags: '--data <dir>',
    description: 'data folder: train/ and test/ (IDX or CIFAR-10 files), or files to split 80/20 (required)',
  },
  stateDir: {
    flags: '--state-dir <dir>',
    description: `personal state folder (mask, weights, BN stats; default ${DEFAULTS.stateDir})`,
  },
  algorithm: {
    flags: '--algorithm <name>',
    description: `${algorithmNames().join(' | ')} (default ${DEFAULTS.algorithm})`,
  },
  algorithmConfig: {
    flags: '--config <json|file>',
    description: 'algorithm config as inline JSON or a JSON file, e.g. {"target":50}',
    reading: 'json',
  },
  valueEncoding: {
    flags: '--values <enc>',
    description: `value encoding on the wire: ${VALUE_ENCODING_NAMES.join(' | ')} (default ${DEFAULTS.valueEncoding})`,
  },
  backend: {
    flags: '--backend <name>',
    description: `tfjs backend: ${BACKEND_CHOICES.join(' | ')} (default SUBFED_BACKEND, else auto)`,
  },
  model: {
    flags: '--model <name>',
    description: "zoo model (default: the one matching the coordinator's manifest; required for local)",
  },
  name: { flags: '--name <name>', description: 'client name sent on join (default <hostname>-<pid>)' },
  seed: { flags: '--seed <n>', description: 'seed of the validation split and shuffling', reading: 'number' },
  tlsCa: {
    flags: '--tls-ca <file>',
    description: "PEM CA certificate to verify the coordinator's TLS certificate",
  },
  maxRounds: { flags: '--rounds <n>', description: 'stop after this many rounds', reading: 'number' },
  leave: {
    flags: '--leave',
    description: 'leave the federation when done (default: stay enrolled and resume next time)',
  },
} as const satisfies Record<ClientOptionKey, FlagSpec>;

/** Commander's parsed flags, by attribute name (`--tls-ca` -> `tlsCa`), all still text. */
export type ClientFlags = Readonly<Record<string, string | boolean | undefined>>;

/** The commander options of CLIENT_FLAGS, with no defaults (the schema holds them). */
export function clientFlagOptions(): Option[] {
  return Object.values(CLIENT_FLAGS).map((spec) => new Option(spec.flags, spec.description));
}

/** Flags -> options; every bad value is an error naming its flag and what it held. */
export async function clientOptionsFromFlags(flags: ClientFlags): Promise<ClientOptions> {
  return resolveClientOptions([await flagSource(flags)]);
}

/** The command line as an option source: numbers read as numbers, --config read as JSON. */
export async function flagSource(flags: ClientFlags): Promise<OptionSource> {
  const values: Partial<Record<ClientOptionKey, unknown>> = {};
  const names = new Map<ClientOptionKey, string>();
  for (const [key, spec] of Object.entries(CLIENT_FLAGS) as [ClientOptionKey, FlagSpec][]) {
    const option = new Option(spec.flags);
    names.set(key, option.long ?? spec.flags);
    const text = flags[option.attributeName()];
    if (text === undefined) continue;
    values[key] = await readFlag(text, spec.reading ?? 'as-typed', option.long ?? spec.flags);
  }
  return { fieldName: (key) => names.get(key) ?? key, values };
}

/** A switch (`--leave`) arrives as a boolean and is taken as is. */
async function readFlag(text: string | boolean, reading: FlagReading, flag: string): Promise<unknown> {
  if (typeof text === 'boolean') return text;
  switch (reading) {
    case 'as-typed':
      return text;
    case 'number':
      // Text that is not a number stays text, so the schema's error quotes what was typed.
      return /^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/.test(text) ? Number(text) : text;
    case 'json':
      return readJsonFlag(text, flag);
  }
}

/** Inline JSON (starting with '{') or the path of a JSON file. */
async function readJsonFlag(value: string, flag: string): Promise<unknown> {
  let text = value;
  if (!value.trimStart().startsWith('{')) {
    try {
      text = await readFile(value, 'utf8');
    } catch (err) {
      throw new ClientCommandError(`${flag}: cannot read '${value}' (${(err as Error).message})`);
    }
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ClientCommandError(`${flag}: not valid JSON (${(err as Error).message})`);
  }
}
