/**
 * A sweep: a grid of config values (any field path x a list of values), each
 * combination (a cell) an experiment over the same seeds, run one cell after
 * another into <out>/cells/<cell>/ (an experiment folder, sim/experiment.ts).
 *
 * Resumable: a cell whose folder's run.json says `completed` is skipped,
 * provided its recorded config.json is the cell's config (else the sweep
 * refuses to start, naming the fields that differ, rather than mix results of
 * two configs); any other cell folder (an interrupted or failed run) is
 * removed and the cell run again.
 *
 * The sweep file (README "Sweeps"):
 *   { "experiment": "experiment.json" | { ...an experiment file's fields },
 *     "grid": { "partition.alpha": [0.1, 1], "training.lr": [0.01, 0.05] },
 *     "seeds": [1, 2, 3], "out": "runs/alpha-lr" }
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { formatZodIssues } from '../proto/zod-issues.js';
import {
  ConfigLayerError,
  formatFieldPath,
  isPlainObject,
  parseFieldPath,
  readJsonObject,
  type ConfigObject,
} from './config-layers.js';
import { readRunRecord } from './environment.js';
import {
  SimConfigError,
  experimentLayers,
  experimentOfLayers,
  readExperimentFile,
  recordedConfig,
  type Experiment,
} from './presets.js';

const seedSchema = z.int({ error: 'expected a non-negative integer' }).min(0, { error: 'expected a non-negative integer' });

export const sweepSchema = z.strictObject({
  /** The experiment every cell starts from: an experiment file (relative to the sweep file) or its fields inline; default the quick preset. */
  experiment: z.union([z.string().min(1), z.record(z.string(), z.unknown())], {
    error: 'expected the path of an experiment file or an object of experiment fields',
  }),
  /** Field path -> the values it takes; the cells are every combination, the last path varying fastest. */
  grid: z
    .record(
      z.string(),
      z.array(z.unknown(), { error: 'expected a list of values' }).min(1, { error: 'expected at least one value' }),
    )
    .refine((grid) => Object.keys(grid).length > 0, { error: 'expected at least one field path' }),
  /** The seeds of every cell (default: the experiment's). */
  seeds: z
    .array(seedSchema, { error: 'expected a list of non-negative integers' })
    .min(1, { error: 'expected at least one seed' })
    .refine((s) => new Set(s).size === s.length, { error: 'expected distinct seeds' })
    .optional(),
  /** The sweep folder (relative to the sweep file; default runs/<sweep file name>/ in the current folder). */
  out: z.string().min(1).optional(),
});

/** Paths a grid may not vary: the seeds are the sweep's own, the preset is the base, and each cell has its folder. */
const NOT_IN_GRID: Readonly<Record<string, string>> = {
  seeds: 'give the seeds in the sweep\'s "seeds" field',
  preset: 'the preset is the base of the experiment: give it in "experiment"',
  out: 'each cell runs in <out>/cells/<cell>/',
};

export interface SweepCell {
  /** Folder name under cells/, from the values (`alpha=0.1,lr=0.05`). */
  readonly name: string;
  /** The grid's path (dotted) -> this cell's value, in grid order. */
  readonly values: readonly { readonly path: string; readonly value: unknown }[];
  readonly experiment: Experiment;
}

export interface Sweep {
  readonly file: string;
  readonly out: string;
  /** The grid's paths, in order. */
  readonly paths: readonly string[];
  readonly cells: readonly SweepCell[];
}

/** Reads and validates a sweep file and every cell's experiment; errors name the file and the field (grid.<path>[i]). */
export function loadSweep(file: string, overrides: { out?: string | undefined } = {}): Sweep {
  try {
    return readSweep(file, overrides);
  } catch (error) {
    if (error instanceof ConfigLayerError) throw new SimConfigError(error.message);
    throw error;
  }
}

function readSweep(file: string, overrides: { out?: string | undefined }): Sweep {
  const json = readJsonObject(file, 'a sweep: see README "Sweeps"');
  const parsed = sweepSchema.safeParse({ experiment: {}, ...json });
  if (!parsed.success) throw new SimConfigError(`${file}: ${formatZodIssues(parsed.error, { input: json }).join(`; ${file}: `)}`);
  const sweep = parsed.data;
  const folder = path.dirname(path.resolve(file));
  const base =
    typeof sweep.experiment === 'string'
      ? { patch: readExperimentFile(path.resolve(folder, sweep.experiment)), source: path.resolve(folder, sweep.experiment) }
      : { patch: resolvePaths(sweep.experiment, folder), source: `${file}: experiment` };

  const axes = Object.entries(sweep.grid).map(([key, values]) => {
    const where = `${file}: grid.${key}`;
    const fieldPath = parseFieldPath(key, where);
    const refused = NOT_IN_GRID[fieldPath[0]];
    if (refused !== undefined) throw new SimConfigError(`${where}: ${refused}`);
    return { key, fieldPath, values };
  });
  const leaves = axes.map((a) => a.fieldPath[a.fieldPath.length - 1]);
  const labelOf = (i: number): string => (leaves.filter((l) => l === leaves[i]).length === 1 ? leaves[i] : axes[i].key);

  const cells: SweepCell[] = [];
  const names = new Set<string>();
  for (const choice of combinations(axes.map((a) => a.values.length))) {
    const layers = experimentLayers(base.patch, base.source);
    axes.forEach((axis, i) => layers.set(axis.fieldPath, axis.values[choice[i]], `${file}: grid.${axis.key}[${choice[i]}]`));
    if (sweep.seeds !== undefined) layers.set(['seeds'], sweep.seeds, `${file}: seeds`);
    const experiment = experimentOfLayers(layers);
    const values = axes.map((axis, i) => ({ path: axis.key, value: axis.values[choice[i]] }));
    let name = values.map((v, i) => `${labelOf(i)}=${slug(v.value)}`).join(',');
    if (name.length > 80 || names.has(name)) name = `${name.slice(0, 80)}-${hashOf(values)}`;
    names.add(name);
    cells.push({ name, values, experiment });
  }
  const out =
    overrides.out ??
    (sweep.out !== undefined ? path.resolve(folder, sweep.out) : path.join('runs', path.basename(file).replace(/\.json$/i, '')));
  return { file, out, paths: axes.map((a) => a.key), cells };
}

/** Every combination of indices into lists of these lengths, the last varying fastest. */
function combinations(lengths: readonly number[]): number[][] {
  let out: number[][] = [[]];
  for (const n of lengths) out = out.flatMap((prefix) => Array.from({ length: n }, (_, i) => [...prefix, i]));
  return out;
}

/** An inline experiment's relative paths, resolved against the sweep file's folder (as an experiment file's are). */
function resolvePaths(patch: ConfigObject, folder: string): ConfigObject {
  const out = { ...patch };
  for (const key of ['data', 'out'])
    if (typeof out[key] === 'string' && out[key] !== '') out[key] = path.resolve(folder, out[key]);
  return out;
}

/** A value as part of a folder name: `0.1`, `fedavg`, `dirichlet-0.5` for {kind: dirichlet, alpha: 0.5}. */
function slug(value: unknown): string {
  const text = isPlainObject(value)
    ? Object.values(value).map(slug).join('-')
    : Array.isArray(value)
      ? value.map(slug).join('+')
      : String(value);
  return text.replace(/[^A-Za-z0-9._+-]/g, '_');
}

function hashOf(value: unknown): string {
  return createHash('sha256').update(JSON.stringify(value)).digest('hex').slice(0, 8);
}

export function cellFolder(sweep: Pick<Sweep, 'out'>, cell: Pick<SweepCell, 'name'>): string {
  return path.join(sweep.out, 'cells', cell.name);
}

/** What a cell's folder holds: nothing, a finished run of this cell, or an unfinished run (to be run again). */
export type CellState =
  { readonly kind: 'new' } | { readonly kind: 'finished' } | { readonly kind: 'unfinished'; readonly status: string };

/**
 * Each cell's state; throws SimConfigError when a finished cell's folder holds
 * a run of another config (the sweep file or the experiment changed).
 */
export function cellStates(sweep: Sweep): CellState[] {
  return sweep.cells.map((cell) => {
    const folder = cellFolder(sweep, cell);
    if (!existsSync(folder)) return { kind: 'new' };
    const record = readRunRecord(folder);
    if (record?.status !== 'completed') return { kind: 'unfinished', status: record?.status ?? 'no run.json' };
    let recorded: unknown;
    try {
      recorded = JSON.parse(readFileSync(path.join(folder, 'config.json'), 'utf8'));
    } catch (err) {
      throw new SimConfigError(`${folder}: a finished cell without a readable config.json (${(err as Error).message})`);
    }
    const differences = differingFields(comparable(recorded), comparable(recordedConfig(cell.experiment)));
    if (differences.length > 0) {
      throw new SimConfigError(
        `${folder}: holds a finished run of another config (${differences.slice(0, 3).join('; ')}); ` +
          'move or delete that folder to run the cell again, or give the sweep another out',
      );
    }
    return { kind: 'finished' };
  });
}

/** A recorded config without what does not change results: the number of worker threads. */
function comparable(config: unknown): unknown {
  if (!isPlainObject(config)) return config;
  const { workers: _, ...rest } = config;
  return rest;
}

/** The leaf fields where two JSON values differ: `training.lr: 0.01 in the folder, 0.05 now`. */
function differingFields(was: unknown, now: unknown, at: string[] = []): string[] {
  if (isPlainObject(was) && isPlainObject(now)) {
    const keys = [...new Set([...Object.keys(was), ...Object.keys(now)])];
    return keys.flatMap((k) => differingFields(was[k], now[k], [...at, k]));
  }
  if (JSON.stringify(was) === JSON.stringify(now)) return [];
  return [`${formatFieldPath(at)}: ${JSON.stringify(was) ?? 'absent'} in the folder, ${JSON.stringify(now) ?? 'absent'} now`];
}

/** Removes an unfinished cell's folder before it runs again. */
export function clearCell(sweep: Sweep, cell: SweepCell): void {
  rmSync(cellFolder(sweep, cell), { recursive: true, force: true });
}
