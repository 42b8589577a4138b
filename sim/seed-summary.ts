/**
 * An experiment's results over its seeds: per algorithm and per metric of the
 * run summaries (sim/report.ts, AlgorithmSummary), the mean, the standard
 * deviation and the 95% confidence interval (sim/stats.ts), and how to print
 * them. The seeds summary of `subfed sim --seeds` and every row of the sweep
 * table are built here.
 */
import type { RunRecord } from './environment.js';
import { PALETTE, configRows, htmlPage, htmlTable, intervalPlot } from './html.js';
import { formatColumns, type AlgorithmSummary } from './report.js';
import type { AlgorithmName } from './presets.js';
import { spread, type Spread } from './stats.js';

/** One seed's run: the per-algorithm summaries its run folder's summary.json holds. */
export interface SeedResult {
  readonly seed: number;
  readonly summaries: readonly AlgorithmSummary[];
}

export interface AlgorithmSpread {
  readonly algorithm: AlgorithmName;
  /** The seeds whose run of this algorithm finished every round: what the figures are over. */
  readonly seeds: readonly number[];
  /** Stopped runs, left out of the figures. */
  readonly interruptedSeeds: readonly number[];
  /** Every numeric field of AlgorithmSummary that all the included seeds have (nulls leave the metric out). */
  readonly metrics: Readonly<Record<string, Spread>>;
}

/** How a metric's values read: accuracies and shares are fractions, printed in percent. */
export type MetricUnit = 'fraction' | 'bytes' | 'seconds' | 'count' | 'number';

const UNITS: Readonly<Record<string, MetricUnit>> = {
  personalizedAcc: 'fraction',
  overfittingGap: 'fraction',
  neverSampled: 'count',
  receivedAccLast10: 'fraction',
  globalAcc: 'fraction',
  savings: 'fraction',
  meanSparsity: 'fraction',
  meanReceivedSparsity: 'fraction',
  finalSparsity: 'fraction',
  uploadBytes: 'bytes',
  downloadBytes: 'bytes',
  denseUploadBytes: 'bytes',
  denseDownloadBytes: 'bytes',
  wallSeconds: 'seconds',
  secondsPerRound: 'seconds',
  rounds: 'count',
};

export function unitOf(metric: string): MetricUnit {
  return UNITS[metric] ?? 'number';
}

/** The columns of the terminal and sweep tables, in order (summary.json has every metric). */
export const HEADLINE_METRICS: readonly { readonly metric: string; readonly label: string }[] = [
  { metric: 'personalizedAcc', label: 'personalized acc %' },
  { metric: 'receivedAccLast10', label: 'received acc (last 10) %' },
  { metric: 'globalAcc', label: 'global acc %' },
  { metric: 'overfittingGap', label: 'train-test gap (points)' },
  { metric: 'savings', label: 'savings %' },
  { metric: 'finalSparsity', label: 'final sparsity %' },
  { metric: 'secondsPerRound', label: 's/round' },
];

export function summarizeSeeds(results: readonly SeedResult[]): AlgorithmSpread[] {
  const algorithms = [...new Set(results.flatMap((r) => r.summaries.map((s) => s.algorithm)))];
  return algorithms.map((algorithm) => {
    const runs = results.flatMap((r) => {
      const summary = r.summaries.find((s) => s.algorithm === algorithm);
      return summary === undefined ? [] : [{ seed: r.seed, summary }];
    });
    const complete = runs.filter((r) => !r.summary.interrupted);
    const metrics: Record<string, Spread> = {};
    const keys = new Set(complete.flatMap((r) => Object.keys(r.summary)));
    for (const key of keys) {
      const values = complete.map((r) => (r.summary as unknown as Record<string, unknown>)[key]);
      if (values.length > 0 && values.every((v): v is number => typeof v === 'number' && Number.isFinite(v))) {
        metrics[key] = spread(values);
      }
    }
    return {
      algorithm,
      seeds: complete.map((r) => r.seed),
      interruptedSeeds: runs.filter((r) => r.summary.interrupted).map((r) => r.seed),
      metrics,
    };
  });
}

/** A value in its unit: 81.2 (percent of a fraction), 1.25 MiB, 0.84 s. */
export function formatValue(value: number, unit: MetricUnit): string {
  switch (unit) {
    case 'fraction':
      return (value * 100).toFixed(1);
    case 'bytes':
      return `${(value / 2 ** 20).toFixed(2)} MiB`;
    case 'seconds':
      return value.toFixed(2);
    case 'count':
      return Number.isInteger(value) ? String(value) : value.toFixed(1);
    case 'number':
      return Number.isInteger(value) ? String(value) : value.toPrecision(4);
  }
}

/** `81.2 ± 1.3 [78.0, 84.4]`; a single seed gives its value alone. */
export function formatSpread(s: Spread | undefined, unit: MetricUnit): string {
  if (s === undefined) return '-';
  const value = (v: number): string => formatValue(v, unit).replace(/ MiB$/, '');
  const suffix = unit === 'bytes' ? ' MiB' : '';
  if (s.std === null || s.ci95 === null) return `${value(s.mean)}${suffix}`;
  return `${value(s.mean)} ± ${value(s.std)} [${value(s.ci95.low)}, ${value(s.ci95.high)}]${suffix}`;
}

/** The terminal table of `subfed sim --seeds`: a row per algorithm, mean ± std [95% CI] per headline metric. */
export function formatSeedsTable(spreads: readonly AlgorithmSpread[]): string {
  const header = ['algorithm', 'seeds', ...HEADLINE_METRICS.map((m) => m.label)];
  const rows = spreads.map((s) => [
    s.algorithm + (s.interruptedSeeds.length > 0 ? ` (stopped: seed ${s.interruptedSeeds.join(', ')})` : ''),
    String(s.seeds.length),
    ...HEADLINE_METRICS.map(({ metric }) => formatSpread(s.metrics[metric], unitOf(metric))),
  ]);
  return `${formatColumns(header, rows)}\nmean ± standard deviation [95% confidence interval, Student t with n-1 degrees of freedom] over the seeds`;
}

export interface SeedsReportData {
  /** The experiment as config.json records it. */
  readonly experiment: Readonly<Record<string, unknown>>;
  readonly record: RunRecord;
  readonly spreads: readonly AlgorithmSpread[];
  readonly perSeed: readonly SeedResult[];
}

/** The environment lines of a run.json, for reports. */
export function environmentRows(record: RunRecord): string[][] {
  const { subfed, machine } = record;
  return [
    [
      'subfed',
      `${subfed.version}${subfed.commit === null ? '' : ` (commit ${subfed.commit}${subfed.dirty === true ? ', with uncommitted changes' : ''})`}`,
    ],
    ['tfjs backend', record.backend],
    [
      'machine',
      `${machine.cores} cores (${machine.cpu}), ${(machine.memoryBytes / 2 ** 30).toFixed(1)} GiB, ${machine.platform} ${machine.arch}`,
    ],
    ['Node.js', machine.node],
    ['started', record.startedAt],
    ['finished', record.finishedAt ?? '-'],
    ['status', record.status],
  ];
}

/** report.html of a multi-seed experiment: the seeds summary, each seed's headline figures, the environment and the config. */
export function renderSeedsReportHtml(data: SeedsReportData): string {
  const seeds = data.perSeed.map((r) => r.seed);
  const title = `subfed sim — ${String(data.experiment.preset)} — ${data.spreads.map((s) => s.algorithm).join(', ')} — seeds ${seeds.join(', ')}`;
  const headline = htmlTable(
    ['algorithm', 'seeds', ...HEADLINE_METRICS.map((m) => m.label)],
    data.spreads.map((s) => [
      s.algorithm + (s.interruptedSeeds.length > 0 ? ` (stopped: seed ${s.interruptedSeeds.join(', ')})` : ''),
      String(s.seeds.length),
      ...HEADLINE_METRICS.map(({ metric }) => formatSpread(s.metrics[metric], unitOf(metric))),
    ]),
  );
  const plots = HEADLINE_METRICS.map(({ metric, label }) =>
    intervalPlot(
      `${label}: mean and 95% CI`,
      data.spreads.flatMap((s, i) => {
        const m = s.metrics[metric];
        return m === undefined ? [] : [{ label: s.algorithm, color: PALETTE[i % PALETTE.length], spread: m }];
      }),
      unitOf(metric) === 'fraction' ? 100 : 1,
    ),
  ).join('\n');
  const every = htmlTable(
    ['algorithm', 'metric', 'n', 'mean', 'std', '95% CI low', '95% CI high'],
    data.spreads.flatMap((s) =>
      Object.entries(s.metrics).map(([metric, m]) => {
        const f = (v: number | null | undefined): string =>
          v === null || v === undefined ? '-' : formatValue(v, unitOf(metric));
        return [s.algorithm, metric, String(m.n), f(m.mean), f(m.std), f(m.ci95?.low), f(m.ci95?.high)];
      }),
    ),
    2,
  );
  const perSeed = htmlTable(
    ['seed', 'algorithm', ...HEADLINE_METRICS.map((m) => m.label)],
    data.perSeed.flatMap((r) =>
      r.summaries.map((s) => [
        String(r.seed),
        s.algorithm + (s.interrupted ? ' (stopped)' : ''),
        ...HEADLINE_METRICS.map(({ metric }) => {
          const v = (s as unknown as Record<string, unknown>)[metric];
          return typeof v === 'number' ? formatValue(v, unitOf(metric)) : '-';
        }),
      ]),
    ),
    2,
  );
  const links = seeds.map((s) => `<a href="seed-${s}/report.html">seed ${s}</a>`).join(' · ');
  return htmlPage(
    title,
    `<p>Mean ± sample standard deviation [95% confidence interval of the mean: Student t with n − 1 degrees of freedom] over the seeds
whose run finished; each seed draws its own split, initial models and client sampling. Each seed's charts: ${links}.</p>
<section><h2>Over the seeds</h2>${headline}
${plots}</section>
<section><h2>Every metric</h2>${every}</section>
<section><h2>Each seed</h2>${perSeed}</section>
<section><h2>Environment</h2>${htmlTable(['', ''], environmentRows(data.record))}</section>
<section><h2>Config</h2>${htmlTable(['field', 'value'], configRows(data.experiment), 2)}</section>`,
  );
}
