/**
 * `subfed report <run folder>`: redraws report.html, series.csv, clients.csv
 * and summary.json from the folder's config.json and rounds.jsonl, e.g. with
 * another accuracy threshold for the rounds-and-bytes table. The folder of a
 * multi-seed experiment (`subfed sim --seeds`) gets every seed's folder
 * redrawn, then its own summary over the seeds.
 */
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { readRunRecord, RUN_RECORD_FILE } from './environment.js';
import { seedFolder, writeSeedsReport } from './experiment.js';
import { RunFolderError, readRecordedExperiment, readRunFolder, writeRunReport } from './run-folder.js';

/** `--threshold` as a fraction in (0, 1]; a percentage such as 80 or 80% is refused with the fraction it meant. */
export function parseThreshold(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0 || n > 1) {
    const hint =
      /^\d+(\.\d+)?%?$/.test(value) && Number.parseFloat(value) > 1
        ? ` (for ${value}% write ${Number.parseFloat(value) / 100})`
        : '';
    throw new RangeError(`--threshold: expected a received accuracy as a fraction in (0, 1], got '${value}'${hint}`);
  }
  return n;
}

/** Runs `subfed report`; resolves to the exit code (2: bad flag or unreadable folder). */
export function runReportCommand(folder: string, flags: { threshold?: string | undefined }): number {
  let threshold: number | undefined;
  try {
    threshold = flags.threshold === undefined ? undefined : parseThreshold(flags.threshold);
  } catch (err) {
    process.stderr.write(`subfed report: ${(err as Error).message}\n`);
    return 2;
  }
  const options = threshold === undefined ? {} : { threshold };
  try {
    const experiment = readRecordedExperiment(folder);
    if (experiment.seeds.length === 1) {
      writeRunReport(folder, readRunFolder(folder), options);
      process.stdout.write(
        `wrote ${path.join(path.resolve(folder), 'report.html')} (and summary.json, series.csv, clients.csv)\n`,
      );
      return 0;
    }
    // Every seed's folder is read before anything is written: a bad one changes nothing. A seed stopped before its first round has none.
    const record = readRunRecord(folder);
    if (record === undefined) throw new RunFolderError(`${path.join(folder, RUN_RECORD_FILE)}: missing or not JSON`);
    const seeds = experiment.seeds
      .map((seed) => ({ seed, folder: seedFolder(experiment, folder, seed) }))
      .filter((s) => existsSync(s.folder))
      .map((s) => ({ ...s, run: readRunFolder(s.folder) }));
    const results = seeds.map((s) => ({ seed: s.seed, summaries: writeRunReport(s.folder, s.run, options) }));
    writeSeedsReport(folder, experiment, record, results);
    process.stdout.write(
      `wrote ${path.join(path.resolve(folder), 'report.html')} (and summary.json) and each seed's report in ${seeds.map((s) => path.basename(s.folder)).join(', ')}\n`,
    );
    return 0;
  } catch (err) {
    if (!(err instanceof RunFolderError)) throw err;
    process.stderr.write(`subfed report: ${err.message}\n`);
    return 2;
  }
}

export function registerReportCommand(program: Command): Command {
  return program
    .command('report')
    .argument('<run-folder>', 'a `subfed sim` run folder (config.json, rounds.jsonl), or that of a multi-seed experiment')
    .option('--threshold <fraction>', 'received accuracy the rounds-and-bytes table counts to (default: 90% of the best reached)')
    .action((folder: string, flags: { threshold?: string }) => {
      process.exitCode = runReportCommand(folder, flags);
    });
}
