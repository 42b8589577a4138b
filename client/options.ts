/**
 * The options of `subfed client`, validated once by one schema. Values come
 * from sources layered in order, later ones overriding earlier ones: a config
 * file (`--config client.json`), the environment (`SUBFED_TOKEN`), then the
 * command line. Every error names the source's spelling of the field
 * (`--rounds`, `client.json: rounds`, `SUBFED_TOKEN`) and the value it held,
 * except the token's, which no message ever shows. Defaults live in the
 * schema, never in commander, so that a flag left out does not shadow what an
 * earlier source says.
 *
 * The enrollment token never comes from the command line (`ps` shows every
 * argument to every user): `--token` is refused, with a message saying where
 * the token goes instead.
 */
import { readFile, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { Option } from 'commander';
import { z } from 'zod';
import { LOG_LEVELS } from '../proto/log-levels.js';
import { VALUE_ENCODING_NAMES } from '../proto/messages.js';
import { describeValue, formatZodIssues } from '../proto/zod-issues.js';
import { AlgorithmConfigError } from './algorithms/config.js';
import { algorithmNames, describeAlgorithm } from './algorithms/registry.js';
import { BACKEND_CHOICES } from './backend.js';
import { DEFAULT_LABEL_COLUMN } from './data/csv.js';
import { MODEL_NAMES } from './model-names.js';

/** Bad command input (flags, config file, data folder, the coordinator's model); the message names what is wrong. */
export class ClientCommandError extends Error {
  override readonly name = 'ClientCommandError';
}

/** The environment variable holding the enrollment token. */
export const TOKEN_ENV = 'SUBFED_TOKEN';

const DEFAULTS = {
  stateDir: '.subfed-client',
  algorithm: 'subfedavg-un',
  values: 'f32',
  labelColumn: DEFAULT_LABEL_COLUMN,
  logLevel: 'info',
  heartbeatMs: 5000,
} as const;

const HOST_PORT = /^[^:\s[\]]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/;
const nonEmpty = (what: string) => z.string({ error: `expected ${what}` }).min(1, { error: `expected ${what}` });
const oneOf = <const T extends readonly string[]>(values: T) => z.enum(values, { error: `expected one of ${values.join(', ')}` });
const positiveInt = z.int({ error: 'expected a positive integer' }).positive({ error: 'expected a positive integer' });

export const clientOptionsSchema = z.strictObject({
  /** Coordinator address. */
  server: z.string({ error: 'expected host:port' }).regex(HOST_PORT, { error: 'expected host:port' }),
  /** A secret: from SUBFED_TOKEN or a token file, never the command line; never in a message or a log line. */
  enrollmentToken: nonEmpty("the coordinator's enrollment token"),
  /** The client's data folder (see client/data/folder.ts). */
  data: nonEmpty('a data folder'),
  /** A CSV's label column. */
  labelColumn: nonEmpty('a column name').default(DEFAULTS.labelColumn),
  /** Where the personal state lives. */
  stateDir: nonEmpty('a folder').default(DEFAULTS.stateDir),
  algorithm: oneOf(algorithmNames()).default(DEFAULTS.algorithm),
  /** The algorithm's config, validated by the algorithm (reference defaults for missing fields). */
  algorithmConfig: z.unknown().optional(),
  /** Value encoding on the wire, both directions. */
  values: oneOf(VALUE_ENCODING_NAMES).default(DEFAULTS.values),
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
  /** PEM certificate naming this client, for a coordinator that asks for one (mutual TLS); with tlsKey. */
  tlsCert: nonEmpty('a PEM certificate file').optional(),
  /** The private key of tlsCert. */
  tlsKey: nonEmpty('a PEM private key file').optional(),
  /** Stop after this many rounds (default: until the coordinator says training is finished, or stopped; for `local`, 1). */
  rounds: positiveInt.optional(),
  /** Leave the federation when done (the next start joins under a new id). Default: stay enrolled and resume. */
  leave: z.boolean({ error: 'expected true or false' }).default(false),
  logLevel: oneOf(LOG_LEVELS).default(DEFAULTS.logLevel),
  /** Milliseconds between heartbeats while the client waits for a task and while it trains. */
  heartbeatMs: positiveInt.default(DEFAULTS.heartbeatMs),
});

export type ClientOptionKey = keyof z.input<typeof clientOptionsSchema>;
/** What a caller writes: defaults may be left out. */
export type ClientOptionsInput = z.input<typeof clientOptionsSchema>;

/** The validated options, with how to name each one in a later error and what to warn about at start. */
export type ClientOptions = z.output<typeof clientOptionsSchema> & {
  /** An option as the source that set it spells it (`--data`, `client.json: data`), for errors found later. */
  readonly nameOf: (key: ClientOptionKey) => string;
  /** Said once at start, e.g. a token file others can read. */
  readonly warnings: readonly string[];
};

/** Where option values come from: the command line, a config file, the environment. */
export interface OptionSource {
  /** How an error names a field of this source: `--rounds`, `client.json: rounds`. */
  readonly fieldName: (key: ClientOptionKey) => string;
  /** Values as the source holds them (unvalidated); undefined = not set here. */
  readonly values: { readonly [K in ClientOptionKey]?: unknown };
  readonly warnings?: readonly string[];
}

/**
 * Merges the sources (a later one overrides an earlier one, field by field) and
 * validates the result, the algorithm's config included; a bad or missing value
 * is named as the source that set it (a missing one as the last source would).
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
  const last = sources[sources.length - 1];
  const nameOf = (key: ClientOptionKey): string => (setBy.get(key) ?? last).fieldName(key);
  const problems: string[] = [];
  if (merged.enrollmentToken === undefined) {
    problems.push(
      `no enrollment token: set ${TOKEN_ENV}, or give a file holding it with --token-file (tokenFile in a --config file)`,
    );
  }
  const parsed = clientOptionsSchema.safeParse(merged);
  if (!parsed.success) {
    const issues = parsed.error.issues.filter((i) => !(i.path[0] === 'enrollmentToken' && merged.enrollmentToken === undefined));
    const error = new z.ZodError(issues);
    // The token is never quoted, even when it is what is wrong.
    const secret = merged.enrollmentToken;
    const input = { ...merged, ...(secret !== undefined && secret !== '' ? { enrollmentToken: '(not shown)' } : {}) };
    problems.push(...formatZodIssues(error, { input, fieldName: (path) => nameOf(path[0] as ClientOptionKey), root: 'options' }));
  }
  if (problems.length > 0 || !parsed.success) throw new ClientCommandError(problems.join('; '));
  const options = parsed.data;
  try {
    describeAlgorithm(options.algorithm).parseConfig(options.algorithmConfig);
  } catch (err) {
    if (!(err instanceof AlgorithmConfigError)) throw err;
    throw new ClientCommandError(
      `${nameOf(options.algorithmConfig === undefined ? 'algorithm' : 'algorithmConfig')}: ${err.message}`,
    );
  }
  return { ...options, nameOf, warnings: sources.flatMap((s) => s.warnings ?? []) };
}

/** Options written in code (tests, embedding): validated the same way, errors name the fields. */
export function clientOptions(input: ClientOptionsInput): ClientOptions {
  return resolveClientOptions([{ fieldName: (key) => key, values: input }]);
}

// ------------------------------------------------------------------ readings

/**
 * How a value is read, on the command line and in a config file:
 * - `text`: as typed (a file: any JSON value, validated by the schema);
 * - `number`: a number when the text reads as one (a file: JSON as is);
 * - `path`: as typed; in a config file, relative to the file's folder;
 * - `json`: inline JSON (starting with `{`) or the path of a JSON file (a file: an object, or such a path);
 * - `secret-file`: the path of a file holding only the value (trailing whitespace dropped).
 */
type Reading = 'text' | 'number' | 'path' | 'json' | 'secret-file';

interface FlagSpec {
  /** Commander's flag syntax; its long name, camel-cased, is the config file's field. */
  readonly flags: string;
  readonly description: string;
  /** Default 'text'. */
  readonly reading?: Reading;
}

/**
 * The command line of `subfed client`: one flag per option, the kebab-case of
 * the option's name, which is also its field in a config file (`--state-dir`,
 * `stateDir`). One exception: the enrollment token is read from the file that
 * `--token-file` (`tokenFile`) names, never given itself.
 */
export const CLIENT_FLAGS = {
  server: { flags: '--server <host:port>', description: 'coordinator gRPC address (required)' },
  enrollmentToken: {
    flags: '--token-file <file>',
    description: `file holding the enrollment token (or set ${TOKEN_ENV}; one of them is required)`,
    reading: 'secret-file',
  },
  data: {
    flags: '--data <dir>',
    description:
      'data folder: IDX or CIFAR-10 files, CSV files, or one folder of PNG images per class; ' +
      'in train/ and test/ subfolders, or directly (split 80/20) (required)',
    reading: 'path',
  },
  labelColumn: {
    flags: '--label-column <name>',
    description: `the label column of CSV data (default ${DEFAULTS.labelColumn})`,
  },
  stateDir: {
    flags: '--state-dir <dir>',
    description: `personal state folder (mask, weights, BN stats; default ${DEFAULTS.stateDir})`,
    reading: 'path',
  },
  algorithm: {
    flags: '--algorithm <name>',
    description: `${algorithmNames().join(' | ')} (default ${DEFAULTS.algorithm})`,
  },
  algorithmConfig: {
    flags: '--algorithm-config <json|file>',
    description: 'algorithm config as inline JSON or a JSON file, e.g. {"target":50}',
    reading: 'json',
  },
  values: {
    flags: '--values <enc>',
    description: `value encoding on the wire: ${VALUE_ENCODING_NAMES.join(' | ')} (default ${DEFAULTS.values})`,
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
    reading: 'path',
  },
  tlsCert: {
    flags: '--tls-cert <file>',
    description: 'PEM certificate naming this client, for a coordinator that requires client certificates (with --tls-key)',
    reading: 'path',
  },
  tlsKey: { flags: '--tls-key <file>', description: 'PEM private key of --tls-cert', reading: 'path' },
  rounds: { flags: '--rounds <n>', description: 'stop after this many rounds', reading: 'number' },
  leave: {
    flags: '--leave',
    description: 'leave the federation when done (default: stay enrolled and resume next time)',
  },
  logLevel: {
    flags: '--log-level <level>',
    description: `${LOG_LEVELS.join(' | ')} (default ${DEFAULTS.logLevel}); JSON lines unless stderr is a terminal`,
  },
  heartbeatMs: {
    flags: '--heartbeat-ms <ms>',
    description: `milliseconds between heartbeats while waiting and training (default ${DEFAULTS.heartbeatMs})`,
    reading: 'number',
  },
} as const satisfies Record<ClientOptionKey, FlagSpec>;

/** Flags of `subfed client` that are no option: the config file, and the refused --token. */
const CONFIG_FLAG = { flags: '--config <file>', description: 'client config file (JSON); flags override it' } as const;
const TOKEN_FLAG = '--token <token>';

/** `--state-dir` and `stateDir` for stateDir; `--token-file` and `tokenFile` for enrollmentToken. */
function spelling(key: ClientOptionKey): { flag: string; field: string; reading: Reading } {
  const spec: FlagSpec = CLIENT_FLAGS[key];
  const option = new Option(spec.flags);
  return { flag: option.long ?? spec.flags, field: option.attributeName(), reading: spec.reading ?? 'text' };
}

const KEYS = Object.keys(CLIENT_FLAGS) as ClientOptionKey[];

// ------------------------------------------------------------------ command line

/** Commander's parsed flags, by attribute name (`--tls-ca` -> `tlsCa`), all still text. */
export type ClientFlags = Readonly<Record<string, string | boolean | undefined>>;

/** The commander options: CLIENT_FLAGS, --config, and a hidden --token (refused with a clear message). */
export function clientFlagOptions(): Option[] {
  return [
    new Option(CONFIG_FLAG.flags, CONFIG_FLAG.description),
    ...Object.values(CLIENT_FLAGS).map((spec) => new Option(spec.flags, spec.description)),
    new Option(TOKEN_FLAG).hideHelp(),
  ];
}

/**
 * The whole command line's options: the --config file if given, then
 * SUBFED_TOKEN from `env`, then the flags, each overriding the one before.
 */
export async function clientOptionsFromCommandLine(
  flags: ClientFlags,
  env: Readonly<Record<string, string | undefined>> = process.env,
): Promise<ClientOptions> {
  const sources: OptionSource[] = [];
  const config = flags.config;
  if (typeof config === 'string') sources.push(await configFileSource(config));
  sources.push(envSource(env));
  sources.push(await flagSource(flags));
  return resolveClientOptions(sources);
}

/** Flags alone -> options; every bad value is an error naming its flag and what it held. */
export async function clientOptionsFromFlags(flags: ClientFlags): Promise<ClientOptions> {
  return resolveClientOptions([await flagSource(flags)]);
}

/** The environment as an option source: the token only. */
export function envSource(env: Readonly<Record<string, string | undefined>>): OptionSource {
  // Set but empty is as good as unset (`SUBFED_TOKEN= subfed client ...`).
  const token = env[TOKEN_ENV];
  return { fieldName: () => TOKEN_ENV, values: { enrollmentToken: token === '' ? undefined : token } };
}

/** The command line as an option source: numbers read as numbers, JSON and token files read. */
export async function flagSource(flags: ClientFlags): Promise<OptionSource> {
  if (flags.token !== undefined) {
    throw new ClientCommandError(
      `--token: the enrollment token is not taken from the command line, where ps shows it to every user of the machine; ` +
        `set ${TOKEN_ENV}, or put it in a file readable only by you and give --token-file <file>`,
    );
  }
  const values: Partial<Record<ClientOptionKey, unknown>> = {};
  const warnings: string[] = [];
  for (const key of KEYS) {
    const { flag, field, reading } = spelling(key);
    const text = flags[field];
    if (text === undefined) continue;
    if (typeof text === 'boolean') {
      values[key] = text; // a switch (--leave)
      continue;
    }
    values[key] = await readFlag(text, reading, flag, warnings);
  }
  return { fieldName: (key) => spelling(key).flag, values, warnings };
}

async function readFlag(text: string, reading: Reading, flag: string, warnings: string[]): Promise<unknown> {
  switch (reading) {
    case 'text':
    case 'path':
      return text;
    case 'number':
      // Text that is not a number stays text, so the schema's error quotes what was typed.
      return /^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/.test(text) ? Number(text) : text;
    case 'json':
      return text.trimStart().startsWith('{') ? parseJson(text, flag) : parseJson(await readText(text, flag), `${flag} ${text}`);
    case 'secret-file':
      return readSecretFile(text, flag, warnings);
  }
}

// ------------------------------------------------------------------ config file

/**
 * A config file as an option source. Its fields are the flags' long names,
 * camel-cased (`--state-dir` -> `stateDir`, `--token-file` -> `tokenFile`);
 * relative paths resolve against the file's folder. Errors name the file and
 * the field.
 */
export async function configFileSource(file: string): Promise<OptionSource> {
  const json = parseJson(await readText(file, '--config'), file);
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new ClientCommandError(`${file}: expected a JSON object of client options, got ${describeValue(json)}`);
  }
  const folder = dirname(resolve(file));
  const byField = new Map(KEYS.map((key) => [spelling(key).field, key]));
  const unknown: string[] = [];
  const values: Partial<Record<ClientOptionKey, unknown>> = {};
  const warnings: string[] = [];
  for (const [field, value] of Object.entries(json as Record<string, unknown>)) {
    if (field === 'token' || field === 'enrollmentToken') {
      throw new ClientCommandError(
        `${file}: ${field}: the config file holds no token (such files get shared and checked in); ` +
          `put the token in a file of its own and name it with tokenFile, or set ${TOKEN_ENV}`,
      );
    }
    const key = byField.get(field);
    if (key === undefined) {
      unknown.push(field);
      continue;
    }
    if (value === undefined || value === null) continue;
    const { reading } = spelling(key);
    const where = `${file}: ${field}`;
    const isPath = reading === 'path' || reading === 'secret-file' || (reading === 'json' && typeof value === 'string');
    if (isPath && typeof value !== 'string') {
      throw new ClientCommandError(`${where}: expected a path, got ${describeValue(value)}`);
    }
    const path = isPath ? resolve(folder, value as string) : undefined;
    switch (reading) {
      case 'text':
      case 'number':
        values[key] = value;
        break;
      case 'path':
        values[key] = path;
        break;
      case 'json':
        values[key] = path === undefined ? value : parseJson(await readText(path, where), path);
        break;
      case 'secret-file':
        values[key] = await readSecretFile(path!, where, warnings);
        break;
    }
  }
  if (unknown.length > 0) {
    throw new ClientCommandError(
      `${file}: unknown field(s) ${unknown.join(', ')}; the fields are ${KEYS.map((k) => spelling(k).field).join(', ')}`,
    );
  }
  return { fieldName: (key) => `${file}: ${spelling(key).field}`, values, warnings };
}

// ------------------------------------------------------------------ files

async function readText(path: string, where: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new ClientCommandError(`${where}: cannot read '${path}' (${(err as Error).message})`);
  }
}

/** JSON.parse, its error naming `where` and (from the offset) the line and column. */
function parseJson(text: string, where: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    const message = (err as Error).message;
    const offset = /at position (\d+)/.exec(message);
    let at = '';
    if (offset !== null && !/line \d+/.test(message)) {
      const before = text.slice(0, Number(offset[1]));
      const line = before.split('\n').length;
      at = ` at line ${line}, column ${before.length - before.lastIndexOf('\n')}`;
    }
    throw new ClientCommandError(`${where}: not valid JSON${at} (${message})`);
  }
}

/**
 * A file holding a secret: its content without trailing whitespace. Its
 * content is never quoted; a file that others may read is a warning.
 */
async function readSecretFile(path: string, where: string, warnings: string[]): Promise<string> {
  const text = (await readText(path, where)).trimEnd();
  if (text === '') throw new ClientCommandError(`${where}: '${path}' is empty; it must hold the enrollment token`);
  if (process.platform !== 'win32') {
    const mode = (await stat(path)).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      warnings.push(`${where}: '${path}' can be read by other users (mode ${mode.toString(8).padStart(3, '0')}); chmod 600 it`);
    }
  }
  return text;
}
