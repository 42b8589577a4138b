import { describe, expect, it } from 'vitest';
import {
  PRESETS,
  SimConfigError,
  algorithmConfig,
  membersPerRound,
  modelFor,
  resolveSimConfig,
  validateSimConfig,
  type SimFlags,
} from '../../sim/presets.js';

describe('presets', () => {
  it('paper reproduces the reference setting', () => {
    const paper = resolveSimConfig({ preset: 'paper' });
    expect(paper).toMatchObject({
      clients: 100,
      partition: { kind: 'shards', shardSize: 250, shardsPerClient: 2 },
      fraction: 0.1,
      training: { epochs: 5, batchSize: 10, lr: 0.01, momentum: 0.5 },
      weighting: 'unweighted',
      rounds: 50,
      model: 'lenet5-mnist',
      batchNormModel: 'lenet5-bn-mnist',
    });
    expect(algorithmConfig(paper, 'subfedavg-un')).toMatchObject({
      p: 10,
      target: 30,
      distThresh: 1e-4,
      accThresh: 0.5,
      gateOn: 'test',
    });
    expect(algorithmConfig(paper, 'subfedavg-hy')).toMatchObject({
      p: 10,
      target: 50,
      distThresh: 5e-4,
      q: 0.45,
      l1: 1e-4,
      channelDistThresh: 0.01,
      accThresh: 0.5,
      gateOn: 'test',
    });
    expect(membersPerRound(paper)).toBe(10);
    expect(modelFor(paper, 'subfedavg-hy')).toBe('lenet5-bn-mnist');
    expect(modelFor(paper, 'fedavg')).toBe('lenet5-mnist');
  });

  it('quick is the default and is smaller than paper', () => {
    const quick = resolveSimConfig({});
    expect(quick.preset).toBe('quick');
    expect(quick.clients * quick.rounds * quick.training.epochs).toBeLessThan(
      PRESETS.paper.clients * PRESETS.paper.rounds * PRESETS.paper.training.epochs,
    );
    // A larger prune step than the paper's, gated on a validation split.
    expect(algorithmConfig(quick, 'subfedavg-un')).toMatchObject({ p: 15, target: 30, gateOn: 'val' });
    expect(algorithmConfig(quick, 'subfedavg-hy')).toMatchObject({ p: 15, target: 50, gateOn: 'val' });
    expect(algorithmConfig(quick, 'fedavg-ft')).toMatchObject({ ftEpochs: 1, epochs: 2 });
  });

  it('flags override preset fields and leave the preset itself untouched', () => {
    const c = resolveSimConfig({
      preset: 'paper',
      rounds: '3',
      clients: '7',
      compare: 'fedavg, local',
      values: 'int8',
      seeds: '0',
      workers: '1',
      evalEvery: '2',
      data: '/tmp/d',
      epochs: '3',
      out: 'x',
    });
    expect(c).toMatchObject({
      rounds: 3,
      clients: 7,
      algorithms: ['fedavg', 'local'],
      values: 'int8',
      seed: 0,
      workers: 1,
      evalEvery: 2,
      data: '/tmp/d',
      training: { ...PRESETS.paper.training, epochs: 3 },
      out: 'x',
    });
    expect(PRESETS.paper.rounds).toBe(50);
    expect(PRESETS.paper.algorithms).toEqual(['subfedavg-un']);
  });
});

describe('flag validation names the flag and the value', () => {
  const cases: Array<[SimFlags, RegExp]> = [
    [{ preset: 'huge' }, /--preset: expected one of quick, paper, paper-mnist, paper-cifar10, dirichlet, got 'huge'/],
    [{ rounds: 'abc' }, /--rounds: expected a positive integer, got 'abc'/],
    [{ rounds: '0' }, /--rounds: expected a positive integer, got '0'/],
    [{ rounds: '2.5' }, /--rounds: expected a positive integer, got '2.5'/],
    [{ clients: '-3' }, /--clients: expected a positive integer, got '-3'/],
    [{ evalEvery: '' }, /--eval-every: expected a positive integer, got ''/],
    [{ workers: 'many' }, /--workers: expected a positive integer, got 'many'/],
    [{ seeds: '-1' }, /--seeds: expected a comma-separated list of non-negative integers, got '-1'/],
    [{ seeds: '1,2,1' }, /--seeds: expected distinct seeds, got '1,2,1'/],
    [{ lr: 'fast' }, /--lr: expected a number, got 'fast'/],
    [{ lr: '-0.1' }, /^--lr '-0.1': training\.lr: expected a positive number, got -0\.1$/],
    [{ momentum: '1' }, /^--momentum '1': training\.momentum: expected a number in \[0, 1\), got 1$/],
    [{ batchSize: '0' }, /--batch-size: expected a positive integer, got '0'/],
    [{ partition: 'random' }, /--partition: expected one of shards, dirichlet, iid, got 'random'/],
    [{ alpha: '0.5' }, /^--alpha '0\.5': partition: unknown field\(s\) alpha$/],
    [{ partition: 'dirichlet' }, /^--partition 'dirichlet': partition\.alpha: expected a positive number, got nothing$/],
    [{ partition: 'dirichlet', alpha: '0' }, /^--alpha '0': partition\.alpha: expected a positive number, got 0$/],
    [{ testSet: 'held-out' }, /^--test-set 'held-out': testSet\.testFraction: expected a number in \(0, 1\), got nothing$/],
    [{ maxTestPerClient: 'none' }, /--max-test-per-client: expected a positive integer, got 'none'/],
    [{ model: 'resnet' }, /--model: expected one of mlp, lenet5-mnist/],
    [
      { dataset: 'cifar10' },
      /^--dataset 'cifar10': model: lenet5-mnist takes 28x28x1 images, but cifar10 has 32x32x3 \(lenet5-cifar fits\)$/,
    ],
    [{ set: ['training.lr'] }, /^--set 'training\.lr': expected path=value/],
    [{ set: ['training..lr=1'] }, /^--set 'training\.\.lr=1': expected a field path like training\.lr/],
    [{ set: ['training.lr=-1'] }, /^--set 'training\.lr=-1': training\.lr: expected a positive number, got -1$/],
    [{ set: ['rounds.x=1'] }, /^--set 'rounds\.x=1': cannot set rounds\.x: rounds holds 10, not an object$/],
    [{ set: ['preset=paper'] }, /^--set 'preset=paper': the preset is the base/],
    [
      { set: ['algorithmConfigs.subfedavg-un.target=150'] },
      /^--set 'algorithmConfigs\.subfedavg-un\.target=150': algorithmConfigs\.subfedavg-un\.target: .*, got 150$/,
    ],
    [{ values: 'f64' }, /--values: expected one of f32, f16, int8, got 'f64'/],
    [{ backend: 'gpu' }, /--backend: expected one of auto, node, wasm, cpu, got 'gpu'/],
    [{ dataset: 'imagenet' }, /--dataset: expected one of fashion-mnist, mnist, cifar10, synthetic, got 'imagenet'/],
    [{ compare: 'fedavg,fednova' }, /--compare: unknown algorithm 'fednova' in 'fedavg,fednova'/],
    [{ compare: 'fedavg,,local' }, /--compare: expected a comma-separated list/],
    [{ compare: 'fedavg,fedavg' }, /--compare: expected each algorithm at most once, got 'fedavg,fedavg'/],
    [{ fraction: '1.5' }, /--fraction: expected a number in \(0, 1\], got '1.5'/],
    [{ data: '  ' }, /--data: expected a non-empty path, got ' {2}'/],
    [{ epochs: '0' }, /--epochs: expected a positive integer, got '0'/],
    [{ compare: 'fedavg', algorithm: 'local' }, /--compare 'fedavg' and --algorithm 'local' are exclusive/],
  ];
  for (const [flags, message] of cases) {
    it(`${JSON.stringify(flags)}`, () => {
      expect(() => resolveSimConfig(flags)).toThrow(SimConfigError);
      expect(() => resolveSimConfig(flags)).toThrow(message);
    });
  }

  it('a config built in code is validated with the field path', () => {
    expect(() => validateSimConfig({ ...PRESETS.quick, fraction: 0 })).toThrow(/^fraction: /);
    expect(() =>
      validateSimConfig({ ...PRESETS.quick, partition: { kind: 'shards', shardSize: 0, shardsPerClient: 2 } }),
    ).toThrow(/^partition\.shardSize: /);
    expect(() => validateSimConfig({ ...PRESETS.quick, algorithms: ['subfedavg-hy'], batchNormModel: 'lenet5-mnist' })).toThrow(
      /^batchNormModel: subfedavg-hy needs a model with BatchNorm .*'lenet5-mnist' has none$/,
    );
    expect(() => validateSimConfig({ ...PRESETS.quick, localEpochs: 3 })).toThrow(/^\(config\): unknown field\(s\) localEpochs$/);
  });

  it("checks each algorithm's block with that algorithm's own schema, naming the field", () => {
    const withConfigs =
      (algorithmConfigs: unknown, extra: object = {}) =>
      () =>
        validateSimConfig({ ...PRESETS.quick, algorithmConfigs, ...extra });
    expect(withConfigs({ 'subfedavg-un': { p: 150 } })).toThrow(/^algorithmConfigs\.subfedavg-un\.p: .*, got 150$/);
    // configured but not run: still checked
    expect(withConfigs({ 'subfedavg-hy': { q: 2 } })).toThrow(/^algorithmConfigs\.subfedavg-hy\.q: .*, got 2$/);
    expect(withConfigs({ fedavg: { ftEpochs: 2 } })).toThrow(/^algorithmConfigs\.fedavg: unknown field\(s\) ftEpochs$/);
    expect(withConfigs({ fednova: {} })).toThrow(/^algorithmConfigs: unknown field\(s\) fednova$/);
    expect(withConfigs({ 'subfedavg-un': { epochs: 3 } })).toThrow(
      /^algorithmConfigs\.subfedavg-un\.epochs: set training\.epochs instead/,
    );
  });

  it('refuses one local epoch for a pruning algorithm that runs, naming the training field', () => {
    const oneEpoch = { ...PRESETS.quick, training: { ...PRESETS.quick.training, epochs: 1 } };
    expect(() => validateSimConfig(oneEpoch)).toThrow(
      /^training\.epochs: expected at least 2: Sub-FedAvg compares the masks .*, got 1$/,
    );
    expect(() => validateSimConfig({ ...oneEpoch, algorithms: ['subfedavg-hy'] })).toThrow(
      /^training\.epochs: expected at least 2/,
    );
    // the dense baselines train fine for one epoch, even with Sub-FedAvg configured but not run
    expect(validateSimConfig({ ...oneEpoch, algorithms: ['fedavg', 'fedavg-ft', 'local'] }).training.epochs).toBe(1);
    expect(() => resolveSimConfig({ epochs: '1' })).toThrow(/^--epochs '1': training\.epochs: expected at least 2/);
    expect(resolveSimConfig({ epochs: '1', compare: 'fedavg,local' }).training.epochs).toBe(1);
  });

  it('refuses the old spellings with the new name: one name per concept across commands', () => {
    expect(() => resolveSimConfig({ dataDir: '/tmp/d' })).toThrow(new SimConfigError('--data-dir: renamed to --data'));
    expect(() => resolveSimConfig({ localEpochs: '2' })).toThrow(new SimConfigError('--local-epochs: renamed to --epochs'));
    // ... also beside the new spelling, and before any other problem
    expect(() => resolveSimConfig({ data: '/tmp/d', dataDir: '/tmp/d', rounds: '0' })).toThrow(
      new SimConfigError('--data-dir: renamed to --data'),
    );
  });
});
