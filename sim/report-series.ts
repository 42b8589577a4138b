/**
 * The report's numbers, computed from round reports alone (what rounds.jsonl
 * holds): every per-round series, which the page charts and the CSV files
 * export under the same names; each client's figures at the last evaluation,
 * for the distributions; the rounds and bytes until received accuracy first
 * reaches a threshold; and the axis bounds. Pure functions: no files, no page.
 *
 * Headline figures are over the clients sampled at least once: a client never
 * sampled still holds its untrained initial model, so it is counted and shown
 * apart (never_sampled, never_sampled_accuracy) rather than averaged in.
 */
import type { AlgorithmName } from './presets.js';
import { sampledClients, type RoundReport } from './report.js';
import { fiveNumbers, mean, type FiveNumbers } from './stats.js';

/** What each per-round series measures (the page lists these beside the CSV files). */
export const SERIES_DESCRIPTIONS = {
  received_accuracy: "members' received model (before local training) on their test data, mean over members",
  received_accuracy_min: 'the same, lowest member',
  received_accuracy_max: 'the same, highest member',
  received_loss: "members' received model, test loss, mean over members",
  members_accuracy: "members' personalized model after this round's training, test accuracy, mean over members",
  members_loss: 'the same, test loss',
  personalized_accuracy:
    "evaluation rounds: every sampled client's personalized model on its test data, mean over the clients sampled so far",
  personalized_accuracy_min: 'the same, lowest client',
  personalized_accuracy_q1: 'the same, first quartile',
  personalized_accuracy_median: 'the same, median',
  personalized_accuracy_q3: 'the same, third quartile',
  personalized_accuracy_max: 'the same, highest client',
  personalized_loss: 'evaluation rounds: test loss of the same models, mean over the sampled clients',
  train_accuracy: 'evaluation rounds: the same models on their own training data, mean over the sampled clients',
  overfitting_gap: 'evaluation rounds: train accuracy - test accuracy per sampled client, mean',
  sampled_clients: 'evaluation rounds: clients sampled at least once so far',
  never_sampled: 'evaluation rounds: clients never sampled so far (their models are untrained; left out of the means)',
  never_sampled_accuracy: "evaluation rounds: the never-sampled clients' (initial) models, test accuracy, mean",
  global_accuracy: 'evaluation rounds, algorithms with a global model: it on every client, mean',
  global_loss: 'the same, test loss',
  sparsity: "members' pruned share of all parameters after training, mean",
  received_sparsity: 'the same, of the masks members held when their task arrived',
  sampled_sparsity: 'every client sampled so far, its latest mask: pruned share of all parameters, mean',
  channels_kept_fraction: 'channel pruning: channels kept over all BatchNorm layers / their width, mean over members',
  sampled_channels_kept_fraction: 'the same over every client sampled so far, each with its latest mask',
  'sampled_channels_kept_fraction:<layer>': 'the same, for one layer',
  bytes_up: 'wire bytes uploaded this round',
  bytes_down: 'wire bytes downloaded this round',
  dense_bytes_up: 'the same uploads as dense float32 tensors',
  dense_bytes_down: 'the same downloads as dense float32 tensors',
  cumulative_bytes: 'bytes up + down through this round',
  cumulative_dense_bytes: 'dense float32 bytes up + down through this round',
  wall_seconds: 'wall-clock seconds of the round, its evaluation included',
} as const;

type FixedSeriesName = Exclude<keyof typeof SERIES_DESCRIPTIONS, 'sampled_channels_kept_fraction:<layer>'>;
export type SeriesName = FixedSeriesName | `sampled_channels_kept_fraction:${string}`;

export interface SeriesPoint {
  readonly round: number;
  readonly value: number;
}

/** Per algorithm, per series, its points in round order; a series an algorithm never measures is absent. */
export type SeriesTable = Readonly<Record<string, Readonly<Partial<Record<SeriesName, readonly SeriesPoint[]>>>>>;

/** A BatchNorm layer whose channels channel pruning counts (RoundReport.channelsKept, same order). */
export interface ChannelLayer {
  readonly name: string;
  readonly width: number;
}

/** The channel layers of an algorithm's model; null or [] for an algorithm that does not prune channels. */
export type ChannelLayersOf = (algorithm: AlgorithmName) => readonly ChannelLayer[] | null;

/** Algorithms in order of first appearance. */
export function algorithmsOf(rounds: readonly RoundReport[]): AlgorithmName[] {
  return [...new Set(rounds.map((r) => r.algorithm))];
}

/** One algorithm's round reports, in round order. */
export function roundsOf(rounds: readonly RoundReport[], algorithm: AlgorithmName): RoundReport[] {
  return rounds.filter((r) => r.algorithm === algorithm).sort((a, b) => a.round - b.round);
}

/** Every per-round series of one algorithm (see SERIES_DESCRIPTIONS). */
export function algorithmSeries(
  mine: readonly RoundReport[],
  layers: readonly ChannelLayer[] | null,
): Partial<Record<SeriesName, SeriesPoint[]>> {
  const out: Partial<Record<SeriesName, SeriesPoint[]>> = {};
  const put = (name: SeriesName, round: number, value: number | null): void => {
    if (value === null) return;
    (out[name] ??= []).push({ round, value });
  };
  let cumulative = 0;
  let cumulativeDense = 0;
  const widths = layers === null || layers.length === 0 ? null : layers.map((l) => l.width);
  const totalWidth = widths?.reduce((s, w) => s + w, 0) ?? 0;
  const checkChannels = (r: RoundReport, kept: readonly number[]): void => {
    if (widths !== null && kept.length !== widths.length) {
      throw new RangeError(`${r.algorithm} round ${r.round}: ${kept.length} channel counts for ${widths.length} channel layers`);
    }
  };
  // Each client sampled so far, as its latest round as a member left it.
  const latest = new Map<number, RoundReport['members'][number]>();
  for (const r of mine) {
    for (const m of r.members) latest.set(m.client, m);
    const received = r.members.flatMap((m) => (m.received === null ? [] : [m.received]));
    put('received_accuracy', r.round, received.length ? mean(received.map((m) => m.accuracy)) : null);
    put('received_accuracy_min', r.round, received.length ? Math.min(...received.map((m) => m.accuracy)) : null);
    put('received_accuracy_max', r.round, received.length ? Math.max(...received.map((m) => m.accuracy)) : null);
    put('received_loss', r.round, received.length ? mean(received.map((m) => m.loss)) : null);
    put('members_accuracy', r.round, mean(r.members.map((m) => m.personalized.accuracy)));
    put('members_loss', r.round, mean(r.members.map((m) => m.personalized.loss)));

    const e = r.evaluation;
    if (e !== null) {
      const trained = sampledClients(e.clients);
      const untrained = e.clients.filter((c) => !c.sampled);
      const accuracy = fiveNumbers(trained.map((c) => c.test.accuracy));
      put('personalized_accuracy', r.round, mean(trained.map((c) => c.test.accuracy)));
      put('personalized_accuracy_min', r.round, accuracy.min);
      put('personalized_accuracy_q1', r.round, accuracy.q1);
      put('personalized_accuracy_median', r.round, accuracy.median);
      put('personalized_accuracy_q3', r.round, accuracy.q3);
      put('personalized_accuracy_max', r.round, accuracy.max);
      put('personalized_loss', r.round, mean(trained.map((c) => c.test.loss)));
      put('train_accuracy', r.round, mean(trained.map((c) => c.train.accuracy)));
      put('overfitting_gap', r.round, mean(trained.map((c) => c.train.accuracy - c.test.accuracy)));
      put('sampled_clients', r.round, trained.length);
      put('never_sampled', r.round, untrained.length);
      put('never_sampled_accuracy', r.round, untrained.length ? mean(untrained.map((c) => c.test.accuracy)) : null);
      const global = e.clients.flatMap((c) => (c.global === null ? [] : [c.global]));
      put('global_accuracy', r.round, global.length ? mean(global.map((g) => g.accuracy)) : null);
      put('global_loss', r.round, global.length ? mean(global.map((g) => g.loss)) : null);
    }

    put('sparsity', r.round, r.meanSparsity);
    put('received_sparsity', r.round, r.receivedSparsity);
    const clients = [...latest.values()];
    put('sampled_sparsity', r.round, mean(clients.map((m) => m.sparsity)));
    if (layers !== null && widths !== null && r.channelsKept !== null) {
      checkChannels(r, r.channelsKept);
      put('channels_kept_fraction', r.round, r.channelsKept.reduce((s, k) => s + k, 0) / totalWidth);
      const kept = clients.flatMap((m) => (m.channelsKept === null ? [] : [m.channelsKept]));
      for (const k of kept) checkChannels(r, k);
      if (kept.length > 0) {
        const sum = kept.reduce((s, k) => s + k.reduce((a, b) => a + b, 0), 0);
        put('sampled_channels_kept_fraction', r.round, sum / (kept.length * totalWidth));
        layers.forEach((l, i) => put(`sampled_channels_kept_fraction:${l.name}`, r.round, mean(kept.map((k) => k[i])) / l.width));
      }
    }
    put('bytes_up', r.round, r.bytes.up);
    put('bytes_down', r.round, r.bytes.down);
    put('dense_bytes_up', r.round, r.bytes.denseUp);
    put('dense_bytes_down', r.round, r.bytes.denseDown);
    cumulative += r.bytes.up + r.bytes.down;
    cumulativeDense += r.bytes.denseUp + r.bytes.denseDown;
    put('cumulative_bytes', r.round, cumulative);
    put('cumulative_dense_bytes', r.round, cumulativeDense);
    put('wall_seconds', r.round, r.wallSeconds);
  }
  return out;
}

export function seriesTable(rounds: readonly RoundReport[], layersOf: ChannelLayersOf): SeriesTable {
  return Object.fromEntries(algorithmsOf(rounds).map((a) => [a, algorithmSeries(roundsOf(rounds, a), layersOf(a))] as const));
}

/** Personalized accuracy at each evaluation round against the bytes moved through that round. */
export interface BytesPoint {
  readonly round: number;
  readonly bytes: number;
  readonly accuracy: number;
}

export function accuracyVsBytes(series: Partial<Record<SeriesName, readonly SeriesPoint[]>>): BytesPoint[] {
  const bytes = new Map((series.cumulative_bytes ?? []).map((p) => [p.round, p.value]));
  return (series.personalized_accuracy ?? []).map((p) => {
    const b = bytes.get(p.round);
    if (b === undefined) throw new RangeError(`accuracyVsBytes: no byte count for round ${p.round}`);
    return { round: p.round, bytes: b, accuracy: p.value };
  });
}

/** 'pruned' once any member of any round held a mask with pruned parameters. */
export function pruningOf(mine: readonly RoundReport[]): 'dense' | 'pruned' {
  return mine.some((r) => r.members.some((m) => m.sparsity > 0)) ? 'pruned' : 'dense';
}

/** Each client at an algorithm's last evaluation: the distributions' data. */
export interface FinalClients {
  readonly round: number;
  readonly sampled: readonly { readonly client: number; readonly test: number; readonly train: number; readonly gap: number }[];
  /** Clients never sampled: their test accuracy is of the initial model, shown apart from the distribution. */
  readonly neverSampled: readonly { readonly client: number; readonly test: number }[];
  /** Over the sampled clients. */
  readonly accuracy: FiveNumbers;
  readonly gap: FiveNumbers;
}

export function finalClients(mine: readonly RoundReport[]): FinalClients | null {
  const last = mine.findLast((r) => r.evaluation !== null);
  if (last?.evaluation == null) return null;
  const sampled = sampledClients(last.evaluation.clients).map((c) => ({
    client: c.client,
    test: c.test.accuracy,
    train: c.train.accuracy,
    gap: c.train.accuracy - c.test.accuracy,
  }));
  return {
    round: last.round,
    sampled,
    neverSampled: last.evaluation.clients.filter((c) => !c.sampled).map((c) => ({ client: c.client, test: c.test.accuracy })),
    accuracy: fiveNumbers(sampled.map((c) => c.test)),
    gap: fiveNumbers(sampled.map((c) => c.gap)),
  };
}

/** When the members' received accuracy (round mean) first reached the threshold. */
export type Crossing =
  /** bytes: everything moved before that round, plus that round's download (what it took to deliver the model). */
  | { readonly kind: 'reached'; readonly round: number; readonly bytes: number; readonly accuracy: number }
  | { readonly kind: 'not-reached'; readonly best: number }
  /** The algorithm receives nothing (local). */
  | { readonly kind: 'not-measured' };

export function firstCrossing(mine: readonly RoundReport[], threshold: number): Crossing {
  let before = 0;
  let best: number | null = null;
  for (const r of mine) {
    if (r.receivedAccuracy !== null) {
      const accuracy = r.receivedAccuracy.mean;
      if (accuracy >= threshold) return { kind: 'reached', round: r.round, bytes: before + r.bytes.down, accuracy };
      best = best === null ? accuracy : Math.max(best, accuracy);
    }
    before += r.bytes.up + r.bytes.down;
  }
  return best === null ? { kind: 'not-measured' } : { kind: 'not-reached', best };
}

/**
 * The threshold when none is given: 90% of the best round-mean received
 * accuracy any algorithm reached, floored to a whole percent, so at least one
 * algorithm reaches it and the table compares how fast the others get there
 * (if at all). Null when no algorithm receives a model.
 */
export function defaultThreshold(rounds: readonly RoundReport[]): number | null {
  const best = Math.max(-Infinity, ...rounds.flatMap((r) => (r.receivedAccuracy === null ? [] : [r.receivedAccuracy.mean])));
  return best === -Infinity ? null : Math.floor(best * 0.9 * 100) / 100;
}

/**
 * The top of a percentage axis that fits values in [0, 1]: a little above the
 * largest, rounded up to a step that suits it (1% below 5%, 5% below 50%, else
 * 10%), never above 100%. With nothing above 0, 10%.
 */
export function percentAxisMax(values: readonly number[]): number {
  const top = Math.max(0, ...values);
  if (top <= 0) return 0.1;
  const step = top < 0.05 ? 0.01 : top < 0.5 ? 0.05 : 0.1;
  // Whole steps in integer arithmetic: 0.35 / 0.05 must not round up to 8 steps.
  const steps = Math.ceil(Math.round(((top * 1.05) / step) * 1e6) / 1e6);
  return Math.min(1, Math.round(steps * step * 1000) / 1000);
}
