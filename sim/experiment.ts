/**
 * An experiment run into its folder: the run repeated once per seed (one
 * runSimulation each, one after another), then the summary over the seeds.
 * `subfed sim` runs one; `subfed sweep` runs one per cell.
 *
 * The folder:
 *  - one seed: the run's files directly (config.json, rounds.jsonl, summary.json,
 *    report.html, series.csv, clients.csv: sim/run-folder.ts's RunWriter) and
 *    run.json (sim/environment.ts);
 *  - several: seed-<s>/ per seed (each as above without run.json), and on top
 *    config.json (the experiment), run.json, summary.json (mean, standard
 *    deviation and 95% CI per algorithm and metric) and report.html.
 *
 * The folder appears with the run's first round (and each seed's folder with
 * that seed's first round): a run that fails validation or setup (a config,
 * data or split problem, workers that do not start), or is stopped before any
 * round completes, leaves no run folder.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { BackendName } from '../client/backend.js';
import { machine, subfedVersion, writeRunRecord, type RunRecord, type RunStatus } from './environment.js';
import { DatasetNotFoundError } from '../client/data/errors.js';
import { ConfigLayerError } from './config-layers.js';
import { PartitionError } from './partition.js';
import { SimConfigError, recordedConfig, seedRun, type Experiment, type SimConfig } from './presets.js';
import type { AlgorithmSummary, ExportSummary, RoundReport } from './report.js';
import { RunWriter } from './run-folder.js';
import { runSimulation, type SimulationEvent } from './run.js';
import { renderSeedsReportHtml, summarizeSeeds, type AlgorithmSpread, type SeedResult } from './seed-summary.js';

/**
 * A failure whose cause is the input (a config, a data folder without the
 * dataset's files, a split the data cannot make): a usage error, exit code 2.
 */
export function isInputError(error: unknown): error is Error {
  return (
    error instanceof SimConfigError ||
    error instanceof ConfigLayerError ||
    error instanceof DatasetNotFoundError ||
    error instanceof PartitionError
  );
}

export interface ExperimentOptions {
  readonly folder: string;
  /** Aborting finishes the current round of the current seed and skips the seeds after it. */
  readonly signal?: AbortSignal;
  /** Setup notes and the split's label counts go here. */
  readonly log: Logger;
  /** The coordinators' own log (default: theirs, warnings only). */
  readonly coordinatorLog?: Logger;
  /** Every simulation event of every seed (progress, dashboard). */
  readonly onEvent?: (event: SimulationEvent, seed: number) => void;
  readonly onRound?: (report: RoundReport, seed: number) => void;
  /** subfed sim --export: every client's compact model under the seed's folder's models/. */
  readonly exportModels?: boolean;
}

export interface SeedOutcome {
  readonly seed: number;
  readonly folder: string;
  readonly notes: readonly string[];
  readonly summaries: readonly AlgorithmSummary[];
  readonly exports: readonly ExportSummary[];
  /** Every algorithm ran every round. */
  readonly completed: boolean;
}

export interface ExperimentResult {
  /** 'completed': every seed ran every round; 'interrupted': stopped by the signal. */
  readonly status: Extract<RunStatus, 'completed' | 'interrupted'>;
  /** The run folder; it exists only when a round was written (roundsWritten > 0). */
  readonly folder: string;
  readonly roundsWritten: number;
  readonly seeds: readonly SeedOutcome[];
  /** Over the completed seeds; see summarizeSeeds. */
  readonly spreads: readonly AlgorithmSpread[];
}

/** A seed's folder inside an experiment's. */
export function seedFolder(experiment: Pick<Experiment, 'seeds'>, folder: string, seed: number): string {
  return experiment.seeds.length === 1 ? folder : path.join(folder, `seed-${seed}`);
}

export async function runExperiment(experiment: Experiment, options: ExperimentOptions): Promise<ExperimentResult> {
  const { folder } = options;
  const startedAt = new Date().toISOString();
  let backend: BackendName | undefined;
  /** Written with the first round, with the folder. */
  let record: RunRecord | undefined;
  let roundsWritten = 0;
  const outcomes: SeedOutcome[] = [];
  const seedStatus: { seed: number; status: RunStatus }[] = [];

  const save = (status: RunStatus, finished: boolean): void => {
    if (record === undefined) return;
    record = { ...record, status, finishedAt: finished ? new Date().toISOString() : null, seeds: [...seedStatus] };
    writeRunRecord(folder, record);
  };
  const onRound = (): void => {
    roundsWritten += 1;
    if (record !== undefined) return;
    if (backend === undefined) throw new Error('a round before the setup');
    mkdirSync(folder, { recursive: true });
    if (experiment.seeds.length > 1) writeJson(path.join(folder, 'config.json'), recordedConfig(experiment));
    record = { status: 'running', startedAt, finishedAt: null, subfed: subfedVersion(), backend, machine: machine(), seeds: [] };
    save('running', false);
  };

  try {
    for (const seed of experiment.seeds) {
      if (options.signal?.aborted) break;
      seedStatus.push({ seed, status: 'running' });
      const outcome = await runSeed(seedRun(experiment, seed), seedFolder(experiment, folder, seed), options, {
        onSetup: (started) => {
          backend ??= started;
        },
        onRound,
      });
      seedStatus[seedStatus.length - 1] = { seed, status: outcome.completed ? 'completed' : 'interrupted' };
      outcomes.push(outcome);
      save('running', false);
    }
  } catch (error) {
    if (seedStatus.length > 0) seedStatus[seedStatus.length - 1] = { ...seedStatus[seedStatus.length - 1], status: 'failed' };
    save('failed', true);
    throw error;
  }

  const status = outcomes.length === experiment.seeds.length && outcomes.every((o) => o.completed) ? 'completed' : 'interrupted';
  const results: SeedResult[] = outcomes.map((o) => ({ seed: o.seed, summaries: o.summaries }));
  save(status, true);
  if (experiment.seeds.length > 1 && record !== undefined) writeSeedsReport(folder, experiment, record, results);
  return { status, folder, roundsWritten, seeds: outcomes, spreads: summarizeSeeds(results) };
}

/** A multi-seed experiment's own summary.json and report.html, over its seeds' results. */
export function writeSeedsReport(
  folder: string,
  experiment: Experiment,
  record: RunRecord,
  results: readonly SeedResult[],
): void {
  const spreads = summarizeSeeds(results);
  const perSeed = [...results];
  writeJson(path.join(folder, 'summary.json'), { status: record.status, seeds: experiment.seeds, algorithms: spreads, perSeed });
  writeFileSync(
    path.join(folder, 'report.html'),
    renderSeedsReportHtml({ experiment: recordedConfig(experiment), record, spreads, perSeed }),
  );
}

function writeJson(file: string, value: unknown): void {
  writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`);
}

/** One seed's run into `folder`, written as it goes (rounds.jsonl grows a line per round). */
async function runSeed(
  config: SimConfig,
  folder: string,
  options: ExperimentOptions,
  hooks: { onSetup(backend: BackendName): void; onRound(): void },
): Promise<SeedOutcome> {
  const { log } = options;
  const { seed } = config;
  let writer: RunWriter | undefined;
  let notes: string[] = [];
  const onEvent = (event: SimulationEvent): void => {
    switch (event.kind) {
      case 'setup':
        hooks.onSetup(event.backend);
        writer = new RunWriter(folder, config);
        notes = event.notes;
        for (const note of event.notes) log.info({ event: 'setup', seed }, note);
        log.info({ event: 'split', seed }, `label counts per client:\n${event.labelTable}`);
        break;
      case 'exported':
        writer?.recordExports(event);
        log.info(
          { event: 'exported', algorithm: event.algorithm, dir: event.dir },
          `${event.algorithm}: wrote ${event.clients.length} compact models under ${event.dir}`,
        );
        break;
      case 'coordinator':
      case 'round-start':
      case 'member-done':
      case 'evaluating':
        break;
    }
    options.onEvent?.(event, seed);
  };
  try {
    for await (const report of runSimulation(config, {
      onEvent,
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
      ...(options.coordinatorLog !== undefined ? { logger: options.coordinatorLog } : {}),
      ...(options.exportModels === true ? { exportTo: path.join(folder, 'models') } : {}),
    })) {
      // The experiment's folder (run.json) first: the seed's folder may be inside it.
      hooks.onRound();
      writer?.appendRound(report);
      options.onRound?.(report, seed);
    }
  } catch (error) {
    // What is done stays readable: summary.json and report.html of the rounds written so far (none without a round).
    writer?.finish(notes);
    throw error;
  }
  if (writer === undefined) throw new Error(`seed ${seed}: the simulation ended before its setup`);
  const summaries = writer.finish(notes);
  const completed = summaries.length === config.algorithms.length && summaries.every((s) => !s.interrupted);
  return { seed, folder, notes, summaries, exports: writer.exports, completed };
}

/**
 * The seeds' results an experiment folder holds, read back from each seed's
 * summary.json (the sweep's finished cells): what summarizeSeeds takes.
 */
export function readSeedResults(experiment: Pick<Experiment, 'seeds'>, folder: string): SeedResult[] {
  return experiment.seeds.map((seed) => {
    const file = path.join(seedFolder(experiment, folder, seed), 'summary.json');
    const { summaries } = JSON.parse(readFileSync(file, 'utf8')) as { summaries: AlgorithmSummary[] };
    return { seed, summaries };
  });
}
