/**
 * What a simulation produces: one RoundReport per (algorithm, round) (a line
 * of rounds.jsonl), the per-algorithm summary and the terminal tables. The
 * run folder is written by run-folder.ts, the page by report-html.ts.
 */
import path from 'node:path';
import type { AlgorithmName } from './presets.js';
import type { EvalResult } from '../client/algorithms/types.js';
import type { ClientEvaluation, ClientExport, MemberResult, ModelEvaluation } from './worker-protocol.js';
import { fiveNumbers, mean } from './stats.js';

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
  /** Every member's own figures, in the order the round sampled them. */
  readonly members: readonly MemberResult[];
  /** The members' own models on their own test data, after this round's local training. */
  readonly membersAccuracy: AccuracyStats;
  /** The model each member received, before local training; null for local-only (it receives nothing). */
  readonly receivedAccuracy: AccuracyStats | null;
  /** Every client measured: only on evaluation rounds (every --eval-every and the last). */
  readonly evaluation: Evaluation | null;
  readonly bytes: ByteCounts;
  /** Mean over members of their pruned share of all model parameters after the round (0 for dense algorithms). */
  readonly meanSparsity: number;
  /** The same for the masks members held when their task arrived: the download is cut to these. */
  readonly receivedSparsity: number;
  /** Channel-pruning algorithms (subfedavg-hy): mean over members of the channels kept per BN layer; else null. */
  readonly channelsKept: readonly number[] | null;
  readonly wallSeconds: number;
}

interface ClientRecordBase {
  readonly client: number;
  /** Its personalized model on its own test data. */
  readonly test: EvalResult;
  /** The global model on its test data: algorithms that evaluate one (fedavg, fedavg-ft); else null. */
  readonly global: EvalResult | null;
}

/** A client sampled in this or an earlier round. */
export interface SampledClientRecord extends ClientRecordBase {
  readonly sampled: true;
  /** The same model on its own training data (without a held-out validation split): train - test is the overfitting gap. */
  readonly train: EvalResult;
}

/**
 * A client never sampled: it still holds its initial, untrained model. Its
 * training data is not evaluated (no figure uses it, and on the paper preset
 * that work was a third of an evaluation round's extra cost).
 */
export interface UnsampledClientRecord extends ClientRecordBase {
  readonly sampled: false;
}

/** One client at an evaluation round. */
export type ClientRecord = SampledClientRecord | UnsampledClientRecord;

/** The clients of an evaluation that have been sampled: every figure but `never sampled` is over these. */
export function sampledClients(clients: readonly ClientRecord[]): SampledClientRecord[] {
  return clients.filter((c): c is SampledClientRecord => c.sampled);
}

/** Every client measured at an evaluation round. */
export interface Evaluation {
  /** In client order. */
  readonly clients: readonly ClientRecord[];
  /** Personalized test accuracy over the clients sampled so far: the headline figure. */
  readonly personalized: AccuracyStats;
  /** Clients never sampled so far: left out of `personalized`, counted here. */
  readonly neverSampled: number;
  /** The global model over every client (it is one model for all, trained or not); null without one. */
  readonly global: AccuracyStats | null;
}

export interface AlgorithmSummary {
  readonly algorithm: AlgorithmName;
  readonly rounds: number;
  /** Personalized accuracy (mean) at the last evaluation round, over the clients sampled by then. */
  readonly personalizedAcc: number | null;
  /** Clients never sampled by the last evaluation round (left out of personalizedAcc); null without an evaluation. */
  readonly neverSampled: number | null;
  /** Mean over the sampled clients of train accuracy - test accuracy at the last evaluation round. */
  readonly overfittingGap: number | null;
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

/**
 * An evaluation round's record: each client's personalized model (and the
 * global one, when there is one) with whether it has been sampled yet. The
 * headline accuracy is over the sampled clients only: a client never sampled
 * holds its untrained initial model, and averaging it in would understate
 * every algorithm by however many clients chance left out.
 */
export function evaluationOf(
  personal: readonly ClientEvaluation[],
  global: readonly ModelEvaluation[] | null,
  sampled: ReadonlySet<number>,
): Evaluation {
  const globalOf = new Map(global?.map((g) => [g.client, g.test]));
  const clients = [...personal]
    .sort((a, b) => a.client - b.client)
    .map((e): ClientRecord => {
      const base = { client: e.client, test: e.test, global: globalOf.get(e.client) ?? null };
      if (!sampled.has(e.client)) return { ...base, sampled: false };
      if (e.train === null)
        throw new RangeError(`evaluationOf: sampled client ${e.client} was not measured on its training data`);
      return { ...base, sampled: true, train: e.train };
    });
  if (global !== null && globalOf.size !== clients.length) {
    throw new RangeError(`evaluationOf: the global model was measured on ${globalOf.size} of ${clients.length} clients`);
  }
  const trained = sampledClients(clients);
  if (trained.length === 0) throw new RangeError('evaluationOf: no client has been sampled yet');
  return {
    clients,
    personalized: accuracyStats(trained.map((c) => c.test.accuracy)),
    neverSampled: clients.length - trained.length,
    global: global === null ? null : accuracyStats(clients.map((c) => (c.global as EvalResult).accuracy)),
  };
}

export function summarize(algorithm: AlgorithmName, rounds: readonly RoundReport[], plannedRounds: number): AlgorithmSummary {
  const mine = rounds.filter((r) => r.algorithm === algorithm);
  const lastEvaluation = mine.findLast((r) => r.evaluation !== null)?.evaluation ?? null;
  const trained = sampledClients(lastEvaluation?.clients ?? []);
  const received = mine.slice(-10).flatMap((r) => (r.receivedAccuracy ? [r.receivedAccuracy.mean] : []));
  const total = (pick: (b: ByteCounts) => number): number => mine.reduce((s, r) => s + pick(r.bytes), 0);
  const up = total((b) => b.up);
  const down = total((b) => b.down);
  const denseUp = total((b) => b.denseUp);
  const denseDown = total((b) => b.denseDown);
  const wallSeconds = mine.reduce((s, r) => s + r.wallSeconds, 0);
  const last = mine.at(-1);
  const meanOf = (pick: (r: RoundReport) => number): number => (mine.length ? mean(mine.map(pick)) : 0);
  return {
    algorithm,
    rounds: mine.length,
    personalizedAcc: lastEvaluation?.personalized.mean ?? null,
    neverSampled: lastEvaluation?.neverSampled ?? null,
    overfittingGap: trained.length ? mean(trained.map((c) => c.train.accuracy - c.test.accuracy)) : null,
    receivedAccLast10: received.length ? mean(received) : null,
    globalAcc: lastEvaluation?.global?.mean ?? null,
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

export function formatBytes(n: number): string {
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

export const pct = (v: number | null): string => (v === null ? '-' : `${(v * 100).toFixed(1)}%`);

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

export function summarizeExports(e: AlgorithmExports): ExportSummary {
  if (e.clients.length === 0) throw new RangeError(`summarizeExports: no clients for ${e.algorithm}`);
  const { min, median, max } = fiveNumbers(e.clients.map((c) => c.bytes));
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
    bytes: { min, median, max },
    maskedBytes: Math.max(...e.clients.map((c) => c.maskedBytes)),
    meanAccuracy: mean(e.clients.map((c) => c.accuracy)),
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
  const shapes = summaries.map(
    (s) =>
      `${s.algorithm} widths (${s.layers.join(', ')}): ` +
      s.architectures.map((a) => `${a.widths.join('-')} x${a.clients}`).join(', '),
  );
  return [
    'compact models (subfed export of every client):',
    formatColumns(header, rows),
    ...shapes,
    ...summaries.map((s) => `${s.algorithm}: ${s.dir}/client-<id>/model (and client-state.bin beside it)`),
  ].join('\n');
}

/** The final terminal table; personalized acc is over the sampled clients, never sampled counts the others. */
export function formatSummaryTable(summaries: readonly AlgorithmSummary[]): string {
  const header = [
    'algorithm',
    'personalized acc',
    'never sampled',
    'train-test gap',
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
    s.neverSampled === null ? '-' : String(s.neverSampled),
    pct(s.overfittingGap),
    pct(s.receivedAccLast10),
    pct(s.globalAcc),
    formatBytes(s.uploadBytes),
    formatBytes(s.downloadBytes),
    formatBytes(s.denseUploadBytes + s.denseDownloadBytes),
    pct(s.savings),
    pct(s.finalSparsity),
    s.secondsPerRound.toFixed(2),
  ]);
  return formatColumns(header, rows);
}

/** A terminal table: columns padded, the first left-aligned, the rest right-aligned, a rule under the header. */
export function formatColumns(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: readonly string[]): string =>
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
