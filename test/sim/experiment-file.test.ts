/**
 * Experiment files (`subfed sim --config`): a partial experiment laid over the
 * preset it names, then the flags; every error names the file or flag and the
 * field. The presets are files of the same format, shipped in sim/presets/.
 */
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readJsonObject } from '../../sim/config-layers.js';
import {
  PRESETS,
  PRESET_NAMES,
  SimConfigError,
  experimentSchema,
  loadPreset,
  presetFile,
  recordedConfig,
  resolveExperiment,
  type SimFlags,
} from '../../sim/presets.js';

const dir = mkdtempSync(path.join(tmpdir(), 'subfed-experiment-file-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
function file(content: unknown): string {
  const name = path.join(dir, `experiment-${++files}.json`);
  writeFileSync(name, typeof content === 'string' ? content : JSON.stringify(content));
  return name;
}

const resolve = (flags: SimFlags) => resolveExperiment(flags);
const failure = (flags: SimFlags): string => {
  try {
    resolveExperiment(flags);
  } catch (error) {
    expect(error).toBeInstanceOf(SimConfigError);
    return (error as Error).message;
  }
  throw new Error(`${JSON.stringify(flags)} was accepted`);
};

describe('an experiment file', () => {
  it('lays its fields over the preset it names: objects field by field, a union of another kind whole', () => {
    const f = file({
      preset: 'paper',
      dataset: 'synthetic',
      partition: { kind: 'dirichlet', alpha: 0.3 },
      training: { lr: 0.05 },
      algorithmConfigs: { 'subfedavg-un': { target: 50 } },
      testSet: { kind: 'held-out', testFraction: 0.2 },
      maxTestPerClient: 100,
      seeds: [4, 5],
    });
    const e = resolve({ config: f });
    expect(e).toMatchObject({
      preset: 'paper',
      dataset: 'synthetic',
      clients: 100,
      partition: { kind: 'dirichlet', alpha: 0.3 },
      training: { epochs: 5, batchSize: 10, lr: 0.05, momentum: 0.5 },
      testSet: { kind: 'held-out', testFraction: 0.2 },
      maxTestPerClient: 100,
      seeds: [4, 5],
    });
    // The preset's own block for the algorithm stays, with the file's field added.
    expect(e.algorithmConfigs['subfedavg-un']).toEqual({ gateOn: 'test', target: 50 });
    expect(e.partition).toEqual({ kind: 'dirichlet', alpha: 0.3 });
  });

  it('starts from quick when it names no preset, and an empty file is quick', () => {
    const { workers: _w, ...quick } = recordedConfig(resolve({}));
    const { workers: _f, ...fromFile } = recordedConfig(resolve({ config: file({}) }));
    expect(fromFile).toEqual(quick);
  });

  it('is overridden by the flags, the flags by --set', () => {
    const f = file({ preset: 'quick', rounds: 3, training: { lr: 0.05, batchSize: 20 }, partition: { kind: 'iid' } });
    const e = resolve({
      config: f,
      rounds: '7',
      lr: '0.1',
      partition: 'dirichlet',
      alpha: '0.5',
      seeds: '1,2,3',
      set: ['algorithmConfigs.subfedavg-un.target=45', 'training.momentum=0.9'],
    });
    expect(e).toMatchObject({
      rounds: 7,
      training: { epochs: 2, batchSize: 20, lr: 0.1, momentum: 0.9 },
      partition: { kind: 'dirichlet', alpha: 0.5 },
      seeds: [1, 2, 3],
    });
    expect(e.algorithmConfigs['subfedavg-un']).toMatchObject({ target: 45, p: 15 });
    // A flag for the kind the file already has keeps the file's other fields.
    expect(
      resolve({ config: file({ partition: { kind: 'shards', shardSize: 100, shardsPerClient: 3 } }), partition: 'shards' })
        .partition,
    ).toEqual({ kind: 'shards', shardSize: 100, shardsPerClient: 3 });
    expect(resolve({ shardSize: '120', shardsPerClient: '1' }).partition).toEqual({
      kind: 'shards',
      shardSize: 120,
      shardsPerClient: 1,
    });
    expect(resolve({ maxTestPerClient: 'all' }).maxTestPerClient).toBeNull();
  });

  it('resolves data and out against its own folder', () => {
    const e = resolve({ config: file({ dataset: 'mnist', data: 'mnist-files', out: '../runs/x', model: 'lenet5-mnist' }) });
    expect(e.data).toBe(path.join(dir, 'mnist-files'));
    expect(e.out).toBe(path.resolve(dir, '../runs/x'));
    // a flag's path stays as typed (relative to where the command runs)
    expect(resolve({ config: file({ data: 'a' }), data: 'b' }).data).toBe('b');
  });

  it('names the file and the field of every problem', () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ partition: { kind: 'dirichlet', alpha: -1 } }, /^F: partition\.alpha: expected a positive number, got -1$/],
      [{ partition: { kind: 'dirichlet' } }, /^F: partition\.alpha: expected a positive number, got nothing$/],
      [{ partition: { kind: 'random' } }, /^F: partition\.kind: expected kind shards, dirichlet, iid, got "random"$/],
      [
        { rounds: 0, fraction: 2 },
        /^F: fraction: expected a number in \(0, 1\], got 2; F: rounds: expected a positive integer, got 0$/,
      ],
      [{ lrr: 0.1 }, /^F: unknown field\(s\) lrr$/],
      [{ training: { epoch: 3 } }, /^F: training: unknown field\(s\) epoch$/],
      [{ training: { lr: '0.1' } }, /^F: training\.lr: expected a positive number, got "0\.1"$/],
      [{ seeds: [] }, /^F: seeds: expected at least one seed/],
      [{ seeds: [1, 1] }, /^F: seeds: expected distinct seeds, got \[1,1\]$/],
      [{ seeds: 3 }, /^F: seeds: expected a list of non-negative integers, got 3$/],
      [{ algorithmConfigs: { 'subfedavg-un': { p: 150 } } }, /^F: algorithmConfigs\.subfedavg-un\.p: .*, got 150$/],
      [
        { algorithmConfigs: { 'subfedavg-un': { epochs: 3 } } },
        /^F: algorithmConfigs\.subfedavg-un\.epochs: set training\.epochs instead/,
      ],
      [{ algorithmConfigs: { fedprox2: {} } }, /^F: algorithmConfigs: unknown field\(s\) fedprox2$/],
      [{ training: { epochs: 1 } }, /^F: training\.epochs: expected at least 2: Sub-FedAvg compares/],
      [{ dataset: 'cifar10' }, /^F: model: lenet5-mnist takes 28x28x1 images, but cifar10 has 32x32x3 \(lenet5-cifar fits\)/],
      [
        { algorithms: ['subfedavg-hy'], batchNormModel: 'lenet5-mnist' },
        /^F: batchNormModel: subfedavg-hy needs a model with BatchNorm/,
      ],
      [
        { dataset: 'synthetic', algorithms: ['fedavg', 'subfedavg-hy'], batchNormModel: 'lenet5-bn-cifar' },
        /^F: batchNormModel: lenet5-bn-cifar takes 32x32x3 images and model lenet5-mnist 28x28x1, but the algorithms share one synthetic dataset$/,
      ],
      [{ preset: 'huge' }, /^F: preset: expected one of quick, paper, paper-mnist, paper-cifar10, dirichlet, got "huge"$/],
      ['{ "rounds": 3,', /^F: not valid JSON/],
      ['[1, 2]', /^F: expected a JSON object \(an experiment: see README "Experiment files"\), got \[1,2\]$/],
    ];
    for (const [content, message] of cases) {
      const f = file(content);
      expect(failure({ config: f }).replaceAll(f, 'F'), JSON.stringify(content)).toMatch(message);
    }
    expect(failure({ config: path.join(dir, 'missing.json') })).toMatch(/missing\.json: cannot read an experiment/);
  });

  it('names the flag when a flag makes the config invalid, and the file when the file does', () => {
    const f = file({ partition: { kind: 'dirichlet', alpha: 0.5 } });
    expect(failure({ config: f, partition: 'shards', shardSize: '100' })).toBe(
      "--partition 'shards': partition.shardsPerClient: expected a positive integer, got nothing",
    );
    expect(failure({ config: f, dataset: 'cifar10' })).toBe(
      "--dataset 'cifar10': model: lenet5-mnist takes 28x28x1 images, but cifar10 has 32x32x3 (lenet5-cifar fits)",
    );
    const cifar = file({ dataset: 'cifar10' });
    expect(resolve({ config: cifar, model: 'lenet5-cifar' }).model).toBe('lenet5-cifar');
    expect(failure({ config: cifar, model: 'lenet5-cifar', compare: 'fedavg,subfedavg-hy' })).toBe(
      `${cifar}: batchNormModel: lenet5-bn-mnist takes 28x28x1 images, but cifar10 has 32x32x3 (lenet5-bn-cifar fits)`,
    );
    // A bad value in the file that a flag replaces is no problem.
    expect(resolve({ config: file({ rounds: 0 }), rounds: '4' }).rounds).toBe(4);
    expect(failure({ config: f, preset: 'paper' })).toMatch(
      /^--preset 'paper' and --config '.*': the experiment file names its preset/,
    );
  });

  it('is what a run folder records: config.json runs the same experiment again', () => {
    const e = resolve({ preset: 'dirichlet', rounds: '3', seeds: '2,9', lr: '0.02', out: path.join(dir, 'somewhere') });
    const recorded = recordedConfig(e);
    expect(recorded).not.toHaveProperty('out');
    const again = resolve({ config: file(recorded) });
    expect(again).toEqual({ ...e, out: undefined });
  });
});

describe('the presets', () => {
  it('are the files in sim/presets/, one per name, each complete and naming itself', () => {
    const folder = path.dirname(presetFile('quick'));
    expect(readdirSync(folder).sort()).toEqual(PRESET_NAMES.map((n) => `${n}.json`).sort());
    for (const name of PRESET_NAMES) {
      const json = readJsonObject(presetFile(name), 'a preset');
      expect(json.preset).toBe(name);
      // Complete: every field of the schema but the optional ones and workers (the machine's cores).
      const required = Object.entries(experimentSchema.shape)
        .filter(([, field]) => !field.safeParse(undefined).success)
        .map(([key]) => key)
        .filter((key) => key !== 'workers');
      expect(Object.keys(json).sort(), name).toEqual(expect.arrayContaining(required));
      expect(loadPreset(name).preset).toBe(name);
    }
  });

  it('validate, and set the settings they are named for', () => {
    expect(PRESETS['paper-mnist']).toMatchObject({ dataset: 'mnist', model: 'lenet5-mnist', rounds: 300, clients: 100 });
    expect(PRESETS['paper-cifar10']).toMatchObject({
      dataset: 'cifar10',
      model: 'lenet5-cifar',
      batchNormModel: 'lenet5-bn-cifar',
      partition: { kind: 'shards', shardSize: 250, shardsPerClient: 2 },
      training: { epochs: 5, batchSize: 10, lr: 0.01, momentum: 0.5 },
      fraction: 0.1,
      rounds: 300,
    });
    expect(PRESETS.dirichlet.partition).toEqual({ kind: 'dirichlet', alpha: 0.5 });
    // Every algorithm runs on every preset's models.
    for (const name of PRESET_NAMES) {
      expect(() => resolve({ preset: name, compare: 'subfedavg-un,subfedavg-hy,fedavg,fedavg-ft,local' })).not.toThrow();
    }
  });
});
