import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import vm from 'node:vm';
import { afterAll, describe, expect, it } from 'vitest';
import { PRESETS, experimentOf, recordedConfig, type AlgorithmName } from '../../sim/presets.js';
import { defaultRunFolder, formatSummaryTable, summarize } from '../../sim/report.js';
import { PER_ALGORITHM_CHARTS, REPORT_DATA_ELEMENT_ID, channelLayersOf, type ReportData } from '../../sim/report-html.js';
import { RunWriter } from '../../sim/run-folder.js';
import { FIXTURE_ALGORITHMS, fixtureRounds } from './report-fixtures.js';

const dir = mkdtempSync(path.join(tmpdir(), 'subfed-report-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface StubDataset {
  label: string;
  aux?: boolean;
  algorithm: string;
  data: Array<{ x: number; y: number | null }>;
}
interface StubChart {
  datasets: StubDataset[];
  options: {
    scales: { y: { max?: number } };
    plugins: { legend: { labels: { filter: (item: unknown, data: unknown) => boolean } } };
  };
}

/** Runs the page's own chart script against a stub Chart and records what each chart would plot. */
function plotted(html: string): { charts: Record<string, StubChart>; hidden: string[] } {
  const json = new RegExp(`<script id="${REPORT_DATA_ELEMENT_ID}" type="application/json">([\\s\\S]*?)</script>`).exec(html)![1];
  const charts: Record<string, StubChart> = {};
  const hidden: string[] = [];
  const elements: Record<string, unknown> = {};
  const element = (id: string) =>
    (elements[id] ??= {
      id,
      textContent: id === REPORT_DATA_ELEMENT_ID ? json : undefined,
      remove() {},
      closest: () => ({
        querySelector: () => ({
          set hidden(v: boolean) {
            if (!v) hidden.push(id);
          },
        }),
      }),
    });
  class Chart {
    static defaults = { font: {} };
    constructor(el: { id: string }, spec: { data: { datasets: StubDataset[] }; options: StubChart['options'] }) {
      charts[el.id] = { datasets: spec.data.datasets, options: spec.options };
    }
  }
  const chartScript = [...html.matchAll(/<script>([\s\S]*?)<\/script>/g)].at(-1)![1];
  vm.runInNewContext(chartScript, { document: { getElementById: element }, Chart });
  return { charts, hidden };
}

const legendOf = (chart: StubChart): string[] => {
  const filter = chart.options.plugins.legend.labels.filter;
  return chart.datasets.filter((_, i) => filter({ datasetIndex: i }, { datasets: chart.datasets })).map((d) => d.label);
};

describe('report writer', () => {
  const config = { ...PRESETS.quick, clients: 4, rounds: 3, evalEvery: 2, algorithms: FIXTURE_ALGORITHMS };
  const folder = path.join(dir, 'run');
  const writer = new RunWriter(folder, config);
  const reports = fixtureRounds();
  for (const r of reports) writer.appendRound(r);
  const summaries = writer.finish(['accuracy gate: </script><b>validation</b> split']);
  const html = readFileSync(path.join(folder, 'report.html'), 'utf8');
  const data = JSON.parse(
    new RegExp(`<script id="${REPORT_DATA_ELEMENT_ID}" type="application/json">([\\s\\S]*?)</script>`).exec(html)![1],
  ) as ReportData;

  it('writes config.json, one parseable rounds.jsonl line per round, and the CSV files', () => {
    // As an experiment file (`subfed sim --config` runs it again): the run's seed as a one-seed list.
    expect(JSON.parse(readFileSync(path.join(folder, 'config.json'), 'utf8'))).toEqual(recordedConfig(experimentOf(config)));
    expect(JSON.parse(readFileSync(path.join(folder, 'config.json'), 'utf8'))).toMatchObject({ seeds: [config.seed] });
    const lines = readFileSync(path.join(folder, 'rounds.jsonl'), 'utf8').trimEnd().split('\n');
    expect(lines).toHaveLength(9);
    expect(lines.map((l) => JSON.parse(l) as unknown)).toEqual(reports);
    expect(readFileSync(path.join(folder, 'series.csv'), 'utf8').split('\n')[0]).toBe('algorithm,round,series,value');
    expect(readFileSync(path.join(folder, 'clients.csv'), 'utf8').split('\n')[0]).toBe('algorithm,round,client,measure,value');
  });

  it('summarizes over the sampled clients, with the never-sampled counted apart', () => {
    const summary = JSON.parse(readFileSync(path.join(folder, 'summary.json'), 'utf8')) as { summaries: unknown };
    expect(summary.summaries).toEqual(summaries);
    const hy = summaries.find((s) => s.algorithm === 'subfedavg-hy')!;
    expect(hy.uploadBytes).toBe(6000);
    expect(hy.downloadBytes).toBe(6000);
    expect(hy.denseUploadBytes + hy.denseDownloadBytes).toBe(24000);
    expect(hy.savings).toBeCloseTo(0.5);
    // Round 3: clients 0, 1, 2 (0.83, 0.73, 0.93); client 3 (0.13, never sampled) is not averaged in.
    expect(hy.personalizedAcc).toBeCloseTo(0.83, 12);
    expect(hy.neverSampled).toBe(1);
    expect(hy.overfittingGap).toBeCloseTo(0.02, 12);
    expect(hy.receivedAccLast10).toBeCloseTo(0.505, 12);
    expect(hy.globalAcc).toBeNull();
    expect(hy.meanSparsity).toBeCloseTo((0.105 + 0.215 + 0.31) / 3, 12);
    expect(hy.finalSparsity).toBeCloseTo(0.31, 12);
    expect(hy.interrupted).toBe(false);
    const fed = summaries.find((s) => s.algorithm === 'fedavg')!;
    expect(fed.globalAcc).toBeCloseTo(0.23, 12);
    expect(fed.overfittingGap).toBeCloseTo(0.06, 12);
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
    expect(html).not.toMatch(/https?:\/\/[^"'\s]*\.js/);
    // The note's "</script>" must not close a script element early.
    expect(html.match(/<script[\s>]/g)).toHaveLength(3);
    expect(html.match(/<\/script>/g)).toHaveLength(3);
    expect(html).toContain('&#60;/script&#62;&#60;b&#62;validation');
    for (const id of PER_ALGORITHM_CHARTS) expect(html).toContain(`<canvas id="${id}">`);
    const scripts = [...html.matchAll(/<script(?:[^>]*)>([\s\S]*?)<\/script>/g)].map((m) => m[1]);
    expect(scripts[1].length).toBeGreaterThan(100_000); // chart.js inlined
    for (const code of scripts.slice(1)) expect(() => new vm.Script(code)).not.toThrow();
  });

  it('embeds the rounds, the summaries and the computed view', () => {
    expect(data.rounds).toEqual(reports);
    expect(data.summaries).toEqual(summaries);
    expect(data.view.algorithms.map((a) => [a.name, a.pruning])).toEqual([
      ['subfedavg-hy', 'pruned'],
      ['fedavg', 'dense'],
      ['local', 'dense'],
    ]);
    expect(new Set(data.view.algorithms.map((a) => a.color)).size).toBe(3);
    expect(data.view.threshold).toEqual({ value: 0.54, given: false });
    expect(data.view.sparsityMax).toBe(0.3);
    expect(data.view.algorithms[0].channelLayers!.map((l) => [l.name, l.width])).toEqual(
      channelLayersOf(config, 'subfedavg-hy').map((l) => [l.name, l.width]),
    );
  });

  it('draws one legend entry per algorithm that has the series, on every per-question chart', () => {
    const { charts, hidden } = plotted(html);
    expect(hidden).toEqual([]);
    expect(Object.keys(charts).sort()).toEqual([...PER_ALGORITHM_CHARTS].sort());
    const all = ['subfedavg-hy', 'fedavg', 'local'];
    const expected: Record<(typeof PER_ALGORITHM_CHARTS)[number], string[]> = {
      'received-accuracy': ['subfedavg-hy', 'fedavg'],
      'personalized-accuracy': all,
      loss: all,
      'accuracy-bytes': all,
      distribution: all,
      gap: all,
      'gap-rounds': all,
      sparsity: all,
      channels: ['subfedavg-hy'],
    };
    for (const id of PER_ALGORITHM_CHARTS) expect(legendOf(charts[id]), id).toEqual(expected[id]);
    // Every dataset belongs to an algorithm, so a legend click can hide all of its datasets.
    for (const chart of Object.values(charts)) for (const d of chart.datasets) expect(all).toContain(d.algorithm);
  });

  it('plots the series the view holds, in percent', () => {
    const { charts } = plotted(html);
    const line = (id: string, label: string) =>
      charts[id].datasets.find((d) => d.label === label && !d.aux)!.data.map((p) => [p.x, Math.round(p.y! * 1e6) / 1e6]);
    expect(line('received-accuracy', 'fedavg')).toEqual([
      [1, 40.5],
      [2, 50.5],
      [3, 60.5],
    ]);
    expect(line('gap-rounds', 'fedavg')).toEqual([
      [2, 6],
      [3, 6],
    ]);
    expect(line('accuracy-bytes', 'subfedavg-hy')).toEqual([
      [7000 / 1048576, 82],
      [12000 / 1048576, 83],
    ]);
    // The sparsity axis ends just above the data (27.7% at most), not at 100%.
    expect(charts.sparsity.options.scales.y.max).toBe(30);
    // Interquartile bars: one vertical segment per evaluation round, dodged sideways per algorithm.
    const bars = charts['personalized-accuracy'].datasets.filter((d) => d.aux);
    expect(bars).toHaveLength(3);
    const xs = bars.map((b) => b.data[0].x);
    expect(new Set(xs).size).toBe(3);
    expect(bars[0].data.slice(0, 2).map((p) => Math.round(p.y! * 1e6) / 1e6)).toEqual([77, 87]);
  });

  it('shows the never-sampled clients apart in the summary, and the config as a table', () => {
    expect(html).toMatch(/Never sampled: client 3 in subfedavg-hy, fedavg, local \(their untrained models: 13\.0% accuracy\)/);
    expect(html).toContain('<tr><td class="text">partition.shardSize</td><td class="text">200</td></tr>');
    expect(html).toMatch(/Rounds and bytes until received accuracy first reaches 54\.0%/);
    // Received 40.5%, 50.5%, 60.5%: round 3, after 3000 + 4000 bytes and round 3's 2000-byte download.
    expect(html).toMatch(/<td>subfedavg-hy<\/td><td>3<\/td><td>8\.79 KiB<\/td>/);
    expect(html).toMatch(/<td>local<\/td><td>-<\/td><td>-<\/td><td>receives no model<\/td>/);
  });

  it('formats the terminal table with one row per algorithm', () => {
    const table = formatSummaryTable(summaries).split('\n');
    expect(table[0]).toMatch(
      /^algorithm\s+personalized acc\s+never sampled\s+train-test gap\s+received acc \(last 10\)\s+global acc\s+up\s+down\s+dense up\+down\s+savings\s+final sparsity\s+s\/round$/,
    );
    expect(table).toHaveLength(2 + 3);
    expect(table[2]).toMatch(
      /^subfedavg-hy\s+83\.0%\s+1\s+2\.0%\s+50\.5%\s+-\s+5\.86 KiB\s+5\.86 KiB\s+23\.4 KiB\s+50\.0%\s+31\.0%\s+0\.50$/,
    );
  });

  it('names the default run folder by time and preset', () => {
    expect(defaultRunFolder({ preset: 'paper' }, new Date('2026-01-02T03:04:05.678Z'))).toBe(
      path.join('runs', '2026-01-02T03-04-05Z-paper'),
    );
  });
});

describe('report with a threshold given', () => {
  it('uses it and says so', () => {
    const config = { ...PRESETS.quick, rounds: 3, algorithms: ['fedavg'] as AlgorithmName[] };
    const folder = path.join(dir, 'given');
    const writer = new RunWriter(folder, config);
    for (const r of fixtureRounds().filter((r) => r.algorithm === 'fedavg')) writer.appendRound(r);
    writer.finish([], { threshold: 0.5 });
    const html = readFileSync(path.join(folder, 'report.html'), 'utf8');
    expect(html).toMatch(/first reaches 50\.0%/);
    expect(html).toContain('as given (subfed report --threshold)');
    expect(html).toMatch(/<td>fedavg<\/td><td>2<\/td>/);
  });
});
