/**
 * `subfed client`: one real participant on its own data, talking to a
 * coordinator over gRPC. Loop: pull a task -> Participant.localRound -> push the
 * update -> save the personal state; it waits when there is no task, reconnects
 * with exponential backoff when the coordinator is unreachable, and stops
 * cleanly (state saved) when the coordinator says training is finished, on
 * SIGINT/SIGTERM (or an abort signal), or after --rounds rounds.
 *
 * Data folder (`--data <dir>`): either `<dir>/train/` and `<dir>/test/`, each
 * holding an IDX images+labels pair or CIFAR-10 binary batches (optionally
 * gzipped), or the files directly in `<dir>`, in which case a seeded 20% of them
 * is held out as the client's test split.
 *
 * Resuming: the personal state (weights, masks, mask version, BN statistics,
 * round) and the coordinator identity (client id + token) are saved to
 * `--state-dir` after every round. A restarted client resumes that identity
 * without joining, so the coordinator still holds its mask and the first task is
 * sparse. If the coordinator no longer knows it (restarted without its store, or
 * the client left), it joins again under a new id; its mask version then differs
 * from the coordinator's view, so it gets the dense model once and re-sends its
 * masks — no personal state is lost.
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import type { Command } from 'commander';
import type { ValueEncodingName } from '../proto/rpc.js';
import {
  AlgorithmConfigError,
  algorithmNames,
  createAlgorithm,
  isAlgorithmName,
  type AlgorithmName,
} from './algorithms/index.js';
import { initBackend, type BackendChoice } from './backend.js';
import { subset, type Dataset } from './data/dataset.js';
import { readDatasetFiles } from './data/detect.js';
import { SeededRandom, deriveSeed } from '../proto/random.js';
import { createModel, isModelName, MODEL_NAMES, type Model, type ModelName, type TensorSpec } from './model.js';
import { trainOnTask } from './federated-round.js';
import { Participant } from './participant.js';
import { RemoteError, backoffDelay, CoordinatorClient, type ClientIdentity, type RetryPolicy } from './remote.js';
import { StateFileError, assertStateMatches, loadState, saveState, stateFilePath, type ClientState } from './state.js';

export interface ClientCommandOptions {
  /** Coordinator address, host:port. */
  server: string;
  enrollmentToken: string;
  /** Data folder (see the file comment). */
  data: string;
  /** Where the personal state lives. */
  stateDir: string;
  algorithm: string;
  /** Algorithm config (validated; reference defaults for missing fields). */
  algorithmConfig?: unknown;
  valueEncoding?: ValueEncodingName;
  backend?: BackendChoice;
  /** Zoo model; default: the one whose manifest matches the coordinator's. */
  model?: ModelName;
  /** Name sent on join. Default `<hostname>-<pid>`. */
  name?: string;
  /** Drives the validation split and shuffling. Default: derived from the name. */
  seed?: number;
  /** PEM CA certificate file to verify a TLS coordinator. */
  tlsCa?: string;
  /** Stop after this many rounds (default: until the coordinator says training is finished, or stopped; for `local`, 1). */
  maxRounds?: number;
  /** Stop when aborted (the CLI wires SIGINT/SIGTERM to this). */
  signal?: AbortSignal;
  /** Progress lines; default stderr. */
  log?: (line: string) => void;
  /** Leave the federation when done (the next start joins under a new id). Default false: a stopped client resumes. */
  leave?: boolean;
  /** Per-call retry policy of the gRPC connection. */
  retry?: Partial<RetryPolicy>;
}

export interface ClientRunSummary {
  rounds: number;
  /** The coordinator said every configured round is committed. */
  finished: boolean;
  bytesUp: number;
  bytesDown: number;
  lastAccuracy: number | undefined;
}

/** Thrown for bad command input (flags, data folder); the message names what is wrong. */
export class ClientCommandError extends Error {
  override readonly name = 'ClientCommandError';
}

const VALUE_ENCODINGS: readonly ValueEncodingName[] = ['f32', 'f16', 'int8'];
/** Longest pause between reconnection attempts when the coordinator stays unreachable. */
const MAX_RECONNECT_DELAY_MS = 30_000;

/**
 * Runs `subfed client` until the coordinator says training is finished, it is
 * stopped (signal, maxRounds) or a non-retryable error. Without `opts.signal`, SIGINT/SIGTERM stop it gracefully (state saved).
 */
export async function runClient(opts: ClientCommandOptions): Promise<ClientRunSummary> {
  if (opts.signal !== undefined) return runClientUntil(opts);
  const stop = stopOnSignals(opts.log);
  try {
    return await runClientUntil({ ...opts, signal: stop.signal });
  } finally {
    stop.dispose();
  }
}

async function runClientUntil(opts: ClientCommandOptions): Promise<ClientRunSummary> {
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const valueEncoding = opts.valueEncoding ?? 'f32';
  checkOptions(opts, valueEncoding);
  const name = opts.name ?? `${hostname()}-${process.pid}`;
  const seed = opts.seed ?? deriveSeed(hashString(name));
  // Validates the config before reading data or connecting.
  const communicates = createAlgorithm(opts.algorithm, opts.algorithmConfig).communicates;

  const backend = await initBackend(opts.backend ?? 'auto', { logger: { info: log } });
  const { train, test } = await loadClientData(opts.data, seed);
  log(
    `data: ${train.count} training and ${test.count} test examples of ${train.height}x${train.width}x${train.channels} from ${opts.data}`,
  );

  if (!communicates) return runLocalOnly(opts, train, test, seed, log);

  const tls = opts.tlsCa === undefined ? undefined : { ca: await readCa(opts.tlsCa) };
  const remote = CoordinatorClient.connect(opts.server, {
    valueEncoding,
    ...(tls !== undefined ? { tls } : {}),
    ...(opts.retry !== undefined ? { retry: opts.retry } : {}),
  });
  const stopped = (): boolean => opts.signal?.aborted === true;
  const join = () => untilConnected('join', () => remote.join(opts.enrollmentToken, name, train.count), log, opts.signal);
  const stateFile = stateFilePath(opts.stateDir);
  let model: Model | undefined;
  try {
    // A saved identity resumes without joining: same client id, and the coordinator
    // still holds our mask, so the first task is already sparse.
    const saved = await loadState(opts.stateDir, {
      algorithm: opts.algorithm,
      ...(opts.model !== undefined ? { model: opts.model } : {}),
    });
    if (saved !== undefined && saved.clientToken !== '' && isModelName(saved.model)) {
      model = createModel(saved.model, seed);
      remote.resume({
        clientId: saved.clientId,
        clientToken: saved.clientToken,
        manifest: model.manifest.map((t) => ({ ...t, shape: [...t.shape] })),
      });
      log(
        `resuming as ${saved.clientId} on ${opts.server} (backend ${backend}, algorithm ${opts.algorithm}, values ${valueEncoding})`,
      );
    } else {
      const joined = await join();
      if (joined === undefined)
        return { rounds: 0, finished: false, bytesUp: remote.bytesUp, bytesDown: remote.bytesDown, lastAccuracy: undefined };
      log(
        `joined ${opts.server} as ${joined.clientId} (backend ${backend}, algorithm ${opts.algorithm}, values ${valueEncoding})`,
      );
      model = opts.model !== undefined ? createModel(opts.model, seed) : modelForManifest(joined.manifest, seed);
      checkManifest(model, joined.manifest);
    }
    if (saved !== undefined) {
      assertStateMatches(saved, { model: model.name, manifest: model.manifest }, stateFile);
      log(`personal state from ${opts.stateDir}: round ${saved.round}, mask version ${saved.maskVersion}`);
    }
    const participant = new Participant({
      model,
      algorithm: opts.algorithm as AlgorithmName,
      config: opts.algorithmConfig,
      train,
      test,
      seed,
      log: (line) => log(`  ${line}`),
      ...(saved !== undefined ? { restore: saved } : {}),
    });
    const modelName = model.name;
    const save = (): Promise<string> =>
      saveState(opts.stateDir, toClientState(participant, remote.identity, opts.algorithm, modelName));

    let rounds = 0;
    let rejoins = 0;
    let lastAccuracy: number | undefined;
    /** The coordinator's last round, once it says training is over. */
    let finishedAfter: number | undefined;
    while (!stopped() && (opts.maxRounds === undefined || rounds < opts.maxRounds)) {
      let pulled;
      try {
        pulled = await untilConnected(
          'pull',
          () => remote.pullTask(participant.maskVersion, participant.masks),
          log,
          opts.signal,
        );
      } catch (err) {
        // A coordinator that forgot us (restarted without its store): join again, keep the personal state.
        if (!(err instanceof RemoteError && err.code === grpc.status.UNAUTHENTICATED) || rejoins >= 3) throw err;
        rejoins++;
        log(`pull: ${err.details}; joining again`);
        const again = await join();
        if (again === undefined) break;
        checkManifest(model, again.manifest);
        log(`joined ${opts.server} as ${again.clientId}`);
        continue;
      }
      if (pulled === undefined) break;
      rejoins = 0;
      if ('finished' in pulled) {
        finishedAfter = pulled.round;
        break;
      }
      if ('wait' in pulled) {
        await pause(Math.max(pulled.wait, 50), opts.signal);
        continue;
      }
      const trained = await trainOnTask(participant, pulled);
      const { metrics: m, round } = trained;
      try {
        const ack = await untilConnected(
          'push',
          () => remote.pushUpdate(trained.upload.fields, trained.upload.tensors),
          log,
          opts.signal,
        );
        if (ack !== undefined && !ack.accepted) log(`round ${round}: update not accepted: ${ack.message}`);
      } catch (err) {
        // The round closed or our mask view went stale while we trained: the next
        // pull re-synchronises (dense model, full masks). Anything else is fatal.
        if (!(err instanceof RemoteError && err.code === grpc.status.FAILED_PRECONDITION)) throw err;
        log(`round ${round}: update refused (${err.details}); pulling again`);
      }
      rounds++;
      lastAccuracy = m.accuracy;
      await save();
      log(
        `round ${round}: loss ${m.loss.toFixed(4)}, accuracy ${pct(m.accuracy)} (received ${pct(m.receivedAccuracy)}), ` +
          `sparsity ${pct(m.sparsity)}${m.channelsKept !== undefined ? `, channels [${m.channelsKept.join(', ')}]` : ''}, ` +
          `up ${remote.bytesUp} B, down ${remote.bytesDown} B`,
      );
    }
    if (opts.leave === true) {
      // Leaving ends this identity for good: the next start joins afresh (personal state kept).
      await remote.leave('done').catch((err: unknown) => log(`leave failed: ${(err as Error).message}`));
      await saveState(opts.stateDir, toClientState(participant, undefined, opts.algorithm, modelName));
      log(`left ${opts.server}`);
    } else {
      await save();
    }
    if (finishedAfter !== undefined) {
      log(`training finished after round ${finishedAfter} (${rounds} round(s) trained here); state saved in ${opts.stateDir}`);
    } else {
      log(`stopped after ${rounds} round(s); state saved in ${opts.stateDir}`);
    }
    return { rounds, finished: finishedAfter !== undefined, bytesUp: remote.bytesUp, bytesDown: remote.bytesDown, lastAccuracy };
  } finally {
    model?.dispose();
    remote.close();
  }
}

/** Flags of `subfed client`, as commander parses them (strings). */
export interface ClientFlags {
  server?: string;
  token?: string;
  data?: string;
  stateDir?: string;
  algorithm?: string;
  config?: string;
  values?: string;
  backend?: string;
  model?: string;
  name?: string;
  seed?: string;
  rounds?: string;
  tlsCa?: string;
  leave?: boolean;
}

/** Adds the `client` subcommand to the root program. */
export function registerClientCommand(program: Command): Command {
  return program
    .command('client')
    .description('run one federated client on local data against a coordinator')
    .requiredOption('--server <host:port>', 'coordinator gRPC address')
    .requiredOption('--token <token>', 'enrollment token')
    .requiredOption('--data <dir>', 'data folder: train/ and test/ (IDX or CIFAR-10 files), or files to split 80/20')
    .option('--state-dir <dir>', 'personal state folder (mask, weights, BN stats)', '.subfed-client')
    .option('--algorithm <name>', algorithmNames().join(' | '), 'subfedavg-un')
    .option('--config <json|file>', 'algorithm config as inline JSON or a JSON file, e.g. {"target":50}')
    .option('--values <enc>', 'value encoding on the wire: f32 | f16 | int8', 'f32')
    .option('--backend <name>', 'tfjs backend: auto | node | wasm | cpu')
    .option('--model <name>', "zoo model (default: the one matching the coordinator's manifest; required for local)")
    .option('--name <name>', 'client name sent on join')
    .option('--seed <n>', 'seed of the validation split and shuffling')
    .option('--rounds <n>', 'stop after this many rounds')
    .option('--tls-ca <file>', "PEM CA certificate to verify the coordinator's TLS certificate")
    .option('--leave', 'leave the federation when done (default: stay enrolled and resume next time)')
    .action(async (flags: ClientFlags) => {
      process.exitCode = await runClientCommand(flags);
    });
}

/** Runs `subfed client` from parsed flags; resolves to the process exit code (2 for bad input). */
export async function runClientCommand(flags: ClientFlags): Promise<number> {
  const log = (line: string): void => {
    process.stderr.write(`${new Date().toISOString()} ${line}\n`);
  };
  const stop = stopOnSignals(log);
  try {
    const opts = await optionsFromFlags(flags);
    await runClient({ ...opts, signal: stop.signal, log });
    return 0;
  } catch (err) {
    if (err instanceof ClientCommandError || err instanceof AlgorithmConfigError || err instanceof StateFileError) {
      process.stderr.write(`subfed client: ${err.message}\n`);
      return 2;
    }
    if (err instanceof RemoteError) {
      process.stderr.write(`subfed client: ${err.message}\n`);
      return 1;
    }
    throw err;
  } finally {
    stop.dispose();
  }
}

/** Flags -> runClient options; every bad value is an error naming its flag. */
export async function optionsFromFlags(flags: ClientFlags): Promise<ClientCommandOptions> {
  const need = (value: string | undefined, flag: string): string => {
    if (value === undefined || value === '') throw new ClientCommandError(`${flag} is required`);
    return value;
  };
  const integer = (value: string | undefined, flag: string, min: number): number | undefined => {
    if (value === undefined) return undefined;
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min) {
      throw new ClientCommandError(`${flag}: expected an integer >= ${min}, got '${value}'`);
    }
    return n;
  };
  const backends: readonly string[] = ['auto', 'node', 'wasm', 'cpu'];
  if (flags.backend !== undefined && !backends.includes(flags.backend)) {
    throw new ClientCommandError(`--backend: expected one of ${backends.join(', ')}, got '${flags.backend}'`);
  }
  const seed = integer(flags.seed, '--seed', 0);
  const maxRounds = integer(flags.rounds, '--rounds', 1);
  const algorithmConfig = flags.config === undefined ? undefined : await readJsonFlag(flags.config, '--config');
  return {
    server: need(flags.server, '--server'),
    enrollmentToken: need(flags.token, '--token'),
    data: need(flags.data, '--data'),
    stateDir: flags.stateDir ?? '.subfed-client',
    algorithm: flags.algorithm ?? 'subfedavg-un',
    ...(algorithmConfig !== undefined ? { algorithmConfig } : {}),
    valueEncoding: (flags.values ?? 'f32') as ValueEncodingName,
    ...(flags.backend !== undefined ? { backend: flags.backend as BackendChoice } : {}),
    ...(flags.model !== undefined ? { model: flags.model as ModelName } : {}),
    ...(flags.name !== undefined ? { name: flags.name } : {}),
    ...(seed !== undefined ? { seed } : {}),
    ...(maxRounds !== undefined ? { maxRounds } : {}),
    ...(flags.tlsCa !== undefined ? { tlsCa: flags.tlsCa } : {}),
    ...(flags.leave === true ? { leave: true } : {}),
  };
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

/** `local` never communicates: no coordinator, so the model must be named (--model). */
async function runLocalOnly(
  opts: ClientCommandOptions,
  train: Dataset,
  test: Dataset,
  seed: number,
  log: (line: string) => void,
): Promise<ClientRunSummary> {
  if (opts.model === undefined)
    throw new ClientCommandError('--model: the local algorithm never contacts a coordinator, so name the model');
  const model = createModel(opts.model, seed);
  try {
    const saved = await loadState(opts.stateDir, { algorithm: opts.algorithm, model: model.name, manifest: model.manifest });
    const participant = new Participant({
      model,
      algorithm: opts.algorithm as AlgorithmName,
      config: opts.algorithmConfig,
      train,
      test,
      seed,
      ...(saved !== undefined ? { restore: saved } : {}),
    });
    let rounds = 0;
    let lastAccuracy: number | undefined;
    while (opts.signal?.aborted !== true && rounds < (opts.maxRounds ?? 1)) {
      const { metrics } = await participant.localRound(null);
      rounds++;
      lastAccuracy = metrics.accuracy;
      await saveState(opts.stateDir, toClientState(participant, undefined, opts.algorithm, model.name));
      log(`local round ${participant.round}: loss ${metrics.loss.toFixed(4)}, accuracy ${pct(metrics.accuracy)}`);
    }
    return { rounds, finished: false, bytesUp: 0, bytesDown: 0, lastAccuracy };
  } finally {
    model.dispose();
  }
}

/**
 * Wires SIGINT/SIGTERM to a graceful stop (finish the current step, save, leave);
 * a second signal exits at once. Returns the signal to pass to runClient and a
 * function removing the handlers.
 */
export function stopOnSignals(log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): {
  signal: AbortSignal;
  dispose: () => void;
} {
  const controller = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => {
    if (controller.signal.aborted) process.exit(130);
    log(`${sig}: finishing the current step, saving state (again to quit at once)`);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal: controller.signal,
    dispose: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

function checkOptions(opts: ClientCommandOptions, valueEncoding: string): void {
  if (!/^[^:\s]+:\d{1,5}$/.test(opts.server) && !/^\[[0-9a-fA-F:]+\]:\d{1,5}$/.test(opts.server)) {
    throw new ClientCommandError(`--server: expected host:port, got '${opts.server}'`);
  }
  if (opts.enrollmentToken === '') throw new ClientCommandError('--token: the enrollment token is empty');
  if (!isAlgorithmName(opts.algorithm)) {
    throw new ClientCommandError(
      `--algorithm: unknown algorithm '${opts.algorithm}', expected one of ${algorithmNames().join(', ')}`,
    );
  }
  if (!(VALUE_ENCODINGS as readonly string[]).includes(valueEncoding)) {
    throw new ClientCommandError(`--values: expected one of ${VALUE_ENCODINGS.join(', ')}, got '${valueEncoding}'`);
  }
  if (opts.maxRounds !== undefined && (!Number.isInteger(opts.maxRounds) || opts.maxRounds < 1)) {
    throw new ClientCommandError(`--rounds: expected a positive integer, got ${opts.maxRounds}`);
  }
  if (opts.model !== undefined && !(MODEL_NAMES as readonly string[]).includes(opts.model)) {
    throw new ClientCommandError(`--model: unknown model '${opts.model}', expected one of ${MODEL_NAMES.join(', ')}`);
  }
}

/**
 * Runs a call until it succeeds, waiting with exponential backoff while the
 * coordinator is unreachable (the connection itself already retried a few
 * times). Returns undefined when stopped meanwhile.
 */
async function untilConnected<T>(
  what: string,
  call: () => Promise<T>,
  log: (line: string) => void,
  signal: AbortSignal | undefined,
): Promise<T | undefined> {
  for (let attempt = 1; ; attempt++) {
    if (signal?.aborted) return undefined;
    try {
      return await call();
    } catch (err) {
      if (!(err instanceof RemoteError && err.code === grpc.status.UNAVAILABLE)) throw err;
      const delay = backoffDelay(attempt, {
        maxAttempts: Infinity,
        initialDelayMs: 1000,
        maxDelayMs: MAX_RECONNECT_DELAY_MS,
        multiplier: 2,
      });
      log(`${what}: coordinator unavailable (${err.details}); retrying in ${(delay / 1000).toFixed(1)} s`);
      await pause(delay, signal);
    }
  }
}

async function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  try {
    await sleep(ms, undefined, signal !== undefined ? { signal } : {});
  } catch (err) {
    if ((err as Error).name !== 'AbortError') throw err;
  }
}

/** The zoo model whose manifest is the coordinator's. */
export function modelForManifest(manifest: readonly TensorSpec[], seed: number): Model {
  for (const name of MODEL_NAMES) {
    const candidate = createModel(name, seed);
    if (sameManifest(candidate.manifest, manifest)) return candidate;
    candidate.dispose();
  }
  throw new ClientCommandError(
    `the coordinator's model (${manifest.length} tensors: ${manifest
      .map((s) => s.name)
      .slice(0, 4)
      .join(', ')}...) matches no zoo model (${MODEL_NAMES.join(', ')})`,
  );
}

function sameManifest(a: readonly TensorSpec[], b: readonly TensorSpec[]): boolean {
  return a.length === b.length && a.every((s, i) => s.name === b[i].name && s.shape.join(',') === b[i].shape.join(','));
}

function checkManifest(model: Model, manifest: readonly TensorSpec[]): void {
  if (!sameManifest(model.manifest, manifest)) {
    throw new ClientCommandError(`--model ${model.name} does not match the coordinator's model (${manifest.length} tensors)`);
  }
}

/** Reads `<dir>/train` + `<dir>/test`, or the files of `<dir>` with a seeded 20% test hold-out. */
export async function loadClientData(dir: string, seed: number): Promise<{ train: Dataset; test: Dataset }> {
  const filesIn = async (folder: string): Promise<string[]> => {
    const entries = await readdir(folder, { withFileTypes: true });
    return entries
      .filter((e) => e.isFile() && !e.name.startsWith('.'))
      .map((e) => join(folder, e.name))
      .sort();
  };
  const isDir = async (path: string): Promise<boolean> => (await stat(path).catch(() => undefined))?.isDirectory() === true;
  if (!(await isDir(dir))) throw new ClientCommandError(`--data: '${dir}' is not a folder`);
  if ((await isDir(join(dir, 'train'))) && (await isDir(join(dir, 'test')))) {
    const train = await readDatasetFiles(await filesIn(join(dir, 'train')), { name: `${dir}/train` });
    const test = await readDatasetFiles(await filesIn(join(dir, 'test')), { name: `${dir}/test` });
    return { train, test };
  }
  const files = await filesIn(dir);
  if (files.length === 0) throw new ClientCommandError(`--data: '${dir}' holds no data files (nor train/ and test/ folders)`);
  const all = await readDatasetFiles(files, { name: dir });
  if (all.count < 2) throw new ClientCommandError(`--data: '${dir}' holds ${all.count} example(s); at least 2 are needed`);
  const order = new SeededRandom(deriveSeed(seed, 0x7e57)).permutation(all.count);
  const testCount = Math.max(1, Math.round(all.count * 0.2));
  return {
    train: subset(all, order.subarray(testCount), `${dir}[train]`),
    test: subset(all, order.subarray(0, testCount), `${dir}[test]`),
  };
}

async function readCa(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new ClientCommandError(`--tls-ca: cannot read '${path}' (${(err as Error).message})`);
  }
}

function toClientState(
  participant: Participant,
  identity: ClientIdentity | undefined,
  algorithm: string,
  model: string,
): ClientState {
  const s = participant.exportState();
  return {
    clientId: identity?.clientId ?? '',
    clientToken: identity?.clientToken ?? '',
    round: s.round,
    maskVersion: s.maskVersion,
    algorithm,
    model,
    weights: s.weights,
    masks: s.masks,
    personal: s.personal,
  };
}

function hashString(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

function pct(x: number): string {
  return `${(100 * x).toFixed(1)}%`;
}
