/**
 * The package as a device gets it: `npm pack`, then the tarball installed
 * into empty folders without dev dependencies, nothing compiled from our
 * sources at install time:
 *  - a full install (`--omit=dev`; better-sqlite3 builds natively) runs the coordinator;
 *  - a client-only install (`--omit=dev --omit=optional`: no server packages at all)
 *    runs `subfed client` for one round against it, loading no server/ or sim/ module;
 *  - a checkout installed with `npm ci --omit=dev` (no TypeScript) installs cleanly.
 * Prints the client-only install's size.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ImageDataset } from '../../client/data/dataset.js';
import { packageRoot } from '../../proto/package-root.js';
import { moduleLog, SERVER_PACKAGES, serverModules } from '../cli/module-log.js';
import { tinyData } from '../client/participant-helpers.js';

const repo = packageRoot();
const dir = mkdtempSync(join(tmpdir(), 'subfed-package-'));
const children: ChildProcess[] = [];
const TOKEN = 'package-test-token';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv }): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

async function ok(cmd: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv }): Promise<Run> {
  const r = await run(cmd, args, options);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** This environment without the calling npm's (npm_config_* of `npm run`), so an install sees only its own flags. */
function npmEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.toLowerCase().startsWith('npm_')));
}

/** Installs the tarball into a new empty project folder; returns that folder. */
async function install(tarball: string, name: string, flags: string[], packageJson: object = {}): Promise<string> {
  const prefix = join(dir, name);
  mkdirSync(prefix);
  writeFileSync(join(prefix, 'package.json'), JSON.stringify({ name: `subfed-${name}`, private: true, ...packageJson }));
  await ok('npm', ['install', '--no-audit', '--no-fund', '--omit=dev', ...flags, tarball], { cwd: prefix, env: npmEnv() });
  return prefix;
}

function sizeOf(path: string): number {
  const s = statSync(path);
  if (!s.isDirectory()) return s.size;
  return readdirSync(path).reduce((sum, entry) => sum + sizeOf(join(path, entry)), 0);
}

function idxFiles(ds: ImageDataset): { images: Buffer; labels: Buffer } {
  const images = Buffer.alloc(16 + ds.images.length);
  images.writeUInt32BE(0x00000803, 0);
  images.writeUInt32BE(ds.count, 4);
  images.writeUInt32BE(ds.height, 8);
  images.writeUInt32BE(ds.width, 12);
  images.set(ds.images, 16);
  const labels = Buffer.alloc(8 + ds.count);
  labels.writeUInt32BE(0x00000801, 0);
  labels.writeUInt32BE(ds.count, 4);
  labels.set(ds.labels, 8);
  return { images, labels };
}

/** Starts the installed `subfed server` and waits for its "listening" log line. */
function startServer(
  bin: string,
  config: string,
  cwd: string,
): Promise<{ child: ChildProcess; grpcPort: number; httpPort: number }> {
  const child = spawn(bin, ['server', '--config', config], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      try {
        const entry = JSON.parse(line) as { event?: string; grpcPort?: number; httpPort?: number };
        if (entry.event === 'listening') resolve({ child, grpcPort: entry.grpcPort!, httpPort: entry.httpPort! });
      } catch {
        // not a log line
      }
    });
    child.once('exit', (code) => reject(new Error(`subfed server exited with ${code} before listening: ${stderr}`)));
  });
}

let tarball: string;
let full: string;
let clientOnly: string;

beforeAll(async () => {
  const packed = await ok('npm', ['pack', '--pack-destination', dir], { cwd: repo, env: npmEnv() });
  tarball = join(dir, packed.stdout.trim().split('\n').pop() as string);
  [full, clientOnly] = await Promise.all([
    // npm 11 runs a dependency's install script only when allowed: better-sqlite3 builds its native module.
    install(tarball, 'full', [], { allowScripts: { 'better-sqlite3': true } }),
    install(tarball, 'client', ['--omit=optional']),
  ]);
});

afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

describe('the packed tarball', () => {
  it('carries the built JavaScript and what it reads at run time, and no sources or tests', async () => {
    const list = await ok('tar', ['-tzf', tarball], { cwd: dir });
    const files = list.stdout.split('\n').filter((f) => f !== '');
    for (const f of [
      'package/dist/cli.js',
      'package/dist/client/main.js',
      'package/dist/server/main.js',
      'package/proto/subfed.proto',
      'package/server/dashboard/index.html',
      'package/data/fashion-mnist-test/t10k-images-idx3-ubyte.gz',
      'package/LICENSE',
      'package/README.md',
      'package/ARCHITECTURE.md',
      'package/proto/PROTOCOL.md',
      ...['quick', 'paper', 'paper-mnist', 'paper-cifar10', 'dirichlet'].map((p) => `package/sim/presets/${p}.json`),
    ]) {
      expect(files).toContain(f);
    }
    expect(files.filter((f) => f.endsWith('.ts') || f.startsWith('package/test/') || f.endsWith('.map'))).toEqual([]);
  });

  it('a client-only install runs one round against a coordinator from a full install, loading nothing of the server', async () => {
    const installed = join(clientOnly, 'node_modules');
    // fastify stays a regular dependency while CI runs Node 20 (see README "Install"): installed, never loaded.
    for (const p of SERVER_PACKAGES.filter((p) => p !== 'fastify')) expect(existsSync(join(installed, p)), p).toBe(false);
    const bytes = sizeOf(installed);
    console.log(`client-only install: ${(bytes / 2 ** 20).toFixed(1)} MiB in node_modules`);

    // The coordinator, from the full install.
    const work = join(dir, 'work');
    mkdirSync(work);
    const clientBin = join(clientOnly, 'node_modules', '.bin', 'subfed');
    await ok(clientBin, ['model', '--name', 'mlp', '--out', join(work, 'model.json')], { cwd: work });
    writeFileSync(
      join(work, 'server.json'),
      JSON.stringify({
        model: 'model.json',
        sqlite: 'coordinator.db',
        rounds: 1,
        fraction: 1,
        enrollmentToken: TOKEN,
        training: { epochs: 2, batchSize: 10, lr: 0.05 },
      }),
    );
    const server = await startServer(join(full, 'node_modules', '.bin', 'subfed'), join(work, 'server.json'), work);

    // The client's data: IDX files in train/ and test/.
    const { train, test } = tinyData(5, 60, 20);
    for (const [split, ds] of [
      ['train', train],
      ['test', test],
    ] as const) {
      mkdirSync(join(work, 'data', split), { recursive: true });
      const { images, labels } = idxFiles(ds);
      writeFileSync(join(work, 'data', split, 'images-idx3-ubyte'), images);
      writeFileSync(join(work, 'data', split, 'labels-idx1-ubyte'), labels);
    }
    const modules = moduleLog();
    const client = await run(
      process.execPath,
      [
        ...modules.nodeArgs,
        join(installed, 'subfed', 'dist', 'cli.js'),
        'client',
        '--server',
        `127.0.0.1:${server.grpcPort}`,
        '--data',
        join(work, 'data'),
        '--state-dir',
        join(work, 'state'),
      ],
      // The token comes from the environment: the client refuses it on the command line.
      { cwd: work, env: { ...process.env, ...modules.env, SUBFED_TOKEN: TOKEN } },
    );
    expect(client.code, client.stderr).toBe(0);
    expect(client.stderr).toMatch(/training finished after round 1/);
    const urls = modules.urls();
    expect(urls.some((u) => u.includes('/node_modules/subfed/dist/client/main.js'))).toBe(true);
    expect(serverModules(urls, join(installed, 'subfed'))).toEqual([]);

    const base = `http://127.0.0.1:${server.httpPort}`;
    expect(await (await fetch(`${base}/api/status`)).json()).toMatchObject({ phase: 'finished', lastCommittedRound: 1 });
    expect((await fetch(`${base}/`)).status).toBe(200);
    expect((await fetch(`${base}/chart.umd.min.js`)).status).toBe(200);
    const exited = new Promise<number | null>((resolve) => server.child.once('exit', (code) => resolve(code)));
    server.child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  it('a full install reads its presets at run time and records no commit (it is no git checkout)', async () => {
    const bin = join(full, 'node_modules', '.bin', 'subfed');
    const work = join(dir, 'sim-work');
    mkdirSync(work);
    const refused = await run(bin, ['sim', '--preset', 'paper-cifar10', '--rounds', '0'], { cwd: work });
    expect(refused.code, refused.stderr).toBe(2);
    expect(refused.stderr).toBe("subfed sim: --rounds: expected a positive integer, got '0'\n");
    const args = ['sim', '--preset', 'dirichlet', '--dataset', 'synthetic', '--clients', '2', '--rounds', '1'];
    await ok(bin, [...args, '--algorithm', 'local', '--workers', '1', '--out', 'run'], { cwd: work });
    const record = JSON.parse(readFileSync(join(work, 'run', 'run.json'), 'utf8')) as { subfed: unknown; status: string };
    expect(record.status).toBe('completed');
    const { version } = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string };
    expect(record.subfed).toEqual({ version, commit: null, dirty: null });
  });

  it('a client-only install says which package `subfed server` and `subfed sim` need (exit 1)', async () => {
    const bin = join(clientOnly, 'node_modules', '.bin', 'subfed');
    for (const command of ['server', 'sim']) {
      const r = await run(bin, command === 'server' ? ['server', '--config', join(dir, 'none.json')] : ['sim'], { cwd: dir });
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`subfed ${command} needs the package '[^']+', which this install of subfed left out`));
    }
  });

  it('a checkout installs with npm ci --omit=dev (no TypeScript, nothing to compile)', async () => {
    const checkout = join(dir, 'checkout');
    mkdirSync(join(checkout, 'scripts'), { recursive: true });
    for (const f of ['package.json', 'package-lock.json', 'scripts/build.js']) copyFileSync(join(repo, f), join(checkout, f));
    const r = await ok('npm', ['ci', '--no-audit', '--no-fund', '--omit=dev', '--omit=optional'], {
      cwd: checkout,
      env: npmEnv(),
    });
    expect(r.stderr).toMatch(/TypeScript is not installed \(production install\), dist\/ is not built here/);
    expect(existsSync(join(checkout, 'node_modules', 'typescript'))).toBe(false);
  });
});
