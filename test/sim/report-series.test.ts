import { describe, expect, it } from 'vitest';
import { evaluationOf } from '../../sim/report.js';
import {
  accuracyVsBytes,
  algorithmSeries,
  defaultThreshold,
  finalClients,
  firstCrossing,
  percentAxisMax,
  pruningOf,
  roundsOf,
  seriesTable,
  type SeriesPoint,
} from '../../sim/report-series.js';
import { fixtureRound, fixtureRounds } from './report-fixtures.js';

const LAYERS = [
  { name: 'conv1', width: 10 },
  { name: 'conv2', width: 20 },
];
const hyRounds = [1, 2, 3].map((r) => fixtureRound('subfedavg-hy', r));
const hy = algorithmSeries(hyRounds, LAYERS);
const fed = algorithmSeries(
  [1, 2, 3].map((r) => fixtureRound('fedavg', r)),
  null,
);
const local = algorithmSeries(
  [1, 2, 3].map((r) => fixtureRound('local', r)),
  null,
);
/** A series' values by round, rounded to 9 places (sums of decimal fractions are not exact). */
const byRound = (points: readonly SeriesPoint[] | undefined) =>
  Object.fromEntries((points ?? []).map((p) => [p.round, Math.round(p.value * 1e9) / 1e9]));

describe('per-round series', () => {
  it('averages the received model over members, every round, and keeps its spread', () => {
    expect(byRound(hy.received_accuracy)).toEqual({ 1: 0.405, 2: 0.505, 3: 0.605 });
    expect(byRound(hy.received_accuracy_min)).toEqual({ 1: 0.4, 2: 0.5, 3: 0.6 });
    expect(byRound(hy.received_accuracy_max)).toEqual({ 1: 0.41, 2: 0.51, 3: 0.61 });
    expect(byRound(hy.received_loss)).toEqual({ 1: 1.595, 2: 1.495, 3: 1.395 });
    expect(byRound(hy.members_accuracy)).toEqual({ 1: 0.605, 2: 0.715, 3: 0.81 });
  });

  it('leaves out what an algorithm never measures: received for local, global for all but fedavg', () => {
    expect(local.received_accuracy).toBeUndefined();
    expect(hy.global_accuracy).toBeUndefined();
    expect(byRound(fed.global_accuracy)).toEqual({ 2: 0.22, 3: 0.23 });
    expect(byRound(fed.global_loss)).toEqual({ 2: 2, 3: 2 });
  });

  it('measures personalized accuracy over the sampled clients only, and counts the never-sampled apart', () => {
    // Round 2: clients 0, 1, 2 sampled (0.82, 0.72, 0.92); client 3 never (0.12), not averaged in.
    expect(byRound(hy.personalized_accuracy)).toEqual({ 2: 0.82, 3: 0.83 });
    expect(byRound(hy.personalized_accuracy_min)).toEqual({ 2: 0.72, 3: 0.73 });
    expect(byRound(hy.personalized_accuracy_q1)).toEqual({ 2: 0.77, 3: 0.78 });
    expect(byRound(hy.personalized_accuracy_median)).toEqual({ 2: 0.82, 3: 0.83 });
    expect(byRound(hy.personalized_accuracy_q3)).toEqual({ 2: 0.87, 3: 0.88 });
    expect(byRound(hy.personalized_accuracy_max)).toEqual({ 2: 0.92, 3: 0.93 });
    expect(byRound(hy.personalized_loss)).toEqual({ 2: 0.6, 3: 0.6 });
    expect(byRound(hy.sampled_clients)).toEqual({ 2: 3, 3: 3 });
    expect(byRound(hy.never_sampled)).toEqual({ 2: 1, 3: 1 });
    expect(byRound(hy.never_sampled_accuracy)).toEqual({ 2: 0.12, 3: 0.13 });
  });

  it('gives the overfitting gap: train minus test accuracy of the sampled clients', () => {
    expect(byRound(hy.train_accuracy)).toEqual({ 2: 0.84, 3: 0.85 });
    expect(byRound(hy.overfitting_gap)).toEqual({ 2: 0.02, 3: 0.02 });
    expect(byRound(fed.overfitting_gap)).toEqual({ 2: 0.06, 3: 0.06 });
  });

  it("follows every sampled client's latest mask for sparsity and channels", () => {
    expect(byRound(hy.sparsity)).toEqual({ 1: 0.105, 2: 0.215, 3: 0.31 });
    // Round 2: client 0 as round 1 left it (0.10), clients 1 and 2 after round 2 (0.21, 0.22).
    expect(byRound(hy.sampled_sparsity)).toEqual({ 1: 0.105, 2: 0.176666667, 3: 0.276666667 });
    // Members' mean channels in round 1: [9, 17.5] of widths 10 + 20.
    expect(byRound(hy.channels_kept_fraction)).toEqual({ 1: 0.883333333, 2: 0.75, 3: 0.666666667 });
    // Round 2's latest masks: [9, 18], [8, 15], [8, 14].
    expect(byRound(hy.sampled_channels_kept_fraction)[2]).toBe(0.8);
    expect(byRound(hy['sampled_channels_kept_fraction:conv1'])[2]).toBe(0.833333333);
    expect(byRound(hy['sampled_channels_kept_fraction:conv2'])[2]).toBe(0.783333333);
    expect(fed.sampled_channels_kept_fraction).toBeUndefined();
    expect(byRound(fed.sampled_sparsity)).toEqual({ 1: 0, 2: 0, 3: 0 });
  });

  it('refuses channel counts that do not match the layers', () => {
    expect(() => algorithmSeries(hyRounds, LAYERS.slice(0, 1))).toThrow(
      /subfedavg-hy round 1: 2 channel counts for 1 channel layers/,
    );
  });

  it('accumulates bytes through each round', () => {
    expect(byRound(hy.cumulative_bytes)).toEqual({ 1: 3000, 2: 7000, 3: 12000 });
    expect(byRound(hy.cumulative_dense_bytes)).toEqual({ 1: 8000, 2: 16000, 3: 24000 });
    expect(byRound(local.cumulative_bytes)).toEqual({ 1: 0, 2: 0, 3: 0 });
  });

  it('puts personalized accuracy against the bytes moved through its round', () => {
    expect(accuracyVsBytes(hy).map((p) => ({ ...p, accuracy: Math.round(p.accuracy * 1e9) / 1e9 }))).toEqual([
      { round: 2, bytes: 7000, accuracy: 0.82 },
      { round: 3, bytes: 12000, accuracy: 0.83 },
    ]);
  });

  it('builds one table for every algorithm, in order of first appearance', () => {
    const table = seriesTable(fixtureRounds(), (a) => (a === 'subfedavg-hy' ? LAYERS : null));
    expect(Object.keys(table)).toEqual(['subfedavg-hy', 'fedavg', 'local']);
    expect(table['subfedavg-hy']).toEqual(hy);
    expect(roundsOf(fixtureRounds(), 'fedavg').map((r) => r.round)).toEqual([1, 2, 3]);
  });
});

describe('never-sampled accounting', () => {
  const test = (accuracy: number) => ({ accuracy, loss: 1 });
  it('takes the headline over sampled clients and counts the others', () => {
    const e = evaluationOf(
      [
        { client: 2, test: test(0.9), train: test(1) },
        { client: 0, test: test(0.7), train: test(1) },
        { client: 1, test: test(0.1), train: test(0.1) },
      ],
      null,
      new Set([0, 2]),
    );
    expect(e.clients.map((c) => [c.client, c.sampled])).toEqual([
      [0, true],
      [1, false],
      [2, true],
    ]);
    expect(e.personalized).toEqual({ mean: 0.8, min: 0.7, max: 0.9, count: 2 });
    expect(e.neverSampled).toBe(1);
    expect(e.global).toBeNull();
  });

  it('measures the global model over every client, sampled or not', () => {
    const e = evaluationOf(
      [0, 1].map((client) => ({ client, test: test(0.5), train: test(0.5) })),
      [
        { client: 1, test: test(0.4) },
        { client: 0, test: test(0.2) },
      ],
      new Set([0]),
    );
    expect(e.clients.map((c) => c.global?.accuracy)).toEqual([0.2, 0.4]);
    expect(e.global?.count).toBe(2);
    expect(e.global?.mean).toBeCloseTo(0.3, 12);
  });

  it('refuses a global model measured on some clients only, and an evaluation before anyone trained', () => {
    const personal = [0, 1].map((client) => ({ client, test: test(0.5), train: test(0.5) }));
    expect(() => evaluationOf(personal, [{ client: 0, test: test(0.2) }], new Set([0]))).toThrow(
      /global model was measured on 1 of 2 clients/,
    );
    expect(() => evaluationOf(personal, null, new Set())).toThrow(/no client has been sampled yet/);
  });

  it('keeps the last evaluation of each client for the distributions, never-sampled apart', () => {
    const f = finalClients(hyRounds)!;
    expect(f.round).toBe(3);
    expect(f.sampled.map((c) => c.client)).toEqual([0, 1, 2]);
    expect(f.neverSampled.map((c) => c.client)).toEqual([3]);
    expect(f.neverSampled[0].test).toBeCloseTo(0.13, 12);
    expect(f.accuracy.median).toBeCloseTo(0.83, 12);
    expect(f.gap.min).toBeCloseTo(0.02, 12);
    expect(f.gap.max).toBeCloseTo(0.02, 12);
    expect(finalClients([fixtureRound('fedavg', 1)])).toBeNull();
  });

  it('calls an algorithm pruned once a member held a pruned mask', () => {
    expect(pruningOf(hyRounds)).toBe('pruned');
    expect(pruningOf([1, 2, 3].map((r) => fixtureRound('fedavg', r)))).toBe('dense');
  });
});

describe('rounds and bytes to a threshold', () => {
  it('finds the first round whose received accuracy reaches it, counting bytes up to its download', () => {
    // Round 1 moved 3000 bytes; round 2's download is 2000: 5000 bytes delivered the 0.505 model.
    const c = firstCrossing(hyRounds, 0.5);
    expect(c.kind).toBe('reached');
    if (c.kind !== 'reached') return;
    expect(c.round).toBe(2);
    expect(c.bytes).toBe(5000);
    expect(c.accuracy).toBeCloseTo(0.505, 12);
    expect(firstCrossing(hyRounds, 0.4)).toMatchObject({ kind: 'reached', round: 1, bytes: 2000 });
  });

  it('says when it is not reached (with the best) and when nothing is received', () => {
    const c = firstCrossing(hyRounds, 0.9);
    expect(c.kind).toBe('not-reached');
    if (c.kind === 'not-reached') expect(c.best).toBeCloseTo(0.605, 12);
    expect(
      firstCrossing(
        [1, 2, 3].map((r) => fixtureRound('local', r)),
        0.1,
      ),
    ).toEqual({ kind: 'not-measured' });
  });

  it('defaults to 90% of the best received accuracy, in whole percent, or none when nothing is received', () => {
    expect(defaultThreshold(fixtureRounds())).toBe(0.54);
    expect(defaultThreshold([1, 2].map((r) => fixtureRound('local', r)))).toBeNull();
  });
});

describe('axes and config table', () => {
  it('fits a percentage axis to the data', () => {
    expect(percentAxisMax([0.1, 0.3])).toBe(0.35);
    expect(percentAxisMax([0.2857])).toBe(0.3);
    expect(percentAxisMax([0.02])).toBe(0.03);
    expect(percentAxisMax([0.9])).toBe(1);
    expect(percentAxisMax([1])).toBe(1);
    expect(percentAxisMax([0, 0])).toBe(0.1);
    expect(percentAxisMax([])).toBe(0.1);
  });
});
