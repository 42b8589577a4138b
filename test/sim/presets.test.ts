import { describe, expect, it } from 'vitest';
import { PRESETS, SimConfigError, membersPerRound, modelFor, resolveSimConfig, validateSimConfig } from '../../sim/presets.js';

describe('presets', () => {
  it('paper reproduces the reference setting', () => {
    const paper = resolveSimConfig({ preset: 'paper' });
    expect(paper).toMatchObject({
      clients: 100,
      partition: { kind: 'shards', shardSize: 250, shardsPerClient: 2 },
      fraction: 0.1,
      localEpochs: 5,
      batchSize: 10,
      learningRate: 0.01,
      momentum: 0.5,
      weighting: 'unweighted',
      rounds: 50,
      model: 'lenet5-mnist',
      hybridModel: 'lenet5-bn-mnist',
    });
    expect(paper.pruning).toMatchObject({
      p: 10,
      targetUn: 30,
      targetHy: 50,
      distThreshUn: 1e-4,
      distThreshHy: 5e-4,
      q: 0.45,
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
    expect(quick.clients * quick.rounds * quick.localEpochs).toBeLessThan(
      PRESETS.paper.clients * PRESETS.paper.rounds * PRESETS.paper.localEpochs,
    );
  });

  it('flags override preset fields and leave the preset itself untouched', () => {
    const c = resolveSimConfig({
      preset: 'paper',
      rounds: '3',
      clients: '7',
      compare: 'fedavg, local',
      values: 'int8',
      seed: '0',
      workers: '1',
      evalEvery: '2',
      dataDir: '/tmp/d',
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
      dataDir: '/tmp/d',
      out: 'x',
    });
    expect(PRESETS.paper.rounds).toBe(50);
    expect(PRESETS.paper.algorithms).toEqual(['subfedavg-un']);
  });
});

describe('flag validation names the flag and the value', () => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ preset: 'huge' }, /--preset: expected one of quick, paper, got 'huge'/],
    [{ rounds: 'abc' }, /--rounds: expected a positive integer, got 'abc'/],
    [{ rounds: '0' }, /--rounds: expected a positive integer, got '0'/],
    [{ rounds: '2.5' }, /--rounds: expected a positive integer, got '2.5'/],
    [{ clients: '-3' }, /--clients: expected a positive integer, got '-3'/],
    [{ evalEvery: '' }, /--eval-every: expected a positive integer, got ''/],
    [{ workers: 'many' }, /--workers: expected a positive integer, got 'many'/],
    [{ seed: '-1' }, /--seed: expected a non-negative integer, got '-1'/],
    [{ values: 'f64' }, /--values: expected one of f32, f16, int8, got 'f64'/],
    [{ backend: 'gpu' }, /--backend: expected one of auto, node, wasm, cpu, got 'gpu'/],
    [{ dataset: 'imagenet' }, /--dataset: expected one of fashion-mnist, mnist, cifar10, synthetic, got 'imagenet'/],
    [{ compare: 'fedavg,fedprox' }, /--compare: unknown algorithm 'fedprox' in 'fedavg,fedprox'/],
    [{ compare: 'fedavg,,local' }, /--compare: expected a comma-separated list/],
    [{ compare: 'fedavg,fedavg' }, /--compare: expected each algorithm at most once, got 'fedavg,fedavg'/],
    [{ fraction: '1.5' }, /--fraction: expected a number in \(0, 1\], got '1.5'/],
    [{ dataDir: '  ' }, /--data-dir: expected a non-empty path, got ' {2}'/],
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
    expect(() => validateSimConfig({ ...PRESETS.quick, algorithms: ['subfedavg-hy'], hybridModel: 'lenet5-mnist' })).toThrow(
      /hybridModel: .*'lenet5-mnist' has none/,
    );
  });
});
