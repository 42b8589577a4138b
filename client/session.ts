/**
 * A client session: the participant (model, masks, data, algorithm) and, for a
 * federated algorithm, the coordinator connection and the identity it knows us
 * by. Opening one resumes or joins:
 *
 * - A saved identity resumes without joining: same client id, and the
 *   coordinator still holds our mask, so the first task is already sparse.
 * - Without one (first start, after leaving, or for another model) the client
 *   joins. If the coordinator no longer knows a resumed identity (restarted
 *   without its store), the rounds loop joins again under a new id; the mask
 *   version then differs from the coordinator's view, so it gets the dense
 *   model once and re-sends its masks. No personal state is lost either way.
 *
 * An algorithm that never communicates opens a local session: no connection.
 */
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import type { AlgorithmName } from './algorithms/registry.js';
import type { FederatedAlgorithm, LocalAlgorithm } from './algorithms/types.js';
import { fitDataToModel } from './data/fit.js';
import { DataFolderError } from './data/errors.js';
import { EventQueue } from './event-queue.js';
import type { ClientEvent, CoordinatorCall } from './events.js';
import { Heartbeats } from './heartbeat.js';
import { createModel, type Model, type TensorSpec } from './model.js';
import { isModelName, MODEL_NAMES, type ModelName } from './model-names.js';
import { ClientCommandError, type ClientOptions } from './options.js';
import { inputEncodingOf } from './export/portable.js';
import { FederatedParticipant, LocalParticipant, type Participant, type ParticipantSetup } from './participant.js';
import {
  RemoteError,
  TransportMismatchError,
  backoffDelay,
  CoordinatorClient,
  type ConnectOptions,
  type JoinResult,
  type RetryPolicy,
} from './remote.js';
import { assertStateMatches, loadState, saveState, stateFilePath, type ClientState, type CoordinatorIdentity } from './state.js';
import type { ClientDataSplits } from './data/folder.js';

interface SessionParts<P extends Participant> {
  readonly participant: P;
  readonly algorithm: AlgorithmName;
  readonly stateDir: string;
  /** Lines the algorithm wrote during the current round (its pruning decisions); the rounds loop drains them into `note` events. */
  readonly notes: string[];
}

export interface LocalSession extends SessionParts<LocalParticipant> {
  readonly kind: 'local';
}

export interface FederatedSession extends SessionParts<FederatedParticipant> {
  readonly kind: 'federated';
  /** Coordinator address, host:port. */
  readonly server: string;
  readonly remote: CoordinatorClient;
  /** What joining (again) sends. */
  readonly enrollment: { readonly token: string; readonly name: string };
  /** Who the coordinator knows us as now: read from the connection, which a re-join updates. */
  readonly identity: CoordinatorIdentity;
  /** Sent while the session is open; their failures arrive through `events`. */
  readonly heartbeats: Heartbeats;
  /** Events from beside the rounds loop (heartbeats), yielded by it. */
  readonly events: EventQueue;
}

export type ClientSession = FederatedSession | LocalSession;

/** What opening a session needs besides the options. */
export interface SessionContext {
  readonly data: ClientDataSplits;
  readonly name: string;
  readonly seed: number;
  /** Stops waiting for an unreachable coordinator. */
  readonly signal?: AbortSignal | undefined;
  /** Per-call retry policy of the gRPC connection. */
  readonly retry?: Partial<RetryPolicy> | undefined;
}

/**
 * Resumes or joins (see the file comment); returns undefined when stopped
 * before the coordinator answered. Yields joined | resumed, then state-restored
 * when a saved state was found, and reconnecting while the coordinator is away.
 */
export async function* openFederatedSession(
  options: ClientOptions,
  context: SessionContext,
  algorithm: FederatedAlgorithm,
): AsyncGenerator<ClientEvent, FederatedSession | undefined> {
  const tls = await tlsOptions(options);
  const remote = CoordinatorClient.connect(options.server, {
    valueEncoding: options.values,
    ...(tls !== undefined ? { tls } : {}),
    ...(context.retry !== undefined ? { retry: context.retry } : {}),
  });
  const enrollment = { token: options.enrollmentToken, name: context.name };
  let model: Model | undefined;
  let opened = false;
  try {
    const saved = await loadState(options.stateDir, {
      algorithm: options.algorithm,
      ...(options.model !== undefined ? { model: options.model } : {}),
    });
    const described = { server: options.server, algorithm: options.algorithm, values: options.values };
    if (saved?.identity !== undefined && isModelName(saved.model)) {
      model = createModel(saved.model, context.seed);
      remote.resume({ ...saved.identity, manifest: model.manifest.map((t) => ({ ...t, shape: [...t.shape] })) });
      yield { kind: 'resumed', clientId: saved.identity.clientId, ...described };
    } else {
      const joined = yield* joinCoordinator(remote, enrollment, context.data.train.count, context.signal);
      if (joined === undefined) return undefined;
      model =
        options.model !== undefined ? createModel(options.model, context.seed) : modelForManifest(joined.manifest, context.seed);
      checkManifest(model, joined.manifest, options.model !== undefined ? options.nameOf('model') : 'the zoo');
      yield { kind: 'joined', clientId: joined.clientId, ...described };
    }
    const { setup, notes } = yield* participantSetup(options, context, model, saved);
    const participant = new FederatedParticipant(setup, algorithm);
    const events = new EventQueue();
    const heartbeats = new Heartbeats({
      server: options.server,
      intervalMs: options.heartbeatMs,
      connect: tls !== undefined ? { tls } : {},
      identity: () => remote.identity,
      report: (event) => events.push(event),
    });
    const session: FederatedSession = {
      kind: 'federated',
      server: options.server,
      remote,
      enrollment,
      participant,
      algorithm: options.algorithm,
      stateDir: options.stateDir,
      notes,
      heartbeats,
      events,
      get identity(): CoordinatorIdentity {
        const identity = remote.identity;
        if (identity === undefined) throw new Error('a federated session always holds an identity');
        return { clientId: identity.clientId, clientToken: identity.clientToken };
      },
    };
    opened = true;
    return session;
  } finally {
    // Stopped, failed or abandoned before the session began: nobody else will close these.
    if (!opened) {
      model?.dispose();
      remote.close();
    }
  }
}

/** A session for an algorithm that never communicates: the model must be named (`--model`). */
export async function* openLocalSession(
  options: ClientOptions,
  context: SessionContext,
  algorithm: LocalAlgorithm,
): AsyncGenerator<ClientEvent, LocalSession> {
  const modelName = requireModel(options);
  const model = createModel(modelName, context.seed);
  let opened = false;
  try {
    const saved = await loadState(options.stateDir, {
      algorithm: options.algorithm,
      model: model.name,
      manifest: model.manifest,
    });
    yield { kind: 'training-locally', model: modelName, algorithm: options.algorithm };
    const { setup, notes } = yield* participantSetup(options, context, model, saved);
    const participant = new LocalParticipant(setup, algorithm);
    opened = true;
    return { kind: 'local', participant, algorithm: options.algorithm, stateDir: options.stateDir, notes };
  } finally {
    if (!opened) model.dispose();
  }
}

/** The model a local session needs (`--model`), or an error saying why it is needed. */
export function requireModel(options: ClientOptions): ModelName {
  if (options.model === undefined) {
    throw new ClientCommandError(
      `${options.nameOf('model')}: the local algorithm never contacts a coordinator, so name the model`,
    );
  }
  return options.model;
}

/** Ends a session: releases the model and the connection. */
export function closeSession(session: ClientSession): void {
  session.participant.model.dispose();
  if (session.kind === 'federated') {
    session.heartbeats.close();
    session.remote.close();
  }
}

/** Saves the personal state with `identity` (undefined once the client has left, and always for a local session). */
export async function saveSession(session: ClientSession, identity: CoordinatorIdentity | undefined): Promise<void> {
  const s = session.participant.exportState();
  const state: ClientState = {
    identity,
    round: s.round,
    maskVersion: s.maskVersion,
    algorithm: session.algorithm,
    model: session.participant.model.name,
    weights: s.weights,
    masks: s.masks,
    personal: s.personal,
    algorithmState: s.algorithmState,
    input: inputEncodingOf(session.participant.data.train),
  };
  await saveState(session.stateDir, state);
}

/** Joins, waiting while the coordinator is unreachable; undefined when stopped meanwhile. */
export async function* joinCoordinator(
  remote: CoordinatorClient,
  enrollment: FederatedSession['enrollment'],
  numExamples: number,
  signal: AbortSignal | undefined,
): AsyncGenerator<ClientEvent, JoinResult | undefined> {
  return yield* untilConnected('join', () => remote.join(enrollment.token, enrollment.name, numExamples), signal);
}

/** Waits between attempts while the coordinator stays unreachable: from 1 s, doubling, at most 30 s. */
const RECONNECT: RetryPolicy = { maxAttempts: Infinity, initialDelayMs: 1000, maxDelayMs: 30_000, multiplier: 2 };

/**
 * Runs a call until it succeeds, waiting with exponential backoff while the
 * coordinator is unreachable (the connection itself already retried a few
 * times), and yielding a `reconnecting` event before each wait. The first
 * attempt is always made, so that a stop during training still delivers the
 * update; returns undefined when stopped while waiting to try again.
 */
export async function* untilConnected<T>(
  call: CoordinatorCall,
  attempt: () => Promise<T>,
  signal: AbortSignal | undefined,
): AsyncGenerator<ClientEvent, T | undefined> {
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (err) {
      // A TLS disagreement is not an outage: waiting cannot fix it.
      if (!(err instanceof RemoteError && err.code === grpc.status.UNAVAILABLE) || err instanceof TransportMismatchError)
        throw err;
      if (signal?.aborted) return undefined;
      const delayMs = backoffDelay(n, RECONNECT);
      yield { kind: 'reconnecting', call, reason: err.details, delayMs };
      await pause(delayMs, signal);
      if (signal?.aborted) return undefined;
    }
  }
}

/** Sleeps, or less when stopped meanwhile. */
export async function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
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

/** Throws when the coordinator's model is another one; `chosenBy` says where ours came from (`--model`, the saved state). */
export function checkManifest(model: Model, manifest: readonly TensorSpec[], chosenBy: string): void {
  if (!sameManifest(model.manifest, manifest)) {
    throw new ClientCommandError(
      `${chosenBy}: model ${model.name} does not match the coordinator's model (${manifest.length} tensors)`,
    );
  }
}

function sameManifest(a: readonly TensorSpec[], b: readonly TensorSpec[]): boolean {
  return a.length === b.length && a.every((s, i) => s.name === b[i].name && s.shape.join(',') === b[i].shape.join(','));
}

/** What the participant starts from: the data fitted to the model, and the saved state when there is one (checked against the model first). */
function* participantSetup(
  options: ClientOptions,
  context: SessionContext,
  model: Model,
  saved: ClientState | undefined,
): Generator<ClientEvent, { setup: ParticipantSetup; notes: string[] }> {
  if (saved !== undefined) {
    assertStateMatches(saved, { model: model.name, manifest: model.manifest }, stateFilePath(options.stateDir));
    yield { kind: 'state-restored', stateDir: options.stateDir, round: saved.round, maskVersion: saved.maskVersion };
  }
  const data = fitData(options, context, model);
  if (data.converted !== undefined) {
    yield {
      kind: 'data-converted',
      model: model.name,
      fromChannels: data.converted.from,
      toChannels: data.converted.to,
    };
  }
  const notes: string[] = [];
  const setup: ParticipantSetup = {
    model,
    train: data.train,
    test: data.test,
    seed: context.seed,
    log: (line) => notes.push(line),
    ...(saved !== undefined ? { restore: saved } : {}),
  };
  return { setup, notes };
}

/** The data folder as the model takes it (image channels converted), or an error naming the data option. */
function fitData(options: ClientOptions, context: SessionContext, model: Model): ReturnType<typeof fitDataToModel> {
  try {
    return fitDataToModel(context.data, model);
  } catch (err) {
    if (err instanceof DataFolderError) throw new ClientCommandError(`${options.nameOf('data')}: ${err.message}`);
    throw err;
  }
}

/** The TLS material the options name: a CA to verify the coordinator, and this client's certificate and key if given. */
async function tlsOptions(options: ClientOptions): Promise<ConnectOptions['tls']> {
  const { tlsCa, tlsCert, tlsKey } = options;
  if ((tlsCert === undefined) !== (tlsKey === undefined)) {
    const given = tlsCert === undefined ? 'tlsKey' : 'tlsCert';
    const missing = tlsCert === undefined ? 'tlsCert' : 'tlsKey';
    throw new ClientCommandError(
      `${options.nameOf(given)} needs ${options.nameOf(missing)} too (a client certificate and its key)`,
    );
  }
  if (tlsCa === undefined) {
    if (tlsCert !== undefined) {
      throw new ClientCommandError(
        `${options.nameOf('tlsCert')}: a client certificate is for TLS; give the coordinator's CA with ${options.nameOf('tlsCa')}`,
      );
    }
    return undefined;
  }
  const ca = await readCa(tlsCa, options.nameOf('tlsCa'));
  if (tlsCert === undefined || tlsKey === undefined) return { ca };
  return {
    ca,
    client: { cert: await readCa(tlsCert, options.nameOf('tlsCert')), key: await readCa(tlsKey, options.nameOf('tlsKey')) },
  };
}

async function readCa(path: string, option: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new ClientCommandError(`${option}: cannot read '${path}' (${(err as Error).message})`);
  }
}
