import type { Dataset } from '../client/data/dataset.js';
import { SeededRandom, deriveSeed } from '../proto/random.js';

/** What a partitioner needs of a dataset: its labels. */
export type LabelSet = Pick<Dataset, 'labels' | 'numClasses'>;

export interface ClientSplit {
  id: number;
  /** Indices into the training dataset, ascending. */
  train: Int32Array;
  /** Indices into the dataset named by Partition.testSource, ascending. */
  test: Int32Array;
}

export interface Partition {
  clients: ClientSplit[];
  /** labelCounts[client][class]: training examples of each class. */
  labelCounts: number[][];
  /** testLabelCounts[client][class]: test examples of each class. */
  testLabelCounts: number[][];
  /** 'test' when client test sets index the test dataset; 'train' when they are held out of the client's own training data. */
  testSource: 'test' | 'train';
  /** One line saying how the split was made, for logs and reports. */
  description: string;
}

export interface CommonPartitionOptions {
  clients: number;
  seed: number;
  /**
   * When set, each client's test set is this fraction of its own training
   * data (per label, so 2-class clients test on both classes) instead of
   * the partitioner's matching slice of the test dataset.
   */
  ownTestFraction?: number;
}

export interface ShardOptions extends CommonPartitionOptions {
  /** Examples per shard; default 250 (the reference). */
  shardSize?: number | undefined;
  /** Shards per client; default 2 (the reference). */
  shardsPerClient?: number | undefined;
}

export interface DirichletOptions extends CommonPartitionOptions {
  /** Concentration: small (0.1) is skewed, large (100) is near IID. */
  alpha: number;
  /** Each client gets at least this many training examples (proportions are redrawn until so); default 10. */
  minExamples?: number | undefined;
}

export type PartitionSpec =
  | { kind: 'shards'; shardSize?: number; shardsPerClient?: number }
  | { kind: 'dirichlet'; alpha: number; minExamples?: number }
  | { kind: 'iid' };

export class PartitionError extends Error {
  override readonly name = 'PartitionError';
}

const MAX_DIRICHLET_DRAWS = 1000;

/** Runs the partitioner a spec names; the spec is what configs and CLIs carry. */
export function partition(spec: PartitionSpec, train: LabelSet, test: LabelSet, common: CommonPartitionOptions): Partition {
  switch (spec.kind) {
    case 'shards':
      return shards(train, test, { ...common, shardSize: spec.shardSize, shardsPerClient: spec.shardsPerClient });
    case 'dirichlet':
      return dirichlet(train, test, { ...common, alpha: spec.alpha, minExamples: spec.minExamples });
    case 'iid':
      return iid(train, test, common);
    default: {
      const unknown: never = spec;
      throw new PartitionError(`unknown partition kind ${JSON.stringify((unknown as { kind: unknown }).kind)}`);
    }
  }
}

/**
 * The reference "pathological" split: training indices sorted by label, cut
 * into shards of shardSize, shardsPerClient shards to each client at random
 * (the remainder of the last partial shard and unassigned shards go unused).
 * A client's test set is every test example of the labels it holds.
 */
export function shards(train: LabelSet, test: LabelSet, opts: ShardOptions): Partition {
  const shardSize = opts.shardSize ?? 250;
  const perClient = opts.shardsPerClient ?? 2;
  checkCommon('shards', opts);
  checkInt('shards', 'shardSize', shardSize, 1);
  checkInt('shards', 'shardsPerClient', perClient, 1);
  const available = Math.floor(train.labels.length / shardSize);
  const needed = opts.clients * perClient;
  if (needed > available) {
    throw new PartitionError(
      `shards: ${opts.clients} clients x ${perClient} shards need ${needed} shards of ${shardSize} examples, ` +
        `but ${train.labels.length} training examples make only ${available}; ` +
        `lower clients or shardsPerClient, or use shards of at most ${Math.floor(train.labels.length / needed)}`,
    );
  }
  const byLabel = sortByLabel(train);
  const order = new SeededRandom(deriveSeed(opts.seed, 1)).permutation(available);
  const trainParts = Array.from({ length: opts.clients }, (_, k) => {
    const part = new Int32Array(perClient * shardSize);
    for (let s = 0; s < perClient; s++) {
      const shard = order[k * perClient + s];
      part.set(byLabel.subarray(shard * shardSize, (shard + 1) * shardSize), s * shardSize);
    }
    return part.sort();
  });
  const testParts = trainParts.map((part) => examplesOfLabels(test, heldLabels(train, part)));
  return finish(
    train,
    test,
    trainParts,
    testParts,
    opts,
    `shards: ${opts.clients} clients x ${perClient} shards of ${shardSize} (seed ${opts.seed})`,
  );
}

/**
 * Per class, proportions across clients drawn from Dirichlet(alpha); the
 * class's training examples are dealt out by those proportions, and its test
 * examples by the shares each client received, so each client's test labels
 * follow its training labels (test sets are disjoint). Redrawn (up to 1000
 * times) until every client has minExamples.
 */
export function dirichlet(train: LabelSet, test: LabelSet, opts: DirichletOptions): Partition {
  const minExamples = opts.minExamples ?? 10;
  checkCommon('dirichlet', opts);
  if (!(opts.alpha > 0) || !Number.isFinite(opts.alpha)) {
    throw new PartitionError(`dirichlet: alpha must be a finite number > 0, got ${opts.alpha}`);
  }
  checkInt('dirichlet', 'minExamples', minExamples, 0);
  const n = train.labels.length;
  if (opts.clients * minExamples > n) {
    throw new PartitionError(
      `dirichlet: ${opts.clients} clients x ${minExamples} minimum examples need ${opts.clients * minExamples}, but there are only ${n} training examples`,
    );
  }
  const rng = new SeededRandom(deriveSeed(opts.seed, 2));
  const trainByClass = indicesByClass(train);
  const testByClass = indicesByClass(test);
  for (let draw = 1; draw <= MAX_DIRICHLET_DRAWS; draw++) {
    const proportions = trainByClass.map(() => rng.dirichlet(opts.alpha, opts.clients));
    const trainParts = dealByProportions(trainByClass, proportions, opts.clients, rng);
    if (trainParts.every((p) => p.length >= minExamples)) {
      // Deal the test set by the shares each client actually received rather than the
      // drawn proportions: after rounding, a client without a class then gets none of its
      // tests, and a class no client trains on is tested by nobody.
      const counts = trainParts.map((part) => countLabels(train, part));
      const received = trainByClass.map((members, c) =>
        Float64Array.from(counts, (row) => (members.length === 0 ? 0 : row[c] / members.length)),
      );
      const testParts = dealByProportions(testByClass, received, opts.clients, rng);
      return finish(
        train,
        test,
        trainParts,
        testParts,
        opts,
        `dirichlet: ${opts.clients} clients, alpha ${opts.alpha}, at least ${minExamples} examples each (seed ${opts.seed}, draw ${draw})`,
      );
    }
  }
  throw new PartitionError(
    `dirichlet: after ${MAX_DIRICHLET_DRAWS} draws with alpha ${opts.alpha}, some of the ${opts.clients} clients still had fewer than ` +
      `${minExamples} of the ${n} training examples; raise alpha, lower clients or lower minExamples`,
  );
}

/** Shuffled, then cut into near-equal parts (sizes differ by at most one); the test set likewise. */
export function iid(train: LabelSet, test: LabelSet, opts: CommonPartitionOptions): Partition {
  checkCommon('iid', opts);
  if (opts.clients > train.labels.length) {
    throw new PartitionError(`iid: ${opts.clients} clients but only ${train.labels.length} training examples`);
  }
  const rng = new SeededRandom(deriveSeed(opts.seed, 3));
  const trainParts = cutEvenly(rng.permutation(train.labels.length), opts.clients);
  const testParts = cutEvenly(rng.permutation(test.labels.length), opts.clients);
  return finish(train, test, trainParts, testParts, opts, `iid: ${opts.clients} clients (seed ${opts.seed})`);
}

/**
 * A compact per-client table of label counts ('.' for none), then one summary
 * line; rows beyond maxRows (default 20) are elided.
 */
export function formatLabelCounts(p: Partition, opts: { maxRows?: number } = {}): string {
  const maxRows = opts.maxRows ?? 20;
  const numClasses = p.labelCounts[0]?.length ?? 0;
  const width = String(p.labelCounts.reduce((m, row) => row.reduce((a, b) => Math.max(a, b), m), 0)).length;
  const cell = (c: number): string => (c === 0 ? '.' : String(c)).padStart(width);
  const idWidth = Math.max('client'.length, String(p.clients.length - 1).length);
  const sizeWidth = Math.max(5, String(p.clients.reduce((m, c) => Math.max(m, c.train.length, c.test.length), 0)).length);
  const head =
    `${'client'.padStart(idWidth)} ${'train'.padStart(sizeWidth)} ${'test'.padStart(sizeWidth)}  ` +
    Array.from({ length: numClasses }, (_, c) => String(c).padStart(width)).join(' ');
  const lines = [p.description, head];
  const shown = Math.min(p.clients.length, maxRows);
  for (let k = 0; k < shown; k++) {
    const c = p.clients[k];
    lines.push(
      `${String(c.id).padStart(idWidth)} ${String(c.train.length).padStart(sizeWidth)} ${String(c.test.length).padStart(sizeWidth)}  ` +
        p.labelCounts[k].map(cell).join(' '),
    );
  }
  if (shown < p.clients.length) lines.push(`... ${p.clients.length - shown} more clients`);
  const labelsHeld = p.labelCounts.map((row) => row.filter((c) => c > 0).length);
  const sizes = p.clients.map((c) => c.train.length);
  const testSizes = p.clients.map((c) => c.test.length);
  lines.push(
    `labels per client ${stats(labelsHeld)}; train per client ${stats(sizes)}; ` +
      `test per client ${stats(testSizes)} (from the ${p.testSource === 'test' ? 'test set' : "client's own training data"})`,
  );
  return lines.join('\n');
}

function stats(values: number[]): string {
  if (values.length === 0) return 'n/a';
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const min = values.reduce((a, b) => Math.min(a, b));
  const max = values.reduce((a, b) => Math.max(a, b));
  return `min ${min} / mean ${Number.isInteger(mean) ? mean : mean.toFixed(1)} / max ${max}`;
}

/** Applies the own-test option, counts labels and assembles the result. */
function finish(
  train: LabelSet,
  test: LabelSet,
  trainParts: Int32Array[],
  testParts: Int32Array[],
  opts: CommonPartitionOptions,
  description: string,
): Partition {
  let testSource: Partition['testSource'] = 'test';
  if (opts.ownTestFraction !== undefined) {
    const f = opts.ownTestFraction;
    const rng = new SeededRandom(deriveSeed(opts.seed, 4));
    const split = trainParts.map((part) => holdOut(train, part, f, rng));
    trainParts = split.map((s) => s.train);
    testParts = split.map((s) => s.test);
    testSource = 'train';
    description += `; test = ${Math.round(f * 100)}% of each client's own data`;
  }
  const testLabels = testSource === 'test' ? test : train;
  return {
    clients: trainParts.map((t, id) => ({ id, train: t, test: testParts[id] })),
    labelCounts: trainParts.map((t) => countLabels(train, t)),
    testLabelCounts: testParts.map((t) => countLabels(testLabels, t)),
    testSource,
    description,
  };
}

/** Per label, round(fraction * count) of the client's examples become its test set; at least one stays for training. */
function holdOut(
  train: LabelSet,
  part: Int32Array,
  fraction: number,
  rng: SeededRandom,
): { train: Int32Array; test: Int32Array } {
  const byLabel = new Map<number, number[]>();
  for (const i of part) {
    const l = train.labels[i];
    let list = byLabel.get(l);
    if (list === undefined) byLabel.set(l, (list = []));
    list.push(i);
  }
  const kept: number[] = [];
  const held: number[] = [];
  for (const label of [...byLabel.keys()].sort((a, b) => a - b)) {
    const list = rng.shuffle(byLabel.get(label)!);
    const k = Math.round(fraction * list.length);
    held.push(...list.slice(0, k));
    kept.push(...list.slice(k));
  }
  if (kept.length === 0 && held.length > 0) kept.push(held.pop()!);
  return { train: Int32Array.from(kept).sort(), test: Int32Array.from(held).sort() };
}

/** Indices 0..n-1 stably sorted by label (a counting sort). */
function sortByLabel(ds: LabelSet): Int32Array {
  return Int32Array.from(indicesByClass(ds).flat());
}

function indicesByClass(ds: LabelSet): number[][] {
  const byClass = Array.from({ length: ds.numClasses }, () => [] as number[]);
  for (let i = 0; i < ds.labels.length; i++) {
    const l = ds.labels[i];
    if (l >= ds.numClasses) throw new PartitionError(`label ${l} at index ${i} is not below numClasses ${ds.numClasses}`);
    byClass[l].push(i);
  }
  return byClass;
}

function heldLabels(ds: LabelSet, part: Int32Array): Set<number> {
  const held = new Set<number>();
  for (const i of part) held.add(ds.labels[i]);
  return held;
}

function examplesOfLabels(ds: LabelSet, labels: Set<number>): Int32Array {
  const out: number[] = [];
  for (let i = 0; i < ds.labels.length; i++) if (labels.has(ds.labels[i])) out.push(i);
  return Int32Array.from(out);
}

/** Deals each class's (shuffled) indices to clients in contiguous runs sized by that class's proportions (each row sums to 1 or is all zero). */
function dealByProportions(byClass: number[][], proportions: Float64Array[], clients: number, rng: SeededRandom): Int32Array[] {
  const parts = Array.from({ length: clients }, () => [] as number[]);
  byClass.forEach((members, c) => {
    const shuffled = rng.shuffle([...members]);
    const total = proportions[c].reduce((a, b) => a + b, 0);
    let cumulative = 0;
    let start = 0;
    for (let k = 0; k < clients; k++) {
      cumulative += proportions[c][k];
      // The last client takes the rest, so float error never drops an example; unless
      // the shares are all zero, meaning this class goes to nobody.
      const end =
        k === clients - 1 && total > 0 ? shuffled.length : Math.min(shuffled.length, Math.round(cumulative * shuffled.length));
      for (let j = start; j < end; j++) parts[k].push(shuffled[j]);
      start = Math.max(start, end);
    }
  });
  return parts.map((p) => Int32Array.from(p).sort());
}

function cutEvenly(order: Int32Array, parts: number): Int32Array[] {
  const base = Math.floor(order.length / parts);
  const extra = order.length % parts;
  const out: Int32Array[] = [];
  let start = 0;
  for (let k = 0; k < parts; k++) {
    const size = base + (k < extra ? 1 : 0);
    out.push(order.slice(start, start + size).sort());
    start += size;
  }
  return out;
}

function countLabels(ds: LabelSet, part: Int32Array): number[] {
  const counts = new Array<number>(ds.numClasses).fill(0);
  for (const i of part) counts[ds.labels[i]]++;
  return counts;
}

function checkCommon(who: string, opts: CommonPartitionOptions): void {
  checkInt(who, 'clients', opts.clients, 1);
  if (!Number.isFinite(opts.seed)) throw new PartitionError(`${who}: seed must be a finite number, got ${opts.seed}`);
  const f = opts.ownTestFraction;
  if (f !== undefined && !(f > 0 && f < 1)) {
    throw new PartitionError(`${who}: ownTestFraction must be strictly between 0 and 1, got ${f}`);
  }
}

function checkInt(who: string, key: string, value: number, min: number): void {
  if (!Number.isInteger(value) || value < min) {
    throw new PartitionError(`${who}: ${key} must be an integer >= ${min}, got ${value}`);
  }
}
