import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import vm from 'node:vm';
import { afterAll, describe, expect, it } from 'vitest';
import { PRESETS, experimentOf, recordedConfig, type AlgorithmName } from '../../sim/presets.js';
import {
  REPORT_DATA_ELEMENT_ID,
  RunWriter,
  accuracyStats,
  defaultRunFolder,
  formatSummaryTable,
  summarize,
  type RoundReport,
} from '../../sim/report.js';

const dir = mkdtempSync(path.join(tmpdir(), 'subfed-report-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function round(algorithm: AlgorithmName, r: number, evaluated: boolean): RoundReport {
  const hy = algorithm === 'subfedavg-hy';
  const fed = algorithm === 'fedavg';
  const local = algorithm === 'local';
  return {
    algorithm,
    round: r,
    members: [r, r + 1],
    membersAccuracy: accuracyStats([0.5 + r / 100, 0.6 + r / 100]),
    receivedAccuracy: local ? null : accuracyStats([0.3 + r / 100]),
    allClientsAccuracy: evaluated ? accuracyStats([0.4 + r / 100, 0.7, 0.55]) : null,
    globalAccuracy: fed && evaluated ? accuracyStats([0.2 + r / 100]) : null,
    bytes: local ? { up: 0, down: 0, denseUp: 0, denseDown: 0 } : { up: 1000 * r, down: 2000, denseUp: 4000, denseDown: 4000 },
    meanSparsity: fed || local ? 0 : 0.05 * r,
    receivedSparsity: fed || local ? 0 : 0.05 * (r - 1),
    channelsKept: hy ? [10 - r, 20 - r] : null,
    wallSeconds: 0.5,
  };
}

describe('report writer', () => {
  const config = { ...PRESETS.quick, rounds: 3, algorithms: ['subfedavg-hy', 'fedavg', 'local'] as AlgorithmName[] };
  const folder = path.join(dir, 'run');
  const writer = new RunWriter(folder, config);
  const reports = config.algorithms.flatMap((a) => [1, 2, 3].map((r) => round(a, r, r === 3)));
  for (const r of reports) writer.appendRound(r);
  const summaries = writer.finish(['accuracy gate: </script><b>validation</b> split']);
  const html = readFileSync(path.join(folder, 'report.html'), 'utf8');

  it('writes config.json and one parseable rounds.jsonl line per round', () => {
    // As an experiment file (`subfed sim --config` runs it again): the run's seed as a one-seed list.
    expect(JSON.parse(readFileSync(path.join(folder, 'config.json'), 'utf8'))).toEqual(recordedConfig(experimentOf(config)));
    expect(JSON.parse(readFileSync(path.join(folder, 'config.json'), 'utf8'))).toMatchObject({ seeds: [config.seed] });
    const lines = readFileSync(path.join(folder, 'rounds.jsonl'), 'utf8').trimEnd().split('\n');
    expect(lines).toHaveLength(9);
    expect(lines.map((l) => JSON.parse(l) as unknown)).toEqual(reports);
  });

  it('writes a summary per algorithm with totals and the last evaluation', () => {
    const summary = JSON.parse(readFileSync(path.join(folder, 'summary.json'), 'utf8')) as { summaries: unknown };
    expect(summary.summaries).toEqual(summaries);
    const hy = summaries.find((s) => s.algorithm === 'subfedavg-hy')!;
    expect(hy.uploadBytes).toBe(6000);
    expect(hy.downloadBytes).toBe(6000);
    expect(hy.denseUploadBytes + hy.denseDownloadBytes).toBe(24000);
    expect(hy.savings).toBeCloseTo(0.5);
    expect(hy.personalizedAcc).toBeCloseTo((0.43 + 0.7 + 0.55) / 3);
    expect(hy.receivedAccLast10).toBeCloseTo(0.32);
    expect(hy.globalAcc).toBeNull();
    expect(hy.meanSparsity).toBeCloseTo(0.1);
    expect(hy.meanReceivedSparsity).toBeCloseTo(0.05);
    expect(hy.finalSparsity).toBeCloseTo(0.15);
    expect(hy.interrupted).toBe(false);
    const fed = summaries.find((s) => s.algorithm === 'fedavg')!;
    expect(fed.globalAcc).toBeCloseTo(0.23);
    const local = summaries.find((s) => s.algorithm === 'local')!;
    expect(local.savings).toBeNull();
    expect(local.receivedAccLast10).toBeNull();
  });

  it('marks a run stopped before its last round', () => {
    expect(summarize('fedavg', reports.slice(3, 5), 3).interrupted).toBe(true);
  });

  it('renders a self-contained HTML page whose scripts are well formed', () => {
    expect(html.startsWith('<!DOCTYPE html>')).toBe(true);
    expect(html.trimEnd().endsWith('</html>')).toBe(true);
    expect(html).not.toMatch(/<script[^>]+src=/);
    // The note's "</script>" must not close a script element early.
    expect(html.match(/<script[\s>]/g)).toHaveLength(3);
    expect(html.match(/<\/script>/g)).toHaveLength(3);
    expect(html).toContain('&#60;/script&#62;&#60;b&#62;validation');
    for (const id of ['accuracy', 'bytes', 'sparsity', 'channels']) expect(html).toContain(`<canvas id="${id}">`);
    const scripts = [...html.matchAll(/<script(?:[^>]*)>([\s\S]*?)<\/script>/g)].map((m) => m[1]);
    expect(scripts[1].length).toBeGreaterThan(100_000); // chart.js inlined
    for (const code of scripts.slice(1)) expect(() => new vm.Script(code)).not.toThrow();
  });

  it('embeds the charts data and draws every chart from it', () => {
    const json = new RegExp(`<script id="${REPORT_DATA_ELEMENT_ID}" type="application/json">([\\s\\S]*?)</script>`).exec(
      html,
    )![1];
    const data = JSON.parse(json) as { rounds: unknown; summaries: unknown };
    expect(data.rounds).toEqual(reports);
    expect(data.summaries).toEqual(summaries);

    // Run the page's own chart script against a stub Chart to see what it plots.
    const charts: Record<string, { datasets: Array<{ label: string; data: Array<number | null> }> }> = {};
    const elements: Record<string, { textContent?: string | undefined; id: string; remove(): void }> = {};
    const document = {
      getElementById: (id: string) =>
        (elements[id] ??= { id, textContent: id === REPORT_DATA_ELEMENT_ID ? json : undefined, remove() {} }),
    };
    class Chart {
      constructor(el: { id: string }, spec: { data: { datasets: Array<{ label: string; data: Array<number | null> }> } }) {
        charts[el.id] = spec.data;
      }
    }
    const chartScript = [...html.matchAll(/<script>([\s\S]*?)<\/script>/g)].at(-1)![1];
    vm.runInNewContext(chartScript, { document, Chart });

    expect(Object.keys(charts).sort()).toEqual(['accuracy', 'bytes', 'channels', 'sparsity']);
    const byLabel = (id: string, label: string) => charts[id].datasets.find((d) => d.label === label)?.data;
    expect(byLabel('accuracy', 'fedavg global')).toEqual([null, null, 23]);
    expect(byLabel('accuracy', 'subfedavg-hy received (before training)')!.map((v) => Math.round(v!))).toEqual([31, 32, 33]);
    expect(byLabel('accuracy', 'local received (before training)')).toBeUndefined();
    expect(byLabel('bytes', 'fedavg bytes moved')!.map((v) => Math.round(v! * 1048576))).toEqual([3000, 7000, 12000]);
    expect(byLabel('bytes', 'fedavg same traffic as dense f32')!.map((v) => Math.round(v! * 1048576))).toEqual([
      8000, 16000, 24000,
    ]);
    expect(byLabel('sparsity', 'subfedavg-hy')!.map((v) => Math.round(v!))).toEqual([5, 10, 15]);
    expect(byLabel('channels', 'subfedavg-hy BN layer 2')).toEqual([19, 18, 17]);
  });

  it('formats the terminal table with one row per algorithm', () => {
    const table = formatSummaryTable(summaries).split('\n');
    expect(table[0]).toMatch(
      /^algorithm\s+personalized acc\s+received acc \(last 10\)\s+global acc\s+up\s+down\s+dense up\+down\s+savings\s+final sparsity\s+s\/round$/,
    );
    expect(table).toHaveLength(2 + 3);
    expect(table[2]).toMatch(
      /^subfedavg-hy\s+56\.0%\s+32\.0%\s+-\s+5\.86 KiB\s+5\.86 KiB\s+23\.4 KiB\s+50\.0%\s+15\.0%\s+0\.50$/,
    );
  });

  it('names the default run folder by time and preset', () => {
    expect(defaultRunFolder({ preset: 'paper' }, new Date('2026-01-02T03:04:05.678Z'))).toBe(
      path.join('runs', '2026-01-02T03-04-05Z-paper'),
    );
  });
});
