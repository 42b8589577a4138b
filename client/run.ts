/**
 * One `subfed client` run as a stream of events: validate the algorithm
 * config, start the tfjs backend, read the data folder, open the session
 * (client/session.ts), then run its rounds until the coordinator says training
 * is finished, the run is stopped (signal, round limit) or a non-retryable error.
 *
 * A federated round: pull a task -> FederatedParticipant.localRound -> push the update ->
 * save the personal state. With no task it waits; while the coordinator is
 * unreachable it retries with exponential backoff; a coordinator that forgot
 * this client is joined again. A local round: train, save.
 */
import { hostname } from 'node:os';
import * as grpc from '@grpc/grpc-js';
import { deriveSeed } from '../proto/random.js';
import { createAlgorithm } from './algorithms/registry.js';
import { initBackend } from './backend.js';
import { engineChoice } from './kernels/engine/index.js';
import { DataFolderError } from './data/errors.js';
import { describeShape, exampleShape } from './data/dataset.js';
import { fitDataToModel } from './data/fit.js';
import { layoutFormat, loadClientData, type ClientDataSplits } from './data/folder.js';
import type { ClientEvent, Traffic } from './events.js';
import { createModel } from './model.js';
import { MODEL_NAMES } from './model-names.js';
import { trainOnTask } from './federated-round.js';
import type { ReceivedTask } from './participant.js';
import { ClientCommandError, type ClientOptions } from './options.js';
import { RemoteError, type PullOutcome, type RetryPolicy } from './remote.js';
import type { CoordinatorIdentity } from './state.js';
import {
  checkManifest,
  closeSession,
  joinCoordinator,
  openFederatedSession,
  openLocalSession,
  pause,
  requireModel,
  saveSession,
  untilConnected,
  type ClientSession,
  type FederatedSession,
  type LocalSession,
} from './session.js';

export interface ClientRunContext {
  /** Stops the run after the current step, state saved. */
  readonly signal?: AbortSignal | undefined;
  /** Per-call retry policy of the gRPC connection. */
  readonly retry?: Partial<RetryPolicy> | undefined;
}

/** How long rounds go on. */
export interface RoundLimits {
  /** Stop after this many rounds (default: until finished or stopped; a local session: 1). */
  readonly maxRounds?: number | undefined;
  readonly signal?: AbortSignal | undefined;
  /** Leave the federation at the end (the next start joins under a new id). */
  readonly leave: boolean;
}

/** Times in a row a forgotten identity is joined again before the error is final. */
const MAX_REJOINS = 3;
/** Shortest pause between pulls that found no task, whatever the coordinator asks. */
const MIN_WAIT_MS = 50;
const NO_TRAFFIC: Traffic = { bytesUp: 0, bytesDown: 0, failedBytesUp: 0, failedBytesDown: 0 };

export async function* clientRun(options: ClientOptions, context: ClientRunContext = {}): AsyncGenerator<ClientEvent, void> {
  const name = options.name ?? `${hostname()}-${process.pid}`;
  const seed = options.seed ?? deriveSeed(hashString(name));
  // Bad input fails before the data is read or the coordinator contacted.
  const algorithm = createAlgorithm(options.algorithm, options.algorithmConfig);
  // SUBFED_ENGINE is read at each training step: a bad value fails now, not after joining.
  engineChoice();
  if (algorithm.kind === 'local') requireModel(options);
  for (const text of options.warnings) yield { kind: 'warning', text };

  const backend = await initBackend(options.backend, { logger: { info: () => {} } });
  yield { kind: 'backend-ready', backend };
  const data = await readDataFolderOption(options, seed);
  yield {
    kind: 'data-loaded',
    folder: options.data,
    layout: data.layout.kind,
    format: layoutFormat(data.layout),
    trainExamples: data.train.count,
    testExamples: data.test.count,
    shape: exampleShape(data.train),
  };
  checkDataFitsSomeModel(options, data);

  const sessionContext = { data, name, seed, signal: context.signal, retry: context.retry };
  const session =
    algorithm.kind === 'federated'
      ? yield* openFederatedSession(options, sessionContext, algorithm)
      : yield* openLocalSession(options, sessionContext, algorithm);
  if (session === undefined) {
    yield { kind: 'stopped', reason: 'signal', roundsTrained: 0, stateDir: undefined, ...NO_TRAFFIC };
    return;
  }
  try {
    yield* clientRounds(session, { maxRounds: options.rounds, signal: context.signal, leave: options.leave });
  } finally {
    closeSession(session);
  }
}

/** The rounds of an open session; the last event is `finished` or `stopped`. */
export async function* clientRounds(session: ClientSession, limits: RoundLimits): AsyncGenerator<ClientEvent, void> {
  switch (session.kind) {
    case 'federated':
      return yield* federatedRounds(session, limits);
    case 'local':
      return yield* localRounds(session, limits);
  }
}

async function* federatedRounds(session: FederatedSession, limits: RoundLimits): AsyncGenerator<ClientEvent, void> {
  session.heartbeats.start();
  try {
    yield* federatedRoundsBeating(session, limits);
  } finally {
    session.heartbeats.stop();
  }
}

/** Bytes moved so far: the rounds' calls and the heartbeats. */
function traffic(session: FederatedSession): Traffic {
  const { remote, heartbeats } = session;
  const failed = [remote.failedBytes, heartbeats.failedBytes];
  return {
    bytesUp: remote.bytesUp + heartbeats.bytesUp,
    bytesDown: remote.bytesDown + heartbeats.bytesDown,
    failedBytesUp: failed[0].up + failed[1].up,
    failedBytesDown: failed[0].down + failed[1].down,
  };
}

async function* federatedRoundsBeating(session: FederatedSession, limits: RoundLimits): AsyncGenerator<ClientEvent, void> {
  const { remote, participant, events } = session;
  const stopped = (): boolean => limits.signal?.aborted === true;
  let roundsTrained = 0;
  let rejoins = 0;
  let waits = 0;
  /** The coordinator's last round, once it says training is over. */
  let lastRound: number | undefined;
  rounds: while (!stopped() && (limits.maxRounds === undefined || roundsTrained < limits.maxRounds)) {
    yield* events.drain();
    let pulled: PullOutcome | undefined;
    try {
      pulled = yield* untilConnected(
        'pull',
        () => remote.pullTask(participant.maskVersion, participant.wireMasks),
        limits.signal,
      );
    } catch (err) {
      // A coordinator that forgot us (restarted without its store): join again, keep the personal state.
      if (!(err instanceof RemoteError && err.code === grpc.status.UNAUTHENTICATED) || rejoins >= MAX_REJOINS) throw err;
      rejoins++;
      const previousClientId = session.identity.clientId;
      const joined = yield* joinCoordinator(remote, session.enrollment, participant.numExamples, limits.signal);
      if (joined === undefined) break;
      checkManifest(participant.model, joined.manifest, 'joining again');
      yield { kind: 'rejoined', server: session.server, clientId: joined.clientId, previousClientId, reason: err.details };
      continue;
    }
    if (pulled === undefined) break;
    rejoins = 0;
    switch (pulled.kind) {
      case 'finished':
        lastRound = pulled.lastRound;
        break rounds;
      case 'wait': {
        waits++;
        const retryAfterMs = Math.max(pulled.retryAfterMs, MIN_WAIT_MS);
        yield { kind: 'waiting', retryAfterMs, consecutive: waits };
        yield* events.during(pause(retryAfterMs, limits.signal));
        break;
      }
      case 'task':
        waits = 0;
        yield* federatedRound(session, pulled.task, limits.signal);
        roundsTrained++;
        break;
    }
  }
  let identity: CoordinatorIdentity | undefined = session.identity;
  yield* events.drain();
  if (limits.leave) {
    // A heartbeat after leaving would only be refused.
    session.heartbeats.stop();
    // Leaving ends this identity for good: the next start joins afresh (personal state kept).
    const failure = await remote.leave('done').then(
      () => undefined,
      (err: unknown) => (err instanceof Error ? err.message : String(err)),
    );
    yield failure === undefined
      ? { kind: 'left', server: session.server }
      : { kind: 'leave-failed', server: session.server, reason: failure };
    identity = undefined;
  }
  await saveSession(session, identity);
  const moved = traffic(session);
  yield lastRound !== undefined
    ? { kind: 'finished', lastRound, roundsTrained, stateDir: session.stateDir, ...moved }
    : { kind: 'stopped', reason: stopped() ? 'signal' : 'round-limit', roundsTrained, stateDir: session.stateDir, ...moved };
}

/** Train on a delivered task, push the update, save the state. */
async function* federatedRound(
  session: FederatedSession,
  task: ReceivedTask,
  signal: AbortSignal | undefined,
): AsyncGenerator<ClientEvent, void> {
  const { remote, participant } = session;
  const round = task.round;
  yield { kind: 'round-started', round, received: task.kind };
  const trained = yield* session.events.during(trainOnTask(participant, task));
  yield* drainNotes(session, round);
  yield { kind: 'trained', round, metrics: trained.metrics };
  let outcome: ClientEvent | undefined;
  try {
    const ack = yield* untilConnected('push', () => remote.pushUpdate(trained.upload.fields, trained.upload.tensors), signal);
    if (ack !== undefined) {
      outcome = ack.accepted
        ? { kind: 'pushed', round, ack, ...traffic(session) }
        : { kind: 'refused', round, reason: ack.message };
    }
  } catch (err) {
    // The round closed or our mask view went stale while we trained: the next
    // pull re-synchronises (dense model, full masks). A coordinator that forgot
    // us meanwhile (restarted without its store): the next pull joins again.
    // Anything else is fatal.
    const recoverable = [grpc.status.FAILED_PRECONDITION, grpc.status.UNAUTHENTICATED];
    if (!(err instanceof RemoteError && recoverable.includes(err.code))) throw err;
    outcome = { kind: 'refused', round, reason: err.details };
  }
  await saveSession(session, session.identity);
  if (outcome !== undefined) yield outcome;
}

async function* localRounds(session: LocalSession, limits: RoundLimits): AsyncGenerator<ClientEvent, void> {
  const { participant } = session;
  const stopped = (): boolean => limits.signal?.aborted === true;
  const maxRounds = limits.maxRounds ?? 1;
  let roundsTrained = 0;
  while (!stopped() && roundsTrained < maxRounds) {
    const round = participant.round + 1;
    yield { kind: 'round-started', round, received: 'nothing' };
    const { metrics } = await participant.localRound();
    roundsTrained++;
    yield* drainNotes(session, round);
    yield { kind: 'trained', round, metrics };
    await saveSession(session, undefined);
  }
  yield {
    kind: 'stopped',
    reason: stopped() ? 'signal' : 'round-limit',
    roundsTrained,
    stateDir: session.stateDir,
    ...NO_TRAFFIC,
  };
}

function* drainNotes(session: ClientSession, round: number): Generator<ClientEvent, void> {
  for (const text of session.notes.splice(0)) yield { kind: 'note', round, text };
}

/** The data folder; one that cannot be used is an error naming the option (`--data`, `client.json: data`). */
async function readDataFolderOption(options: ClientOptions, seed: number): Promise<ClientDataSplits> {
  try {
    return await loadClientData(options.data, seed, { labelColumn: options.labelColumn });
  } catch (err) {
    if (err instanceof DataFolderError) throw new ClientCommandError(`${options.nameOf('data')}: ${err.message}`);
    throw err;
  }
}

/**
 * Data that the named model (or, unnamed, every zoo model) cannot take fails
 * here, before joining: a device that enrolls and then cannot train is a member
 * that never reports. The session fits the data to the actual model later.
 */
function checkDataFitsSomeModel(options: ClientOptions, data: ClientDataSplits): void {
  const candidates = options.model !== undefined ? [options.model] : MODEL_NAMES;
  const misfits: string[] = [];
  for (const name of candidates) {
    const model = createModel(name, 0);
    try {
      fitDataToModel(data, model);
      return;
    } catch (err) {
      if (!(err instanceof DataFolderError)) throw err;
      const [h, w, c] = model.inputShape;
      misfits.push(candidates.length === 1 ? err.message : `${name} takes ${h}x${w}x${c} = ${h * w * c} values`);
    } finally {
      model.dispose();
    }
  }
  const what = describeShape(exampleShape(data.train));
  const message =
    candidates.length === 1
      ? misfits[0]
      : `'${data.layout.folder}' holds ${what}, which no zoo model takes (${[...new Set(misfits)].join(', ')})`;
  throw new ClientCommandError(`${options.nameOf('data')}: ${message}`);
}

function hashString(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}
