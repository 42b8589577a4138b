/**
 * Peak resident memory of a real `subfed client` (a child process running the
 * built `dist/cli.js`, as a device runs it) training lenet5-mnist on
 * Fashion-MNIST-shaped data for a few rounds against a coordinator in this
 * process. The baseline, measured in the same run, is a bare `node` process
 * that only loads tfjs-core and the wasm backend and initialises it; a plain
 * `node` that does nothing is shown for scale.
 *
 * Each process reports its own peak: a preloaded hook writes
 * process.resourceUsage().maxRSS (the kernel's ru_maxrss, i.e. VmHWM) when it
 * exits, so no sampling can miss the peak and no system tool is needed.
 * Writes bench/results/client-rss.json and prints a table.
 *
 *   npm run bench:client-rss     (builds dist/ first)
 *   BENCH_ROUNDS=3 BENCH_DATA=<client data folder> npm run bench:client-rss
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { initBackend } from '../client/backend.js';
import { createModel } from '../client/model.js';
import { packageRoot } from '../proto/package-root.js';
import { startCoordinator } from '../server/main.js';
import { writeBenchResult } from './results.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const root = packageRoot();
/** The embedded Fashion-MNIST test set: 10,000 28x28 images (the folder also holds its LICENSE). */
const EMBEDDED = join(root, 'data', 'fashion-mnist-test');
const IDX_FILES = ['t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'];
const TOKEN = 'bench-client-rss';
const TRAINING = { epochs: 2, batchSize: 10, lr: 0.05 };
const MiB = 2 ** 20;

/** Preloaded into every measured process: writes its peak RSS (KiB) to $SUBFED_BENCH_RSS_FILE at exit. */
const RSS_HOOK =
  'data:text/javascript,' +
  encodeURIComponent(
    "import { writeFileSync } from 'node:fs';" +
      "process.on('exit', () => writeFileSync(process.env.SUBFED_BENCH_RSS_FILE, String(process.resourceUsage().maxRSS)));",
  );

/** Only tfjs-core and the wasm backend, initialised (the .wasm binaries read from the package, as client/backend.ts does). */
const TFJS_WASM_ONLY = `
import * as tf from '@tensorflow/tfjs-core';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { createRequire } from 'node:module';
import { dirname, join, sep } from 'node:path';
const require = createRequire(join(process.cwd(), 'package.json'));
setWasmPaths(join(dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist') + sep);
if (!(await tf.setBackend('wasm'))) throw new Error('wasm backend failed to initialise');
await tf.ready();
`;

interface Measured {
  peakRssBytes: number;
  seconds: number;
  stderr: string;
}

/** Runs `node <args>` with the RSS hook preloaded; resolves with its peak RSS once it exits 0. */
function measure(label: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Measured> {
  const dir = mkdtempSync(join(tmpdir(), 'subfed-rss-'));
  const file = join(dir, 'maxrss');
  const started = performance.now();
  const child = spawn(process.execPath, ['--import', RSS_HOOK, ...args], {
    cwd: root,
    env: { ...process.env, ...env, SUBFED_BENCH_RSS_FILE: file },
    stdio: ['ignore', 'inherit', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      try {
        if (code !== 0) throw new Error(`${label} exited with ${code}:\n${stderr}`);
        const kib = Number(readFileSync(file, 'utf8'));
        if (!(kib > 0)) throw new Error(`${label} reported no peak RSS`);
        resolve({ peakRssBytes: kib * 1024, seconds: (performance.now() - started) / 1000, stderr });
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
}

/** The client's JSON log records of one event kind. */
function records(stderr: string, event: string): Record<string, unknown>[] {
  return stderr
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((r) => r.event === event);
}

async function main(): Promise<void> {
  const cli = join(root, 'dist', 'cli.js');
  if (!existsSync(cli)) throw new Error(`${cli} is missing: build it first (npm run build)`);
  if (!Number.isInteger(ROUNDS) || ROUNDS < 1)
    throw new Error(`BENCH_ROUNDS: expected a positive integer, got '${process.env.BENCH_ROUNDS}'`);

  const bare = await measure('bare node', ['-e', '']);
  const baseline = await measure('tfjs-core + wasm', ['--input-type=module', '-e', TFJS_WASM_ONLY]);

  // The coordinator, in this process: lenet5-mnist, every round the one client.
  await initBackend('cpu', { logger: { info: () => {} } });
  const model = createModel('lenet5-mnist', 1);
  const manifest = model.manifest.map((s) => ({ ...s, shape: [...s.shape] }));
  const initial = model.getWeights();
  model.dispose();
  const server = await startCoordinator(
    {
      rounds: ROUNDS,
      fraction: 1,
      minClients: 1,
      enrollmentToken: TOKEN,
      roundDeadlineMs: 600_000,
      http: { enabled: false },
      training: TRAINING,
      logLevel: 'silent',
    },
    { manifest, initial },
    { logger: pino({ level: 'silent' }) },
  );
  const work = mkdtempSync(join(tmpdir(), 'subfed-rss-client-'));
  // A client data folder of the embedded set's two IDX files only: the client trains on 8,000 (80/20 split).
  const data = process.env.BENCH_DATA ?? join(work, 'data');
  if (process.env.BENCH_DATA === undefined) {
    mkdirSync(data);
    for (const f of IDX_FILES) symlinkSync(join(EMBEDDED, f), join(data, f));
  }
  let client: Measured;
  try {
    client = await measure(
      'subfed client',
      [cli, 'client', '--server', server.grpcAddress, '--data', data, '--state-dir', join(work, 'state'), '--backend', 'wasm'],
      { SUBFED_TOKEN: TOKEN },
    );
  } finally {
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  }
  const [loaded] = records(client.stderr, 'data-loaded') as { trainExamples: number; testExamples: number }[];
  const [finished] = records(client.stderr, 'finished') as { roundsTrained: number }[];
  if (finished?.roundsTrained !== ROUNDS) throw new Error(`the client did not train ${ROUNDS} rounds:\n${client.stderr}`);

  const mib = (m: Measured) => Number((m.peakRssBytes / MiB).toFixed(1));
  const result = {
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    model: 'lenet5-mnist',
    backend: 'wasm',
    data: process.env.BENCH_DATA ?? `data/fashion-mnist-test (${IDX_FILES.join(', ')})`,
    trainExamples: loaded.trainExamples,
    testExamples: loaded.testExamples,
    rounds: ROUNDS,
    training: TRAINING,
    method: 'process.resourceUsage().maxRSS at exit (ru_maxrss), preloaded into each process',
    bareNode: { peakRssMiB: mib(bare) },
    baseline: { what: 'node loading tfjs-core + tfjs-backend-wasm, initialised', peakRssMiB: mib(baseline) },
    client: { what: 'subfed client (dist/cli.js)', peakRssMiB: mib(client), seconds: Number(client.seconds.toFixed(1)) },
    clientVsBaseline: Number((client.peakRssBytes / baseline.peakRssBytes).toFixed(2)),
  };
  const file = writeBenchResult('client-rss', result);

  console.log(
    `client peak RSS: lenet5-mnist, wasm backend, ${loaded.trainExamples} training images, ` +
      `${ROUNDS} rounds of ${TRAINING.epochs} epochs (batch ${TRAINING.batchSize}), ${process.version}`,
  );
  console.table({
    'node (nothing loaded)': {
      'peak RSS MiB': mib(bare),
      'x baseline': Number((bare.peakRssBytes / baseline.peakRssBytes).toFixed(2)),
    },
    'baseline: tfjs-core + wasm': { 'peak RSS MiB': mib(baseline), 'x baseline': 1 },
    'subfed client': { 'peak RSS MiB': mib(client), 'x baseline': result.clientVsBaseline },
  });
  console.log(`wrote ${file}`);
}

await main();
