/** The algorithm registry: what sim/ and the CLI ask instead of testing names. */
import { describe, expect, it } from 'vitest';
import {
  AlgorithmConfigError,
  algorithmNames,
  allAlgorithms,
  createAlgorithm,
  describeAlgorithm,
  isAlgorithmName,
} from '../../client/algorithms/index.js';
import { modelStructure } from '../../client/model.js';

describe('algorithm registry', () => {
  it('lists every algorithm once, in registry order', () => {
    const names = algorithmNames();
    expect(names).toEqual([
      'subfedavg-un',
      'subfedavg-hy',
      'lotteryfl',
      'fedavg',
      'fedavg-ft',
      'fedprox',
      'ditto',
      'fedrep',
      'lg-fedavg',
      'local',
    ]);
    expect(new Set(names).size).toBe(names.length);
    expect(allAlgorithms().map((a) => a.name)).toEqual(names);
    for (const name of names) expect(isAlgorithmName(name)).toBe(true);
    expect(isAlgorithmName('fednova')).toBe(false);
  });

  it('describes every algorithm with a schema whose defaults parse, a summary and a reference', () => {
    for (const descriptor of allAlgorithms()) {
      expect(describeAlgorithm(descriptor.name)).toBe(descriptor);
      const defaults = descriptor.schema.parse({});
      expect(descriptor.parseConfig(undefined)).toEqual(defaults);
      expect(defaults).toMatchObject({ epochs: 5, batchSize: 10, lr: 0.01, momentum: 0.5 });
      // strict: a misspelt field is an error, not a silently ignored setting
      expect(() => descriptor.parseConfig({ epoch: 5 })).toThrow(/unknown field\(s\) epoch/);
      expect(descriptor.summary.length).toBeGreaterThan(10);
      expect(descriptor.summary).not.toContain('\n');
      expect(descriptor.reference.length).toBeGreaterThan(10);
      const algo = createAlgorithm(descriptor.name);
      expect(algo.name).toBe(descriptor.name);
      expect(algo.kind).toBe(descriptor.kind);
      expect(algo.training).toEqual({ epochs: 5, batchSize: 10, lr: 0.01, momentum: 0.5 });
      expect(algo.gate === undefined).toBe(descriptor.pruning === 'none');
    }
  });

  it('says what each algorithm is and needs', () => {
    const row = (name: string) => {
      const d = describeAlgorithm(name);
      return [d.kind, d.evaluatesGlobalModel, d.requiresBatchNorm, d.pruning];
    };
    expect(row('subfedavg-un')).toEqual(['federated', false, false, 'gated']);
    expect(row('subfedavg-hy')).toEqual(['federated', false, true, 'gated']);
    expect(row('fedavg')).toEqual(['federated', true, false, 'none']);
    expect(row('fedavg-ft')).toEqual(['federated', true, false, 'none']);
    expect(row('local')).toEqual(['local', false, false, 'none']);
    expect(row('lotteryfl')).toEqual(['federated', false, false, 'gated']);
    expect(row('fedprox')).toEqual(['federated', true, false, 'none']);
    expect(row('ditto')).toEqual(['federated', true, false, 'none']);
    expect(row('fedrep')).toEqual(['federated', false, false, 'none']);
    expect(row('lg-fedavg')).toEqual(['federated', false, false, 'none']);
    expect(describeAlgorithm('subfedavg-un').gateOf(describeAlgorithm('subfedavg-un').parseConfig({ gateOn: 'test' }))).toEqual({
      accThresh: 0.5,
      gateOn: 'test',
      valFraction: 0.1,
    });
  });

  it("checks BatchNorm against the model's channel groups, not its name", () => {
    const hy = describeAlgorithm('subfedavg-hy');
    expect(hy.modelProblem(modelStructure('lenet5-bn-cifar'))).toBeUndefined();
    expect(hy.modelProblem(modelStructure('lenet5-mnist'))).toMatch(
      /subfedavg-hy needs a model with BatchNorm .*'lenet5-mnist' has none/,
    );
    expect(hy.modelProblem({ name: 'mlp', channelGroups: [] })).toBeDefined();
    expect(describeAlgorithm('subfedavg-un').modelProblem(modelStructure('mlp'))).toBeUndefined();
    expect(modelStructure('lenet5-bn-mnist').channelGroups.map((g) => g.channels)).toEqual([10, 20]);
  });

  it('lists the known names when asked for an unknown one', () => {
    const message =
      "unknown algorithm 'fednova': expected one of subfedavg-un, subfedavg-hy, lotteryfl, fedavg, fedavg-ft, fedprox, ditto, fedrep, lg-fedavg, local";
    expect(() => describeAlgorithm('fednova')).toThrow(AlgorithmConfigError);
    expect(() => describeAlgorithm('fednova')).toThrow(message);
    expect(() => createAlgorithm('fednova', {})).toThrow(message);
  });
});
