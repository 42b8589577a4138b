/**
 * The sweep's results: one table with a row per cell and algorithm (the
 * grid's values, then mean ± std [95% CI] of each metric over the cell's
 * seeds), printed on the terminal and written as table.csv and table.html,
 * and report.html comparing the cells metric by metric.
 */
import type { RunRecord } from './environment.js';
import { PALETTE, configRows, escapeHtml, htmlPage, htmlTable, intervalPlot } from './html.js';
import { formatColumns } from './report.js';
import { csvField } from './report-csv.js';
import { HEADLINE_METRICS, environmentRows, formatSpread, unitOf, type AlgorithmSpread } from './seed-summary.js';
import type { Spread } from './stats.js';

/** Where a cell stands in this invocation of the sweep. */
export type CellStatus = 'ran' | 'finished earlier' | 'interrupted' | 'failed' | 'not run';

export interface CellResult {
  readonly name: string;
  readonly values: readonly { readonly path: string; readonly value: unknown }[];
  readonly status: CellStatus;
  /** Over the cell's completed seeds; empty when it has none. */
  readonly spreads: readonly AlgorithmSpread[];
}

export interface SweepTable {
  readonly paths: readonly string[];
  readonly cells: readonly CellResult[];
}

const valueText = (v: unknown): string => (typeof v === 'string' ? v : JSON.stringify(v));

/** The table's rows: one per cell and algorithm (one per cell without results). */
function rowsOf(table: SweepTable): { cell: CellResult; spread: AlgorithmSpread | undefined }[] {
  return table.cells.flatMap((cell): { cell: CellResult; spread: AlgorithmSpread | undefined }[] =>
    cell.spreads.length === 0 ? [{ cell, spread: undefined }] : cell.spreads.map((spread) => ({ cell, spread })),
  );
}

function textRows(table: SweepTable): string[][] {
  return rowsOf(table).map(({ cell, spread }) => [
    cell.name,
    ...cell.values.map((v) => valueText(v.value)),
    spread?.algorithm ?? '-',
    cell.status,
    spread === undefined ? '0' : String(spread.seeds.length),
    ...HEADLINE_METRICS.map(({ metric }) => formatSpread(spread?.metrics[metric], unitOf(metric))),
  ]);
}

function header(table: SweepTable): string[] {
  return ['cell', ...table.paths, 'algorithm', 'status', 'seeds', ...HEADLINE_METRICS.map((m) => m.label)];
}

export function formatSweepTable(table: SweepTable): string {
  return `${formatColumns(header(table), textRows(table))}\nmean ± standard deviation [95% confidence interval, Student t with n-1 degrees of freedom] over each cell's seeds`;
}

export function sweepTableHtml(table: SweepTable): string {
  return htmlTable(header(table), textRows(table), 2 + table.paths.length + 2);
}

/** Every metric any row has: the headline ones first, then the rest by name. */
function csvMetrics(table: SweepTable): string[] {
  const all = new Set(rowsOf(table).flatMap(({ spread }) => Object.keys(spread?.metrics ?? {})));
  const headline = HEADLINE_METRICS.map((m) => m.metric).filter((m) => all.has(m));
  return [...headline, ...[...all].filter((m) => !headline.includes(m)).sort()];
}

/**
 * table.csv: a row per cell and algorithm; per metric its mean, std and 95%
 * CI bounds as plain numbers (accuracies and shares as fractions, bytes,
 * seconds), empty where there is none (a single seed has no std or CI).
 */
export function sweepTableCsv(table: SweepTable): string {
  const metrics = csvMetrics(table);
  const head = [
    'cell',
    ...table.paths,
    'algorithm',
    'status',
    'seeds',
    ...metrics.flatMap((m) => [`${m}_mean`, `${m}_std`, `${m}_ci95_low`, `${m}_ci95_high`]),
  ];
  const num = (v: number | null | undefined): string => (v === null || v === undefined ? '' : String(v));
  const rows = rowsOf(table).map(({ cell, spread }) => [
    cell.name,
    ...cell.values.map((v) => valueText(v.value)),
    spread?.algorithm ?? '',
    cell.status,
    spread === undefined ? '0' : String(spread.seeds.length),
    ...metrics.flatMap((m) => {
      const s: Spread | undefined = spread?.metrics[m];
      return [num(s?.mean), num(s?.std), num(s?.ci95?.low), num(s?.ci95?.high)];
    }),
  ]);
  return [head, ...rows].map((r) => r.map(csvField).join(',')).join('\n') + '\n';
}

export interface SweepReportData {
  readonly file: string;
  readonly table: SweepTable;
  /** The sweep file as read. */
  readonly sweep: unknown;
  /** The first cell's experiment as recorded (the fields the grid does not vary are every cell's). */
  readonly experiment: Readonly<Record<string, unknown>>;
  /** The environment of the last cell run, if any. */
  readonly record: RunRecord | undefined;
}

/** report.html: the table, then per headline metric every cell and algorithm's mean with its 95% CI, on one axis. */
export function renderSweepReportHtml(data: SweepReportData): string {
  const algorithms = [...new Set(data.table.cells.flatMap((c) => c.spreads.map((s) => s.algorithm)))];
  const colorOf = (a: string): string => PALETTE[algorithms.indexOf(a as never) % PALETTE.length];
  const plots = HEADLINE_METRICS.map(({ metric, label }) =>
    intervalPlot(
      `${label}: mean and 95% CI per cell`,
      rowsOf(data.table).flatMap(({ cell, spread }) => {
        const m = spread?.metrics[metric];
        return spread === undefined || m === undefined
          ? []
          : [{ label: `${cell.name} · ${spread.algorithm}`, color: colorOf(spread.algorithm), spread: m }];
      }),
      unitOf(metric) === 'fraction' ? 100 : 1,
    ),
  ).join('\n');
  const links = data.table.cells
    .map((c) => `<a href="cells/${encodeURIComponent(c.name)}/report.html">${escapeHtml(c.name)}</a>`)
    .join(' · ');
  const legend = algorithms.map((a) => `<span style="color:${colorOf(a)}">● ${escapeHtml(a)}</span>`).join(' ');
  return htmlPage(
    `subfed sweep — ${data.file} — ${data.table.cells.length} cells`,
    `<p>Each cell is one combination of the grid's values, run over the same seeds. Figures: mean ± sample standard deviation
[95% confidence interval of the mean, Student t with n − 1 degrees of freedom] over the cell's finished seeds.
Each cell's own report: ${links}.</p>
<section><h2>Table</h2>${sweepTableHtml(data.table)}<p>Also as <a href="table.csv">table.csv</a>.</p></section>
<section><h2>Comparison</h2><p>${legend}</p>${plots}</section>
<section><h2>Sweep file</h2><pre>${escapeHtml(JSON.stringify(data.sweep, null, 2))}</pre></section>
<section><h2>Experiment (first cell)</h2>${htmlTable(['field', 'value'], configRows(data.experiment), 2)}</section>
${data.record === undefined ? '' : `<section><h2>Environment</h2>${htmlTable(['', ''], environmentRows(data.record))}</section>`}`,
  );
}
