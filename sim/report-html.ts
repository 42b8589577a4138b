/**
 * report.html: one offline page (chart.js inlined from its package, the data
 * embedded as JSON) with one chart or table per question, algorithms as the
 * series of every chart. The numbers come from report-series.ts; the page's
 * script only draws them.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describeAlgorithm } from '../client/algorithms/registry.js';
import { modelStructure } from '../client/model.js';
import { PALETTE, configRows, escapeHtml, htmlPage, htmlTable } from './html.js';
import { mean } from './stats.js';
import { modelFor, type AlgorithmName, type SimConfig } from './presets.js';
import { formatBytes, pct, type AlgorithmSummary, type ExportSummary, type RoundReport } from './report.js';
import { CLIENT_MEASURES } from './report-csv.js';
import {
  SERIES_DESCRIPTIONS,
  accuracyVsBytes,
  defaultThreshold,
  finalClients,
  firstCrossing,
  percentAxisMax,
  pruningOf,
  roundsOf,
  seriesTable,
  type BytesPoint,
  type ChannelLayer,
  type Crossing,
  type FinalClients,
  type SeriesName,
  type SeriesPoint,
  type SeriesTable,
} from './report-series.js';

/** One algorithm as the page draws it. */
export interface AlgorithmView {
  readonly name: AlgorithmName;
  readonly color: string;
  /** 'pruned' once any member held a pruned mask. */
  readonly pruning: 'dense' | 'pruned';
  /** The clients at the last evaluation (distributions, overfitting gap); null without one. */
  readonly final: FinalClients | null;
  readonly accuracyVsBytes: readonly BytesPoint[];
  /** Null when no threshold could be set (no algorithm receives a model). */
  readonly crossing: Crossing | null;
  /** Channel pruning: each BatchNorm layer, its width and the share kept at the end (mean over the sampled clients). */
  readonly channelLayers: readonly (ChannelLayer & { readonly kept: number })[] | null;
}

/** Everything the page draws, computed here so that the page's script only plots. */
export interface ReportView {
  readonly algorithms: readonly AlgorithmView[];
  readonly series: SeriesTable;
  readonly lastRound: number;
  /** Received accuracy the threshold table counts rounds and bytes to; null when nothing receives a model. */
  readonly threshold: { readonly value: number; readonly given: boolean } | null;
  /** Top of the sparsity axis, as a fraction. */
  readonly sparsityMax: number;
}

/** The data every chart draws from; embedded in the page as JSON (tests read it back). */
export interface ReportData {
  readonly config: SimConfig;
  readonly rounds: readonly RoundReport[];
  readonly summaries: readonly AlgorithmSummary[];
  readonly notes: readonly string[];
  /** subfed sim --export: the compact models per algorithm; absent without it. */
  readonly exports?: readonly ExportSummary[];
  readonly view: ReportView;
}

export interface ReportOptions {
  /** Received accuracy (a fraction) for the rounds-and-bytes table; default: defaultThreshold(). */
  readonly threshold?: number;
}

/** The BatchNorm layers whose channels an algorithm's model can prune, in RoundReport.channelsKept order. */
export function channelLayersOf(config: SimConfig, algorithm: AlgorithmName): ChannelLayer[] {
  return modelStructure(modelFor(config, algorithm)).channelGroups.map((g) => ({
    name: g.kernel.replace(/\.weight$/, ''),
    width: g.channels,
  }));
}

export function reportView(
  config: SimConfig,
  rounds: readonly RoundReport[],
  summaries: readonly AlgorithmSummary[],
  options: ReportOptions = {},
): ReportView {
  const layersOf = (a: AlgorithmName): ChannelLayer[] | null =>
    rounds.some((r) => r.algorithm === a && r.channelsKept !== null) ? channelLayersOf(config, a) : null;
  const series = seriesTable(rounds, layersOf);
  const thresholdValue = options.threshold ?? defaultThreshold(rounds);
  const algorithms = summaries.map((s, i): AlgorithmView => {
    const mine = roundsOf(rounds, s.algorithm);
    const mySeries = series[s.algorithm] ?? {};
    const keptOf = (layer: string): number | null => mySeries[`sampled_channels_kept_fraction:${layer}`]?.at(-1)?.value ?? null;
    const layers = layersOf(s.algorithm)?.flatMap((l) => {
      const kept = keptOf(l.name);
      return kept === null ? [] : [{ ...l, kept }];
    });
    return {
      name: s.algorithm,
      color: PALETTE[i % PALETTE.length],
      pruning: pruningOf(mine),
      final: finalClients(mine),
      accuracyVsBytes: accuracyVsBytes(mySeries),
      crossing: thresholdValue === null ? null : firstCrossing(mine, thresholdValue),
      channelLayers: layers === undefined || layers.length === 0 ? null : layers,
    };
  });
  return {
    algorithms,
    series,
    lastRound: Math.max(0, ...rounds.map((r) => r.round)),
    threshold: thresholdValue === null ? null : { value: thresholdValue, given: options.threshold !== undefined },
    sparsityMax: percentAxisMax(Object.values(series).flatMap((t) => (t.sampled_sparsity ?? []).map((p) => p.value))),
  };
}

function chartJsSource(): string {
  // chart.js does not export its UMD bundle; it sits next to the CommonJS entry.
  let main;
  try {
    main = createRequire(import.meta.url).resolve('chart.js');
  } catch {
    // An optional dependency: a client-only install (--omit=optional) leaves it out.
    throw new Error(
      "report.html needs the package 'chart.js', which this install of subfed left out; install subfed without --omit=optional",
    );
  }
  return readFileSync(path.join(path.dirname(main), 'chart.umd.min.js'), 'utf8');
}

/** JSON that is safe inside a <script> element. */
function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

export const REPORT_DATA_ELEMENT_ID = 'subfed-report-data';

/** The ids of the charts that have one series per algorithm (a legend entry each), in page order. */
export const PER_ALGORITHM_CHARTS = [
  'received-accuracy',
  'personalized-accuracy',
  'loss',
  'accuracy-bytes',
  'distribution',
  'gap',
  'gap-rounds',
  'sparsity',
  'channels',
] as const;

// Draws the charts from the embedded view; plain browser JS. Every dataset carries
// its algorithm: the legend shows one entry per algorithm (datasets marked `aux`,
// bands, whiskers and client dots, are left out of it) and clicking an entry hides
// every dataset of that algorithm.
const CHART_SCRIPT = `
const data = JSON.parse(document.getElementById('${REPORT_DATA_ELEMENT_ID}').textContent);
const view = data.view;
Chart.defaults.animation = false;
Chart.defaults.font.size = 13;
const fade = (hex, alpha) => hex + Math.round(alpha * 255).toString(16).padStart(2, '0');
const legend = {
  labels: { filter: (item, chartData) => !chartData.datasets[item.datasetIndex].aux },
  onClick: (e, item, l) => {
    const chart = l.chart;
    const algorithm = chart.data.datasets[item.datasetIndex].algorithm;
    const hide = chart.isDatasetVisible(item.datasetIndex);
    chart.data.datasets.forEach((d, i) => { if (d.algorithm === algorithm) chart.setDatasetVisibility(i, !hide); });
    chart.update();
  },
};
const percentTicks = { callback: (v) => v + '%' };
const pointTicks = { callback: (v) => (v > 0 ? '+' : '') + v };
function draw(id, type, datasets, scales, extra) {
  const canvas = document.getElementById(id);
  if (datasets.length === 0) { canvas.closest('section').querySelector('.empty').hidden = false; canvas.remove(); return; }
  const byRound = scales.x === roundAxis ? { tooltip: { callbacks: { title: (items) => 'round ' + Math.round(items[0].parsed.x) } } } : {};
  new Chart(canvas, { type, data: { datasets }, options: {
    responsive: true, aspectRatio: 2.6, interaction: { mode: 'nearest', intersect: false }, layout: { padding: { right: 16 } },
    plugins: { legend, ...byRound, ...(extra || {}) }, scales } });
}
const roundAxis = { type: 'linear', min: 1, max: Math.max(view.lastRound, 2), title: { display: true, text: 'round' }, ticks: { precision: 0 } };
const yAxis = (text, more) => ({ title: { display: true, text }, ...(more || {}) });
const points = (a, name, scale) => ((view.series[a.name] || {})[name] || []).map((p) => ({ x: p.round, y: p.value * scale }));
const sparse = (pts) => (pts.length <= 12 ? 3 : 0);
function lines(name, scale) {
  return view.algorithms.filter((a) => points(a, name, scale).length > 0).map((a) => {
    const pts = points(a, name, scale);
    return { label: a.name, algorithm: a.name, data: pts, borderColor: a.color, backgroundColor: a.color, pointRadius: sparse(pts), borderWidth: 2, clip: 8 };
  });
}
draw('received-accuracy', 'line', lines('received_accuracy', 100), { x: roundAxis, y: yAxis('received-model accuracy (%)', { ticks: percentTicks }) });

// Mean line and interquartile bar per evaluation round; the algorithms are dodged sideways
// by a few pixels so that bars at the same round do not hide one another.
const dodge = Math.max(view.lastRound - 1, 1) / 120;
const withPersonalized = view.algorithms.filter((a) => points(a, 'personalized_accuracy', 100).length > 0);
const personalized = [];
withPersonalized.forEach((a, i) => {
  const off = (i - (withPersonalized.length - 1) / 2) * dodge;
  const mean = points(a, 'personalized_accuracy', 100).map((p) => ({ x: p.x + off, y: p.y }));
  const q3 = points(a, 'personalized_accuracy_q3', 100);
  const bars = points(a, 'personalized_accuracy_q1', 100).flatMap((p, k) => [{ x: p.x + off, y: p.y }, { x: p.x + off, y: q3[k].y }, { x: p.x + off, y: null }]);
  personalized.push({ label: a.name, algorithm: a.name, data: mean, borderColor: a.color, backgroundColor: a.color, pointRadius: 3, borderWidth: 2, clip: 12 });
  personalized.push({ label: a.name + ' interquartile', aux: true, algorithm: a.name, data: bars, borderColor: a.color, borderWidth: 2, pointRadius: 0, spanGaps: false, clip: 12 });
});
const spread = dodge * withPersonalized.length;
draw('personalized-accuracy', 'line', personalized, {
  x: { ...roundAxis, min: 1 - spread, max: Math.max(view.lastRound, 2) + spread, ticks: { precision: 0, includeBounds: false } },
  y: yAxis('personalized accuracy (%)', { ticks: percentTicks }),
}, { tooltip: { callbacks: { title: (items) => 'round ' + Math.round(items[0].parsed.x) } } });

draw('loss', 'line', lines('personalized_loss', 1), { x: roundAxis, y: yAxis('test loss (cross-entropy)', { beginAtZero: true }) });

const bytes = view.algorithms.filter((a) => a.accuracyVsBytes.length > 0).map((a) => ({
  label: a.name, algorithm: a.name, borderColor: a.color, backgroundColor: a.color, pointRadius: 3, borderWidth: 2, clip: 8,
  data: a.accuracyVsBytes.map((p) => ({ x: p.bytes / 1048576, y: 100 * p.accuracy, round: p.round })),
}));
draw('accuracy-bytes', 'line', bytes, {
  x: { type: 'linear', beginAtZero: true, title: { display: true, text: 'cumulative MiB moved (up + down)' } },
  y: yAxis('personalized accuracy (%)', { ticks: percentTicks }),
}, { tooltip: { callbacks: { label: (c) => c.dataset.label + ': round ' + c.raw.round + ', ' + c.raw.x.toFixed(2) + ' MiB, ' + c.raw.y.toFixed(1) + '%' } } });

// A box plot from line primitives: on a linear x axis algorithm i sits at x = i; the box
// is a closed, filled outline, the whiskers vertical segments, each client a dot.
function boxes(id, pick, yText, scale, ticks) {
  const shown = view.algorithms.filter((a) => a.final);
  const datasets = [];
  shown.forEach((a, i) => {
    const s = pick(a.final).stats;
    const v = (x) => x * scale;
    const w = 0.28;
    datasets.push({ label: a.name, algorithm: a.name, borderColor: a.color, backgroundColor: fade(a.color, 0.3), borderWidth: 2, pointRadius: 0, fill: 'shape',
      data: [{ x: i - w, y: v(s.q1) }, { x: i + w, y: v(s.q1) }, { x: i + w, y: v(s.q3) }, { x: i - w, y: v(s.q3) }, { x: i - w, y: v(s.q1) }] });
    datasets.push({ label: a.name + ' median', aux: true, algorithm: a.name, borderColor: a.color, borderWidth: 3, pointRadius: 0,
      data: [{ x: i - w, y: v(s.median) }, { x: i + w, y: v(s.median) }] });
    datasets.push({ label: a.name + ' min-max', aux: true, algorithm: a.name, borderColor: a.color, borderWidth: 1, pointRadius: 0, spanGaps: false,
      data: [{ x: i, y: v(s.min) }, { x: i, y: v(s.q1) }, { x: i, y: null }, { x: i, y: v(s.q3) }, { x: i, y: v(s.max) }] });
    const dots = pick(a.final).values;
    datasets.push({ label: a.name + ' clients', aux: true, algorithm: a.name, showLine: false, pointRadius: 2.5, borderColor: a.color, backgroundColor: a.color,
      data: dots.map((d) => ({ x: i + (((d.client * 37) % 17) / 16 - 0.5) * 0.36, y: v(d.value), client: d.client })) });
  });
  draw(id, 'line', datasets, {
    x: { type: 'linear', min: -0.6, max: shown.length - 0.4, ticks: { stepSize: 1, callback: (x) => (shown[x] ? shown[x].name : '') }, grid: { display: false } },
    y: yAxis(yText, { ticks: ticks || percentTicks }),
  }, { tooltip: { callbacks: { title: () => '', label: (c) => c.raw.client !== undefined ? c.dataset.algorithm + ', client ' + c.raw.client + ': ' + c.raw.y.toFixed(1) : c.dataset.label } } });
}
boxes('distribution', (f) => ({ stats: f.accuracy, values: f.sampled.map((c) => ({ client: c.client, value: c.test })) }), 'personalized accuracy, last evaluation (%)', 100);
boxes('gap', (f) => ({ stats: f.gap, values: f.sampled.map((c) => ({ client: c.client, value: c.gap })) }), 'train − test accuracy (percentage points)', 100, pointTicks);
draw('gap-rounds', 'line', lines('overfitting_gap', 100), { x: roundAxis, y: yAxis('train − test accuracy, mean (points)', { ticks: pointTicks }) });
draw('sparsity', 'line', lines('sampled_sparsity', 100), { x: roundAxis, y: yAxis('sparsity, mean over sampled clients (%)', { min: 0, max: Math.round(view.sparsityMax * 1000) / 10, ticks: percentTicks }) });
draw('channels', 'line', lines('sampled_channels_kept_fraction', 100), { x: roundAxis, y: yAxis('BatchNorm channels kept (% of width)', { min: 0, max: 100, ticks: percentTicks }) });
`;

const td = (s: string, cls = ''): string => `<td${cls ? ` class="${cls}"` : ''}>${s}</td>`;
/** A table; the columns in `textColumns` (besides the first) hold text and align left. */
const table = (header: readonly string[], rows: readonly string[], textColumns: readonly number[] = []): string =>
  `<table><thead><tr>${header.map((h, i) => `<th${textColumns.includes(i) ? ' class="text"' : ''}>${h}</th>`).join('')}</tr></thead><tbody>\n${rows.join('\n')}\n</tbody></table>`;
const pp = (v: number): string => `${v >= 0 ? '+' : ''}${(v * 100).toFixed(1)}`;

function headlineSection(data: ReportData): string {
  const viewOf = new Map(data.view.algorithms.map((a) => [a.name, a]));
  const rows = data.summaries.map((s) => {
    const a = viewOf.get(s.algorithm);
    const f = a?.final ?? null;
    const sampled = f === null ? '-' : `${f.sampled.length}`;
    return (
      '<tr>' +
      td(
        `<span class="swatch" style="background:${a?.color ?? '#999'}"></span>${escapeHtml(s.algorithm)}${s.interrupted ? ' (stopped)' : ''}`,
      ) +
      td(a?.pruning ?? '-') +
      td(`<b>${pct(s.personalizedAcc)}</b>`) +
      td(f === null ? '-' : `${pct(f.accuracy.q1)} – ${pct(f.accuracy.q3)}`) +
      td(sampled) +
      td(s.neverSampled === null ? '-' : String(s.neverSampled), s.neverSampled ? 'warn' : '') +
      td(s.overfittingGap === null ? '-' : pp(s.overfittingGap)) +
      td(pct(s.receivedAccLast10)) +
      td(pct(s.globalAcc)) +
      td(formatBytes(s.uploadBytes + s.downloadBytes)) +
      td(formatBytes(s.denseUploadBytes + s.denseDownloadBytes)) +
      td(pct(s.savings)) +
      td(pct(s.finalSparsity)) +
      td(s.secondsPerRound.toFixed(2)) +
      '</tr>'
    );
  });
  // Algorithms share the sampling, so their never-sampled clients are usually the same: one line per set.
  const never = new Map<string, { algorithms: string[]; accuracy: number[] }>();
  for (const a of data.view.algorithms) {
    if (a.final === null || a.final.neverSampled.length === 0) continue;
    const key = a.final.neverSampled.map((c) => c.client).join(', ');
    const entry = never.get(key) ?? { algorithms: [], accuracy: [] };
    entry.algorithms.push(escapeHtml(a.name));
    entry.accuracy.push(mean(a.final.neverSampled.map((c) => c.test)));
    never.set(key, entry);
  }
  const neverText = [...never].map(([clients, e]) => {
    const lo = Math.min(...e.accuracy);
    const hi = Math.max(...e.accuracy);
    return `client${clients.includes(',') ? 's' : ''} ${clients} in ${e.algorithms.join(', ')} (their untrained models: ${pct(lo)}${hi > lo ? `–${pct(hi)}` : ''} accuracy)`;
  });
  return `<section id="headline"><h2>Summary</h2>
${table(
  [
    'algorithm',
    'model',
    'personalized acc',
    'interquartile',
    'clients sampled',
    'never sampled',
    'train − test (points)',
    'received acc (last 10)',
    'global acc',
    'bytes (up + down)',
    'as dense f32',
    'savings',
    'final sparsity',
    's/round',
  ],
  rows,
)}
<p class="caption">Personalized accuracy: each client's own model on its own test data at the last evaluation, mean and
interquartile range over the clients sampled at least once. A client never sampled still holds its untrained initial
model: it is counted in <i>never sampled</i>, not averaged in.${neverText.length ? ` Never sampled: ${neverText.join('; ')}.` : ''}
Received acc: the model members received, before local training (mean of the last 10 rounds). Global acc: the global
model on every client. Model: <i>pruned</i> once any member held a pruned mask.</p>
</section>`;
}

function thresholdSection(view: ReportView): string {
  if (view.threshold === null) {
    return `<section id="threshold-section"><h2>Rounds and bytes to a received accuracy</h2><p>No algorithm in this run receives a model (local only).</p></section>`;
  }
  const t = view.threshold;
  const rows = view.algorithms.map((a) => {
    const c = a.crossing;
    const cells =
      c === null || c.kind === 'not-measured'
        ? [td('-'), td('-'), td('receives no model')]
        : c.kind === 'reached'
          ? [td(String(c.round)), td(formatBytes(c.bytes)), td(`${pct(c.accuracy)} at round ${c.round}`)]
          : [td('not reached', 'warn'), td('-'), td(`best ${pct(c.best)}`)];
    return `<tr>${td(escapeHtml(a.name))}${cells.join('')}</tr>`;
  });
  const how = t.given
    ? 'as given (subfed report --threshold)'
    : 'default: 90% of the best received accuracy any algorithm reached, rounded down; set another with <code>subfed report &lt;run folder&gt; --threshold &lt;fraction&gt;</code>';
  return `<section id="threshold-section"><h2>Rounds and bytes until received accuracy first reaches ${pct(t.value)}</h2>
${table(['algorithm', 'rounds', 'bytes (up + down)', 'received accuracy'], rows)}
<p class="caption">Threshold ${pct(t.value)} (${how}). Received accuracy: mean over the round's members of the model they
received, before local training. Bytes: all traffic of the rounds before, plus that round's download.</p>
</section>`;
}

function gapSection(view: ReportView, summaries: readonly AlgorithmSummary[]): string {
  const sparsityOf = new Map(summaries.map((s) => [s.algorithm, s.finalSparsity]));
  const rows = view.algorithms.flatMap((a) => {
    const f = a.final;
    if (f === null) return [];
    const meanOf = (pick: (c: FinalClients['sampled'][number]) => number): number => mean(f.sampled.map(pick));
    return [
      `<tr>${td(escapeHtml(a.name))}${td(`${a.pruning} (${pct(sparsityOf.get(a.name) ?? 0)} sparse)`)}${td(pct(meanOf((c) => c.train)))}` +
        `${td(pct(meanOf((c) => c.test)))}${td(pp(meanOf((c) => c.gap)))}${td(pp(f.gap.median))}${td(String(f.sampled.length))}</tr>`,
    ];
  });
  return table(
    ['algorithm', 'model (final sparsity)', 'train acc', 'test acc', 'gap, mean (points)', 'gap, median', 'clients'],
    rows,
  );
}

function channelsTable(view: ReportView): string {
  const rows = view.algorithms.flatMap((a) =>
    (a.channelLayers ?? []).map(
      (l) =>
        `<tr>${td(escapeHtml(a.name))}${td(escapeHtml(l.name))}${td(String(l.width))}${td((l.kept * l.width).toFixed(1))}${td(pct(l.kept))}</tr>`,
    ),
  );
  return rows.length
    ? table(['algorithm', 'layer', 'width', 'channels kept at the end (mean over sampled clients)', 'share of width'], rows)
    : '';
}

/** The compact models' section: sizes over clients, and the layer widths clients kept. */
function exportSection(exports: readonly ExportSummary[]): string {
  if (exports.length === 0) return '';
  const rows = exports.map(
    (s) =>
      `<tr><td>${escapeHtml(s.algorithm)}</td><td>${s.clients}</td><td>${formatBytes(s.bytes.min)}</td><td>${formatBytes(s.bytes.median)}</td>` +
      `<td>${formatBytes(s.bytes.max)}</td><td>${formatBytes(s.maskedBytes)}</td><td>${pct(s.meanAccuracy)}</td></tr>`,
  );
  const shapes = exports
    .map(
      (s) =>
        `<h3>${escapeHtml(s.algorithm)}: layer widths (${s.layers.map(escapeHtml).join(', ')})</h3>` +
        table(
          ['widths', 'clients'],
          s.architectures.map((a) => `<tr><td>${a.widths.join(' - ')}</td><td>${a.clients}</td></tr>`),
        ),
    )
    .join('\n');
  return `<section id="exports-section"><h2>Compact models (subfed export of every client)</h2>
${table(['algorithm', 'clients', 'compact min', 'median', 'max', 'full-size model', 'compact accuracy (mean)'], rows)}
${shapes}
</section>`;
}

function configSection(config: SimConfig): string {
  return `<section id="config-section"><h2>Resolved configuration</h2>${htmlTable(['field', 'value'], configRows(config), 2)}</section>`;
}

function filesSection(): string {
  const list = (entries: Record<string, string>): string =>
    `<dl>${Object.entries(entries)
      .map(([k, v]) => `<dt><code>${escapeHtml(k)}</code></dt><dd>${escapeHtml(v)}</dd>`)
      .join('')}</dl>`;
  return `<section id="files-section"><h2>Data files in the run folder</h2>
<p><code>rounds.jsonl</code>: one round report per line (every member's and, on evaluation rounds, every client's figures).
<code>series.csv</code> (<code>algorithm,round,series,value</code>) and <code>clients.csv</code>
(<code>algorithm,round,client,measure,value</code>): long format, one row per measured value; pivot to any wide shape.</p>
<details><summary>series.csv series</summary>${list(SERIES_DESCRIPTIONS)}</details>
<details><summary>clients.csv measures</summary>${list(CLIENT_MEASURES)}</details>
</section>`;
}

/** The run report's own style, beside htmlPage's. */
const REPORT_STYLE = `.caption { color: #555; font-size: 0.9em; max-width: 60em; } .warn { color: #b03a2e; font-weight: 600; }
.chart { position: relative; width: 100%; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.4em; border-radius: 2px; }
#headline table { font-size: 0.85em; } #headline td, #headline th { padding: 4px 6px; } dt { margin-top: 0.4em; } dd { color: #555; }
`;

function chartSection(id: string, question: string, caption: string, after = ''): string {
  return `<section id="${id}-section"><h2>${question}</h2><div class="chart"><canvas id="${id}"></canvas></div>
<p class="empty" hidden>No algorithm in this run has this series.</p>
<p class="caption">${caption}</p>${after}</section>`;
}

export function renderReportHtml(data: ReportData): string {
  const c = data.config;
  const view = data.view;
  const names = data.summaries.map((s) => s.algorithm);
  const title = `subfed sim — ${c.preset} — ${names.join(', ')}`;
  // Which algorithms a chart leaves out (and why), and which lines lie exactly on another's.
  const seriesNote = (series: SeriesName, absentBecause: string): string => {
    const pointsOf = (a: AlgorithmView): readonly SeriesPoint[] => view.series[a.name]?.[series] ?? [];
    const missing = view.algorithms.filter((a) => pointsOf(a).length === 0).map((a) => escapeHtml(a.name));
    const drawn = view.algorithms.filter((a) => pointsOf(a).length > 0);
    const twins = new Map<string, string[]>();
    drawn.forEach((a, i) => {
      const twin = drawn.slice(0, i).find((b) => JSON.stringify(pointsOf(b)) === JSON.stringify(pointsOf(a)));
      if (twin !== undefined) twins.set(twin.name, [...(twins.get(twin.name) ?? []), escapeHtml(a.name)]);
    });
    const same = [...twins].map(
      ([twin, names]) =>
        `${names.join(', ')} ${names.length > 1 ? 'coincide' : 'coincides'} with ${escapeHtml(twin)} (drawn beneath it)`,
    );
    return (
      (missing.length ? ` Not shown: ${missing.join(', ')} (${absentBecause}).` : '') +
      (same.length ? ` ${same.join('; ')}.` : '')
    );
  };
  const notes = data.notes.map((n) => `<li>${escapeHtml(n)}</li>`).join('\n');
  const algorithms = data.summaries
    .map((s) => {
      const d = describeAlgorithm(s.algorithm);
      return `<li><b>${escapeHtml(d.name)}</b>: ${escapeHtml(d.summary)}. <i>${escapeHtml(d.reference)}</i></li>`;
    })
    .join('\n');
  const evalNote = `every ${c.evalEvery} rounds and at the last`;
  return htmlPage(
    title,
    `<ul>
${notes}
</ul>
${headlineSection(data)}
<ul>
${algorithms}
</ul>
${chartSection(
  'received-accuracy',
  'How good is the model each client receives?',
  `Test accuracy of the model members received, before their local training; mean over each round's members.${seriesNote('received_accuracy', 'it receives no model')}`,
)}
${chartSection(
  'personalized-accuracy',
  'How good are the personalized models?',
  `Each sampled client's own model on its own test data at the evaluation rounds (${evalNote}): mean (line) and interquartile range (bar; algorithms dodged sideways). Never-sampled clients are left out (see the summary).${seriesNote('personalized_accuracy', 'no evaluation round')}`,
)}
${chartSection(
  'loss',
  'Is training converging?',
  `Test loss (cross-entropy) of the personalized models, mean over the sampled clients, at the evaluation rounds.${seriesNote('personalized_loss', 'no evaluation round')}`,
)}
${chartSection(
  'accuracy-bytes',
  'What accuracy do the bytes buy?',
  `Personalized accuracy (mean over sampled clients) at each evaluation round against the bytes moved up and down through that round. Local moves nothing: it sits at 0.`,
)}
${thresholdSection(view)}
${chartSection(
  'distribution',
  'How are clients spread?',
  `Each sampled client's personalized accuracy at the last evaluation (dots); box from first to third quartile, the thick line the median, whiskers to the extremes. Never-sampled clients are not drawn (see the summary).`,
)}
${chartSection(
  'gap',
  'Does pruning reduce overfitting?',
  `Per sampled client at the last evaluation: accuracy of its personalized model on its own training data minus on its test data, in percentage points; same split for every algorithm.`,
  gapSection(view, data.summaries),
)}
${chartSection(
  'gap-rounds',
  'How does the overfitting gap develop?',
  `Train minus test accuracy, mean over the sampled clients, at the evaluation rounds.${seriesNote('overfitting_gap', 'no evaluation round')}`,
)}
${chartSection(
  'sparsity',
  'How sparse are the models?',
  `Every client sampled so far, with its latest mask: pruned share of all parameters, mean (the axis fits the data). Dense algorithms stay at 0.${seriesNote('sampled_sparsity', 'no round')}`,
)}
${chartSection(
  'channels',
  'How many channels remain?',
  `Channel pruning: BatchNorm channels kept over all layers as a share of their width; every client sampled so far, with its latest mask, mean.${seriesNote('sampled_channels_kept_fraction', 'it prunes no channels')}`,
  channelsTable(view),
)}
${exportSection(data.exports ?? [])}
${configSection(c)}
${filesSection()}
<script id="${REPORT_DATA_ELEMENT_ID}" type="application/json">${scriptJson(data)}</script>
<script>${chartJsSource()}</script>
<script>${CHART_SCRIPT}</script>`,
    REPORT_STYLE,
  );
}
