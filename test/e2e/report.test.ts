/**
 * report.html in a real browser: a small simulation (synthetic data, real gRPC,
 * four algorithms) writes its run folder, then headless Chromium (Debian's
 * `chromium`, driven by playwright-core) opens the page from disk. Every chart
 * must render without a console error or a network request, with one legend
 * entry per algorithm that has its series. Saves a full-page screenshot to
 * test/artifacts/report.png (gitignored).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../proto/package-root.js';
import { loadDataset } from '../../sim/datasets.js';
import { PRESETS, validateSimConfig, type SimConfig } from '../../sim/presets.js';
import { PER_ALGORITHM_CHARTS, type ReportData } from '../../sim/report-html.js';
import { RunWriter } from '../../sim/run-folder.js';
import { runSimulation } from '../../sim/run.js';

const CHROMIUM = process.env.SUBFED_CHROMIUM ?? '/usr/bin/chromium';
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) console.warn(`${CHROMIUM} not found (apt-get install chromium): the report browser test is skipped`);

const dir = mkdtempSync(path.join(tmpdir(), 'subfed-report-e2e-'));
const folder = path.join(dir, 'run');

const config: SimConfig = validateSimConfig({
  ...PRESETS.quick,
  algorithms: ['fedavg', 'subfedavg-un', 'subfedavg-hy', 'local'],
  dataset: 'synthetic',
  clients: 6,
  partition: { kind: 'shards', shardSize: 60, shardsPerClient: 2 },
  maxTestPerClient: 40,
  // 2 of 6 clients a round over 3 rounds: some clients are never sampled, as in a real run.
  fraction: 0.34,
  rounds: 3,
  training: { epochs: 2, batchSize: 10, lr: 0.05, momentum: 0.5 },
  model: 'mlp',
  evalEvery: 2,
  workers: 2,
  backend: 'auto',
  seed: 5,
  algorithmConfigs: {
    'subfedavg-un': { p: 20, accThresh: 0 },
    'subfedavg-hy': { p: 20, accThresh: 0 },
  },
});

/** What the page shows, read from chart.js's own objects. */
interface PageCharts {
  charts: Record<string, { legend: string[]; drawnPixels: number } | null>;
  data: ReportData;
}

const PAGE_CHARTS = `(() => {
  const charts = {};
  for (const canvas of document.querySelectorAll('canvas')) {
    const chart = Chart.getChart(canvas);
    if (!chart) { charts[canvas.id] = null; continue; }
    // Pixels that are not blank inside the plot area: the lines, boxes and dots drawn.
    const a = chart.chartArea;
    const ratio = chart.currentDevicePixelRatio;
    const pixels = canvas.getContext('2d').getImageData(a.left * ratio, a.top * ratio, (a.right - a.left) * ratio, (a.bottom - a.top) * ratio).data;
    let drawnPixels = 0;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) drawnPixels++;
    charts[canvas.id] = { legend: chart.legend.legendItems.map((item) => item.text), drawnPixels };
  }
  return { charts, data: JSON.parse(document.getElementById('subfed-report-data').textContent) };
})()`;

describe.skipIf(!hasChromium)('report.html in headless Chromium', () => {
  let browser: Browser;
  let page: Page;
  const problems: string[] = [];
  const requests: string[] = [];

  beforeAll(async () => {
    const data = await loadDataset('synthetic', { seed: 5, synthetic: { train: 1200, test: 600 } });
    const writer = new RunWriter(folder, config);
    for await (const round of runSimulation(config, { data })) writer.appendRound(round);
    writer.finish(['a small synthetic comparison for the browser test']);

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-background-networking', '--headless'],
    });
    page = await browser.newPage({ viewport: { width: 1200, height: 900 }, deviceScaleFactor: 1 });
    page.on('pageerror', (err) => problems.push(err.message));
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.push(`${m.type()}: ${m.text()}`);
    });
    page.on('request', (r) => requests.push(r.url()));
  }, 300_000);

  afterAll(async () => {
    await browser?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('renders every chart offline, without errors, one legend entry per algorithm with the series', async () => {
    const url = pathToFileURL(path.join(folder, 'report.html')).href;
    await page.goto(url);
    await page.waitForFunction(
      `document.querySelectorAll('canvas').length > 0 && [...document.querySelectorAll('canvas')].every((c) => Chart.getChart(c))`,
    );
    // The whole page in one viewport, so the full-page screenshot does not resize the responsive charts
    // while it is taken; two animation frames let chart.js finish redrawing at that size.
    const height = await page.evaluate<number>('document.documentElement.scrollHeight');
    await page.setViewportSize({ width: 1200, height });
    await page.evaluate('new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)))');
    const { charts, data } = await page.evaluate<PageCharts>(PAGE_CHARTS);

    expect(problems).toEqual([]);
    expect(requests).toEqual([url]);
    expect(Object.keys(charts).sort()).toEqual([...PER_ALGORITHM_CHARTS].sort());

    const algorithms = data.view.algorithms.map((a) => a.name);
    expect(algorithms).toEqual(config.algorithms);
    const has = (series: keyof ReportData['view']['series'][string]) =>
      algorithms.filter((a) => (data.view.series[a]?.[series] ?? []).length > 0);
    const expected: Record<(typeof PER_ALGORITHM_CHARTS)[number], string[]> = {
      'received-accuracy': has('received_accuracy'),
      'personalized-accuracy': has('personalized_accuracy'),
      loss: has('personalized_loss'),
      'accuracy-bytes': has('personalized_accuracy'),
      distribution: algorithms,
      gap: algorithms,
      'gap-rounds': has('overfitting_gap'),
      sparsity: has('sampled_sparsity'),
      channels: has('sampled_channels_kept_fraction'),
    };
    // What the run measures: local receives nothing, only subfedavg-hy prunes channels.
    expect(expected['received-accuracy']).toEqual(['fedavg', 'subfedavg-un', 'subfedavg-hy']);
    expect(expected.channels).toEqual(['subfedavg-hy']);
    for (const a of ['personalized-accuracy', 'loss', 'sparsity', 'gap-rounds'] as const) expect(expected[a]).toEqual(algorithms);
    for (const id of PER_ALGORITHM_CHARTS) {
      expect(charts[id]?.legend, id).toEqual(expected[id]);
      expect(charts[id]!.drawnPixels, `${id} draws something`).toBeGreaterThan(500);
    }

    // Some clients were never sampled: counted apart in the summary, not averaged in.
    const never = data.summaries.map((s) => s.neverSampled);
    expect(never.every((n) => n !== null && n > 0)).toBe(true);
    expect(await page.locator('#headline').textContent()).toContain('Never sampled:');
    // The sparsity axis fits the data instead of running to 100%.
    expect(data.view.sparsityMax).toBeLessThan(1);
    expect(await page.locator('#config-section').textContent()).toContain('partition.shardSize');

    const artifacts = path.join(packageRoot(), 'test', 'artifacts');
    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: path.join(artifacts, 'report.png'), fullPage: true });
  });
});
