/**
 * `subfed report <run folder>`: redraws report.html, series.csv, clients.csv
 * and summary.json from the folder's config.json and rounds.jsonl, e.g. with
 * another accuracy threshold for the rounds-and-bytes table.
 */
import type { Command } from 'commander';
import path from 'node:path';
import { RunFolderError, readRunFolder, writeRunReport } from './run-folder.js';

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
  let run;
  try {
    run = readRunFolder(folder);
  } catch (err) {
    if (!(err instanceof RunFolderError)) throw err;
    process.stderr.write(`subfed report: ${err.message}\n`);
    return 2;
  }
  writeRunReport(folder, run, threshold === undefined ? {} : { threshold });
  process.stdout.write(`wrote ${path.join(path.resolve(folder), 'report.html')} (and summary.json, series.csv, clients.csv)\n`);
  return 0;
}

export function registerReportCommand(program: Command): Command {
  return program
    .command('report')
    .argument('<run-folder>', 'a `subfed sim` run folder (config.json, rounds.jsonl)')
    .option('--threshold <fraction>', 'received accuracy the rounds-and-bytes table counts to (default: 90% of the best reached)')
    .action((folder: string, flags: { threshold?: string }) => {
      process.exitCode = runReportCommand(folder, flags);
    });
}
