/**
 * What `subfed sim` and `subfed sweep` show while they run: on a terminal a
 * progress bar per round, otherwise (a log file, CI, a pipe) one log line per
 * round; and Ctrl-C, once to stop after the current round, twice to exit now.
 */
import cliProgress from 'cli-progress';
import type { Logger } from 'pino';
import { isLogLevel, LOG_LEVELS, type LogLevel } from './log.js';
import { SimConfigError } from './presets.js';
import type { RoundReport } from './report.js';
import type { SimulationEvent } from './run.js';

export class RunProgress {
  readonly #log: Logger;
  readonly #rounds: number;
  readonly #interactive: boolean;
  readonly #bar: cliProgress.SingleBar;
  /** Said before each line, e.g. `seed 2/3` or `cell 4/12, seed 1/2`; empty for a single run. */
  label = '';

  constructor(log: Logger, rounds: number, interactive = process.stderr.isTTY === true) {
    this.#log = log;
    this.#rounds = rounds;
    this.#interactive = interactive;
    this.#bar = new cliProgress.SingleBar(
      {
        format: '{label}{algorithm} round {round}/{rounds} [{bar}] {value}/{total} members trained {status}',
        hideCursor: true,
        clearOnComplete: false,
        stream: process.stderr,
      },
      cliProgress.Presets.shades_classic,
    );
  }

  #prefix(): string {
    return this.label === '' ? '' : `${this.label}: `;
  }

  onEvent(event: SimulationEvent): void {
    if (!this.#interactive) return;
    switch (event.kind) {
      case 'round-start':
        this.#bar.start(event.members, 0, {
          label: this.#prefix(),
          algorithm: event.algorithm,
          round: event.round,
          rounds: this.#rounds,
          status: '',
        });
        return;
      case 'member-done':
        this.#bar.update(event.done);
        return;
      case 'evaluating':
        this.#bar.update({ status: `| evaluating ${event.scope === 'all' ? 'every client' : 'the global model'}` });
        return;
      case 'setup':
      case 'coordinator':
      case 'exported':
        return;
    }
  }

  onRound(report: RoundReport): void {
    const e = report.evaluation;
    const acc = e?.personalized ?? report.membersAccuracy;
    const scope = e === null ? 'members' : `sampled clients${e.neverSampled > 0 ? `, ${e.neverSampled} never sampled` : ''}`;
    const status = `acc ${(acc.mean * 100).toFixed(1)}% (${scope}) | ${report.wallSeconds.toFixed(1)} s`;
    if (this.#interactive) {
      this.#bar.update({ status: `| ${status}` });
      this.#bar.stop();
      return;
    }
    this.#log.info(
      {
        event: 'round',
        algorithm: report.algorithm,
        round: report.round,
        rounds: this.#rounds,
        accuracy: acc.mean,
        scope: e === null ? 'members' : 'sampled',
        ...(e === null ? {} : { neverSampled: e.neverSampled }),
        wallSeconds: report.wallSeconds,
      },
      `${this.#prefix()}${report.algorithm} round ${report.round}/${this.#rounds}: ${status}`,
    );
  }

  stop(): void {
    this.#bar.stop();
  }
}

/**
 * Ctrl-C handling while `what` runs: the first aborts the returned signal (the
 * run finishes its current round and writes what is done), the second exits
 * at once with 130.
 */
export function onInterrupt(log: Logger, what: string): { readonly signal: AbortSignal; dispose(): void } {
  const stop = new AbortController();
  let interrupts = 0;
  const handler = (): void => {
    interrupts += 1;
    if (interrupts > 1) {
      log.warn({ event: 'interrupt' }, 'second Ctrl-C, exiting now');
      process.exit(130);
    }
    log.warn({ event: 'interrupt' }, `${what} (Ctrl-C again to exit now)`);
    stop.abort();
  };
  process.on('SIGINT', handler);
  return { signal: stop.signal, dispose: () => process.off('SIGINT', handler) };
}

/** `--log-level`: one of LOG_LEVELS, default info; a SimConfigError naming the flag otherwise. */
export function logLevelFlag(value: string | undefined): LogLevel {
  if (value === undefined) return 'info';
  if (!isLogLevel(value)) throw new SimConfigError(`--log-level: expected one of ${LOG_LEVELS.join(', ')}, got '${value}'`);
  return value;
}
