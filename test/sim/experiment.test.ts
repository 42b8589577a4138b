/**
 * `subfed sim` as a researcher runs it (runSimCommand): an experiment file,
 * several seeds summarised with mean, standard deviation and a 95% CI, the
 * run folder's record of what ran where, `subfed report` redrawing what it
 * wrote, reproducibility, and the run folder's rule: it appears with the first
 * round, so a run that fails validation or setup, or is stopped before its
 * first round, leaves none.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import type { RunRecord } from '../../sim/environment.js';
import { runExperiment } from '../../sim/experiment.js';
import { runSimCommand, type SimCommandFlags } from '../../sim/main.js';
import { resolveExperiment } from '../../sim/presets.js';
import { runReportCommand } from '../../sim/report-command.js';
import { packageRoot } from '../../proto/package-root.js';
import type { AlgorithmSummary } from '../../sim/report.js';
import type { AlgorithmSpread } from '../../sim/seed-summary.js';
import { spread } from '../../sim/stats.js';
import { memoryLogger } from '../server/harness.js';

const dir = mkdtempSync(path.join(tmpdir(), 'subfed-experiment-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => vi.restoreAllMocks());

/** A tiny experiment: 4 synthetic clients, 2 rounds, a pruning and a dense algorithm. */
const tiny = {
  dataset: 'synthetic',
  algorithms: ['subfedavg-un', 'fedavg'],
  algorithmConfigs: { 'subfedavg-un': { p: 30, accThresh: 0.1 } },
  clients: 4,
  partition: { kind: 'shards', shardSize: 50, shardsPerClient: 2 },
  maxTestPerClient: 50,
  rounds: 2,
  evalEvery: 2,
  training: { epochs: 2 },
  workers: 2,
  seeds: [7],
};

function experimentFile(name: string, content: object): string {
  const file = path.join(dir, name);
  writeFileSync(file, JSON.stringify(content));
  return file;
}

/** A command's exit code, with its stdout and stderr captured. */
async function captured(command: () => number | Promise<number>): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => ((stdout += String(chunk)), true));
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((stderr += String(chunk)), true));
  try {
    const code = await command();
    return { code, stdout, stderr };
  } finally {
    vi.restoreAllMocks();
  }
}

const sim = (flags: SimCommandFlags) => captured(() => runSimCommand(flags, { logger: memoryLogger().logger }));
const report = (folder: string, flags: { threshold?: string } = {}) => captured(() => runReportCommand(folder, flags));

const readJson = <T>(file: string): T => JSON.parse(readFileSync(file, 'utf8')) as T;

/** What a run's (a seed's) folder holds, sorted. */
const RUN_FILES = ['clients.csv', 'config.json', 'report.html', 'rounds.jsonl', 'series.csv', 'summary.json'];

describe('subfed sim --config', () => {
  it('repeats the run per seed and summarises each metric with mean, std and a 95% CI', async () => {
    const out = path.join(dir, 'seeds');
    const run = await sim({ config: experimentFile('seeds.json', tiny), seeds: '1,2,3', out });
    expect(run.code, run.stderr).toBe(0);
    expect(readdirSync(out).sort()).toEqual([
      'config.json',
      'report.html',
      'run.json',
      'seed-1',
      'seed-2',
      'seed-3',
      'summary.json',
    ]);
    for (const seed of [1, 2, 3]) {
      const folder = path.join(out, `seed-${seed}`);
      expect(readdirSync(folder).sort()).toEqual(RUN_FILES);
      expect(readJson<{ seeds: number[] }>(path.join(folder, 'config.json')).seeds).toEqual([seed]);
    }
    // The experiment's config.json is the resolved experiment: the flags' seeds, no out.
    const config = readJson<Record<string, unknown>>(path.join(out, 'config.json'));
    expect(config).toMatchObject({ preset: 'quick', dataset: 'synthetic', seeds: [1, 2, 3], rounds: 2 });
    expect(config).not.toHaveProperty('out');

    // Each seed drew its own split and initial models: the runs differ.
    const perSeed = [1, 2, 3].map(
      (seed) => readJson<{ summaries: AlgorithmSummary[] }>(path.join(out, `seed-${seed}`, 'summary.json')).summaries,
    );
    const fedavgAcc = perSeed.map((s) => s.find((x) => x.algorithm === 'fedavg')!.personalizedAcc!);
    expect(new Set(fedavgAcc).size).toBeGreaterThan(1);
    // summary.json: the statistics of those per-seed figures.
    const summary = readJson<{ status: string; algorithms: AlgorithmSpread[] }>(path.join(out, 'summary.json'));
    expect(summary.status).toBe('completed');
    const fedavg = summary.algorithms.find((a) => a.algorithm === 'fedavg')!;
    expect(fedavg.seeds).toEqual([1, 2, 3]);
    expect(fedavg.metrics.personalizedAcc).toEqual(spread(fedavgAcc));
    expect(fedavg.metrics.personalizedAcc.ci95!.low).toBeLessThan(fedavg.metrics.personalizedAcc.mean);
    expect(summary.algorithms.find((a) => a.algorithm === 'subfedavg-un')!.metrics.finalSparsity.n).toBe(3);
    expect(fedavg.metrics).not.toHaveProperty('interrupted');

    // The terminal table and the report show them.
    const pct = (v: number) => (v * 100).toFixed(1);
    const acc = fedavg.metrics.personalizedAcc;
    const shown = `${pct(acc.mean)} ± ${pct(acc.std!)} [${pct(acc.ci95!.low)}, ${pct(acc.ci95!.high)}]`;
    expect(run.stdout).toContain(shown);
    expect(run.stdout).toMatch(/95% confidence interval, Student t with n-1 degrees of freedom/);
    const html = readFileSync(path.join(out, 'report.html'), 'utf8');
    expect(html).toContain(shown);
    expect(html).toContain('href="seed-2/report.html"');
    expect(html).toContain('<svg');

    // subfed report redraws every seed's folder (here with another threshold), then the summary over the seeds.
    const redrawn = await report(out, { threshold: '0.5' });
    expect(redrawn.code, redrawn.stderr).toBe(0);
    expect(redrawn.stdout).toContain("each seed's report in seed-1, seed-2, seed-3");
    for (const seed of [1, 2, 3]) {
      expect(readFileSync(path.join(out, `seed-${seed}`, 'report.html'), 'utf8')).toMatch(/first reaches 50\.0%/);
    }
    expect(readJson<{ algorithms: AlgorithmSpread[] }>(path.join(out, 'summary.json')).algorithms).toEqual(summary.algorithms);
    expect(readFileSync(path.join(out, 'report.html'), 'utf8')).toContain(shown);
    // ...or one seed's folder alone, from its files: the same series.
    const series = path.join(out, 'seed-2', 'series.csv');
    const before = readFileSync(series, 'utf8');
    rmSync(series);
    const one = await report(path.join(out, 'seed-2'));
    expect(one.code, one.stderr).toBe(0);
    expect(readFileSync(series, 'utf8')).toBe(before);
  });

  it('records the version, the commit of a checkout, the backend the workers started and the machine', async () => {
    const out = path.join(dir, 'record');
    expect((await sim({ config: experimentFile('record.json', tiny), out, backend: 'cpu' })).code).toBe(0);
    const record = readJson<RunRecord>(path.join(out, 'run.json'));
    const { version } = readJson<{ version: string }>(path.join(packageRoot(), 'package.json'));
    expect(record.status).toBe('completed');
    expect(record.subfed.version).toBe(version);
    // This test runs from a checkout when the package root has .git; an installed package records null.
    if (existsSync(path.join(packageRoot(), '.git'))) expect(record.subfed.commit).toMatch(/^[0-9a-f]{40}$/);
    else expect(record.subfed.commit).toBeNull();
    expect(record.backend).toBe('cpu');
    expect(record.machine.cores).toBeGreaterThan(0);
    expect(record.machine.node).toBe(process.version);
    expect(record.machine.platform).toBe(process.platform);
    expect(record.seeds).toEqual([{ seed: 7, status: 'completed' }]);
    expect(Date.parse(record.finishedAt!)).toBeGreaterThanOrEqual(Date.parse(record.startedAt));
    // auto is resolved to what the workers chose, never 'auto'
    const auto = path.join(dir, 'record-auto');
    expect((await sim({ config: experimentFile('record.json', tiny), out: auto, rounds: '1' })).code).toBe(0);
    expect(['tensorflow', 'wasm', 'cpu']).toContain(readJson<RunRecord>(path.join(auto, 'run.json')).backend);
  });
});

describe('reproducibility', () => {
  /**
   * Every field of a rounds.jsonl line but the wall-clock ones, which measure
   * this machine's speed at that moment, not the experiment: `wallSeconds`.
   */
  const WALL_CLOCK_FIELDS = ['wallSeconds'];
  const metrics = (folder: string): string[] =>
    readFileSync(path.join(folder, 'rounds.jsonl'), 'utf8')
      .trimEnd()
      .split('\n')
      .map((line) => {
        const round = JSON.parse(line) as Record<string, unknown>;
        for (const field of WALL_CLOCK_FIELDS) {
          expect(round).toHaveProperty(field);
          delete round[field];
        }
        return JSON.stringify(round);
      });

  it('the same config and seed give bit-identical rounds.jsonl metrics on the same backend', async () => {
    const file = experimentFile('repro.json', { ...tiny, rounds: 3 });
    const [a, b] = [path.join(dir, 'repro-a'), path.join(dir, 'repro-b')];
    expect((await sim({ config: file, out: a })).code).toBe(0);
    expect((await sim({ config: file, out: b })).code).toBe(0);
    expect(readJson<RunRecord>(path.join(a, 'run.json')).backend).toBe(readJson<RunRecord>(path.join(b, 'run.json')).backend);
    const [first, second] = [metrics(a), metrics(b)];
    expect(first).toHaveLength(6);
    // Compared as text: every accuracy, byte count and sparsity to the last bit.
    expect(second).toEqual(first);
    // ...and the run did something: pruning moved fewer bytes than dense.
    const last = JSON.parse(first[2]) as { meanSparsity: number; bytes: { up: number; denseUp: number } };
    expect(last.meanSparsity).toBeGreaterThan(0);
    expect(last.bytes.up).toBeLessThan(last.bytes.denseUp);
  });
});

describe('the run folder appears with the first round: a run that cannot start leaves none', () => {
  it('a config error, missing data files or an impossible split: exit 2, no folder', async () => {
    const empty = path.join(dir, 'empty-data');
    mkdirSync(empty);
    const cases: Array<[SimCommandFlags, RegExp]> = [
      [{ rounds: '0' }, /--rounds: expected a positive integer/],
      [
        { config: experimentFile('bad.json', { ...tiny, partition: { kind: 'dirichlet', alpha: 0 } }) },
        /partition\.alpha: expected a positive number, got 0/,
      ],
      [{ dataset: 'mnist', data: empty, compare: 'fedavg' }, /mnist: .* has none of the expected files/],
      [
        { config: experimentFile('split.json', { ...tiny, partition: { kind: 'dirichlet', alpha: 0.5 }, clients: 300 }) },
        /dirichlet: 300 clients x 10 minimum examples need 3000, but there are only 2000 training examples/,
      ],
    ];
    for (const [i, [flags, message]] of cases.entries()) {
      const out = path.join(dir, 'never', String(i));
      const run = await sim({ ...flags, out });
      expect(run.code, JSON.stringify(flags)).toBe(2);
      expect(run.stderr).toMatch(message);
      expect(existsSync(out), `${JSON.stringify(flags)} left ${out}`).toBe(false);
    }
    expect(existsSync(path.join(dir, 'never'))).toBe(false);
  });

  it('a run stopped before its first round: no folder, and no round', async () => {
    const out = path.join(dir, 'stopped');
    const stop = new AbortController();
    const result = await runExperiment(resolveExperiment({ config: experimentFile('stopped.json', tiny), out }), {
      folder: out,
      signal: stop.signal,
      log: memoryLogger().logger,
      // Set up (data split, workers started), then stopped: no algorithm starts.
      onEvent: (event) => {
        if (event.kind === 'setup') stop.abort();
      },
    });
    expect(result).toMatchObject({ status: 'interrupted', roundsWritten: 0 });
    expect(existsSync(out)).toBe(false);
  });

  it('a folder that existed before is kept as it was', async () => {
    const out = path.join(dir, 'existing');
    mkdirSync(out);
    writeFileSync(path.join(out, 'notes.txt'), 'mine');
    const run = await sim({ dataset: 'mnist', data: path.join(dir, 'nowhere'), compare: 'fedavg', out });
    expect(run.code).toBe(2);
    expect(readdirSync(out)).toEqual(['notes.txt']);
  });
});
