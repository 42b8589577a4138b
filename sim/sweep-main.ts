/**
 * `subfed sweep --config sweep.json`: every cell of the grid (sim/sweep.ts),
 * one after another, each an experiment over the sweep's seeds, with a line
 * per cell and the run's progress; then the table (terminal, table.csv,
 * table.html) and report.html. Run again with the same file (and out) to
 * resume: finished cells are skipped. Ctrl-C once stops after the current
 * round (that cell runs again on resume), twice exits at once.
 */
import type { Command } from 'commander';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { readJsonObject } from './config-layers.js';
import { logLevelFlag, onInterrupt, RunProgress } from './console.js';
import { readRunRecord, type RunRecord } from './environment.js';
import { isInputError, readSeedResults, runExperiment } from './experiment.js';
import { createSimLogger, LOG_LEVELS, type LogLevel } from './log.js';
import { recordedConfig } from './presets.js';
import { HEADLINE_METRICS, formatSpread, summarizeSeeds, unitOf } from './seed-summary.js';
import { cellFolder, cellStates, clearCell, loadSweep, type CellState, type Sweep } from './sweep.js';
import { formatSweepTable, renderSweepReportHtml, sweepTableCsv, sweepTableHtml, type CellResult } from './sweep-report.js';

export interface SweepCommandFlags {
  config: string;
  out?: string | undefined;
  logLevel?: string | undefined;
}

export function registerSweepCommand(program: Command): Command {
  return program
    .command('sweep')
    .requiredOption('--config <file>', 'sweep file (JSON): an experiment, a grid of field values, seeds; README "Sweeps"')
    .option('--out <dir>', "sweep folder (default the file's out, else runs/<file name>/); the same folder resumes")
    .option('--log-level <level>', `${LOG_LEVELS.join(' | ')} (default info)`)
    .action(async (flags: SweepCommandFlags) => {
      process.exitCode = await runSweepCommand(flags);
    });
}

/** Runs `subfed sweep`; resolves to the process exit code (130 when stopped by Ctrl-C). */
export async function runSweepCommand(flags: SweepCommandFlags, options: { logger?: Logger } = {}): Promise<number> {
  let sweep: Sweep;
  let states: CellState[];
  let level: LogLevel;
  try {
    level = logLevelFlag(flags.logLevel);
    sweep = loadSweep(flags.config, { out: flags.out });
    states = cellStates(sweep);
  } catch (error) {
    if (isInputError(error)) {
      process.stderr.write(`subfed sweep: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
  const log = options.logger ?? createSimLogger(level);
  const debugging = level === 'debug' || level === 'trace';
  // Each run's setup notes and label tables, once per cell and seed, would drown the sweep's lines.
  const runLog = log.child({ part: 'run' }, { level: debugging ? level : 'warn' });
  const coordinatorLog = log.child({ part: 'coordinator' }, { level: debugging ? level : 'warn' });

  mkdirSync(sweep.out, { recursive: true });
  writeFileSync(
    path.join(sweep.out, 'sweep.json'),
    `${JSON.stringify({ file: path.resolve(sweep.file), cells: sweep.cells.map((c) => ({ name: c.name, values: c.values })) }, null, 2)}\n`,
  );
  const results: CellResult[] = sweep.cells.map((c) => ({ name: c.name, values: c.values, status: 'not run', spreads: [] }));
  const interrupt = onInterrupt(log, 'stopping the sweep after the current round (the cell stopped runs again on resume)');
  let record: RunRecord | undefined;
  let code = 0;
  const finished = states.filter((s) => s.kind === 'finished').length;
  log.info(
    { event: 'sweep', cells: sweep.cells.length, finished, out: sweep.out },
    `sweep: ${sweep.cells.length} cells (${finished} finished earlier) into ${path.resolve(sweep.out)}`,
  );

  for (const [i, cell] of sweep.cells.entries()) {
    const folder = cellFolder(sweep, cell);
    const label = `cell ${i + 1}/${sweep.cells.length} ${cell.name}`;
    const state = states[i];
    if (state.kind === 'finished') {
      results[i] = {
        ...results[i],
        status: 'finished earlier',
        spreads: summarizeSeeds(readSeedResults(cell.experiment, folder)),
      };
      log.info({ event: 'cell', cell: cell.name, status: 'skipped' }, `${label}: finished earlier, skipped`);
      continue;
    }
    if (interrupt.signal.aborted) break;
    if (state.kind === 'unfinished') {
      log.info(
        { event: 'cell', cell: cell.name, status: 'rerun' },
        `${label}: its folder holds an unfinished run (${state.status}), running it again`,
      );
      clearCell(sweep, cell);
    }
    const seeds = cell.experiment.seeds;
    log.info({ event: 'cell', cell: cell.name, status: 'running' }, `${label}: running (seeds ${seeds.join(', ')})`);
    const progress = new RunProgress(log, cell.experiment.rounds);
    try {
      const result = await runExperiment(
        { ...cell.experiment, out: folder },
        {
          folder,
          signal: interrupt.signal,
          log: runLog,
          coordinatorLog,
          onEvent: (event, seed) => {
            progress.label = seeds.length > 1 ? `${label}, seed ${seed}` : label;
            progress.onEvent(event);
          },
          onRound: (report) => progress.onRound(report),
        },
      );
      results[i] = { ...results[i], status: result.status === 'completed' ? 'ran' : 'interrupted', spreads: result.spreads };
      record = readRunRecord(folder) ?? record;
      const headline = HEADLINE_METRICS[0];
      log.info(
        { event: 'cell', cell: cell.name, status: result.status },
        `${label}: ${result.status}; ${headline.label} ` +
          result.spreads
            .map((s) => `${s.algorithm} ${formatSpread(s.metrics[headline.metric], unitOf(headline.metric))}`)
            .join(', '),
      );
    } catch (error) {
      progress.stop();
      results[i] = { ...results[i], status: 'failed' };
      if (isInputError(error)) {
        process.stderr.write(`subfed sweep: ${label}: ${error.message}\n`);
        code = 2;
      } else {
        log.error(
          { event: 'failed', cell: cell.name, err: error },
          `${label}: ${error instanceof Error ? error.message : String(error)}`,
        );
        code = 1;
      }
      break;
    }
  }
  interrupt.dispose();

  const table = { paths: sweep.paths, cells: results };
  writeFileSync(path.join(sweep.out, 'table.csv'), sweepTableCsv(table));
  writeFileSync(path.join(sweep.out, 'table.html'), sweepTableHtml(table));
  writeFileSync(
    path.join(sweep.out, 'report.html'),
    renderSweepReportHtml({
      file: sweep.file,
      table,
      sweep: readJsonObject(sweep.file, 'a sweep'),
      experiment: recordedConfig(sweep.cells[0].experiment),
      record,
    }),
  );
  process.stdout.write(`\n${formatSweepTable(table)}\n\n`);
  process.stdout.write(`sweep folder: ${path.resolve(sweep.out)} (table.csv, table.html, report.html, cells/<cell>/)\n`);
  if (code !== 0) return code;
  return interrupt.signal.aborted ? 130 : 0;
}
