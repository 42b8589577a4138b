/**
 * A run's folder (one seed's: sim/experiment.ts puts them together): config.json
 * (the run as an experiment file, re-runnable with `subfed sim --config`),
 * rounds.jsonl (one RoundReport per line, appended as rounds complete, so a
 * stopped run keeps what it did), and at the end summary.json, report.html,
 * series.csv and clients.csv. readRunFolder reads a folder back, so `subfed
 * report` can redraw the page (another threshold) from the files alone.
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { formatZodIssues } from '../proto/zod-issues.js';
import { experimentOf, recordedConfig, seedRun, validateExperiment, type Experiment, type SimConfig } from './presets.js';
import {
  summarize,
  summarizeExports,
  type AlgorithmExports,
  type AlgorithmSummary,
  type ExportSummary,
  type RoundReport,
} from './report.js';
import { clientsCsv, seriesCsv } from './report-csv.js';
import { renderReportHtml, reportView, type ReportOptions } from './report-html.js';

/** The files finish() writes next to config.json and rounds.jsonl. */
export const RUN_FILES = ['summary.json', 'report.html', 'series.csv', 'clients.csv'] as const;

/** What a run folder records, as readRunFolder gives it back. */
export interface RunRecords {
  readonly config: SimConfig;
  readonly rounds: readonly RoundReport[];
  readonly notes: readonly string[];
  readonly exports?: readonly ExportSummary[];
  readonly exportedClients?: readonly AlgorithmExports[];
}

/** summary.json, report.html and the CSV files from a run's records. */
export function writeRunReport(folder: string, run: RunRecords, options: ReportOptions = {}): AlgorithmSummary[] {
  const { config, rounds, notes } = run;
  const summaries = config.algorithms.map((a) => summarize(a, rounds, config.rounds)).filter((s) => s.rounds > 0);
  const exports = run.exports ?? [];
  writeFileSync(
    path.join(folder, 'summary.json'),
    `${JSON.stringify({ notes, summaries, ...(exports.length > 0 ? { exports, exportedClients: run.exportedClients ?? [] } : {}) }, null, 2)}\n`,
  );
  const view = reportView(config, rounds, summaries, options);
  writeFileSync(
    path.join(folder, 'report.html'),
    renderReportHtml({ config, rounds, summaries, notes, ...(exports.length > 0 ? { exports } : {}), view }),
  );
  writeFileSync(path.join(folder, 'series.csv'), seriesCsv(view.series));
  writeFileSync(path.join(folder, 'clients.csv'), clientsCsv(rounds));
  return summaries;
}

/**
 * Writes the run folder as the run goes. The folder appears with the first
 * round: a run that fails before any round completes (a split that cannot be
 * made, data that cannot be read) leaves no empty run folder behind.
 */
export class RunWriter {
  readonly #rounds: RoundReport[] = [];
  readonly #exports: AlgorithmExports[] = [];

  constructor(
    readonly folder: string,
    readonly config: SimConfig,
  ) {}

  #start(): void {
    mkdirSync(this.folder, { recursive: true });
    writeFileSync(
      path.join(this.folder, 'config.json'),
      `${JSON.stringify(recordedConfig(experimentOf(this.config)), null, 2)}\n`,
    );
    writeFileSync(path.join(this.folder, 'rounds.jsonl'), '');
  }

  get rounds(): readonly RoundReport[] {
    return this.#rounds;
  }

  appendRound(report: RoundReport): void {
    if (this.#rounds.length === 0) this.#start();
    this.#rounds.push(report);
    appendFileSync(path.join(this.folder, 'rounds.jsonl'), `${JSON.stringify(report)}\n`);
  }

  /** An algorithm's compact models (subfed sim --export). */
  recordExports(exports: AlgorithmExports): void {
    this.#exports.push(exports);
  }

  /** The compact models' summaries, one per algorithm exported. */
  get exports(): ExportSummary[] {
    return this.#exports.filter((e) => e.clients.length > 0).map(summarizeExports);
  }

  /** summary.json, report.html, series.csv and clients.csv from everything appended so far; nothing without a round. */
  finish(notes: readonly string[], options: ReportOptions = {}): AlgorithmSummary[] {
    if (this.#rounds.length === 0) return [];
    return writeRunReport(
      this.folder,
      { config: this.config, rounds: this.#rounds, notes, exports: this.exports, exportedClients: this.#exports },
      options,
    );
  }
}

/** A run folder that cannot be read back: names the file, line and field. */
export class RunFolderError extends Error {
  override readonly name = 'RunFolderError';
}

const fraction = z.number().min(0).max(1);
const evalResult = z.strictObject({ accuracy: fraction, loss: z.number() });
const stats = z.strictObject({ mean: fraction, min: fraction, max: fraction, count: z.number().int().min(1) });
const roundReportSchema = z.strictObject({
  algorithm: z.string(),
  round: z.number().int().min(1),
  members: z
    .array(
      z.strictObject({
        client: z.number().int().min(0),
        received: evalResult.nullable(),
        personalized: evalResult,
        sparsity: fraction,
        receivedSparsity: fraction,
        channelsKept: z.array(z.number()).nullable(),
      }),
    )
    .min(1),
  membersAccuracy: stats,
  receivedAccuracy: stats.nullable(),
  evaluation: z
    .strictObject({
      clients: z.array(
        z.discriminatedUnion('sampled', [
          z.strictObject({
            client: z.number().int().min(0),
            sampled: z.literal(true),
            test: evalResult,
            train: evalResult,
            global: evalResult.nullable(),
          }),
          z.strictObject({
            client: z.number().int().min(0),
            sampled: z.literal(false),
            test: evalResult,
            global: evalResult.nullable(),
          }),
        ]),
      ),
      personalized: stats,
      neverSampled: z.number().int().min(0),
      global: stats.nullable(),
    })
    .nullable(),
  bytes: z.strictObject({
    up: z.number().min(0),
    down: z.number().min(0),
    denseUp: z.number().min(0),
    denseDown: z.number().min(0),
  }),
  meanSparsity: fraction,
  receivedSparsity: fraction,
  channelsKept: z.array(z.number()).nullable(),
  wallSeconds: z.number().min(0),
});

function readJson(file: string): unknown {
  let text;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new RunFolderError(`${file}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new RunFolderError(`${file}: not JSON (${(err as Error).message})`);
  }
}

/** A run or experiment folder's config.json: the experiment it ran (recordedConfig), checked as an experiment file is. */
export function readRecordedExperiment(folder: string): Experiment {
  const configFile = path.join(folder, 'config.json');
  try {
    return validateExperiment(readJson(configFile));
  } catch (err) {
    if (err instanceof RunFolderError) throw err;
    throw new RunFolderError(`${configFile}: ${(err as Error).message}`);
  }
}

/** A run folder's config, rounds and notes, each checked; errors name the file, line and field. */
export function readRunFolder(folder: string): RunRecords {
  const experiment = readRecordedExperiment(folder);
  if (experiment.seeds.length !== 1) {
    throw new RunFolderError(
      `${path.join(folder, 'config.json')}: seeds: an experiment of ${experiment.seeds.length} seeds, whose runs are in its seed-<seed>/ folders, not one run`,
    );
  }
  const config = seedRun(experiment, experiment.seeds[0]);
  const roundsFile = path.join(folder, 'rounds.jsonl');
  let text;
  try {
    text = readFileSync(roundsFile, 'utf8');
  } catch (err) {
    throw new RunFolderError(`${roundsFile}: ${(err as Error).message}`);
  }
  const rounds = text.split('\n').flatMap((line, i): RoundReport[] => {
    if (line.trim() === '') return [];
    const where = `${roundsFile} line ${i + 1}`;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      throw new RunFolderError(`${where}: not JSON (${(err as Error).message})`);
    }
    const parsed = roundReportSchema.safeParse(value);
    if (!parsed.success) throw new RunFolderError(`${where}: ${formatZodIssues(parsed.error, { input: value }).join('; ')}`);
    const algorithm = parsed.data.algorithm;
    if (!(config.algorithms as readonly string[]).includes(algorithm)) {
      throw new RunFolderError(
        `${where}: algorithm '${algorithm}' is not among config.json's algorithms (${config.algorithms.join(', ')})`,
      );
    }
    return [parsed.data as RoundReport];
  });
  // summary.json holds the run's setup notes and compact models, carried over to the redrawn page.
  const summaryFile = path.join(folder, 'summary.json');
  if (!existsSync(summaryFile)) return { config, rounds, notes: [] };
  const summary = readJson(summaryFile) as { notes?: unknown; exports?: unknown; exportedClients?: unknown };
  if (!Array.isArray(summary.notes) || !summary.notes.every((n) => typeof n === 'string')) {
    throw new RunFolderError(`${summaryFile}: notes: expected an array of strings`);
  }
  const exports =
    Array.isArray(summary.exports) && Array.isArray(summary.exportedClients)
      ? { exports: summary.exports as ExportSummary[], exportedClients: summary.exportedClients as AlgorithmExports[] }
      : {};
  return { config, rounds, notes: summary.notes, ...exports };
}
