/**
 * The simulation driver: data -> non-IID split -> worker pool -> for each
 * algorithm, a real coordinator on loopback gRPC and one round after another,
 * yielded as RoundReports (`for await (const round of runSimulation(config))`).
 *
 * The coordinator samples each round's members; the driver only tells those
 * members' workers to pull their task, train and push, then reads the round's
 * byte counts from the commit. Local-only never touches the network, so its
 * members are drawn with the coordinator's own sampling function over the
 * clients in the same (join) order: every algorithm sees the same members.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { ImageDataset } from '../client/data/dataset.js';
import { SeededRandom, deriveSeed } from '../proto/random.js';
import { sampleMembers } from '../server/rounds.js';
import { startCoordinator, type CoordinatorHandle } from '../server/main.js';
import { loadDataset, type LoadedDataset, type SyntheticSizes } from './datasets.js';
import type { BackendName } from '../client/backend.js';
import { zooArchitecture } from '../client/model.js';
import { formatLabelCounts, partition, type Partition } from './partition.js';
import { WorkerPool, workerEntry } from './pool.js';
import { describeAlgorithm } from '../client/algorithms/registry.js';
import { algorithmConfig, attackers, modelFor, type AlgorithmName, type SimConfig } from './presets.js';
import { accuracyStats, evaluationOf, type ByteCounts, type Evaluation, type RoundReport } from './report.js';
import type { InitialModel } from '../server/config.js';
import type { Logger } from 'pino';
import type {
  ClientExport,
  MemberResult,
  ModelEvaluation,
  WorkerRequest,
  WorkerResponses,
  WorkerSetup,
} from './worker-protocol.js';

export type SimulationEvent =
  /**
   * Once, before training, when the data are loaded and split and the workers are up: where the
   * data came from, the split, how accuracy is measured, and the tfjs backend the workers run.
   */
  | { readonly kind: 'setup'; readonly notes: string[]; readonly labelTable: string; readonly backend: BackendName }
  | { readonly kind: 'round-start'; readonly algorithm: AlgorithmName; readonly round: number; readonly members: number }
  | { readonly kind: 'member-done'; readonly algorithm: AlgorithmName; readonly round: number; readonly done: number }
  | { readonly kind: 'evaluating'; readonly algorithm: AlgorithmName; readonly round: number; readonly scope: 'all' | 'global' }
  /** An algorithm's coordinator is up (every algorithm but local): the dashboard follows it. */
  | { readonly kind: 'coordinator'; readonly algorithm: AlgorithmName; readonly coordinator: CoordinatorHandle }
  /** After an algorithm's last round, with `exportTo`: every client's compact model, written under `dir`. */
  | {
      readonly kind: 'exported';
      readonly algorithm: AlgorithmName;
      readonly dir: string;
      readonly clients: readonly ClientExport[];
    };

export interface SimulationOptions {
  /** Aborting lets the current round finish, evaluates everyone, and ends the run. */
  readonly signal?: AbortSignal;
  readonly onEvent?: (event: SimulationEvent) => void;
  /** Use these data instead of loading `config.dataset` (tests, benchmarks). */
  readonly data?: LoadedDataset;
  /** The coordinators' log (default: JSON on stdout, warnings and errors only). */
  readonly logger?: Logger;
  /**
   * After each algorithm's last round, write every client's state and compact model
   * (subfed export) under `exportTo`/<algorithm>/client-<id>/.
   */
  readonly exportTo?: string;
}

/** A copy of the dataset whose arrays live in SharedArrayBuffers, so workers read it without a copy each. */
function shareDataset(ds: ImageDataset): ImageDataset {
  const images = new Uint8Array(new SharedArrayBuffer(ds.images.length));
  images.set(ds.images);
  const labels = new Uint8Array(new SharedArrayBuffer(ds.labels.length));
  labels.set(ds.labels);
  return { ...ds, images, labels };
}

/** Each client's test set cut to a seeded random subset of `maxTestPerClient` (see SimConfig). */
function capTestSets(split: Partition, testLabels: Uint8Array, config: SimConfig): Partition {
  const cap = config.maxTestPerClient;
  if (cap === null) return split;
  const clients = split.clients.map((c) => {
    if (c.test.length <= cap) return c;
    const order = new SeededRandom(deriveSeed(config.seed, 0x7e57, c.id)).permutation(c.test.length);
    const test = Int32Array.from(order.subarray(0, cap), (i) => c.test[i]).sort();
    return { ...c, test };
  });
  const testLabelCounts = clients.map((c, k) => {
    const counts = new Array<number>(split.testLabelCounts[k].length).fill(0);
    for (const i of c.test) counts[testLabels[i]]++;
    return counts;
  });
  return {
    ...split,
    clients,
    testLabelCounts,
    description: `${split.description}; test sets capped at ${cap} random examples per client`,
  };
}

type Pool = WorkerPool<WorkerRequest, WorkerResponses[keyof WorkerResponses]>;

/** Typed request helper: the response type follows the request kind. */
function ask<K extends WorkerRequest['kind']>(
  pool: Pool,
  worker: number,
  request: Extract<WorkerRequest, { kind: K }>,
): Promise<WorkerResponses[K]> {
  return pool.run(worker, request) as Promise<WorkerResponses[K]>;
}

function describeRun(config: SimConfig, data: LoadedDataset, split: Partition): string[] {
  // Which data each pruning algorithm's accuracy gate measures, one line per choice.
  const gatedOn = { test: [] as AlgorithmName[], val: [] as AlgorithmName[] };
  for (const name of config.algorithms) {
    const gate = describeAlgorithm(name).gateOf(algorithmConfig(config, name));
    if (gate !== undefined) gatedOn[gate.gateOn].push(name);
  }
  const gateNotes = [
    ...(gatedOn.test.length > 0
      ? [
          `pruning accuracy gate (${gatedOn.test.join(', ')}): measured on each client's TEST data, as the reference implementation does (preset ${config.preset})`,
        ]
      : []),
    ...(gatedOn.val.length > 0
      ? [`pruning accuracy gate (${gatedOn.val.join(', ')}): measured on a validation split of each client's training data`]
      : []),
  ];
  const attack = config.attack;
  const attackNote =
    attack === undefined
      ? []
      : [
          `ATTACK SIMULATION: clients ${[...attackers(config)].sort((a, b) => a - b).join(', ')} upload their delta x ${-attack.scale} (sign flipping)`,
        ];
  const robust = [
    ...(config.aggregation !== undefined && config.aggregation !== 'mean'
      ? [`aggregation: coordinate-wise trimmed mean, ${config.aggregation.trim} cut at each end`]
      : []),
    ...(config.updateNorm !== undefined ? [`update norm bound ${config.updateNorm.bound} (${config.updateNorm.mode})`] : []),
  ];
  return [
    `data: ${data.source}`,
    `split: ${split.description}`,
    ...attackNote,
    ...robust,
    ...gateNotes,
    `accuracy: members are evaluated every round after local training; every client every ${config.evalEvery} rounds and at the end, on its test data and, once sampled, its training data (headline figures over the clients sampled so far)`,
  ];
}

/**
 * The run's non-IID split (test sets capped as configured) and the dataset its test
 * indices point into: client k trains on data.train at split.clients[k].train and tests
 * on testData at split.clients[k].test. Deterministic by the config's seed.
 */
export function splitForRun(config: SimConfig, data: LoadedDataset): { split: Partition; testData: ImageDataset } {
  const uncapped = partition(config.partition, data.train, data.test, {
    clients: config.clients,
    seed: config.seed,
    ...(config.testSet.kind === 'held-out' ? { ownTestFraction: config.testSet.testFraction } : {}),
  });
  const testData = uncapped.testSource === 'test' ? data.test : data.train;
  return { split: capTestSets(uncapped, testData.labels, config), testData };
}

/**
 * The synthetic data a run gets: images of its models' input shape, as many
 * training examples as its split needs (a shard split: clients x shards x
 * shard size) and at least 2,000, and a quarter as many test examples (at least 500).
 */
export function syntheticSizesFor(config: SimConfig): SyntheticSizes {
  const [height, width, channels] = zooArchitecture(modelFor(config, config.algorithms[0])).inputShape;
  const p = config.partition;
  const needed = p.kind === 'shards' ? config.clients * p.shardsPerClient * p.shardSize : 0;
  const train = Math.max(2000, needed);
  return { train, test: Math.max(500, Math.ceil(train / 4)), height, width, channels };
}

export async function* runSimulation(config: SimConfig, options: SimulationOptions = {}): AsyncGenerator<RoundReport> {
  const emit = options.onEvent ?? (() => {});
  const data =
    options.data ??
    (await loadDataset(config.dataset, { data: config.data, seed: config.seed, synthetic: syntheticSizesFor(config) }));
  const { split, testData } = splitForRun(config, data);

  const setup: WorkerSetup = {
    config,
    train: shareDataset(data.train),
    test: shareDataset(testData),
  };
  const pool: Pool = new WorkerPool({
    entry: workerEntry(import.meta.url, 'client-worker'),
    size: Math.min(config.workers, config.clients),
    workerData: setup,
  });
  try {
    // Every worker starts its tfjs backend; what they chose (never 'auto') goes into the run folder.
    const backends = new Set((await pool.runOnAll({ kind: 'backend' })) as BackendName[]);
    if (backends.size !== 1) throw new Error(`the workers started different tfjs backends: ${[...backends].join(', ')}`);
    emit({
      kind: 'setup',
      notes: describeRun(config, data, split),
      labelTable: formatLabelCounts(split, { maxRows: 10 }),
      backend: [...backends][0],
    });
    for (const algorithm of config.algorithms) {
      if (options.signal?.aborted) break;
      yield* runAlgorithm(config, algorithm, split, pool, options);
    }
  } finally {
    await pool.close();
  }
}

async function* runAlgorithm(
  config: SimConfig,
  algorithm: AlgorithmName,
  split: Partition,
  pool: Pool,
  options: SimulationOptions,
): AsyncGenerator<RoundReport> {
  const emit = options.onEvent ?? (() => {});
  const clients = split.clients.map((c) => c.id);
  const workerOf = (client: number): number => pool.workerOf(client);
  await Promise.all(
    split.clients.map((c) =>
      ask<'host'>(pool, workerOf(c.id), { kind: 'host', client: c.id, algorithm, train: c.train, test: c.test }),
    ),
  );

  const descriptor = describeAlgorithm(algorithm);
  let coordinator: CoordinatorHandle | undefined;
  try {
    const indexOf = new Map<string, number>();
    if (descriptor.kind === 'federated') {
      const initial = await ask<'initial-model'>(pool, 0, {
        kind: 'initial-model',
        model: modelFor(config, algorithm),
        seed: config.seed,
      });
      const enrollmentToken = randomBytes(16).toString('hex');
      coordinator = await startSimCoordinator(config, initial, enrollmentToken, options.logger);
      emit({ kind: 'coordinator', algorithm, coordinator });
      const address = coordinator.grpcAddress;
      // One by one, so the registry hands out ids in client order and sampling is reproducible.
      for (const client of clients) {
        const { clientId } = await ask<'join'>(pool, workerOf(client), { kind: 'join', client, address, enrollmentToken });
        indexOf.set(clientId, client);
      }
    } else {
      // sampleMembers depends only on the order of the ids, and the registry lists clients in join order.
      for (const client of clients) indexOf.set(String(client), client);
    }

    // Clients sampled so far: the others still hold their initial models, and evaluations count them apart.
    const sampled = new Set<number>();
    for (let round = 1; round <= config.rounds; round++) {
      const started = performance.now();
      const memberIds = coordinator
        ? openRoundMembers(coordinator, round)
        : sampleMembers([...indexOf.keys()], config.fraction, config.seed, round, 0);
      const members = memberIds.map((id) => {
        const index = indexOf.get(id);
        if (index === undefined) throw new Error(`round ${round}: the coordinator sampled unknown client '${id}'`);
        return index;
      });
      for (const m of members) sampled.add(m);
      const committed = coordinator && roundBytes(coordinator, round);
      emit({ kind: 'round-start', algorithm, round, members: members.length });
      let done = 0;
      const results = await Promise.all(
        members.map(async (client) => {
          const result = await ask<'train'>(pool, workerOf(client), { kind: 'train', client, round });
          done += 1;
          emit({ kind: 'member-done', algorithm, round, done });
          return result;
        }),
      );
      const bytes: ByteCounts = committed ? await committed : { up: 0, down: 0, denseUp: 0, denseDown: 0 };

      const last = round === config.rounds || options.signal?.aborted === true;
      const evaluateAll = last || round % config.evalEvery === 0;
      let evaluation: Evaluation | null = null;
      if (evaluateAll) {
        emit({ kind: 'evaluating', algorithm, round, scope: 'all' });
        const personal = await evaluateEveryone(pool, clients, (worker, list) =>
          ask<'evaluate'>(pool, worker, { kind: 'evaluate', clients: list, withTrain: list.filter((c) => sampled.has(c)) }),
        );
        let global: ModelEvaluation[] | null = null;
        if (coordinator && descriptor.evaluatesGlobalModel) {
          emit({ kind: 'evaluating', algorithm, round, scope: 'global' });
          const weights = coordinator.coordinator.globalModel();
          global = await evaluateEveryone(pool, clients, (worker, list) =>
            ask<'evaluate-model'>(pool, worker, { kind: 'evaluate-model', clients: list, weights }),
          );
        }
        evaluation = evaluationOf(personal, global, sampled);
      }
      yield roundReport(algorithm, round, results, bytes, evaluation, (performance.now() - started) / 1000);
      if (options.signal?.aborted) break;
    }
    if (options.exportTo !== undefined) {
      const dir = join(options.exportTo, algorithm);
      const exported = await evaluateEveryone(pool, clients, (worker, list) =>
        ask<'export'>(pool, worker, { kind: 'export', clients: list, dir }),
      );
      emit({ kind: 'exported', algorithm, dir, clients: exported.sort((a, b) => a.client - b.client) });
    }
  } finally {
    // A crashed worker refuses the release; its error already reached the caller through the round.
    await pool.runOnAll({ kind: 'release' }).catch(() => undefined);
    await coordinator?.stop();
  }
}

/**
 * An in-process coordinator for one algorithm's run: every client must join
 * before round 1 opens, members have all the time they need (workers train
 * them one after another), and every member must report.
 */
function startSimCoordinator(
  config: SimConfig,
  initial: InitialModel,
  enrollmentToken: string,
  logger: Logger | undefined,
): Promise<CoordinatorHandle> {
  return startCoordinator(
    {
      rounds: config.rounds,
      fraction: config.fraction,
      minClients: config.clients,
      quorum: 1,
      roundDeadlineMs: 24 * 3600 * 1000,
      // Idle simulated clients never call between the rounds they are sampled for; liveness would drop them.
      liveness: 'off',
      retryAfterMs: 20,
      seed: config.seed,
      weighting: config.weighting,
      ...(config.aggregation !== undefined ? { aggregation: config.aggregation } : {}),
      ...(config.updateNorm !== undefined
        ? { updateNormBound: config.updateNorm.bound, updateNormMode: config.updateNorm.mode }
        : {}),
      enrollmentToken,
      // Every simulated client joins from this one process: no per-address join limit.
      joins: { perPeer: 'off', maxClients: config.clients },
      http: { enabled: false },
      logLevel: 'warn',
      training: config.training,
    },
    initial,
    logger === undefined ? {} : { logger },
  );
}

function openRoundMembers(handle: CoordinatorHandle, round: number): string[] {
  const open = handle.coordinator.status().round;
  if (open?.id !== round) throw new Error(`round ${round}: the coordinator has ${open ? `round ${open.id}` : 'no round'} open`);
  return handle.coordinator.members();
}

/** The wire bytes of `round`, from its commit. */
function roundBytes(handle: CoordinatorHandle, round: number): Promise<ByteCounts> {
  return new Promise((resolve) => {
    const off = handle.coordinator.onRoundCommitted((s) => {
      if (s.round !== round) return;
      off();
      resolve({ up: s.bytesUp, down: s.bytesDown, denseUp: s.denseBytesUp, denseDown: s.denseBytesDown });
    });
  });
}

/** Asks every worker about its own clients, in parallel. */
async function evaluateEveryone<T>(
  pool: Pool,
  clients: readonly number[],
  request: (worker: number, clients: number[]) => Promise<T[]>,
): Promise<T[]> {
  const byWorker = new Map<number, number[]>();
  for (const c of clients) {
    const w = pool.workerOf(c);
    byWorker.set(w, [...(byWorker.get(w) ?? []), c]);
  }
  const parts = await Promise.all([...byWorker].map(([worker, list]) => request(worker, list)));
  return parts.flat();
}

function roundReport(
  algorithm: AlgorithmName,
  round: number,
  results: readonly MemberResult[],
  bytes: ByteCounts,
  evaluation: Evaluation | null,
  wallSeconds: number,
): RoundReport {
  const received = results.flatMap((r) => (r.received === null ? [] : [r.received.accuracy]));
  const withChannels = results.flatMap((r) => (r.channelsKept ? [r.channelsKept] : []));
  const channelsKept = withChannels.length
    ? withChannels[0].map((_, layer) => withChannels.reduce((s, c) => s + c[layer], 0) / withChannels.length)
    : null;
  return {
    algorithm,
    round,
    members: results,
    membersAccuracy: accuracyStats(results.map((r) => r.personalized.accuracy)),
    receivedAccuracy: received.length ? accuracyStats(received) : null,
    evaluation,
    bytes,
    meanSparsity: results.reduce((s, r) => s + r.sparsity, 0) / results.length,
    receivedSparsity: results.reduce((s, r) => s + r.receivedSparsity, 0) / results.length,
    channelsKept,
    wallSeconds,
  };
}
