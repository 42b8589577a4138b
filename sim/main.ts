/**
 * `subfed sim`: the preset, the experiment file (`--config`) and the flags ->
 * one validated experiment (sim/presets.ts) -> runExperiment (once per seed,
 * sim/experiment.ts), with a progress bar (on a terminal) or one log line per
 * round (sim/console.ts), the run folder written as rounds complete, and the
 * final table on stdout: the run's, or mean ± std [95% CI] over the seeds.
 * The log (pino, on stderr) is readable on a terminal and JSON lines
 * otherwise. `--dashboard [port]` serves the coordinator's live dashboard
 * while the simulation runs. Ctrl-C once lets the current round finish and
 * writes what is done; twice exits at once.
 */
import { Command, Option } from 'commander';
import path from 'node:path';
import type { Logger } from 'pino';
import { algorithmNames, allAlgorithms } from '../client/algorithms/registry.js';
import { DashboardFeed, startDashboardServer, type DashboardServer } from '../server/dashboard.js';
import { logLevelFlag, onInterrupt, RunProgress } from './console.js';
import { isInputError, runExperiment, type ExperimentResult } from './experiment.js';
import { createSimLogger, LOG_LEVELS, type LogLevel } from './log.js';
import {
  FLAG_FIELDS,
  flagOf,
  flagPlaceholder,
  type FlagField,
  PRESET_NAMES,
  RENAMED_FLAGS,
  resolveExperiment,
  SimConfigError,
  type Experiment,
  type SimFlags,
} from './presets.js';
import { defaultRunFolder, formatExportTable, formatSummaryTable } from './report.js';
import { formatSeedsTable } from './seed-summary.js';

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
  const command = program
    .command('sim')
    .option('--config <file>', 'experiment file (JSON; README "Experiment files"); the flags override it')
    .option('--preset <name>', `${PRESET_NAMES.join(' | ')} (default quick)`)
    .option('--compare <list>', 'comma-separated algorithms run on the identical split and seeds')
    .option('--algorithm <name>', `one algorithm: ${algorithmNames().join(' | ')}`);
  for (const [name, field] of Object.entries(FLAG_FIELDS) as [string, FlagField][]) {
    command.option(`${flagOf(name)} ${flagPlaceholder(field.reading)}`, field.description);
  }
  return (
    command
      .option(
        '--set <path=value>',
        'set any field of the experiment, e.g. algorithmConfigs.subfedavg-un.target=50 (repeatable; applied last)',
        (value: string, previous: string[] = []) => [...previous, value],
      )
      .option('--export', "write every client's state and compact model (subfed export) under the run folder's models/")
      .option(
        '--dashboard [port]',
        `serve the live dashboard on 127.0.0.1 (default port ${DEFAULT_DASHBOARD_PORT}) while it runs`,
      )
      .option('--log-level <level>', `${LOG_LEVELS.join(' | ')} (default info)`)
      // Old spellings, hidden: refused with the new name (RENAMED_FLAGS) rather than as unknown options.
      .addOption(new Option(`${RENAMED_FLAGS.dataDir.old} <dir>`).hideHelp())
      .addOption(new Option(`${RENAMED_FLAGS.localEpochs.old} <n>`).hideHelp())
      .addOption(new Option(`${RENAMED_FLAGS.seed.old} <n>`).hideHelp())
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

/** The run folder's default name: the experiment file's name, else the preset's. */
function runName(flags: SimFlags, experiment: Experiment): string {
  return flags.config === undefined ? experiment.preset : path.basename(flags.config).replace(/\.json$/i, '');
}

/** Runs `subfed sim` with commander's parsed flags; resolves to the process exit code. */
export async function runSimCommand(flags: SimCommandFlags, options: SimCommandOptions = {}): Promise<number> {
  let experiment;
  let port;
  let level: LogLevel;
  try {
    level = logLevelFlag(flags.logLevel);
    experiment = resolveExperiment(flags);
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
  const folder = experiment.out ?? defaultRunFolder({ preset: runName(flags, experiment) });

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

  const interrupt = onInterrupt(log, 'stopping after the current round');
  const progress = new RunProgress(log, experiment.rounds);
  const seeds = experiment.seeds;
  let result: ExperimentResult;
  try {
    result = await runExperiment(experiment, {
      folder,
      signal: interrupt.signal,
      log,
      coordinatorLog,
      exportModels: flags.export === true,
      onEvent: (event, seed) => {
        if (seeds.length > 1) progress.label = `seed ${seed} (${seeds.indexOf(seed) + 1}/${seeds.length})`;
        if (event.kind === 'coordinator') {
          feed.attach(
            event.coordinator.coordinator,
            `simulation · ${event.algorithm}${seeds.length > 1 ? ` · seed ${seed}` : ''}`,
          );
        }
        progress.onEvent(event);
      },
      onRound: (report) => progress.onRound(report),
    });
  } catch (error) {
    progress.stop();
    if (isInputError(error)) {
      process.stderr.write(`subfed sim: ${error.message}\n`);
      return 2;
    }
    log.error({ event: 'failed', err: error }, error instanceof Error ? error.message : String(error));
    return 1;
  } finally {
    interrupt.dispose();
    feed.detach();
    await dashboard?.close();
  }
  const notes = result.seeds[0]?.notes ?? [];
  if (seeds.length === 1) {
    const only = result.seeds[0];
    process.stdout.write(`\n${formatSummaryTable(only?.summaries ?? [])}\n\n`);
    if (only !== undefined && only.exports.length > 0) process.stdout.write(`${formatExportTable(only.exports)}\n\n`);
  } else {
    process.stdout.write(`\n${formatSeedsTable(result.spreads)}\n\n`);
  }
  for (const note of notes) process.stdout.write(`note: ${note}\n`);
  const files =
    seeds.length === 1
      ? 'report.html, rounds.jsonl, series.csv, clients.csv, summary.json, config.json, run.json'
      : `report.html, summary.json, config.json, run.json; each seed's run in seed-<seed>/`;
  process.stdout.write(
    result.roundsWritten === 0
      ? 'no round completed: no run folder written\n'
      : `run folder: ${path.resolve(folder)} (${files})\n`,
  );
  return interrupt.signal.aborted ? 130 : 0;
}
