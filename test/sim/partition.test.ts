import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { loadDataset } from '../../sim/datasets.js';
import {
  dirichlet,
  formatLabelCounts,
  iid,
  partition,
  PartitionError,
  shards,
  type LabelSet,
  type Partition,
} from '../../sim/partition.js';

/** `perClass` examples of each of `classes` labels, interleaved so index order says nothing about labels. */
function labelSet(classes: number, perClass: number): LabelSet {
  return { labels: Uint8Array.from({ length: classes * perClass }, (_, i) => i % classes), numClasses: classes };
}

const train = labelSet(10, 100); // 1000 examples, 100 per class
const test = labelSet(10, 20); // 200 examples

const trainIndices = (p: Partition): number[] => p.clients.flatMap((c) => [...c.train]);
const labelsOf = (ds: LabelSet, idx: Int32Array): Set<number> => new Set([...idx].map((i) => ds.labels[i]));
const same = (a: Partition, b: Partition): boolean =>
  JSON.stringify(a.clients.map((c) => [[...c.train], [...c.test]])) ===
  JSON.stringify(b.clients.map((c) => [[...c.train], [...c.test]]));

function expectAscendingAndInRange(idx: Int32Array, n: number): void {
  for (let i = 0; i < idx.length; i++) {
    expect(idx[i]).toBeGreaterThanOrEqual(0);
    expect(idx[i]).toBeLessThan(n);
    if (i > 0) expect(idx[i]).toBeGreaterThan(idx[i - 1]);
  }
}

describe('shards', () => {
  it('is deterministic by seed', () => {
    const opts = { clients: 10, shardSize: 50, seed: 1 };
    expect(same(shards(train, test, opts), shards(train, test, opts))).toBe(true);
    expect(same(shards(train, test, opts), shards(train, test, { ...opts, seed: 2 }))).toBe(false);
  });

  it('gives each client n whole shards, uses each index at most once, and at most n labels', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }), // shards per client
        fc.constantFrom(10, 20, 25, 50, 100), // shard size dividing the 100 examples per class
        fc.integer({ min: 0, max: 1000 }), // seed
        (perClient, shardSize, seed) => {
          const available = 1000 / shardSize;
          const clients = Math.max(1, Math.floor(available / perClient));
          const p = shards(train, test, { clients, shardsPerClient: perClient, shardSize, seed });
          const used = trainIndices(p);
          expect(new Set(used).size).toBe(used.length);
          for (const [k, c] of p.clients.entries()) {
            expect(c.id).toBe(k);
            expect(c.train.length).toBe(perClient * shardSize);
            expectAscendingAndInRange(c.train, 1000);
            expect(labelsOf(train, c.train).size).toBeLessThanOrEqual(perClient);
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  it('gives a client every test example of the labels it holds, and no other', () => {
    const p = shards(train, test, { clients: 10, shardSize: 50, seed: 3 });
    expect(p.testSource).toBe('test');
    for (const c of p.clients) {
      const held = labelsOf(train, c.train);
      const expected = [...test.labels.keys()].filter((i) => held.has(test.labels[i]));
      expect([...c.test]).toEqual(expected);
    }
  });

  it('counts labels per client for train and test', () => {
    const p = shards(train, test, { clients: 10, shardSize: 50, seed: 3 });
    for (const [k, c] of p.clients.entries()) {
      expect(p.labelCounts[k].reduce((a, b) => a + b, 0)).toBe(c.train.length);
      for (const l of labelsOf(train, c.train))
        expect(p.labelCounts[k][l]).toBe([...c.train].filter((i) => train.labels[i] === l).length);
      expect(p.testLabelCounts[k].reduce((a, b) => a + b, 0)).toBe(c.test.length);
    }
  });

  it('reproduces the reference split on Fashion-MNIST: 100 clients x 2 shards of 250, at most 2 labels', async () => {
    const { train: full, test: fullTest } = await loadDataset('fashion-mnist');
    const p = shards(full, fullTest, { clients: 100, seed: 0 });
    expect(p.clients.length).toBe(100);
    const used = trainIndices(p);
    expect(new Set(used).size).toBe(50_000);
    for (const [k, c] of p.clients.entries()) {
      expect(c.train.length).toBe(500);
      const held = p.labelCounts[k].filter((n) => n > 0).length;
      expect(held).toBeGreaterThanOrEqual(1);
      expect(held).toBeLessThanOrEqual(2);
      expect(c.test.length).toBe(1000 * held);
    }
  });

  it("can hold out part of each client's own data as its test set", () => {
    const p = shards(train, test, { clients: 10, shardSize: 50, seed: 3, ownTestFraction: 0.2 });
    expect(p.testSource).toBe('train');
    const all = [...trainIndices(p), ...p.clients.flatMap((c) => [...c.test])];
    expect(new Set(all).size).toBe(all.length);
    expect(all.length).toBe(1000);
    for (const [k, c] of p.clients.entries()) {
      expect(c.test.length).toBe(20);
      expect(c.train.length).toBe(80);
      // Per label: both of a 2-label client's labels appear in its test set.
      expect(labelsOf(train, c.test)).toEqual(labelsOf(train, c.train));
      expect(p.testLabelCounts[k].reduce((a, b) => a + b, 0)).toBe(20);
    }
    expect(p.description).toContain("test = 20% of each client's own data");
  });

  it('names the numbers when there are not enough shards', () => {
    expect(() => shards(train, test, { clients: 11, shardSize: 50, seed: 0 })).toThrow(PartitionError);
    expect(() => shards(train, test, { clients: 11, shardSize: 50, seed: 0 })).toThrow(
      'shards: 11 clients x 2 shards need 22 shards of 50 examples, but 1000 training examples make only 20; lower clients or shardsPerClient, or use shards of at most 45',
    );
  });

  it('rejects bad arguments naming them', () => {
    expect(() => shards(train, test, { clients: 0, seed: 0 })).toThrow('shards: clients must be an integer >= 1, got 0');
    expect(() => shards(train, test, { clients: 2, seed: 0, shardSize: 2.5 })).toThrow(
      'shards: shardSize must be an integer >= 1, got 2.5',
    );
    expect(() => shards(train, test, { clients: 2, seed: 0, shardsPerClient: 0 })).toThrow(
      'shardsPerClient must be an integer >= 1, got 0',
    );
    expect(() => shards(train, test, { clients: 2, seed: Number.NaN })).toThrow('seed must be a finite number, got NaN');
    expect(() => shards(train, test, { clients: 2, seed: 0, ownTestFraction: 1 })).toThrow(
      'ownTestFraction must be strictly between 0 and 1, got 1',
    );
  });
});

describe('dirichlet', () => {
  /** Mean over clients of the largest single-label share of the client's training data. */
  const skew = (p: Partition): number =>
    p.labelCounts.reduce((s, row) => s + Math.max(...row) / row.reduce((a, b) => a + b, 0), 0) / p.labelCounts.length;

  it('is deterministic by seed and deals every training index exactly once', () => {
    const opts = { clients: 8, alpha: 0.5, seed: 4 };
    const p = dirichlet(train, test, opts);
    expect(same(p, dirichlet(train, test, opts))).toBe(true);
    expect(same(p, dirichlet(train, test, { ...opts, seed: 5 }))).toBe(false);
    expect(trainIndices(p).sort((a, b) => a - b)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    for (const c of p.clients) {
      expect(c.train.length).toBeGreaterThanOrEqual(10);
      expectAscendingAndInRange(c.train, 1000);
      expectAscendingAndInRange(c.test, 200);
    }
  });

  it('is skewed for small alpha and near uniform for large alpha', () => {
    const small = dirichlet(train, test, { clients: 10, alpha: 0.1, seed: 1 });
    const large = dirichlet(train, test, { clients: 10, alpha: 1000, seed: 1 });
    expect(skew(small)).toBeGreaterThan(0.5);
    expect(skew(large)).toBeLessThan(0.2);
  });

  it('gives clients test examples only of labels they train on, in about the same proportions', () => {
    const p = dirichlet(train, test, { clients: 6, alpha: 0.3, seed: 2 });
    const testUsed = p.clients.flatMap((c) => [...c.test]);
    expect(new Set(testUsed).size).toBe(testUsed.length);
    for (const [k, c] of p.clients.entries()) {
      for (const l of labelsOf(test, c.test)) expect(p.labelCounts[k][l]).toBeGreaterThan(0);
      // Test count of each class = the client's share of that class's 20 test examples, rounded.
      for (let l = 0; l < 10; l++) expect(Math.abs(p.testLabelCounts[k][l] - p.labelCounts[k][l] / 5)).toBeLessThanOrEqual(1);
    }
  });

  it('redraws until every client has minExamples, and fails clearly when it cannot', () => {
    const p = dirichlet(train, test, { clients: 20, alpha: 0.2, seed: 3, minExamples: 20 });
    expect(Math.min(...p.clients.map((c) => c.train.length))).toBeGreaterThanOrEqual(20);
    expect(() => dirichlet(train, test, { clients: 20, alpha: 0.2, seed: 3, minExamples: 60 })).toThrow(
      'dirichlet: 20 clients x 60 minimum examples need 1200, but there are only 1000 training examples',
    );
    expect(() => dirichlet(train, test, { clients: 20, alpha: 0.001, seed: 3, minExamples: 40 })).toThrow(
      /after 1000 draws with alpha 0.001, some of the 20 clients still had fewer than 40 of the 1000 training examples/,
    );
  });

  it('rejects a bad alpha', () => {
    expect(() => dirichlet(train, test, { clients: 2, alpha: 0, seed: 0 })).toThrow(
      'dirichlet: alpha must be a finite number > 0, got 0',
    );
    expect(() => dirichlet(train, test, { clients: 2, alpha: Infinity, seed: 0 })).toThrow('got Infinity');
  });
});

describe('iid', () => {
  it('splits train and test into disjoint, near-equal, covering parts', () => {
    const p = iid(train, test, { clients: 7, seed: 9 });
    expect(trainIndices(p).sort((a, b) => a - b)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(p.clients.flatMap((c) => [...c.test]).sort((a, b) => a - b)).toEqual(Array.from({ length: 200 }, (_, i) => i));
    const sizes = p.clients.map((c) => c.train.length);
    expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
    for (const row of p.labelCounts) expect(row.every((n) => n > 0)).toBe(true);
    expect(same(p, iid(train, test, { clients: 7, seed: 9 }))).toBe(true);
    expect(same(p, iid(train, test, { clients: 7, seed: 10 }))).toBe(false);
  });

  it('rejects more clients than examples', () => {
    expect(() => iid(train, test, { clients: 1001, seed: 0 })).toThrow('iid: 1001 clients but only 1000 training examples');
  });
});

describe('partition (by spec)', () => {
  it('runs the partitioner the spec names', () => {
    const common = { clients: 5, seed: 1 };
    expect(
      same(partition({ kind: 'shards', shardSize: 50 }, train, test, common), shards(train, test, { ...common, shardSize: 50 })),
    ).toBe(true);
    expect(
      same(partition({ kind: 'dirichlet', alpha: 0.5 }, train, test, common), dirichlet(train, test, { ...common, alpha: 0.5 })),
    ).toBe(true);
    expect(same(partition({ kind: 'iid' }, train, test, common), iid(train, test, common))).toBe(true);
  });
});

describe('formatLabelCounts', () => {
  it('prints one row per client, dots for absent labels, and a summary', () => {
    const p = shards(train, test, { clients: 4, shardSize: 100, seed: 1 });
    const lines = formatLabelCounts(p).split('\n');
    expect(lines[0]).toBe(p.description);
    expect(lines[1]).toMatch(/^client\s+train\s+test\s+0\s+1\s+2\s+3\s+4\s+5\s+6\s+7\s+8\s+9$/);
    expect(lines).toHaveLength(2 + 4 + 1);
    for (let k = 0; k < 4; k++) {
      const cells = lines[2 + k].trim().split(/\s+/);
      expect(cells.slice(0, 3)).toEqual([String(k), '200', String(p.clients[k].test.length)]);
      expect(cells.slice(3)).toEqual(p.labelCounts[k].map((n) => (n === 0 ? '.' : String(n))));
    }
    expect(lines[6]).toBe(
      'labels per client min 2 / mean 2 / max 2; train per client min 200 / mean 200 / max 200; test per client min 40 / mean 40 / max 40 (from the test set)',
    );
  });

  it('elides rows beyond maxRows', () => {
    const p = iid(train, test, { clients: 30, seed: 1 });
    const lines = formatLabelCounts(p, { maxRows: 3 }).split('\n');
    expect(lines).toHaveLength(2 + 3 + 2);
    expect(lines[5]).toBe('... 27 more clients');
  });
});
