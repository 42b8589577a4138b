/**
 * The run's numbers as CSV, in long ("tidy") format:
 *
 *   series.csv   algorithm,round,series,value   every per-round series (SERIES_DESCRIPTIONS)
 *   clients.csv  algorithm,round,client,measure,value   every client's own figures (CLIENT_MEASURES)
 *
 * Long rather than a file per series or one wide table: the series are sparse
 * (evaluation rounds only, federated or channel-pruning algorithms only), so a
 * wide table would be mostly empty cells and a file per series some thirty
 * files; new algorithms and series add rows, never columns; and one pivot
 * (pandas `pivot_table`, R `pivot_wider`, a spreadsheet's pivot table) gives
 * any wide shape. A row exists only where a value was measured.
 */
import type { RoundReport } from './report.js';
import type { SeriesTable } from './report-series.js';

/** What each clients.csv measure is. */
export const CLIENT_MEASURES = {
  received_accuracy: 'member: the model it received this round, before training, on its test data',
  received_loss: 'member: the same, test loss',
  trained_accuracy: "member: its personalized model after this round's training, test accuracy",
  trained_loss: 'member: the same, test loss',
  sparsity: "member: its mask's pruned share of all parameters after training",
  sampled: 'evaluation: 1 if sampled in this or an earlier round, else 0 (its model is then untrained)',
  test_accuracy: 'evaluation: its personalized model on its test data',
  test_loss: 'evaluation: the same, test loss',
  train_accuracy: 'evaluation: the same model on its own training data',
  train_loss: 'evaluation: the same, training loss',
  global_accuracy: 'evaluation, algorithms with a global model: it on this client’s test data',
  global_loss: 'evaluation: the same, test loss',
} as const;
export type ClientMeasure = keyof typeof CLIENT_MEASURES;

/** One CSV field, quoted when it holds a comma, a quote or a line break. */
export function csvField(value: string | number): string {
  const s = String(value);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function csv(header: readonly string[], rows: Iterable<readonly (string | number)[]>): string {
  const lines = [header.join(',')];
  for (const row of rows) lines.push(row.map(csvField).join(','));
  return `${lines.join('\n')}\n`;
}

/** series.csv: rows by algorithm, then series in table order, then round. */
export function seriesCsv(table: SeriesTable): string {
  function* rows(): Generator<(string | number)[]> {
    for (const [algorithm, series] of Object.entries(table)) {
      for (const [name, points] of Object.entries(series)) {
        for (const p of points ?? []) yield [algorithm, p.round, name, p.value];
      }
    }
  }
  return csv(['algorithm', 'round', 'series', 'value'], rows());
}

/** clients.csv: each round's members, then (evaluation rounds) every client; in rounds.jsonl order. */
export function clientsCsv(rounds: readonly RoundReport[]): string {
  function* rows(): Generator<(string | number)[]> {
    for (const r of rounds) {
      const row = (client: number, measure: ClientMeasure, value: number): (string | number)[] => [
        r.algorithm,
        r.round,
        client,
        measure,
        value,
      ];
      for (const m of r.members) {
        if (m.received !== null) {
          yield row(m.client, 'received_accuracy', m.received.accuracy);
          yield row(m.client, 'received_loss', m.received.loss);
        }
        yield row(m.client, 'trained_accuracy', m.personalized.accuracy);
        yield row(m.client, 'trained_loss', m.personalized.loss);
        yield row(m.client, 'sparsity', m.sparsity);
      }
      for (const c of r.evaluation?.clients ?? []) {
        yield row(c.client, 'sampled', c.sampled ? 1 : 0);
        yield row(c.client, 'test_accuracy', c.test.accuracy);
        yield row(c.client, 'test_loss', c.test.loss);
        if (c.sampled) {
          yield row(c.client, 'train_accuracy', c.train.accuracy);
          yield row(c.client, 'train_loss', c.train.loss);
        }
        if (c.global !== null) {
          yield row(c.client, 'global_accuracy', c.global.accuracy);
          yield row(c.client, 'global_loss', c.global.loss);
        }
      }
    }
  }
  return csv(['algorithm', 'round', 'client', 'measure', 'value'], rows());
}
