// subfed export, distill and predict as a user runs them (from the sources, with tsx):
// their output, exit code 2 for bad input, and no server, simulator or tfjs-layers module loaded.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import { packageRoot } from '../../proto/package-root.js';
import { moduleLog, serverModules } from '../cli/module-log.js';
import { subfed as subfedRun } from '../cli/run-subfed.js';
import { hyClient, type HyClient } from './fixture.js';

const root = packageRoot();
const subfed = (args: string[], options: { nodeArgs?: string[]; env?: Record<string, string> } = {}) =>
  subfedRun(args, { ...options, env: { SUBFED_BACKEND: 'wasm', ...options.env } });
const dir = mkdtempSync(join(tmpdir(), 'subfed-export-cli-'));
let client: HyClient;

beforeAll(async () => {
  await initBackend('wasm', { logger: { info: () => {} } });
  client = await hyClient(dir);
}, 120_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('subfed export, distill, predict', () => {
  it('export -> predict: the compact int8 model classifies the client test set', async () => {
    const out = join(dir, 'int8');
    const exported = await subfed([
      'export',
      '--state-dir',
      client.stateDir,
      '--data',
      client.dataDir,
      '--out',
      out,
      '--quantize',
      'int8',
    ]);
    expect(exported.stderr).not.toMatch(/subfed export:/);
    expect(exported.code).toBe(0);
    expect(exported.stdout).toMatch(/^lenet5-bn-mnist, subfedavg-hy client state after round 3$/m);
    expect(exported.stdout).toMatch(
      new RegExp(`^layers: conv1 10 -> ${client.channelsKept[0]}, conv2 20 -> ${client.channelsKept[1]}, `, 'm'),
    );
    expect(exported.stdout).toMatch(/^compact int8 +[\d,]+ +\d+\.\d\d% +[+-]\d+\.\d\d$/m);
    expect(exported.stdout).toMatch(/wrote model\.json \([\d,]+ bytes\), weights\.bin \([\d,]+ bytes\) to /);
    const predicted = await subfed([
      'predict',
      '--model',
      out,
      join(client.dataDir, 'test', 'images.idx'),
      join(client.dataDir, 'test', 'labels.idx'),
    ]);
    expect(predicted.code).toBe(0);
    const lines = predicted.stdout.trim().split('\n');
    expect(lines).toHaveLength(41);
    expect(lines[0]).toMatch(/^images\.idx\[0\]\t\d\t\(label \d\)$/);
    expect(lines[40]).toMatch(/^accuracy: \d+\.\d\d% \(\d+ of 40\)$/);
  });

  it('distill prints the teacher, the scratch student and the distilled student', async () => {
    const run = await subfed([
      'distill',
      '--state-dir',
      client.stateDir,
      '--data',
      client.dataDir,
      '--student',
      'lenet5-mnist',
      '--width',
      '0.5',
      '--epochs',
      '2',
      '--out',
      join(dir, 'student'),
    ]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(
      /^student lenet5-mnist x0\.5 width: 2 epochs on 100 training examples, T 4, alpha 0\.9; accuracy on 40 test examples$/m,
    );
    for (const row of ['teacher \\(lenet5-bn-mnist, compact\\)', 'student from scratch', 'student distilled']) {
      expect(run.stdout).toMatch(new RegExp(`^${row} +[\\d,]+ +[\\d,]+ +\\d+\\.\\d\\d%$`, 'm'));
    }
  });

  it('exits 2 for bad input, naming the flag or file', async () => {
    const runs = await Promise.all([
      subfed(['export', '--state-dir', client.stateDir, '--out', join(dir, 'x'), '--quantize', 'int4']),
      subfed(['export', '--state-dir', join(dir, 'missing'), '--out', join(dir, 'x')]),
      subfed(['export', '--state-dir', client.stateDir, '--out', join(dir, 'x'), '--fine-tune', '2']),
      subfed([
        'distill',
        '--state-dir',
        client.stateDir,
        '--data',
        client.dataDir,
        '--student',
        'resnet',
        '--out',
        join(dir, 'x'),
      ]),
      subfed([
        'distill',
        '--state-dir',
        client.stateDir,
        '--data',
        client.dataDir,
        '--student',
        'compact',
        '--width',
        '0.5',
        '--out',
        join(dir, 'x'),
      ]),
      subfed(['predict', '--model', join(dir, 'missing'), join(client.dataDir, 'test', 'images.idx')]),
    ]);
    expect(runs.map((r) => r.code)).toEqual([2, 2, 2, 2, 2, 2]);
    expect(runs[0].stderr).toContain("subfed export: --quantize: expected one of f32, f16, int8, got 'int4'");
    expect(runs[1].stderr).toContain(
      `subfed export: client state file ${join(dir, 'missing', 'client-state.bin')}: does not exist`,
    );
    expect(runs[2].stderr).toContain('subfed export: --fine-tune: needs the client data (--data)');
    expect(runs[3].stderr).toContain(
      "subfed distill: --student: expected compact or one of mlp, lenet5-mnist, lenet5-cifar, lenet5-bn-mnist, lenet5-bn-cifar, got 'resnet'",
    );
    expect(runs[4].stderr).toContain("subfed distill: --width: the compact student has the compact export's widths");
    expect(runs[5].stderr).toContain(`subfed predict: '${join(dir, 'missing')}' does not exist`);
  });

  it('loads no server/ or sim/ module, no server-only package and not tfjs-layers', async () => {
    for (const command of ['export', 'predict']) {
      const modules = moduleLog();
      const run = await subfed([command, '--help'], { nodeArgs: modules.nodeArgs, env: modules.env });
      expect(run.code).toBe(0);
      const urls = modules.urls();
      expect(urls.some((u) => u.endsWith('/client/export/main.ts'))).toBe(true);
      expect(serverModules(urls, root)).toEqual([]);
      expect(urls.filter((u) => u.includes('tfjs-layers'))).toEqual([]);
    }
  });
});
