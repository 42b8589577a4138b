/**
 * What a simulation produces: one RoundReport per (algorithm, round), the
 * per-algorithm summary, and the run folder (config.json, rounds.jsonl,
 * summary.json, report.html with chart.js inlined so it opens offline).
 */
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describeAlgorithm } from '../client/algorithms/registry.js';
import { experimentOf, recordedConfig, type AlgorithmName, type SimConfig } from './presets.js';
import type { ClientExport } from './worker-protocol.js';

export interface AccuracyStats {
  readonly mean: number;
  readonly min: number;
  readonly max: number;
  /** How many clients the figures are over. */
  readonly count: number;
}

export interface ByteCounts {
  readonly up: number;
  readonly down: number;
  /** What the same messages would weigh as dense float32 tensors. */
  readonly denseUp: number;
  readonly denseDown: number;
}

export interface RoundReport {
  readonly algorithm: AlgorithmName;
  /** 1-based. */
  readonly round: number;
  readonly members: readonly number[];
  /** The members' own models on their own test data, after this round's local training. */
  readonly membersAccuracy: AccuracyStats;
  /** The model each member received, before local training; null for local-only (it receives nothing). */
  readonly receivedAccuracy: AccuracyStats | null;
  /** Every client's personalized accuracy: only on evaluation rounds (every --eval-every and the last). */
  readonly allClientsAccuracy: AccuracyStats | null;
  /** The global model on every client's test data: fedavg/fedavg-ft on evaluation rounds, else null. */
  readonly globalAccuracy: AccuracyStats | null;
  readonly bytes: ByteCounts;
  /** Mean over members of their pruned share of all model parameters after the round (0 for dense algorithms). */
  readonly meanSparsity: number;
  /** The same for the masks members held when their task arrived: the download is cut to these. */
  readonly receivedSparsity: number;
  /** Channel-pruning algorithms (subfedavg-hy): mean over members of the channels kept per BN layer; else null. */
  readonly channelsKept: readonly number[] | null;
  readonly wallSeconds: number;
}

export interface AlgorithmSummary {
  readonly algorithm: AlgorithmName;
  readonly rounds: number;
  /** Every client's personalized accuracy at the last evaluation round (mean). */
  readonly personalizedAcc: number | null;
  /** Mean over the last (up to) 10 rounds of the members' received-model accuracy. */
  readonly receivedAccLast10: number | null;
  readonly globalAcc: number | null;
  readonly uploadBytes: number;
  readonly downloadBytes: number;
  readonly denseUploadBytes: number;
  readonly denseDownloadBytes: number;
  /** 1 - (up + down) / (dense up + dense down); null when nothing would have moved (local). */
  readonly savings: number | null;
  /** Mean over rounds of the members' sparsity after training (what uploads are cut to). */
  readonly meanSparsity: number;
  /** Mean over rounds of the members' sparsity when their task arrived (what downloads are cut to). */
  readonly meanReceivedSparsity: number;
  /** The members' sparsity in the last round. */
  readonly finalSparsity: number;
  readonly wallSeconds: number;
  readonly secondsPerRound: number;
  /** True when the run was stopped before its last round. */
  readonly interrupted: boolean;
}

export function accuracyStats(values: readonly number[]): AccuracyStats {
  if (values.length === 0) throw new RangeError('accuracyStats: no values');
  let sum = 0;
  let min = Infinity;
  let max = -Infinity;
  for (const v of values) {
    sum += v;
    min = Math.min(min, v);
    max = Math.max(max, v);
  }
  return { mean: sum / values.length, min, max, count: values.length };
}

export function summarize(algorithm: AlgorithmName, rounds: readonly RoundReport[], plannedRounds: number): AlgorithmSummary {
  const mine = rounds.filter((r) => r.algorithm === algorithm);
  const lastOf = (pick: (r: RoundReport) => AccuracyStats | null): number | null => {
    for (let i = mine.length - 1; i >= 0; i--) {
      const stats = pick(mine[i]);
      if (stats) return stats.mean;
    }
    return null;
  };
  const received = mine.slice(-10).flatMap((r) => (r.receivedAccuracy ? [r.receivedAccuracy.mean] : []));
  const total = (pick: (b: ByteCounts) => number): number => mine.reduce((s, r) => s + pick(r.bytes), 0);
  const up = total((b) => b.up);
  const down = total((b) => b.down);
  const denseUp = total((b) => b.denseUp);
  const denseDown = total((b) => b.denseDown);
  const wallSeconds = mine.reduce((s, r) => s + r.wallSeconds, 0);
  const last = mine.at(-1);
  const meanOf = (pick: (r: RoundReport) => number): number =>
    mine.length ? mine.reduce((s, r) => s + pick(r), 0) / mine.length : 0;
  return {
    algorithm,
    rounds: mine.length,
    personalizedAcc: lastOf((r) => r.allClientsAccuracy),
    receivedAccLast10: received.length ? received.reduce((a, b) => a + b, 0) / received.length : null,
    globalAcc: lastOf((r) => r.globalAccuracy),
    uploadBytes: up,
    downloadBytes: down,
    denseUploadBytes: denseUp,
    denseDownloadBytes: denseDown,
    savings: denseUp + denseDown > 0 ? 1 - (up + down) / (denseUp + denseDown) : null,
    meanSparsity: meanOf((r) => r.meanSparsity),
    meanReceivedSparsity: meanOf((r) => r.receivedSparsity),
    finalSparsity: last ? last.meanSparsity : 0,
    wallSeconds,
    secondsPerRound: mine.length ? wallSeconds / mine.length : 0,
    interrupted: mine.length < plannedRounds,
  };
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

const pct = (v: number | null): string => (v === null ? '-' : `${(v * 100).toFixed(1)}%`);

/** Every client's compact model of one algorithm (subfed sim --export). */
export interface AlgorithmExports {
  readonly algorithm: AlgorithmName;
  readonly dir: string;
  readonly clients: readonly ClientExport[];
}

/** How the compact models' sizes spread over the clients of one algorithm. */
export interface ExportSummary {
  readonly algorithm: AlgorithmName;
  readonly dir: string;
  readonly clients: number;
  readonly bytes: { readonly min: number; readonly median: number; readonly max: number };
  /** The full-size (masked) model's files, the same for every client. */
  readonly maskedBytes: number;
  readonly meanAccuracy: number;
  readonly layers: readonly string[];
  /** Distinct layer widths, most common first, with how many clients have them. */
  readonly architectures: readonly { readonly widths: readonly number[]; readonly clients: number }[];
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export function summarizeExports(e: AlgorithmExports): ExportSummary {
  if (e.clients.length === 0) throw new RangeError(`summarizeExports: no clients for ${e.algorithm}`);
  const bytes = e.clients.map((c) => c.bytes);
  const counts = new Map<string, { widths: number[]; clients: number }>();
  for (const c of e.clients) {
    const widths = c.widths.map((w) => w.width);
    const key = widths.join(',');
    const entry = counts.get(key) ?? { widths, clients: 0 };
    entry.clients++;
    counts.set(key, entry);
  }
  return {
    algorithm: e.algorithm,
    dir: e.dir,
    clients: e.clients.length,
    bytes: { min: Math.min(...bytes), median: median(bytes), max: Math.max(...bytes) },
    maskedBytes: Math.max(...e.clients.map((c) => c.maskedBytes)),
    meanAccuracy: e.clients.reduce((s, c) => s + c.accuracy, 0) / e.clients.length,
    layers: e.clients[0].widths.map((w) => w.name),
    architectures: [...counts.values()].sort(
      (a, b) => b.clients - a.clients || a.widths.join(',').localeCompare(b.widths.join(',')),
    ),
  };
}

/** The terminal table of the compact models: sizes over clients, and which layer widths they kept. */
export function formatExportTable(summaries: readonly ExportSummary[]): string {
  const header = ['algorithm', 'clients', 'compact min', 'median', 'max', 'full-size model', 'compact accuracy (mean)'];
  const rows = summaries.map((s) => [
    s.algorithm,
    String(s.clients),
    formatBytes(s.bytes.min),
    formatBytes(s.bytes.median),
    formatBytes(s.bytes.max),
    formatBytes(s.maskedBytes),
    pct(s.meanAccuracy),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  const shapes = summaries.map(
    (s) =>
      `${s.algorithm} widths (${s.layers.join(', ')}): ` +
      s.architectures.map((a) => `${a.widths.join('-')} x${a.clients}`).join(', '),
  );
  return [
    'compact models (subfed export of every client):',
    line(header),
    widths.map((w) => '-'.repeat(w)).join('  '),
    ...rows.map(line),
    ...shapes,
    ...summaries.map((s) => `${s.algorithm}: ${s.dir}/client-<id>/model (and client-state.bin beside it)`),
  ].join('\n');
}

/** The final terminal table. */
export function formatSummaryTable(summaries: readonly AlgorithmSummary[]): string {
  const header = [
    'algorithm',
    'personalized acc',
    'received acc (last 10)',
    'global acc',
    'up',
    'down',
    'dense up+down',
    'savings',
    'final sparsity',
    's/round',
  ];
  const rows = summaries.map((s) => [
    s.algorithm + (s.interrupted ? ' (stopped)' : ''),
    pct(s.personalizedAcc),
    pct(s.receivedAccLast10),
    pct(s.globalAcc),
    formatBytes(s.uploadBytes),
    formatBytes(s.downloadBytes),
    formatBytes(s.denseUploadBytes + s.denseDownloadBytes),
    pct(s.savings),
    pct(s.finalSparsity),
    s.secondsPerRound.toFixed(2),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** Default run folder: runs/<timestamp>-<preset>/ (timestamp sortable and path-safe); an experiment file gives its own name as `preset`. */
export function defaultRunFolder(config: { readonly preset: string }, now = new Date()): string {
  const stamp = now
    .toISOString()
    .replace(/[:.]/g, '-')
    .replace(/-\d{3}Z$/, 'Z');
  return path.join('runs', `${stamp}-${config.preset}`);
}

function chartJsSource(): string {
  // chart.js does not export its UMD bundle; it sits next to the CommonJS entry.
  const main = createRequire(import.meta.url).resolve('chart.js');
  return readFileSync(path.join(path.dirname(main), 'chart.umd.min.js'), 'utf8');
}

/** JSON that is safe inside a <script> element. */
function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The data every chart draws from; embedded in the page as JSON (tests read it back). */
export interface ReportData {
  readonly config: SimConfig;
  readonly rounds: readonly RoundReport[];
  readonly summaries: readonly AlgorithmSummary[];
  readonly notes: readonly string[];
  /** subfed sim --export: the compact models per algorithm; absent without it. */
  readonly exports?: readonly ExportSummary[];
}

export const REPORT_DATA_ELEMENT_ID = 'subfed-report-data';

// Draws the charts from the embedded data; plain browser JS, kept free of '<' issues.
const CHART_SCRIPT = `
const data = JSON.parse(document.getElementById('${REPORT_DATA_ELEMENT_ID}').textContent);
const algorithms = data.summaries.map((s) => s.algorithm);
const palette = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];
const colorOf = (a) => palette[algorithms.indexOf(a) % palette.length];
const roundsOf = (a) => data.rounds.filter((r) => r.algorithm === a);
const maxRound = Math.max(0, ...data.rounds.map((r) => r.round));
const labels = Array.from({ length: maxRound }, (_, i) => i + 1);
const series = (a, pick) => { const v = new Array(maxRound).fill(null); for (const r of roundsOf(a)) v[r.round - 1] = pick(r); return v; };
const lineOptions = (yTitle, percent) => ({
  responsive: true, animation: false, spanGaps: true,
  interaction: { mode: 'nearest', intersect: false },
  scales: { x: { title: { display: true, text: 'round' } },
            y: { title: { display: true, text: yTitle }, ...(percent ? { min: 0, max: 100 } : {}) } },
});
function chart(id, datasets, yTitle, percent) {
  new Chart(document.getElementById(id), { type: 'line', data: { labels, datasets }, options: lineOptions(yTitle, percent) });
}
const acc = [];
for (const a of algorithms) {
  const c = colorOf(a);
  const pctOf = (s) => (s ? 100 * s.mean : null);
  acc.push({ label: a + ' personalized (members, after training)', data: series(a, (r) => pctOf(r.membersAccuracy)), borderColor: c, pointRadius: 1 });
  acc.push({ label: a + ' personalized (all clients)', data: series(a, (r) => pctOf(r.allClientsAccuracy)), borderColor: c, borderWidth: 3, pointRadius: 4 });
  if (roundsOf(a).some((r) => r.receivedAccuracy)) acc.push({ label: a + ' received (before training)', data: series(a, (r) => pctOf(r.receivedAccuracy)), borderColor: c, borderDash: [6, 3], pointRadius: 1 });
  if (roundsOf(a).some((r) => r.globalAccuracy)) acc.push({ label: a + ' global', data: series(a, (r) => pctOf(r.globalAccuracy)), borderColor: c, borderDash: [2, 2], pointRadius: 4 });
}
chart('accuracy', acc, 'accuracy (%)', true);
const bytes = [];
for (const a of algorithms) {
  let sum = 0, dense = 0;
  const cum = series(a, (r) => (sum += r.bytes.up + r.bytes.down) / 1048576);
  const cumDense = series(a, (r) => (dense += r.bytes.denseUp + r.bytes.denseDown) / 1048576);
  bytes.push({ label: a + ' bytes moved', data: cum, borderColor: colorOf(a) });
  if (dense > 0) bytes.push({ label: a + ' same traffic as dense f32', data: cumDense, borderColor: colorOf(a), borderDash: [6, 3] });
}
chart('bytes', bytes, 'cumulative MiB (up + down)', false);
chart('sparsity', algorithms.map((a) => ({ label: a, data: series(a, (r) => 100 * r.meanSparsity), borderColor: colorOf(a) })), 'mean sparsity of members (%)', true);
const hy = data.rounds.filter((r) => r.channelsKept);
if (hy.length) {
  const layers = hy[0].channelsKept.length;
  const ds = [];
  for (const a of algorithms) for (let l = 0; l < layers; l++) {
    if (!roundsOf(a).some((r) => r.channelsKept)) continue;
    ds.push({ label: a + ' BN layer ' + (l + 1), data: series(a, (r) => (r.channelsKept ? r.channelsKept[l] : null)), borderColor: colorOf(a), borderDash: l ? [4, 2] : [] });
  }
  chart('channels', ds, 'channels kept (mean over members)', false);
} else {
  document.getElementById('channels-section').remove();
}
`;

/** The compact models' section: sizes over clients, and the layer widths clients kept. */
function exportSection(exports: readonly ExportSummary[]): string {
  if (exports.length === 0) return '';
  const rows = exports
    .map(
      (s) =>
        `<tr><td>${escapeHtml(s.algorithm)}</td><td>${s.clients}</td><td>${formatBytes(s.bytes.min)}</td><td>${formatBytes(s.bytes.median)}</td>` +
        `<td>${formatBytes(s.bytes.max)}</td><td>${formatBytes(s.maskedBytes)}</td><td>${pct(s.meanAccuracy)}</td></tr>`,
    )
    .join('\n');
  const shapes = exports
    .map(
      (s) =>
        `<h3>${escapeHtml(s.algorithm)}: layer widths (${s.layers.map(escapeHtml).join(', ')})</h3><table><thead><tr><th>widths</th><th>clients</th></tr></thead><tbody>` +
        s.architectures.map((a) => `<tr><td>${a.widths.join(' - ')}</td><td>${a.clients}</td></tr>`).join('') +
        '</tbody></table>',
    )
    .join('\n');
  return `<section id="exports-section"><h2>Compact models (subfed export of every client)</h2>
<table><thead><tr><th>algorithm</th><th>clients</th><th>compact min</th><th>median</th><th>max</th><th>full-size model</th><th>compact accuracy (mean)</th></tr></thead>
<tbody>
${rows}
</tbody></table>
${shapes}
</section>`;
}

export function renderReportHtml(data: ReportData): string {
  const c = data.config;
  const title = `subfed sim — ${c.preset} — ${data.summaries.map((s) => s.algorithm).join(', ')}`;
  const rows = data.summaries
    .map(
      (s) =>
        `<tr><td>${escapeHtml(s.algorithm)}${s.interrupted ? ' (stopped)' : ''}</td><td>${pct(s.personalizedAcc)}</td><td>${pct(s.receivedAccLast10)}</td><td>${pct(s.globalAcc)}</td>` +
        `<td>${formatBytes(s.uploadBytes)}</td><td>${formatBytes(s.downloadBytes)}</td><td>${formatBytes(s.denseUploadBytes + s.denseDownloadBytes)}</td><td>${pct(s.savings)}</td><td>${pct(s.finalSparsity)}</td><td>${s.secondsPerRound.toFixed(2)}</td></tr>`,
    )
    .join('\n');
  const notes = data.notes.map((n) => `<li>${escapeHtml(n)}</li>`).join('\n');
  const algorithms = data.summaries
    .map((s) => {
      const d = describeAlgorithm(s.algorithm);
      return `<li><b>${escapeHtml(d.name)}</b>: ${escapeHtml(d.summary)}. <i>${escapeHtml(d.reference)}</i></li>`;
    })
    .join('\n');
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeHtml(title)}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; } td, th { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }
td:first-child, th:first-child { text-align: left; } section { margin: 2em 0; }
</style>
</head>
<body>
<h1>${escapeHtml(title)}</h1>
<ul>
${notes}
</ul>
<table>
<thead><tr><th>algorithm</th><th>personalized acc</th><th>received acc (last 10)</th><th>global acc</th><th>up</th><th>down</th><th>dense up+down</th><th>savings</th><th>final sparsity</th><th>s/round</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>
<ul>
${algorithms}
</ul>
<section><h2>Accuracy vs round</h2><canvas id="accuracy"></canvas></section>
<section><h2>Cumulative bytes vs dense FedAvg</h2><canvas id="bytes"></canvas></section>
<section><h2>Sparsity vs round</h2><canvas id="sparsity"></canvas></section>
<section id="channels-section"><h2>Channels kept per BatchNorm layer</h2><canvas id="channels"></canvas></section>
${exportSection(data.exports ?? [])}
<script id="${REPORT_DATA_ELEMENT_ID}" type="application/json">${scriptJson(data)}</script>
<script>${chartJsSource()}</script>
<script>${CHART_SCRIPT}</script>
</body>
</html>
`;
}

/** Writes the run folder as the run goes: rounds.jsonl grows one line per round, so a stopped run keeps what it did. */
export class RunWriter {
  readonly #rounds: RoundReport[] = [];
  readonly #exports: AlgorithmExports[] = [];

  constructor(
    readonly folder: string,
    readonly config: SimConfig,
  ) {
    mkdirSync(folder, { recursive: true });
    // As an experiment file: `subfed sim --config <folder>/config.json` runs it again.
    writeFileSync(path.join(folder, 'config.json'), `${JSON.stringify(recordedConfig(experimentOf(config)), null, 2)}\n`);
    writeFileSync(path.join(folder, 'rounds.jsonl'), '');
  }

  get rounds(): readonly RoundReport[] {
    return this.#rounds;
  }

  appendRound(report: RoundReport): void {
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

  /** summary.json and report.html from everything appended so far. */
  finish(notes: readonly string[]): AlgorithmSummary[] {
    const summaries = this.config.algorithms
      .map((a) => summarize(a, this.#rounds, this.config.rounds))
      .filter((s) => s.rounds > 0);
    const exports = this.exports;
    const clients = this.#exports;
    writeFileSync(
      path.join(this.folder, 'summary.json'),
      `${JSON.stringify({ notes, summaries, ...(exports.length > 0 ? { exports, exportedClients: clients } : {}) }, null, 2)}\n`,
    );
    writeFileSync(
      path.join(this.folder, 'report.html'),
      renderReportHtml({ config: this.config, rounds: this.#rounds, summaries, notes, exports }),
    );
    return summaries;
  }
}
