/**
 * The export in a real browser: headless Chromium (Debian's `chromium`, driven by
 * playwright-core) opens the static page client/export/web/, which loads an exported
 * model with tfjs (bundles from node_modules, no CDN) and classifies a client's test
 * images; its predictions and logits must be Node's. Saves a screenshot under
 * test/artifacts/ (gitignored).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import { subset } from '../../client/data/dataset.js';
import { compactModel } from '../../client/export/compact.js';
import { loadClientModel } from '../../client/export/export.js';
import { readExport, writeExport } from '../../client/export/files.js';
import { instantiate, withInputEncoding } from '../../client/export/portable.js';
import { argmaxRows, predictLogits } from '../../client/train.js';
import { packageRoot } from '../../proto/package-root.js';
import { pngImage } from '../fixtures/data-files.js';
import { hyClient, type HyClient } from './fixture.js';
import { serveFiles, type StaticServer } from './static-server.js';

const CHROMIUM = process.env.SUBFED_CHROMIUM ?? '/usr/bin/chromium';
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) console.warn(`${CHROMIUM} not found (apt-get install chromium): the export page's browser test is skipped`);

const IMAGES = 12;
const root = packageRoot();
const require = createRequire(import.meta.url);
const bundle = (pkg: string, file: string): string => join(dirname(require.resolve(`${pkg}/package.json`)), 'dist', file);

interface PageResult {
  src: string;
  label: number;
  predicted: number;
  logits: number[];
}

describe.skipIf(!hasChromium)('the export page in headless Chromium', () => {
  const dir = mkdtempSync(join(tmpdir(), 'subfed-browser-'));
  const routes = new Map<string, string>();
  let client: HyClient;
  let server: StaticServer;
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];
  const foreignRequests: string[] = [];

  beforeAll(async () => {
    await initBackend('wasm', { logger: { info: () => {} } });
    client = await hyClient(dir);
    const compact = compactModel((await loadClientModel(client.stateDir, undefined)).portable).model;
    for (const [name, quantization] of [
      ['model', 'f32'],
      ['model-int8', 'int8'],
    ] as const) {
      const written = await writeExport(join(dir, name), compact, {
        format: 'layers',
        quantization,
        origin: `browser test, ${quantization}`,
      });
      for (const f of written.files) routes.set(`/${name}/${f.name}`, join(dir, name, f.name));
    }
    const list = [];
    mkdirSync(join(dir, 'images'));
    for (let i = 0; i < IMAGES; i++) {
      const file = join(dir, 'images', `${i}.png`);
      writeFileSync(
        file,
        pngImage(28, 28, (x, y) => {
          const v = client.test.images[i * 784 + y * 28 + x];
          return [v, v, v, 255];
        }),
      );
      routes.set(`/images/${i}.png`, file);
      list.push({ src: `images/${i}.png`, label: client.test.labels[i] });
    }
    writeFileSync(join(dir, 'images', 'list.json'), JSON.stringify(list));
    routes.set('/images/list.json', join(dir, 'images', 'list.json'));
    routes.set('/', join(root, 'client', 'export', 'web', 'index.html'));
    routes.set('/classify.js', join(root, 'client', 'export', 'web', 'classify.js'));
    routes.set('/tfjs/tf-core.min.js', bundle('@tensorflow/tfjs-core', 'tf-core.min.js'));
    routes.set('/tfjs/tf-backend-cpu.min.js', bundle('@tensorflow/tfjs-backend-cpu', 'tf-backend-cpu.min.js'));
    routes.set('/tfjs/tf-layers.min.js', bundle('@tensorflow/tfjs-layers', 'tf-layers.min.js'));
    server = await serveFiles(routes);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-background-networking', '--headless'],
    });
    page = await browser.newPage({ viewport: { width: 1000, height: 760 }, deviceScaleFactor: 1 });
    page.on('pageerror', (err) => pageErrors.push(err.message));
    page.on('console', (m) => {
      if (m.type() === 'error') pageErrors.push(m.text());
    });
    page.on('response', (r) => {
      if (r.status() >= 400) pageErrors.push(`${r.status()} ${r.url()}`);
    });
    page.on('request', (r) => {
      if (!r.url().startsWith(server.url)) foreignRequests.push(r.url());
    });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Node's logits for the first IMAGES test images, with the model as the page loads it (same files). */
  async function nodeLogits(name: string): Promise<{ logits: Float32Array; predicted: Int32Array }> {
    const { portable } = await readExport(join(dir, name));
    const images = withInputEncoding(
      subset(
        client.test,
        Array.from({ length: IMAGES }, (_, i) => i),
      ),
      portable.input,
      'test images',
    );
    const model = instantiate(portable);
    try {
      const logits = predictLogits(model, images);
      return { logits, predicted: argmaxRows(logits, 10) };
    } finally {
      model.dispose();
    }
  }

  async function classifyInPage(model: string): Promise<PageResult[]> {
    await page.goto(`${server.url}/?model=${model}/model.json&images=images/list.json`);
    await page.waitForFunction("document.body.dataset.state === 'done' || document.body.dataset.state === 'error'");
    const error = await page.evaluate('window.subfedError');
    expect(error).toBeUndefined();
    return page.evaluate<PageResult[]>('window.subfedResults');
  }

  it.each(['model', 'model-int8'])('%s: the page predicts what Node predicts, logits within 1e-4', async (name) => {
    const results = await classifyInPage(name);
    const node = await nodeLogits(name);
    expect(results).toHaveLength(IMAGES);
    expect(results.map((r) => r.predicted)).toEqual(Array.from(node.predicted));
    expect(results.map((r) => r.label)).toEqual(Array.from(client.test.labels.subarray(0, IMAGES)));
    let worst = 0;
    results.forEach((r, i) => r.logits.forEach((v, k) => (worst = Math.max(worst, Math.abs(v - node.logits[i * 10 + k])))));
    expect(worst).toBeLessThan(1e-4);
    expect(await page.locator('figure').count()).toBe(IMAGES);
    expect(await page.locator('#model-info').textContent()).toMatch(
      /^lenet5-bn-mnist, [\d,]+ parameters, (f32|int8) weights; browser test/,
    );
    if (name === 'model') {
      mkdirSync(join(root, 'test', 'artifacts'), { recursive: true });
      await page.screenshot({ path: join(root, 'test', 'artifacts', 'export-page.png'), fullPage: true });
    }
    expect(pageErrors).toEqual([]);
    expect(foreignRequests).toEqual([]);
  });
});
