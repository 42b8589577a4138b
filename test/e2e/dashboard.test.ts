/**
 * The dashboard in a real browser: headless Chromium (Debian's `chromium`,
 * driven by playwright-core) opens a running coordinator's page while a tiny
 * federation of scripted clients joins and commits rounds; the charts and the
 * client table must follow each commit. Saves a screenshot under
 * test/artifacts/ (gitignored).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Mask } from '../../proto/mask.js';
import { SeededRandom } from '../../proto/random.js';
import { packageRoot } from '../../proto/package-root.js';
import type { TensorMap, TensorSpec } from '../../server/model.js';
import { startCoordinator, type CoordinatorHandle } from '../../server/main.js';
import { ENROLL, ScriptedClient, memoryLogger } from '../server/harness.js';

const CHROMIUM = process.env.SUBFED_CHROMIUM ?? '/usr/bin/chromium';
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) console.warn(`${CHROMIUM} not found (apt-get install chromium): the dashboard browser test is skipped`);

/** A LeNet-like manifest with two BatchNorm layers; the coordinator needs no tfjs for it. */
function lenetLike(): { manifest: TensorSpec[]; initial: TensorMap } {
  const manifest: TensorSpec[] = [
    { name: 'conv1/kernel', shape: [5, 5, 1, 6], prunable: true },
    { name: 'bn1/gamma', shape: [6], prunable: false },
    { name: 'conv2/kernel', shape: [5, 5, 6, 16], prunable: true },
    { name: 'bn2/gamma', shape: [16], prunable: false },
    { name: 'dense1/kernel', shape: [256, 120], prunable: true },
    { name: 'dense1/bias', shape: [120], prunable: false },
    { name: 'out/kernel', shape: [120, 10], prunable: true },
    { name: 'out/bias', shape: [10], prunable: false },
  ];
  const rng = new SeededRandom(7);
  const initial: TensorMap = new Map(
    manifest.map((s) => [s.name, Float32Array.from({ length: s.shape.reduce((a, b) => a * b, 1) }, () => rng.normal() * 0.05)]),
  );
  return { manifest, initial };
}

const ROUNDS = 6;
const CLIENTS = 4;
/** The member that misses this round's deadline. */
const DROPOUT = { round: 3, client: 3 };

/** One scripted member's round: prune a little more, upload a small delta on its kept positions and plausible metrics. */
async function trainAndPush(client: ScriptedClient, k: number, round: number): Promise<void> {
  const task = await client.pull();
  expect(task.header).toMatchObject({ hasTask: true, roundId: round });
  const rng = new SeededRandom(1000 * round + k);
  const previous = new Map(client.masks);
  const target = Math.min(0.12 * round + 0.04 * k, 0.7);
  let kept = 0;
  let total = 0;
  const deltas: Record<string, number[]> = {};
  for (const spec of client.manifest) {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    total += n;
    if (spec.prunable) {
      const bits = client.maskFor(spec.name).toBytes();
      for (let i = 0; i < n; i++) if (bits[i] === 1 && rng.next() < target / 2) bits[i] = 0;
      client.masks.set(spec.name, Mask.fromBytes(bits));
    }
    const mask = client.maskFor(spec.name);
    deltas[spec.name] = Array.from({ length: n }, (_, i) => (mask.has(i) ? (rng.next() - 0.5) * 0.01 : 0));
    kept += mask.keptCount;
  }
  const accuracy = Math.min(0.5 + 0.07 * round + 0.02 * k, 0.97);
  const ack = await client.push(round, client.encode(deltas, previous), {
    numExamples: 100 + 20 * k,
    maskChanged: true,
    newMaskVersion: client.maskVersion + 1,
    metrics: {
      loss: 1.5 / round,
      localAccuracy: accuracy,
      receivedAccuracy: accuracy - 0.25 + 0.02 * round,
      sparsity: 1 - kept / total,
      channelsKept: [6 - Math.floor(round / 2), 16 - round - k],
    },
  });
  expect(ack.accepted).toBe(true);
  client.maskVersion = ack.maskVersion;
}

interface PageState {
  rounds: number;
  accuracyLabels: number;
  accuracy: (number | null)[];
  bytes: (number | null)[][];
  sparsityDatasets: string[];
  reporters: number[];
  dropouts: number[];
  clients: { id: string; rounds: number; bytesUp: string; sparsity: string }[];
  phase: string;
}

/** Reads what the page shows: chart data and table cells (runs in the page, hence a string). */
const PAGE_STATE = `(() => {
  const chart = (id) => Chart.getChart(id).data;
  return {
    rounds: Number(document.getElementById('charts').dataset.rounds),
    accuracyLabels: chart('chart-accuracy').labels.length,
    accuracy: chart('chart-accuracy').datasets[0].data,
    bytes: chart('chart-bytes').datasets.map((d) => d.data),
    sparsityDatasets: chart('chart-sparsity').datasets.map((d) => d.label),
    reporters: chart('chart-participation').datasets[0].data,
    dropouts: chart('chart-participation').datasets[1].data,
    clients: [...document.querySelectorAll('#clients tbody tr')].map((tr) => ({
      id: tr.dataset.client,
      rounds: Number(tr.dataset.rounds),
      bytesUp: tr.querySelector('[data-key="bytesUp"]').textContent,
      sparsity: tr.querySelector('[data-key="sparsity"]').textContent,
    })),
    phase: document.getElementById('phase').textContent,
  };
})()`;

const pageState = (page: Page): Promise<PageState> => page.evaluate<PageState>(PAGE_STATE);

describe.skipIf(!hasChromium)('dashboard in headless Chromium', () => {
  let server: CoordinatorHandle;
  let browser: Browser;
  let page: Page;
  const clients: ScriptedClient[] = [];
  const pageErrors: string[] = [];

  beforeAll(async () => {
    server = await startCoordinator(
      {
        rounds: ROUNDS,
        fraction: 1,
        minClients: CLIENTS,
        quorum: 0.5,
        // The dropout round commits at its deadline with the reports it has.
        roundDeadlineMs: 2000,
        enrollmentToken: ENROLL,
      },
      lenetLike(),
      { logger: memoryLogger().logger },
    );
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-background-networking', '--disable-gpu'],
    });
    page = await browser.newPage({ viewport: { width: 1360, height: 1000 }, deviceScaleFactor: 1 });
    page.on('pageerror', (err) => pageErrors.push(err.message));
    page.on('console', (m) => {
      if (m.type() === 'error') pageErrors.push(m.text());
    });
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    await browser?.close();
    await server?.stop();
  });

  it('follows joins and committed rounds live: charts, KPIs and the client table', async () => {
    await page.goto(`http://${server.httpAddress}/`);
    await page.waitForFunction("document.body.dataset.connection === 'live'");
    expect(await page.locator('#clients-empty').isVisible()).toBe(true);
    expect(await page.locator('#phase').textContent()).toBe('waiting');

    for (let k = 0; k < CLIENTS; k++) {
      const c = new ScriptedClient(server.grpcAddress);
      await c.join(ENROLL, 100 + 20 * k, ['pi-kitchen', 'jetson-lab', 'phone-ana', 'pi-garage'][k]);
      clients.push(c);
    }
    await page.waitForFunction(`document.querySelectorAll('#clients tbody tr').length === ${CLIENTS}`);
    expect(await page.locator('#phase').textContent()).toBe('open');

    const taken = clients.map(() => 0);
    let previous = await pageState(page);
    for (let round = 1; round <= ROUNDS; round++) {
      await Promise.all(
        clients.map(async (c, k) => {
          if (round === DROPOUT.round && k === DROPOUT.client) {
            await c.pull(); // takes its task, then never reports
            return;
          }
          await trainAndPush(c, k, round);
          taken[k]++;
        }),
      );
      await server.waitForRound(round);
      await page.waitForFunction(`document.getElementById('charts').dataset.rounds === '${round}'`);
      const now = await pageState(page);
      expect(now.accuracyLabels).toBe(round);
      expect(now.accuracy[round - 1]).toBeGreaterThan(0);
      // Cumulative bytes grow every round, and stay below what dense FedAvg would have moved.
      expect(now.bytes[0][round - 1]).toBeGreaterThan(round > 1 ? (previous.bytes[0][round - 2] as number) : 0);
      expect(now.bytes[0][round - 1]).toBeLessThan(now.bytes[1][round - 1] as number);
      expect(now.reporters[round - 1]).toBe(round === DROPOUT.round ? CLIENTS - 1 : CLIENTS);
      expect(now.dropouts[round - 1]).toBe(round === DROPOUT.round ? 1 : 0);
      expect(now.clients.map((c) => c.rounds)).toEqual(taken);
      // Every row that reported shows new bytes and a new sparsity.
      for (let k = 0; k < CLIENTS; k++) {
        if (round === DROPOUT.round && k === DROPOUT.client) continue;
        expect(now.clients[k].sparsity).not.toBe(previous.clients[k].sparsity);
      }
      previous = now;
    }
    expect(previous.sparsityDatasets).toEqual(['sparsity', 'channels, BN layer 1', 'channels, BN layer 2']);
    await page.waitForFunction("document.getElementById('phase').textContent === 'finished'");
    expect(await page.locator('#kpi-dense').textContent()).toMatch(/saved/);

    const artifacts = join(packageRoot(), 'test', 'artifacts');
    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: join(artifacts, 'dashboard.png'), fullPage: true });
    expect(pageErrors).toEqual([]);
  });
});
