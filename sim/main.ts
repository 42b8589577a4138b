/**
 * `subfed sim`: flags -> validated config -> runSimulation, with a progress bar
 * (on a terminal) or one log line per round, the run folder written as rounds
 * complete, and the final table on stdout. The log (pino, on stderr) is
 * readable on a terminal and JSON lines otherwise. `--dashboard [port]`
 * serves the coordinator's live dashboard while the simulation runs. Ctrl-C
 * once lets the current round finish and writes what is done; twice exits at once.
 */
import { Command, Option } from 'commander';
import cliProgress from 'cli-progress';
import path from 'node:path';
import type { Logger } from 'pino';
import { algorithmNames, allAlgorithms } from '../client/algorithms/registry.js';
import { DashboardFeed, startDashboardServer, type DashboardServer } from '../server/dashboard.js';
import { createSimLogger, isLogLevel, LOG_LEVELS, type LogLevel } from './log.js';
import { RENAMED_FLAGS, resolveSimConfig, SimConfigError, type SimFlags } from './presets.js';
import { defaultRunFolder, formatExportTable, formatSummaryTable } from './report.js';
import { RunWriter } from './run-folder.js';
import { runSimulation, type SimulationEvent } from './run.js';

/** The dashboard's port when `--dashboard` is given without one. */
export const DEFAULT_DASHBOARD_PORT = 8090;

/** `subfed sim`'s flags: the experiment's (SimFlags) plus how this run is watched. */
export interface SimCommandFlags extends SimFlags {
  /** `--dashboard` alone is true; `--dashboard 0` picks a free port. */
  dashboard?: string | true | undefined;
  logLevel?: string | undefined;
  /** Write every client's compact model after each algorithm's last round. */
  export?: boolean | undefined;
}

export interface SimCommandOptions {
  /** Default: createSimLogger at --log-level. */
  logger?: Logger;
  /** Told the dashboard's address once it listens. */
  onDashboard?: (address: string) => void;
}

/** Adds the `sim` subcommand to the root program. */
export function registerSimCommand(program: Command): Command {
  return (
    program
      .command('sim')
      .option('--preset <name>', 'quick | paper (default quick)')
      .option('--compare <list>', 'comma-separated algorithms run on the identical split and seeds')
      .option('--algorithm <name>', `one algorithm: ${algorithmNames().join(' | ')}`)
      .option('--rounds <n>', 'rounds per algorithm')
      .option('--clients <n>', 'number of clients')
      .option('--fraction <f>', 'fraction of clients sampled per round, in (0, 1]')
      .option('--epochs <n>', 'local epochs per round (training.epochs)')
      .option('--dataset <name>', 'fashion-mnist | mnist | cifar10 | synthetic')
      .option('--data <dir>', 'folder holding the dataset files')
      .option('--out <dir>', 'run folder (default runs/<timestamp>-<preset>)')
      .option('--eval-every <n>', 'evaluate every client every n rounds and at the end (paper 10, quick 5)')
      .option('--workers <n>', 'training worker threads (default one per core)')
      .option('--values <enc>', 'value encoding on the wire: f32 | f16 | int8')
      .option('--seed <n>', 'seed of the split, the models and the sampling')
      .option('--backend <name>', 'tfjs backend: auto | node | wasm | cpu')
      .option('--export', "write every client's state and compact model (subfed export) under the run folder's models/")
      .option(
        '--dashboard [port]',
        `serve the live dashboard on 127.0.0.1 (default port ${DEFAULT_DASHBOARD_PORT}) while it runs`,
      )
      .option('--log-level <level>', `${LOG_LEVELS.join(' | ')} (default info)`)
      // Old spellings, hidden: refused with the new name (RENAMED_FLAGS) rather than as unknown options.
      .addOption(new Option(`${RENAMED_FLAGS.dataDir.old} <dir>`).hideHelp())
      .addOption(new Option(`${RENAMED_FLAGS.localEpochs.old} <n>`).hideHelp())
      .addHelpText(
        'after',
        `\nAlgorithms:\n${allAlgorithms()
          .map((a) => `  ${a.name.padEnd(14)}${a.summary}`)
          .join('\n')}`,
      )
      .action(async (flags: SimCommandFlags) => {
        process.exitCode = await runSimCommand(flags);
      })
  );
}

/** `--dashboard [port]` -> the port to listen on, or undefined without the flag. */
function dashboardPort(value: string | true | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (value === true) return DEFAULT_DASHBOARD_PORT;
  const port = Number(value);
  if (!/^\d+$/.test(value) || port > 65535)
    throw new SimConfigError(`--dashboard: expected a port number (0..65535), got '${value}'`);
  return port;
}

/** Runs `subfed sim` with commander's parsed flags; resolves to the process exit code. */
export async function runSimCommand(flags: SimCommandFlags, options: SimCommandOptions = {}): Promise<number> {
  let config;
  let port;
  let level: LogLevel = 'info';
  try {
    if (flags.logLevel !== undefined) {
      if (!isLogLevel(flags.logLevel)) {
        throw new SimConfigError(`--log-level: expected one of ${LOG_LEVELS.join(', ')}, got '${flags.logLevel}'`);
      }
      level = flags.logLevel;
    }
    config = resolveSimConfig(flags);
    port = dashboardPort(flags.dashboard);
  } catch (error) {
    if (error instanceof SimConfigError) {
      process.stderr.write(`subfed sim: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
  const log = options.logger ?? createSimLogger(level);
  // The coordinators' own lines (joins, rounds) would drown the run's: warnings only, unless debugging.
  const coordinatorLog = log.child({ part: 'coordinator' }, { level: level === 'debug' || level === 'trace' ? level : 'warn' });
  const folder = config.out ?? defaultRunFolder(config);
  const writer = new RunWriter(folder, config);

  const feed = new DashboardFeed('simulation');
  let dashboard: DashboardServer | undefined;
  if (port !== undefined) {
    try {
      dashboard = await startDashboardServer(feed, { host: '127.0.0.1', port, logger: log.child({ part: 'dashboard' }) });
    } catch (error) {
      log.error({ event: 'dashboard', err: error }, (error as Error).message);
      return 1;
    }
    log.info({ event: 'dashboard', url: `http://${dashboard.address}/` }, `dashboard: http://${dashboard.address}/`);
    options.onDashboard?.(dashboard.address);
  }

  const stop = new AbortController();
  let interrupts = 0;
  const onSigint = (): void => {
    interrupts += 1;
    if (interrupts > 1) {
      log.warn({ event: 'interrupt' }, 'second Ctrl-C, exiting now');
      process.exit(130);
    }
    log.warn({ event: 'interrupt' }, 'stopping after the current round (Ctrl-C again to exit now)');
    stop.abort();
  };
  process.on('SIGINT', onSigint);

  const bar = new cliProgress.SingleBar(
    {
      format: '{algorithm} round {round}/{rounds} [{bar}] {value}/{total} members trained {status}',
      hideCursor: true,
      clearOnComplete: false,
      stream: process.stderr,
    },
    cliProgress.Presets.shades_classic,
  );
  const rounds = config.rounds;
  // A bar needs a terminal; in a log (CI, nohup, a pipe) each round gets one line instead.
  const interactive = process.stderr.isTTY === true;
  let notes: string[] = [];
  const onEvent = (event: SimulationEvent): void => {
    switch (event.kind) {
      case 'setup':
        notes = event.notes;
        for (const note of event.notes) log.info({ event: 'setup' }, note);
        log.info({ event: 'split' }, `label counts per client:\n${event.labelTable}`);
        return;
      case 'coordinator':
        feed.attach(event.coordinator.coordinator, `simulation · ${event.algorithm}`);
        return;
      case 'exported':
        writer.recordExports(event);
        log.info(
          { event: 'exported', algorithm: event.algorithm, dir: event.dir },
          `${event.algorithm}: wrote ${event.clients.length} compact models under ${event.dir}`,
        );
        return;
      case 'round-start':
        if (interactive) bar.start(event.members, 0, { algorithm: event.algorithm, round: event.round, rounds, status: '' });
        return;
      case 'member-done':
        if (interactive) bar.update(event.done);
        return;
      case 'evaluating':
        if (interactive) bar.update({ status: `| evaluating ${event.scope === 'all' ? 'every client' : 'the global model'}` });
        return;
    }
  };

  try {
    const exportTo = flags.export === true ? path.join(folder, 'models') : undefined;
    for await (const report of runSimulation(config, {
      signal: stop.signal,
      onEvent,
      logger: coordinatorLog,
      ...(exportTo !== undefined ? { exportTo } : {}),
    })) {
      writer.appendRound(report);
      const e = report.evaluation;
      const acc = e?.personalized ?? report.membersAccuracy;
      const scope = e === null ? 'members' : `sampled clients${e.neverSampled > 0 ? `, ${e.neverSampled} never sampled` : ''}`;
      const status = `acc ${(acc.mean * 100).toFixed(1)}% (${scope}) | ${report.wallSeconds.toFixed(1)} s`;
      if (interactive) {
        bar.update({ status: `| ${status}` });
        bar.stop();
      } else {
        log.info(
          {
            event: 'round',
            algorithm: report.algorithm,
            round: report.round,
            rounds,
            accuracy: acc.mean,
            scope: e === null ? 'members' : 'sampled',
            ...(e === null ? {} : { neverSampled: e.neverSampled }),
            wallSeconds: report.wallSeconds,
          },
          `${report.algorithm} round ${report.round}/${rounds}: ${status}`,
        );
      }
    }
  } catch (error) {
    bar.stop();
    log.error({ event: 'failed', err: error }, error instanceof Error ? error.message : String(error));
    writer.finish(notes);
    return 1;
  } finally {
    process.off('SIGINT', onSigint);
    feed.detach();
    await dashboard?.close();
  }
  const summaries = writer.finish(notes);
  process.stdout.write(`\n${formatSummaryTable(summaries)}\n\n`);
  const exports = writer.exports;
  if (exports.length > 0) process.stdout.write(`${formatExportTable(exports)}\n\n`);
  for (const note of notes) process.stdout.write(`note: ${note}\n`);
  process.stdout.write(
    writer.rounds.length === 0
      ? 'no round completed: no run folder written\n'
      : `run folder: ${path.resolve(folder)} (report.html, rounds.jsonl, series.csv, clients.csv, summary.json, config.json)\n`,
  );
  return stop.signal.aborted ? 130 : 0;
}
