import { parse } from 'csv-parse/sync';
import { describe, expect, it } from 'vitest';
import { CLIENT_MEASURES, clientsCsv, csvField, seriesCsv } from '../../sim/report-csv.js';
import { seriesTable } from '../../sim/report-series.js';
import { fixtureRound, fixtureRounds } from './report-fixtures.js';

const LAYERS = [
  { name: 'conv1', width: 10 },
  { name: 'conv,2 "b"', width: 20 },
];
const rows = (text: string) => parse<Record<string, string>>(text, { columns: true });

describe('CSV export', () => {
  it('quotes only fields that need it', () => {
    expect(csvField('subfedavg-un')).toBe('subfedavg-un');
    expect(csvField(0.25)).toBe('0.25');
    expect(csvField('a,b')).toBe('"a,b"');
    expect(csvField('say "hi"')).toBe('"say ""hi"""');
    expect(csvField('two\nlines')).toBe('"two\nlines"');
  });

  it('writes every point of every series once, in long format, and reads back to the same numbers', () => {
    const table = seriesTable(fixtureRounds(), (a) => (a === 'subfedavg-hy' ? LAYERS : null));
    const text = seriesCsv(table);
    expect(text.split('\n')[0]).toBe('algorithm,round,series,value');
    const parsed = rows(text);
    const expected = Object.entries(table).flatMap(([algorithm, series]) =>
      Object.entries(series).flatMap(([name, points]) =>
        (points ?? []).map((p) => ({ algorithm, round: String(p.round), series: name, value: String(p.value) })),
      ),
    );
    expect(parsed).toEqual(expected);
    // Evaluation-only and federated-only series have rows where measured, and no empty cells.
    expect(parsed.filter((r) => r.algorithm === 'fedavg' && r.series === 'personalized_accuracy').map((r) => r.round)).toEqual([
      '2',
      '3',
    ]);
    expect(parsed.some((r) => r.algorithm === 'local' && r.series === 'received_accuracy')).toBe(false);
    expect(parsed.every((r) => r.value !== '')).toBe(true);
    // A layer name with a comma and quotes survives the round trip.
    expect(parsed.some((r) => r.series === 'sampled_channels_kept_fraction:conv,2 "b"')).toBe(true);
  });

  it("writes each member's and each evaluated client's figures", () => {
    const parsed = rows(clientsCsv([fixtureRound('fedavg', 2), fixtureRound('local', 1)]));
    const of = (algorithm: string, client: string) =>
      Object.fromEntries(
        parsed.filter((r) => r.algorithm === algorithm && r.client === client).map((r) => [r.measure, Number(r.value)]),
      );
    // fedavg round 2: client 1 is a member and evaluated; client 3 only evaluated, never sampled.
    const one = of('fedavg', '1');
    const expected: Record<string, number> = {
      received_accuracy: 0.5,
      received_loss: 1.5,
      trained_accuracy: 0.71,
      trained_loss: 1.1,
      sparsity: 0,
      sampled: 1,
      test_accuracy: 0.72,
      test_loss: 0.6,
      train_accuracy: 0.78,
      train_loss: 0.5,
      global_accuracy: 0.22,
      global_loss: 2,
    };
    expect(Object.keys(one).sort()).toEqual(Object.keys(expected).sort());
    for (const [measure, value] of Object.entries(expected)) expect(one[measure]).toBeCloseTo(value, 12);
    expect(of('fedavg', '3').sampled).toBe(0);
    expect(of('fedavg', '3').test_accuracy).toBeCloseTo(0.12, 12);
    expect(of('fedavg', '3').received_accuracy).toBeUndefined();
    // local receives nothing and round 1 is no evaluation round.
    expect(Object.keys(of('local', '0')).sort()).toEqual(['sparsity', 'trained_accuracy', 'trained_loss']);
    expect(new Set(parsed.map((r) => r.measure)).size).toBeLessThanOrEqual(Object.keys(CLIENT_MEASURES).length);
  });
});
