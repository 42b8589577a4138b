// The `subfed` command as a user runs it (from the sources, with tsx): every
// subcommand listed, suggestions for a typo, exit code 2 for usage errors and
// 1 for runtime failures, and `subfed client` loading nothing of the server.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MODEL_NAMES } from '../../client/model-names.js';
import { packageRoot } from '../../proto/package-root.js';
import { modelFileJson } from '../../server/config.js';
import { ENROLL, toyModel } from '../server/harness.js';
import { moduleLog, serverModules } from './module-log.js';
import { subfed } from './run-subfed.js';

const root = packageRoot();
const dir = mkdtempSync(join(tmpdir(), 'subfed-cli-'));

const COMMANDS = ['sim', 'sweep', 'report', 'server', 'client', 'export', 'distill', 'predict', 'model'];
const listsEveryCommand = (help: string) => {
  for (const c of COMMANDS) expect(help).toMatch(new RegExp(`^\\s+${c}\\b`, 'm'));
};

function writeConfig(name: string, fields: Record<string, unknown>): string {
  const path = join(dir, name);
  writeFileSync(path, JSON.stringify({ model: 'model.json', rounds: 1, fraction: 1, enrollmentToken: ENROLL, ...fields }));
  return path;
}

function writeSweep(name: string, fields: Record<string, unknown>): string {
  const path = join(dir, name);
  writeFileSync(path, JSON.stringify(fields));
  return path;
}

let busy: Server;
let busyPort: number;

beforeAll(async () => {
  const { manifest, initial } = toyModel();
  writeFileSync(join(dir, 'model.json'), modelFileJson(manifest, initial));
  busy = createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  busyPort = (busy.address() as { port: number }).port;
});

afterAll(() => {
  busy?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('subfed (cli.ts)', () => {
  it('lists every subcommand in its help, exit code 0', async () => {
    const run = await subfed(['--help']);
    expect(run.code).toBe(0);
    listsEveryCommand(run.stdout);
  });

  it('names each concept once: subfed sim --help shows --data, --epochs and --fraction, not the old spellings', async () => {
    const run = await subfed(['sim', '--help']);
    expect(run.code).toBe(0);
    for (const flag of ['--data <dir>', '--epochs <n>', '--fraction <f>']) expect(run.stdout).toContain(flag);
    for (const old of ['--data-dir', '--local-epochs']) expect(run.stdout).not.toContain(old);
    // every knob of an experiment file has its flag, the kebab-case of its field
    for (const flag of ['--config <file>', '--seeds <list>', '--lr <x>', '--batch-size <n>', '--shard-size <n>', '--alpha <x>']) {
      expect(run.stdout).toContain(flag);
    }
    expect(run.stdout).toContain('--set <path=value>');
    expect(run.stdout).not.toMatch(/--seed </);
  });

  it('subfed sweep --help names its file and how to resume', async () => {
    const run = await subfed(['sweep', '--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('--config <file>');
    expect(run.stdout.replace(/\s+/g, ' ')).toContain('the same folder resumes');
  });

  it("lists the zoo's models in `subfed model --help`, from the zoo's own list", async () => {
    const run = await subfed(['model', '--help']);
    expect(run.code).toBe(0);
    // commander wraps the help at 80 columns
    expect(run.stdout.replace(/\s+/g, ' ')).toContain(`--name <model> ${MODEL_NAMES.join(' | ')}`);
  });

  it('answers an unknown command with a suggestion and every subcommand, exit code 2', async () => {
    const run = await subfed(['simm']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/unknown command 'simm'/);
    expect(run.stderr).toMatch(/Did you mean sim\?/);
    listsEveryCommand(run.stderr);
    const none = await subfed([]);
    expect(none.code).toBe(2);
    listsEveryCommand(none.stderr);
  });

  it('exits 2 for usage errors: a missing flag, a bad value, an unreadable or invalid config, a missing TLS file', async () => {
    const runs = await Promise.all([
      subfed(['server']),
      subfed(['model', '--name', 'resnet', '--out', join(dir, 'x.json')]),
      subfed(['server', '--config', join(dir, 'missing.json')]),
      subfed(['server', '--config', writeConfig('bad.json', { rounds: 0 })]),
      subfed(['server', '--config', writeConfig('tls.json', { tls: { cert: 'nope/cert.pem', key: 'nope/key.pem' } })]),
      subfed(['sim', '--rounds', '0']),
      subfed(['server', '--config', writeConfig('renamed.json', { frac: 1 })]),
      subfed(['sim', '--local-epochs', '2']),
      subfed(['sweep']),
      subfed(['sweep', '--config', writeSweep('sweep.json', { grid: { 'training.lr': [0.1, 0] } })]),
    ]);
    expect(runs.map((r) => r.code)).toEqual([2, 2, 2, 2, 2, 2, 2, 2, 2, 2]);
    expect(runs[0].stderr).toMatch(/required option '--config <file>' not specified/);
    expect(runs[1].stderr).toMatch(/--name: expected one of mlp, .*got 'resnet'/);
    expect(runs[2].stderr).toMatch(/missing\.json: cannot read config file/);
    expect(runs[3].stderr).toMatch(/bad\.json: rounds: expected a positive integer, got 0/);
    expect(runs[4].stderr).toContain(`subfed: tls.cert: cannot read '${join(dir, 'nope', 'cert.pem')}' (ENOENT`);
    expect(runs[5].stderr).toMatch(/--rounds: expected a positive integer, got '0'/);
    expect(runs[6].stderr).toContain(`subfed: ${join(dir, 'renamed.json')}: frac: renamed to "fraction"\n`);
    expect(runs[7].stderr).toBe('subfed sim: --local-epochs: renamed to --epochs\n');
    expect(runs[8].stderr).toMatch(/required option '--config <file>' not specified/);
    expect(runs[9].stderr).toBe(
      `subfed sweep: ${join(dir, 'sweep.json')}: grid.training.lr[1]: training.lr: expected a positive number, got 0\n`,
    );
  });

  it('subfed server starts with training.epochs 1 and warns, naming the file and the field, before it listens', async () => {
    const config = writeConfig('epochs1.json', { training: { epochs: 1 } });
    const child = spawn(process.execPath, ['--import', 'tsx', 'cli.ts', 'server', '--config', config], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const records: { level: number; event?: string; msg: string }[] = [];
    let pending = '';
    const listening = new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        pending += d.toString();
        const lines = pending.split('\n');
        pending = lines.pop() ?? '';
        for (const line of lines) {
          const record = JSON.parse(line) as { level: number; event?: string; msg: string };
          records.push(record);
          if (record.event === 'listening') resolve();
        }
      });
      child.once('exit', (code) => reject(new Error(`subfed server exited (${code}) before listening`)));
    });
    await listening;
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    const warnings = records.filter((r) => r.level === 40);
    expect(warnings.map((r) => r.event)).toEqual(['config-warning']);
    expect(warnings[0].msg.startsWith(`${config}: training.epochs is 1: every Sub-FedAvg client will refuse its tasks`)).toBe(
      true,
    );
    expect(records.indexOf(warnings[0])).toBeLessThan(records.findIndex((r) => r.event === 'listening'));
  });

  it('exits 1 for a runtime failure (the HTTP port is taken)', async () => {
    const run = await subfed(['server', '--config', writeConfig('busy.json', { http: { port: busyPort }, logLevel: 'silent' })]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(new RegExp(`http: cannot listen on 127\\.0\\.0\\.1:${busyPort}`));
  });

  it('subfed client loads no server/ or sim/ module and no server-only package', async () => {
    const modules = moduleLog();
    const run = await subfed(['client', '--help'], { nodeArgs: modules.nodeArgs, env: modules.env });
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/--server <host:port>/);
    const urls = modules.urls();
    // The check sees the client's modules at all: its own entry and gRPC.
    expect(urls.some((u) => u.endsWith('/client/main.ts'))).toBe(true);
    expect(urls.some((u) => u.includes('/node_modules/@grpc/grpc-js/'))).toBe(true);
    expect(serverModules(urls, root)).toEqual([]);

    // The same check does see them where they belong.
    const simModules = moduleLog();
    expect((await subfed(['sim', '--help'], { nodeArgs: simModules.nodeArgs, env: simModules.env })).code).toBe(0);
    const seen = serverModules(simModules.urls(), root);
    expect(seen.some((u) => u.endsWith('/sim/main.ts'))).toBe(true);
    expect(seen.some((u) => u.includes('/node_modules/better-sqlite3/'))).toBe(true);
  });
});
