/**
 * `subfed client`: one real participant on its own data, talking to a
 * coordinator over gRPC. This file is the command: config file, environment
 * and flags -> options (client/options.ts), the run as events (client/run.ts,
 * client/session.ts), one log record per event (client/log.ts), and the
 * summary the run returns.
 */
import type { Command } from 'commander';
import { AlgorithmConfigError } from './algorithms/index.js';
import { DataFileError } from './data/errors.js';
import { EnvironmentError } from './env.js';
import type { ClientEvent } from './events.js';
import { createClientLogger, logEvent, type Logger } from './log.js';
import {
  ClientCommandError,
  clientFlagOptions,
  clientOptionsFromCommandLine,
  type ClientFlags,
  type ClientOptions,
} from './options.js';
import { RemoteError, type RetryPolicy } from './remote.js';
import { clientRun } from './run.js';
import { StateFileError } from './state.js';

export { eventMessage as logLine } from './log.js';

export interface ClientRunHooks {
  /** Stop when aborted. Without one, SIGINT/SIGTERM stop the run gracefully (state saved). */
  readonly signal?: AbortSignal;
  /** Where the event records go; default a logger at the options' level on stderr (see client/log.ts). */
  readonly logger?: Logger;
  /** Told every event, before its log record. */
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
 * stopped (signal, `rounds`) or a non-retryable error; logs every event.
 */
export async function runClient(options: ClientOptions, hooks: ClientRunHooks = {}): Promise<ClientRunSummary> {
  const logger = hooks.logger ?? (await createClientLogger(options.logLevel));
  const stop = hooks.signal === undefined ? stopOnSignals(logger) : undefined;
  const summary: ClientRunSummary = { rounds: 0, finished: false, bytesUp: 0, bytesDown: 0, lastAccuracy: undefined };
  try {
    for await (const event of clientRun(options, { signal: hooks.signal ?? stop?.signal, retry: hooks.retry })) {
      hooks.onEvent?.(event);
      logEvent(logger, event);
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

/** Adds the `client` subcommand to the root program. */
export function registerClientCommand(program: Command): Command {
  const command = program
    .command('client')
    .description('run one federated client on local data against a coordinator')
    .addHelpText(
      'after',
      '\nThe enrollment token comes from SUBFED_TOKEN or a file (--token-file, tokenFile in --config), never the command line.\n' +
        "A --config file holds the same options under the flags' names (--state-dir -> stateDir); flags override it.",
    );
  for (const option of clientFlagOptions()) command.addOption(option);
  return command.action(async (flags: ClientFlags) => {
    process.exitCode = await runClientCommand(flags);
  });
}

export interface CommandContext {
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Where the log and error lines go; default stderr. */
  readonly stream?: NodeJS.WritableStream & { readonly isTTY?: boolean };
}

/**
 * Runs `subfed client` from parsed flags; resolves to the process exit code
 * (2 for bad input, 1 for a failed call). Before the options are known an
 * error is one plain line; after, a log record like every other.
 */
export async function runClientCommand(flags: ClientFlags, context: CommandContext = {}): Promise<number> {
  const stream = context.stream ?? process.stderr;
  let logger: Logger | undefined;
  const stop = stopOnSignals(() => logger);
  try {
    const options = await clientOptionsFromCommandLine(flags, context.env ?? process.env);
    logger = await createClientLogger(options.logLevel, { stream });
    await runClient(options, { signal: stop.signal, logger });
    return 0;
  } catch (err) {
    const code = isBadInput(err) ? 2 : err instanceof RemoteError ? 1 : undefined;
    if (code === undefined) throw err;
    const error = err as Error;
    if (logger === undefined) stream.write(`subfed client: ${error.message}\n`);
    else {
      const call = err instanceof RemoteError ? { call: err.method, code: err.codeName } : {};
      logger.error({ event: 'failed', error: error.name, ...call, exitCode: code }, `subfed client: ${error.message}`);
    }
    return code;
  } finally {
    stop.dispose();
  }
}

function isBadInput(err: unknown): err is Error {
  return (
    err instanceof ClientCommandError ||
    err instanceof AlgorithmConfigError ||
    err instanceof StateFileError ||
    err instanceof DataFileError ||
    err instanceof EnvironmentError
  );
}

/**
 * Wires SIGINT/SIGTERM to a graceful stop (finish the current step, save, leave);
 * a second signal exits at once. Returns the signal to pass to runClient and a
 * function removing the handlers.
 */
export function stopOnSignals(logger: Logger | (() => Logger | undefined)): {
  signal: AbortSignal;
  dispose: () => void;
} {
  const controller = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => {
    if (controller.signal.aborted) process.exit(130);
    const message = `${sig}: finishing the current step, saving state (again to quit at once)`;
    const log = typeof logger === 'function' ? logger() : logger;
    if (log === undefined) process.stderr.write(`${message}\n`);
    else log.warn({ event: 'signal', signal: sig }, message);
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
