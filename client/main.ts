/**
 * `subfed client`: one real participant on its own data, talking to a
 * coordinator over gRPC. This file is the command: flags -> options
 * (client/options.ts), the run as events (client/run.ts, client/session.ts),
 * one log line per event, and the summary the run returns.
 */
import type { Command } from 'commander';
import { AlgorithmConfigError } from './algorithms/index.js';
import { DataFileError } from './data/errors.js';
import type { ClientEvent } from './events.js';
import {
  ClientCommandError,
  clientFlagOptions,
  clientOptionsFromFlags,
  type ClientFlags,
  type ClientOptions,
} from './options.js';
import { RemoteError, type RetryPolicy } from './remote.js';
import { clientRun } from './run.js';
import { StateFileError } from './state.js';

export interface ClientRunHooks {
  /** Stop when aborted. Without one, SIGINT/SIGTERM stop the run gracefully (state saved). */
  readonly signal?: AbortSignal;
  /** Progress lines; default stderr. */
  readonly log?: (line: string) => void;
  /** Told every event, before its log line. */
  readonly onEvent?: (event: ClientEvent) => void;
  /** Per-call retry policy of the gRPC connection. */
  readonly retry?: Partial<RetryPolicy>;
}

export interface ClientRunSummary {
  /** Rounds this process trained. */
  rounds: number;
  /** The coordinator said every configured round is committed. */
  finished: boolean;
  bytesUp: number;
  bytesDown: number;
  lastAccuracy: number | undefined;
}

/**
 * Runs `subfed client` until the coordinator says training is finished, it is
 * stopped (signal, maxRounds) or a non-retryable error; logs every event.
 */
export async function runClient(options: ClientOptions, hooks: ClientRunHooks = {}): Promise<ClientRunSummary> {
  const log = hooks.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const stop = hooks.signal === undefined ? stopOnSignals(log) : undefined;
  const summary: ClientRunSummary = { rounds: 0, finished: false, bytesUp: 0, bytesDown: 0, lastAccuracy: undefined };
  try {
    for await (const event of clientRun(options, { signal: hooks.signal ?? stop?.signal, retry: hooks.retry })) {
      hooks.onEvent?.(event);
      const line = logLine(event);
      if (line !== undefined) log(line);
      if (event.kind === 'trained') {
        summary.rounds++;
        summary.lastAccuracy = event.metrics.accuracy;
      } else if (event.kind === 'finished' || event.kind === 'stopped') {
        summary.finished = event.kind === 'finished';
        summary.bytesUp = event.bytesUp;
        summary.bytesDown = event.bytesDown;
      }
    }
    return summary;
  } finally {
    stop?.dispose();
  }
}

/** The log line of an event; undefined for a repeated wait (one line per stretch of waiting is enough). */
export function logLine(event: ClientEvent): string | undefined {
  switch (event.kind) {
    case 'backend-ready':
      return `tfjs backend: ${event.backend}`;
    case 'data-loaded':
      return (
        `data: ${event.trainExamples} training and ${event.testExamples} test examples of ${event.shape.join('x')} ` +
        `from ${event.folder} (${event.layout === 'split' ? 'train/ and test/' : 'files split 80/20'})`
      );
    case 'joined':
      return `joined ${event.server} as ${event.clientId} (algorithm ${event.algorithm}, values ${event.valueEncoding})`;
    case 'resumed':
      return `resuming as ${event.clientId} on ${event.server} (algorithm ${event.algorithm}, values ${event.valueEncoding})`;
    case 'training-locally':
      return `training locally, no coordinator (algorithm ${event.algorithm}, model ${event.model})`;
    case 'state-restored':
      return `personal state from ${event.stateDir}: round ${event.round}, mask version ${event.maskVersion}`;
    case 'reconnecting':
      return `${event.call}: coordinator unavailable (${event.reason}); retrying in ${(event.delayMs / 1000).toFixed(1)} s`;
    case 'rejoined':
      return `${event.reason}: joined ${event.server} again as ${event.clientId} (was ${event.previousClientId}), personal state kept`;
    case 'waiting':
      return event.consecutive === 1 ? `no task yet; asking again every ${event.retryAfterMs} ms` : undefined;
    case 'round-started':
      return event.received === 'nothing'
        ? `local round ${event.round}: training`
        : `round ${event.round}: received the ${event.received} model`;
    case 'note':
      return `  ${event.text}`;
    case 'trained': {
      const m = event.metrics;
      const channels = m.channelsKept !== undefined ? `, channels [${m.channelsKept.join(', ')}]` : '';
      return (
        `round ${event.round}: loss ${m.loss.toFixed(4)}, accuracy ${pct(m.accuracy)} (received ${pct(m.receivedAccuracy)}), ` +
        `sparsity ${pct(m.sparsity)}${channels}`
      );
    }
    case 'pushed':
      return `round ${event.round}: update accepted (mask version ${event.ack.maskVersion}); up ${event.bytesUp} B, down ${event.bytesDown} B so far`;
    case 'refused':
      return `round ${event.round}: update refused (${event.reason}); pulling again`;
    case 'left':
      return `left ${event.server}`;
    case 'leave-failed':
      return `leaving ${event.server} failed (${event.reason}); the identity is forgotten all the same`;
    case 'finished':
      return (
        `training finished after round ${event.lastRound} (${event.roundsTrained} round(s) trained here); ` +
        `state saved in ${event.stateDir}; up ${event.bytesUp} B, down ${event.bytesDown} B`
      );
    case 'stopped': {
      const why = event.reason === 'signal' ? 'stopped' : 'round limit reached';
      const saved = event.stateDir === undefined ? 'nothing to save' : `state saved in ${event.stateDir}`;
      return `${why} after ${event.roundsTrained} round(s); ${saved}`;
    }
  }
}

/** Adds the `client` subcommand to the root program. */
export function registerClientCommand(program: Command): Command {
  const command = program.command('client').description('run one federated client on local data against a coordinator');
  for (const option of clientFlagOptions()) command.addOption(option);
  return command.action(async (flags: ClientFlags) => {
    process.exitCode = await runClientCommand(flags);
  });
}

/** Runs `subfed client` from parsed flags; resolves to the process exit code (2 for bad input, 1 for a failed call). */
export async function runClientCommand(flags: ClientFlags): Promise<number> {
  const log = (line: string): void => {
    process.stderr.write(`${new Date().toISOString()} ${line}\n`);
  };
  const stop = stopOnSignals(log);
  try {
    const options = await clientOptionsFromFlags(flags);
    await runClient(options, { signal: stop.signal, log });
    return 0;
  } catch (err) {
    if (isBadInput(err)) {
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

function isBadInput(err: unknown): err is Error {
  return (
    err instanceof ClientCommandError ||
    err instanceof AlgorithmConfigError ||
    err instanceof StateFileError ||
    err instanceof DataFileError
  );
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

function pct(x: number): string {
  return `${(100 * x).toFixed(1)}%`;
}
