/**
 * `subfed sweep`: the sweep file validated with field-named errors, the grid's
 * cells, a tiny sweep run, stopped with Ctrl-C in the middle of a cell, and
 * resumed: finished cells skipped, the stopped one run again.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { packageRoot } from '../../proto/package-root.js';
import type { RunRecord } from '../../sim/environment.js';
import { SimConfigError } from '../../sim/presets.js';
import { cellStates, loadSweep } from '../../sim/sweep.js';
import { runSweepCommand } from '../../sim/sweep-main.js';
import { memoryLogger } from '../server/harness.js';

const dir = mkdtempSync(path.join(tmpdir(), 'subfed-sweep-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => vi.restoreAllMocks());

const experiment = {
  dataset: 'synthetic',
  algorithms: ['fedavg', 'local'],
  clients: 4,
  partition: { kind: 'shards', shardSize: 50, shardsPerClient: 2 },
  maxTestPerClient: 50,
  rounds: 4,
  evalEvery: 2,
  training: { epochs: 1 },
  workers: 1,
};

let files = 0;
function sweepFile(content: unknown, name = `sweep-${++files}.json`): string {
  const file = path.join(dir, name);
  writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content));
  return file;
}

function failure(file: string): string {
  try {
    cellStates(loadSweep(file));
  } catch (error) {
    expect(error).toBeInstanceOf(SimConfigError);
    return (error as Error).message.replaceAll(file, 'F');
  }
  throw new Error(`${file} was accepted`);
}

const readJson = <T>(file: string): T => JSON.parse(readFileSync(file, 'utf8')) as T;

describe('a sweep file', () => {
  it('makes one cell per combination, the last path varying fastest, each validated as an experiment', () => {
    const sweep = loadSweep(
      sweepFile({
        experiment,
        grid: { 'partition.alpha': [0.1, 1], 'training.lr': [0.01, 0.05, 0.1], partition: [{ kind: 'dirichlet', alpha: 3 }] },
        seeds: [1, 2],
      }),
    );
    // partition.alpha set before partition replaced it: the later path wins, as with flags.
    expect(sweep.cells.map((c) => c.name)).toEqual([
      'alpha=0.1,lr=0.01,partition=dirichlet-3',
      'alpha=0.1,lr=0.05,partition=dirichlet-3',
      'alpha=0.1,lr=0.1,partition=dirichlet-3',
      'alpha=1,lr=0.01,partition=dirichlet-3',
      'alpha=1,lr=0.05,partition=dirichlet-3',
      'alpha=1,lr=0.1,partition=dirichlet-3',
    ]);
    expect(sweep.cells[4].experiment).toMatchObject({ training: { lr: 0.05, epochs: 1 }, seeds: [1, 2], clients: 4 });
    expect(sweep.cells[4].values).toEqual([
      { path: 'partition.alpha', value: 1 },
      { path: 'training.lr', value: 0.05 },
      { path: 'partition', value: { kind: 'dirichlet', alpha: 3 } },
    ]);
    expect(sweep.paths).toEqual(['partition.alpha', 'training.lr', 'partition']);
  });

  it('reads its experiment from a file relative to it, and its out likewise', () => {
    writeFileSync(path.join(dir, 'base.json'), JSON.stringify({ ...experiment, seeds: [5] }));
    const sweep = loadSweep(sweepFile({ experiment: 'base.json', grid: { rounds: [1, 2] }, out: 'out-here' }));
    expect(sweep.cells.map((c) => [c.name, c.experiment.rounds, c.experiment.seeds])).toEqual([
      ['rounds=1', 1, [5]],
      ['rounds=2', 2, [5]],
    ]);
    expect(sweep.out).toBe(path.join(dir, 'out-here'));
    expect(loadSweep(sweepFile({ grid: { rounds: [1] } }, 'named.json')).out).toBe(path.join('runs', 'named'));
  });

  it('names the file and the field of every problem', () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ grid: {} }, /^F: grid: expected at least one field path/],
      [{ grid: { rounds: 3 } }, /^F: grid\.rounds: expected a list of values, got 3$/],
      [{ grid: { rounds: [] } }, /^F: grid\.rounds: expected at least one value/],
      [{ grid: { rounds: [1] }, seeds: [1, 1] }, /^F: seeds: expected distinct seeds/],
      [{ grid: { rounds: [1] }, extra: 1 }, /^F: \(root\): unknown field\(s\) extra$/],
      [{ experiment: 5, grid: { rounds: [1] } }, /^F: experiment: expected the path of an experiment file or an object/],
      [
        { experiment, grid: { 'training.lr': [0.1, -1] } },
        /^F: grid\.training\.lr\[1\]: training\.lr: expected a positive number, got -1$/,
      ],
      [{ experiment, grid: { 'training.lrr': [0.1] } }, /^F: grid\.training\.lrr\[0\]: training: unknown field\(s\) lrr$/],
      [
        { experiment, grid: { 'rounds.x': [1] } },
        /^F: grid\.rounds\.x\[0\]: cannot set rounds\.x: rounds holds 4, not an object$/,
      ],
      [{ experiment, grid: { 'a..b': [1] } }, /^F: grid\.a\.\.b: expected a field path/],
      [{ experiment, grid: { seeds: [[1]] } }, /^F: grid\.seeds: give the seeds in the sweep's "seeds" field$/],
      [{ experiment, grid: { preset: ['paper'] } }, /^F: grid\.preset: the preset is the base/],
      [
        { experiment: { ...experiment, rounds: 0 }, grid: { fraction: [1] } },
        /^F: experiment: rounds: expected a positive integer, got 0$/,
      ],
      [{ experiment: 'nowhere.json', grid: { fraction: [1] } }, /nowhere\.json: cannot read an experiment/],
      ['{', /^F: not valid JSON/],
    ];
    for (const [content, message] of cases) expect(failure(sweepFile(content)), JSON.stringify(content)).toMatch(message);
  });
});

/** `subfed sweep` in a child process, as a user runs it; resolves with its exit code once it exits. */
function sweepProcess(file: string, onLine: (line: string, signal: () => void) => void): Promise<number | null> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'cli.ts', 'sweep', '--config', file], {
    cwd: packageRoot(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let buffered = '';
  child.stderr.on('data', (d: Buffer) => {
    buffered += d.toString();
    let end;
    while ((end = buffered.indexOf('\n')) >= 0) {
      onLine(buffered.slice(0, end), () => child.kill('SIGINT'));
      buffered = buffered.slice(end + 1);
    }
  });
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

describe('subfed sweep', () => {
  it('runs every cell, is stopped cleanly by Ctrl-C, and resumes: finished cells skipped, the stopped one run again', async () => {
    const out = path.join(dir, 'run');
    const file = sweepFile({ experiment, grid: { 'training.lr': [0.01, 0.05, 0.1] }, seeds: [1, 2], out });
    const cells = ['lr=0.01', 'lr=0.05', 'lr=0.1'];
    const cellDir = (name: string): string => path.join(out, 'cells', name);
    const record = (name: string): RunRecord => readJson(path.join(cellDir(name), 'run.json'));

    // Ctrl-C once while the second cell trains: it finishes the round and stops.
    let interrupted = false;
    const code = await sweepProcess(file, (line, sigint) => {
      if (!interrupted && line.includes('"event":"round"') && line.includes('cell 2/3')) {
        interrupted = true;
        sigint();
      }
    });
    expect(interrupted).toBe(true);
    expect(code).toBe(130);
    expect(record(cells[0]).status).toBe('completed');
    expect(record(cells[1]).status).toBe('interrupted');
    expect(readdirSync(path.join(out, 'cells')).sort()).toEqual(cells.slice(0, 2));
    const firstCell = record(cells[0]);
    // The table of what was done is written anyway.
    const partial = readFileSync(path.join(out, 'table.csv'), 'utf8');
    expect(partial).toMatch(/^lr=0\.01,0\.01,fedavg,ran,2,/m);
    expect(partial).toMatch(/^lr=0\.05,0\.05,fedavg,interrupted,/m);
    expect(partial).toMatch(/^lr=0\.1,0\.1,,not run,0/m);

    // Resumed: the finished cell is skipped, the stopped one cleared and run again, the last one run.
    let stdout = '';
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => ((stdout += String(chunk)), true));
    const log = memoryLogger();
    expect(await runSweepCommand({ config: file }, { logger: log.logger })).toBe(0);
    vi.restoreAllMocks();
    const cellLines = log.lines().filter((l) => l.event === 'cell');
    expect(cellLines.map((l) => [l.cell, l.status])).toEqual([
      [cells[0], 'skipped'],
      [cells[1], 'rerun'],
      [cells[1], 'running'],
      [cells[1], 'completed'],
      [cells[2], 'running'],
      [cells[2], 'completed'],
    ]);
    expect(record(cells[0])).toEqual(firstCell);
    for (const name of cells) expect(record(name).status).toBe('completed');
    expect(record(cells[1]).seeds).toEqual([
      { seed: 1, status: 'completed' },
      { seed: 2, status: 'completed' },
    ]);

    // One table: a row per cell and algorithm, in the terminal, CSV and HTML; and one report.
    const csv = readFileSync(path.join(out, 'table.csv'), 'utf8').trimEnd().split('\n');
    expect(csv[0]).toMatch(
      /^cell,training\.lr,algorithm,status,seeds,personalizedAcc_mean,personalizedAcc_std,personalizedAcc_ci95_low,personalizedAcc_ci95_high,/,
    );
    expect(csv.slice(1).map((row) => row.split(',').slice(0, 5).join(','))).toEqual([
      'lr=0.01,0.01,fedavg,finished earlier,2',
      'lr=0.01,0.01,local,finished earlier,2',
      'lr=0.05,0.05,fedavg,ran,2',
      'lr=0.05,0.05,local,ran,2',
      'lr=0.1,0.1,fedavg,ran,2',
      'lr=0.1,0.1,local,ran,2',
    ]);
    // The CSV's figures are the cell's summary.json's.
    const summary = readJson<{ algorithms: { algorithm: string; metrics: Record<string, { mean: number }> }[] }>(
      path.join(cellDir(cells[2]), 'summary.json'),
    );
    const fedavg = summary.algorithms.find((a) => a.algorithm === 'fedavg')!;
    expect(Number(csv[5].split(',')[5])).toBe(fedavg.metrics.personalizedAcc.mean);
    expect(stdout).toMatch(/^cell\s+training\.lr\s+algorithm\s+status\s+seeds\s+personalized acc %/m);
    expect(stdout).toContain(`sweep folder: ${path.resolve(out)}`);
    const table = readFileSync(path.join(out, 'table.html'), 'utf8');
    expect(table.match(/<tr>/g)).toHaveLength(7);
    const report = readFileSync(path.join(out, 'report.html'), 'utf8');
    expect(report).toContain('href="cells/lr%3D0.05/report.html"');
    expect(report).toContain('<svg');
    expect(report).not.toMatch(/<script/);

    // A finished cell's folder from another config is refused before anything runs.
    const changed = sweepFile({ experiment: { ...experiment, rounds: 3 }, grid: { 'training.lr': [0.01] }, seeds: [1, 2], out });
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    expect(await runSweepCommand({ config: changed }, { logger: memoryLogger().logger })).toBe(2);
    vi.restoreAllMocks();
    expect(failure(changed)).toMatch(
      /cells\/lr=0\.01: holds a finished run of another config \(rounds: 4 in the folder, 3 now\); move or delete that folder/,
    );
  });
});
