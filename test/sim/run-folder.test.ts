import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PRESETS, experimentOf, recordedConfig } from '../../sim/presets.js';
import { parseThreshold } from '../../sim/report-command.js';
import { RunFolderError, RunWriter, readRunFolder } from '../../sim/run-folder.js';
import { subfed } from '../cli/run-subfed.js';
import { FIXTURE_ALGORITHMS, fixtureRounds } from './report-fixtures.js';

const dir = mkdtempSync(path.join(tmpdir(), 'subfed-run-folder-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const config = { ...PRESETS.quick, clients: 4, rounds: 3, evalEvery: 2, algorithms: FIXTURE_ALGORITHMS };

/** A finished run folder of the fixture rounds. */
function runFolder(name: string): string {
  const folder = path.join(dir, name);
  const writer = new RunWriter(folder, config);
  for (const r of fixtureRounds()) writer.appendRound(r);
  writer.finish(['a setup note']);
  return folder;
}

describe('reading a run folder back', () => {
  it('gives back the config, every round and the notes', () => {
    const run = readRunFolder(runFolder('ok'));
    expect(run.config).toEqual(config);
    expect(run.rounds).toEqual(fixtureRounds());
    expect(run.notes).toEqual(['a setup note']);
  });

  const line = JSON.stringify(fixtureRounds()[0]);
  /** The first evaluation round's line, each client's record passed through `spoil`. */
  const evaluated = (spoil: (client: Record<string, unknown>) => Record<string, unknown>): string => {
    const round = fixtureRounds().find((r) => r.evaluation !== null)!;
    const clients = round.evaluation!.clients.map((c) => spoil({ ...c }));
    return JSON.stringify({ ...round, evaluation: { ...round.evaluation, clients } });
  };
  const cases: Array<[string, (folder: string) => void, RegExp]> = [
    ['a missing rounds.jsonl', (f) => rmSync(path.join(f, 'rounds.jsonl')), /rounds\.jsonl: ENOENT/],
    ['a config.json that is not JSON', (f) => writeFileSync(path.join(f, 'config.json'), '{'), /config\.json: not JSON/],
    [
      'a config.json field out of range',
      (f) => writeFileSync(path.join(f, 'config.json'), JSON.stringify(recordedConfig(experimentOf({ ...config, rounds: 0 })))),
      /config\.json: rounds: .*got 0/,
    ],
    [
      'a config.json of one run (seed) rather than an experiment (seeds)',
      (f) => writeFileSync(path.join(f, 'config.json'), JSON.stringify(config)),
      /config\.json: .*seeds: expected a list of non-negative integers.*unknown field\(s\) seed/,
    ],
    [
      "a multi-seed experiment's config.json (its runs are in seed-<seed>/)",
      (f) =>
        writeFileSync(path.join(f, 'config.json'), JSON.stringify({ ...recordedConfig(experimentOf(config)), seeds: [1, 2] })),
      /config\.json: seeds: an experiment of 2 seeds, whose runs are in its seed-<seed>\/ folders/,
    ],
    [
      'a line that is not JSON',
      (f) => writeFileSync(path.join(f, 'rounds.jsonl'), `${line}\n{oops\n`),
      /rounds\.jsonl line 2: not JSON/,
    ],
    [
      'a member without its figures',
      (f) => writeFileSync(path.join(f, 'rounds.jsonl'), JSON.stringify({ ...JSON.parse(line), members: [{ client: 0 }] })),
      /rounds\.jsonl line 1: members\.0\.received: .*expected object.*got nothing/,
    ],
    [
      'an accuracy above 1',
      (f) =>
        writeFileSync(
          path.join(f, 'rounds.jsonl'),
          line.replace('"personalized":{"accuracy":0.6', '"personalized":{"accuracy":1.6'),
        ),
      /rounds\.jsonl line 1: members\.0\.personalized\.accuracy: .*got 1\.6/,
    ],
    [
      'a sampled client without its training-data figures',
      (f) =>
        writeFileSync(
          path.join(f, 'rounds.jsonl'),
          evaluated((c) => (c.sampled ? { ...c, train: undefined } : c)),
        ),
      /rounds\.jsonl line 1: evaluation\.clients\.0\.train: .*expected object.*got nothing/,
    ],
    [
      'a never-sampled client with training-data figures (it is not measured there)',
      (f) =>
        writeFileSync(
          path.join(f, 'rounds.jsonl'),
          evaluated((c) => (c.sampled ? c : { ...c, train: c.test })),
        ),
      /rounds\.jsonl line 1: evaluation\.clients\.3: .*unknown field\(s\) train/,
    ],
    [
      'an algorithm the config does not run',
      (f) => writeFileSync(path.join(f, 'rounds.jsonl'), line.replace('"algorithm":"subfedavg-hy"', '"algorithm":"fedavg-ft"')),
      /rounds\.jsonl line 1: algorithm 'fedavg-ft' is not among config\.json's algorithms/,
    ],
    [
      'summary.json notes that are not strings',
      (f) => writeFileSync(path.join(f, 'summary.json'), JSON.stringify({ notes: [1] })),
      /summary\.json: notes: expected an array of strings/,
    ],
  ];
  it.each(cases)('refuses %s, naming the file, line and field', (name, spoil, message) => {
    const folder = runFolder(name.replace(/\W+/g, '-'));
    spoil(folder);
    expect(() => readRunFolder(folder)).toThrow(RunFolderError);
    expect(() => readRunFolder(folder)).toThrow(message);
  });
});

describe('subfed report', () => {
  it('takes the threshold as a fraction and refuses anything else, suggesting the fraction for a percentage', () => {
    expect(parseThreshold('0.8')).toBe(0.8);
    expect(parseThreshold('1')).toBe(1);
    expect(() => parseThreshold('80')).toThrow(
      "--threshold: expected a received accuracy as a fraction in (0, 1], got '80' (for 80% write 0.8)",
    );
    expect(() => parseThreshold('0')).toThrow(/got '0'$/);
    expect(() => parseThreshold('abc')).toThrow(/got 'abc'$/);
    expect(() => parseThreshold('')).toThrow(/got ''$/);
  });

  it('redraws the report with another threshold; exit 2 for a bad flag or folder', async () => {
    const folder = runFolder('cli');
    const before = readFileSync(path.join(folder, 'series.csv'), 'utf8');
    const ok = await subfed(['report', folder, '--threshold', '0.5']);
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain(path.join(folder, 'report.html'));
    expect(readFileSync(path.join(folder, 'report.html'), 'utf8')).toMatch(/first reaches 50\.0%/);
    expect(readFileSync(path.join(folder, 'series.csv'), 'utf8')).toBe(before);

    const bad = await subfed(['report', folder, '--threshold', '80']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^subfed report: --threshold: .*for 80% write 0\.8/);
    const missing = await subfed(['report', path.join(dir, 'nowhere')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^subfed report: .*nowhere[/\\]config\.json: ENOENT/);
  });
});
