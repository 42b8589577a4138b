/**
 * `subfed client` (runClient) against a real in-process coordinator over
 * loopback gRPC: joins, trains rounds, pushes sparse updates, saves its state,
 * resumes from it, and reports bad input clearly. The tests assert on the
 * run's events; one checks the log lines they become.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import type { ClientEvent, ClientEventKind } from '../../client/events.js';
import { logLine, runClient, type ClientRunHooks, type ClientRunSummary } from '../../client/main.js';
import {
  ClientCommandError,
  clientOptions,
  clientOptionsFromFlags,
  envSource,
  flagSource,
  resolveClientOptions,
  type ClientOptionsInput,
} from '../../client/options.js';
import { loadState } from '../../client/state.js';
import { unauthenticated } from '../../server/errors.js';
import type { CoordinatorHandle } from '../../server/main.js';
import { memoryLogger, startMlpCoordinator, TOKEN, writeIdxFolder } from './client-run-helpers.js';
import type { TrainingOverrides } from '../../proto/training-config.js';

const startServer = (rounds: number, training?: TrainingOverrides): Promise<CoordinatorHandle> =>
  startMlpCoordinator(rounds, training);

interface Run {
  summary: ClientRunSummary;
  events: ClientEvent[];
  lines: string[];
}

/** runClient on validated options, recording its events and log lines (the records' messages). */
async function run(input: ClientOptionsInput, hooks: Omit<ClientRunHooks, 'logger'> = {}): Promise<Run> {
  const events: ClientEvent[] = [];
  const { logger, records } = memoryLogger();
  const summary = await runClient(clientOptions(input), {
    ...hooks,
    logger,
    onEvent: (event) => {
      events.push(event);
      hooks.onEvent?.(event);
    },
  });
  return { summary, events, lines: records.map((r) => r.msg as string) };
}

/** The events of one kind, typed. */
function ofKind<K extends ClientEventKind>(events: readonly ClientEvent[], kind: K): Extract<ClientEvent, { kind: K }>[] {
  return events.filter((e): e is Extract<ClientEvent, { kind: K }> => e.kind === kind);
}

/** The sequence of kinds, without waits for a round to open and the algorithm's notes (both depend on timing and algorithm). */
function milestones(events: readonly ClientEvent[]): ClientEventKind[] {
  return events.map((e) => e.kind).filter((k) => k !== 'waiting' && k !== 'note');
}

describe('runClient', () => {
  let dir: string;
  let dataDir: string;

  beforeAll(async () => {
    await initBackend('wasm', { logger: { info: () => {} } });
    dir = await mkdtemp(join(tmpdir(), 'subfed-client-'));
    dataDir = join(dir, 'data');
    await writeIdxFolder(dataDir, 21, 80, 30);
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('joins, trains rounds with pruning, pushes updates and saves its state; a restart resumes from it', async () => {
    const server = await startServer(2);
    const stateDir = join(dir, 'state');
    const config = { gateOn: 'test', accThresh: 0 };
    const options = {
      enrollmentToken: TOKEN,
      data: dataDir,
      stateDir,
      algorithm: 'subfedavg-un',
      algorithmConfig: config,
      backend: 'wasm',
      name: 'unit-client',
    } as const;
    try {
      const { summary, events, lines } = await run({ ...options, server: server.grpcAddress, rounds: 2 });
      await server.waitForRound(2);
      expect(summary.rounds).toBe(2);
      expect(summary.bytesUp).toBeGreaterThan(0);
      expect(summary.bytesDown).toBeGreaterThan(0);
      expect(summary.lastAccuracy).toBeGreaterThan(0.5);
      expect(milestones(events)).toEqual([
        'backend-ready',
        'data-loaded',
        'joined',
        'round-started',
        'trained',
        'pushed',
        'round-started',
        'trained',
        'pushed',
        'stopped',
      ]);
      expect(ofKind(events, 'data-loaded')[0]).toMatchObject({
        layout: 'split',
        format: 'binary',
        trainExamples: 80,
        testExamples: 30,
        shape: { kind: 'images', height: 28, width: 28, channels: 1 },
      });
      expect(ofKind(events, 'joined')[0]).toEqual({
        kind: 'joined',
        server: server.grpcAddress,
        clientId: 'c1',
        algorithm: 'subfedavg-un',
        values: 'f32',
      });
      // first contact gets the dense model; the second task only our kept positions
      expect(ofKind(events, 'round-started').map((e) => [e.round, e.received])).toEqual([
        [1, 'dense'],
        [2, 'sparse'],
      ]);
      expect(ofKind(events, 'trained').map((e) => e.round)).toEqual([1, 2]);
      expect(ofKind(events, 'trained')[1].metrics.accuracy).toBe(summary.lastAccuracy);
      // the Un rule reports its decision once a round, as a note of that round
      expect(ofKind(events, 'note').map((e) => e.round)).toEqual([1, 2]);
      expect(ofKind(events, 'note')[0].text).toMatch(/^unstructured: /);
      const pushed = ofKind(events, 'pushed');
      expect(pushed.map((e) => [e.round, e.ack.accepted])).toEqual([
        [1, true],
        [2, true],
      ]);
      expect(pushed[1].bytesUp).toBe(summary.bytesUp);
      expect(ofKind(events, 'stopped')).toEqual([
        {
          kind: 'stopped',
          reason: 'round-limit',
          roundsTrained: 2,
          stateDir,
          bytesUp: summary.bytesUp,
          bytesDown: summary.bytesDown,
          failedBytesUp: 0,
          failedBytesDown: 0,
        },
      ]);
      // one log record per event at info (a stretch of waiting is one record; the rest are debug)
      expect(lines).toHaveLength(events.filter((e) => !(e.kind === 'waiting' && e.consecutive > 1)).length);
      expect(lines).toContain(`joined ${server.grpcAddress} as c1 (algorithm subfedavg-un, values f32)`);
      expect(
        lines.some((l) => /^round 2: loss \d\.\d{4}, accuracy [\d.]+% \(received [\d.]+%\), sparsity [\d.]+%$/.test(l)),
      ).toBe(true);
      const state = await loadState(stateDir, { algorithm: 'subfedavg-un', model: 'mlp' });
      expect(state!.round).toBe(2);
      expect(state!.maskVersion).toBeGreaterThan(0); // the coordinator's epochs=2 let the Un rule prune
      expect(state!.identity?.clientId).toBe('c1');
    } finally {
      await server.stop();
    }

    // A new coordinator; the client resumes its personal state and re-sends its masks.
    const again = await startServer(1);
    try {
      const before = await loadState(stateDir);
      const { summary, events } = await run({ ...options, server: again.grpcAddress, rounds: 1 });
      expect(summary.rounds).toBe(1);
      expect(milestones(events).slice(0, 5)).toEqual(['backend-ready', 'data-loaded', 'resumed', 'state-restored', 'rejoined']);
      expect(ofKind(events, 'resumed')[0]).toMatchObject({ clientId: 'c1', server: again.grpcAddress });
      expect(ofKind(events, 'state-restored')).toEqual([
        { kind: 'state-restored', stateDir, round: 2, maskVersion: before!.maskVersion },
      ]);
      // the new coordinator does not know the saved identity: the client joins again
      const [rejoined] = ofKind(events, 'rejoined');
      expect(rejoined).toMatchObject({ server: again.grpcAddress, previousClientId: 'c1' });
      expect(rejoined.reason).toMatch(/^unknown client/);
      // its mask version is news to this coordinator: the dense model once, then the masks go up
      expect(ofKind(events, 'round-started')).toEqual([{ kind: 'round-started', round: 1, received: 'dense' }]);
      await again.waitForRound(1);
      const after = await loadState(stateDir);
      expect(after!.maskVersion).toBeGreaterThan(before!.maskVersion);
      expect(after!.identity?.clientId).toBe(rejoined.clientId);
    } finally {
      await again.stop();
    }
  });

  it('a restarted client resumes its identity: no new join, and its first task is already sparse', async () => {
    const server = await startServer(3);
    const stateDir = join(dir, 'state-same');
    const once = () =>
      run({
        server: server.grpcAddress,
        enrollmentToken: TOKEN,
        data: dataDir,
        stateDir,
        algorithm: 'subfedavg-un',
        algorithmConfig: { gateOn: 'test', accThresh: 0 },
        backend: 'wasm',
        rounds: 1,
      });
    try {
      const a = await once();
      expect(ofKind(a.events, 'joined')).toHaveLength(1);
      expect(ofKind(a.events, 'round-started')[0].received).toBe('dense');
      const saved = await loadState(stateDir);
      expect(saved!.identity?.clientToken).toMatch(/./);
      expect(saved!.maskVersion).toBeGreaterThan(0);
      const b = await once();
      expect(ofKind(b.events, 'resumed').map((e) => e.clientId)).toEqual([saved!.identity!.clientId]);
      expect(ofKind(b.events, 'joined')).toHaveLength(0);
      expect(ofKind(b.events, 'rejoined')).toHaveLength(0);
      expect(ofKind(b.events, 'round-started')[0].received).toBe('sparse');
      expect(b.summary.rounds).toBe(1);
      // the first task of the first run was dense; the resumed one skips the pruned weights
      expect(b.summary.bytesDown).toBeLessThan(0.95 * a.summary.bytesDown);
      await server.waitForRound(2);
    } finally {
      await server.stop();
    }
  });

  it('returns once the coordinator says training is finished, with its state saved', async () => {
    const server = await startServer(2);
    const stateDir = join(dir, 'state-finished');
    const untilFinished = () =>
      run({ server: server.grpcAddress, enrollmentToken: TOKEN, data: dataDir, stateDir, algorithm: 'fedavg', backend: 'wasm' });
    try {
      // No rounds: only the coordinator's signal ends the run.
      const first = await untilFinished();
      expect(first.summary).toMatchObject({ rounds: 2, finished: true });
      expect(ofKind(first.events, 'finished')).toEqual([
        {
          kind: 'finished',
          lastRound: 2,
          roundsTrained: 2,
          stateDir,
          bytesUp: first.summary.bytesUp,
          bytesDown: first.summary.bytesDown,
          failedBytesUp: 0,
          failedBytesDown: 0,
        },
      ]);
      expect(first.events.at(-1)?.kind).toBe('finished');
      expect(ofKind(first.events, 'stopped')).toHaveLength(0);
      expect((await loadState(stateDir))!.round).toBe(2);
      // A restart after the end trains nothing and returns at once.
      const again = await untilFinished();
      expect(again.summary).toMatchObject({ rounds: 0, finished: true });
      expect(ofKind(again.events, 'finished')).toMatchObject([{ lastRound: 2, roundsTrained: 0 }]);
      expect(ofKind(again.events, 'round-started')).toHaveLength(0);
      expect((await loadState(stateDir))!.round).toBe(2);
    } finally {
      await server.stop();
    }
  });

  it('stopped while training, it still delivers the update, saves its state and stops', async () => {
    const server = await startServer(10);
    const controller = new AbortController();
    const stateDir = join(dir, 'state-abort');
    try {
      const { summary, events } = await run(
        { server: server.grpcAddress, enrollmentToken: TOKEN, data: dataDir, stateDir, algorithm: 'fedavg', backend: 'wasm' },
        {
          signal: controller.signal,
          onEvent: (e) => {
            if (e.kind === 'trained' && e.round === 1) controller.abort();
          },
        },
      );
      expect(summary.rounds).toBe(1);
      expect(milestones(events).slice(-3)).toEqual(['trained', 'pushed', 'stopped']);
      expect(ofKind(events, 'pushed').map((e) => e.round)).toEqual([1]);
      expect(ofKind(events, 'stopped')).toMatchObject([{ reason: 'signal', roundsTrained: 1, stateDir }]);
      expect((await loadState(stateDir))!.round).toBe(1);
      await server.waitForRound(1);
    } finally {
      await server.stop();
    }
  });

  it('an upload refused as from an unknown client (a coordinator restarted meanwhile) is pulled again, not fatal', async () => {
    const server = await startServer(1);
    const coordinator = server.coordinator;
    const original = coordinator.checkUpdateHeader.bind(coordinator);
    let refusals = 0;
    coordinator.checkUpdateHeader = (header) => {
      if (refusals++ === 0) throw unauthenticated('unknown_client', `unknown client "${header.clientId}"`);
      return original(header);
    };
    try {
      const { summary, events } = await run({
        server: server.grpcAddress,
        enrollmentToken: TOKEN,
        data: dataDir,
        stateDir: join(dir, 'state-forgotten'),
        algorithm: 'fedavg',
        backend: 'wasm',
      });
      expect(ofKind(events, 'refused')).toEqual([{ kind: 'refused', round: 1, reason: 'unknown client "c1"' }]);
      expect(ofKind(events, 'pushed').map((e) => e.round)).toEqual([1]);
      expect(summary).toMatchObject({ finished: true, rounds: 2 }); // round 1 trained twice
    } finally {
      await server.stop();
    }
  });

  it('leaves when asked: the saved state forgets the identity and the next start joins afresh', async () => {
    // One round: a member that leaves an open round would keep it waiting for its deadline.
    const server = await startServer(1);
    const stateDir = join(dir, 'state-leave');
    const input = {
      server: server.grpcAddress,
      enrollmentToken: TOKEN,
      data: dataDir,
      stateDir,
      algorithm: 'fedavg',
      backend: 'wasm',
    } as const;
    try {
      const first = await run({ ...input, leave: true });
      const [joined] = ofKind(first.events, 'joined');
      expect(milestones(first.events).slice(-3)).toEqual(['pushed', 'left', 'finished']);
      expect(ofKind(first.events, 'left')).toEqual([{ kind: 'left', server: server.grpcAddress }]);
      const saved = await loadState(stateDir);
      expect(saved!.identity).toBeUndefined();
      expect(saved!.round).toBe(1);
      const second = await run(input);
      expect(ofKind(second.events, 'resumed')).toHaveLength(0);
      expect(ofKind(second.events, 'joined')[0].clientId).not.toBe(joined.clientId);
      expect(ofKind(second.events, 'state-restored')).toMatchObject([{ round: 1 }]);
      expect(ofKind(second.events, 'finished')).toMatchObject([{ lastRound: 1, roundsTrained: 0 }]);
    } finally {
      await server.stop();
    }
  });

  it('waits with backoff while the coordinator is unreachable and stops when aborted', async () => {
    const controller = new AbortController();
    const { summary, events, lines } = await run(
      {
        server: '127.0.0.1:1',
        enrollmentToken: TOKEN,
        data: dataDir,
        stateDir: join(dir, 'state-unreachable'),
        algorithm: 'fedavg',
        backend: 'wasm',
      },
      {
        retry: { maxAttempts: 1 },
        signal: controller.signal,
        onEvent: (e) => {
          if (e.kind === 'reconnecting') controller.abort();
        },
      },
    );
    expect(summary.rounds).toBe(0);
    const [reconnecting] = ofKind(events, 'reconnecting');
    expect(reconnecting).toMatchObject({ call: 'join' });
    expect(reconnecting.delayMs).toBeGreaterThan(0);
    expect(milestones(events)).toEqual(['backend-ready', 'data-loaded', 'reconnecting', 'stopped']);
    expect(ofKind(events, 'stopped')).toMatchObject([{ reason: 'signal', roundsTrained: 0, stateDir: undefined }]);
    expect(lines.some((l) => /^join: coordinator unavailable .* retrying in \d+\.\d s$/.test(l))).toBe(true);
  });

  it('reports bad input of a run naming the flag', async () => {
    const base = {
      server: '127.0.0.1:1',
      enrollmentToken: TOKEN,
      data: dataDir,
      stateDir: join(dir, 's'),
      algorithm: 'fedavg',
    } as const;
    const missing = { ...base, data: join(dir, 'missing') };
    await expect(run(missing)).rejects.toThrow(ClientCommandError);
    // options written in code name their fields as written; the CLI's name them as flags or config fields
    await expect(run(missing)).rejects.toThrow(/^data: '.*missing' is not a folder/);
    await expect(run({ ...base, algorithm: 'subfedavg-un', algorithmConfig: { p: -1 } })).rejects.toThrow(/config: p:/);
    await expect(run({ ...base, algorithm: 'local', backend: 'wasm' })).rejects.toThrow(
      /^model: the local algorithm never contacts/,
    );
    // data no model takes fails before the coordinator is contacted (no reconnecting, no join)
    const narrow = join(dir, 'narrow');
    await mkdir(narrow, { recursive: true });
    await writeFile(join(narrow, 'r.csv'), 'temp,humidity,label\n21.5,40,0\n22.1,38,1\n19,55,0\n');
    const events: ClientEvent[] = [];
    await expect(run({ ...base, data: narrow, backend: 'wasm' }, { onEvent: (e) => events.push(e) })).rejects.toThrow(
      `data: '${narrow}' holds 2 features, which no zoo model takes (mlp takes 28x28x1 = 784 values, lenet5-mnist takes 28x28x1 = 784 values, lenet5-cifar takes 32x32x3 = 3072 values, lenet5-bn-mnist takes 28x28x1 = 784 values, lenet5-bn-cifar takes 32x32x3 = 3072 values)`,
    );
    expect(events.map((e) => e.kind)).toEqual(['backend-ready', 'data-loaded']);
    await expect(run({ ...base, data: narrow, backend: 'wasm', model: 'mlp' })).rejects.toThrow(
      `data: '${narrow}': has 2 feature column(s) besides the label, model mlp takes 784 inputs (28x28x1)`,
    );
  });

  it("refuses a coordinator's one-epoch task with Sub-FedAvg, naming the field, instead of training without pruning", async () => {
    const server = await startServer(1, { epochs: 1 });
    const base = { server: server.grpcAddress, enrollmentToken: TOKEN, data: dataDir, backend: 'wasm' } as const;
    try {
      await expect(run({ ...base, stateDir: join(dir, 'state-1-epoch'), algorithm: 'subfedavg-un' })).rejects.toThrow(
        /^round 1: task config does not suit subfedavg-un: epochs: expected at least 2: Sub-FedAvg compares the masks/,
      );
      // nothing was pushed: the round still waits for its member's update
      expect(server.coordinator.status().round).toMatchObject({ id: 1, members: 1, reported: 0 });
    } finally {
      await server.stop();
    }
  });

  it('turns CLI flags into options, naming each bad flag and the value it held', async () => {
    const tokenFile = join(dir, 'token');
    await writeFile(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
    const flags = { server: '127.0.0.1:5000', tokenFile, data: dataDir };
    const cfgFile = join(dir, 'algo.json');
    await writeFile(cfgFile, '{"target": 40}');
    const options = await clientOptionsFromFlags({ ...flags, algorithmConfig: cfgFile, seed: '7', rounds: '3', values: 'int8' });
    expect(options).toMatchObject({
      server: '127.0.0.1:5000',
      enrollmentToken: TOKEN, // the file's trailing newline dropped
      data: dataDir,
      stateDir: '.subfed-client',
      algorithm: 'subfedavg-un',
      algorithmConfig: { target: 40 },
      seed: 7,
      rounds: 3,
      values: 'int8',
      leave: false,
      logLevel: 'info',
      heartbeatMs: 5000,
      labelColumn: 'label',
      warnings: [],
    });
    expect(options.nameOf('rounds')).toBe('--rounds');
    expect((await clientOptionsFromFlags({ ...flags, algorithmConfig: '{"p": 5}' })).algorithmConfig).toEqual({ p: 5 });
    expect(
      await clientOptionsFromFlags({
        ...flags,
        leave: true,
        model: 'lenet5-mnist',
        backend: 'cpu',
        logLevel: 'debug',
        heartbeatMs: '250',
      }),
    ).toMatchObject({ leave: true, model: 'lenet5-mnist', backend: 'cpu', logLevel: 'debug', heartbeatMs: 250 });
    expect((await clientOptionsFromFlags({ ...flags, server: '[::1]:50051' })).server).toBe('[::1]:50051');
    const bad = async (extra: Record<string, string>) => clientOptionsFromFlags({ ...flags, ...extra });
    await expect(bad({ rounds: '0' })).rejects.toThrow(/^--rounds: expected a positive integer, got 0$/);
    await expect(bad({ rounds: 'abc' })).rejects.toThrow(/^--rounds: expected a positive integer, got "abc"$/);
    await expect(bad({ seed: '1.5' })).rejects.toThrow(/^--seed: expected a non-negative integer, got 1\.5$/);
    await expect(bad({ backend: 'gpu' })).rejects.toThrow(/^--backend: expected one of auto, node, wasm, cpu, got "gpu"$/);
    await expect(bad({ values: 'f64' })).rejects.toThrow(/^--values: expected one of f32, f16, int8, got "f64"$/);
    await expect(bad({ model: 'resnet' })).rejects.toThrow(/^--model: expected one of mlp, .*, got "resnet"$/);
    await expect(bad({ server: 'nohost' })).rejects.toThrow(/^--server: expected host:port, got "nohost"$/);
    await expect(bad({ algorithm: 'fednova' })).rejects.toThrow(/^--algorithm: expected one of subfedavg-un, .*, got "fednova"$/);
    await expect(bad({ logLevel: 'loud' })).rejects.toThrow(/^--log-level: expected one of fatal, .*, got "loud"$/);
    await expect(bad({ heartbeatMs: '0' })).rejects.toThrow(/^--heartbeat-ms: expected a positive integer, got 0$/);
    await expect(bad({ algorithmConfig: '{oops' })).rejects.toThrow(/--algorithm-config: not valid JSON/);
    await expect(bad({ algorithmConfig: join(dir, 'nope.json') })).rejects.toThrow(/--algorithm-config: cannot read/);
    await expect(bad({ algorithmConfig: '{"p": -1}' })).rejects.toThrow(/^--algorithm-config: invalid subfedavg-un config: p: /);
    await expect(bad({ tokenFile: join(dir, 'no-token') })).rejects.toThrow(/^--token-file: cannot read '.*no-token'/);
    await writeFile(join(dir, 'empty-token'), '\n');
    await expect(bad({ tokenFile: join(dir, 'empty-token') })).rejects.toThrow(/^--token-file: '.*empty-token' is empty/);
    await expect(clientOptionsFromFlags({ server: '127.0.0.1:5000', data: dataDir })).rejects.toThrow(
      /^no enrollment token: set SUBFED_TOKEN, or give a file holding it with --token-file/,
    );
    // every bad flag at once, each named
    await expect(bad({ rounds: '-1', values: 'f8' })).rejects.toThrow(/--values: .*; --rounds: |--rounds: .*; --values: /);
    await expect(bad({ rounds: '0' })).rejects.toThrow(ClientCommandError);
  });

  it('layers option sources: a later one overrides, and an error names the source that set the value', async () => {
    const file = {
      fieldName: (key: string) => `client.json: ${key}`,
      values: { server: 'coord:50051', rounds: 5, stateDir: '/var/subfed' },
    };
    const cli = await flagSource({ data: dataDir, rounds: '2' });
    const env = envSource({ SUBFED_TOKEN: TOKEN });
    const merged = resolveClientOptions([file, env, cli]);
    expect(merged).toMatchObject({ server: 'coord:50051', rounds: 2, stateDir: '/var/subfed', enrollmentToken: TOKEN });
    expect([merged.nameOf('server'), merged.nameOf('rounds'), merged.nameOf('enrollmentToken')]).toEqual([
      'client.json: server',
      '--rounds',
      'SUBFED_TOKEN',
    ]);
    expect(() => resolveClientOptions([{ ...file, values: { ...file.values, server: 'coord' } }, env, cli])).toThrow(
      /^client\.json: server: expected host:port, got "coord"$/,
    );
    expect(() => resolveClientOptions([file, cli])).toThrow(/^no enrollment token: set SUBFED_TOKEN/);
    // programmatic options are validated too, naming the field
    expect(() => clientOptions({ server: 'nohost', enrollmentToken: TOKEN, data: dataDir })).toThrow(
      /^server: expected host:port/,
    );
  });

  it('runs local-only training without a coordinator', async () => {
    const stateDir = join(dir, 'state-local');
    const { summary, events } = await run({
      server: '127.0.0.1:1',
      enrollmentToken: TOKEN,
      data: dataDir,
      stateDir,
      algorithm: 'local',
      algorithmConfig: { epochs: 1, lr: 0.05 },
      model: 'mlp',
      backend: 'wasm',
      rounds: 2,
    });
    expect(summary).toMatchObject({ rounds: 2, bytesUp: 0, bytesDown: 0 });
    expect(milestones(events)).toEqual([
      'backend-ready',
      'data-loaded',
      'training-locally',
      'round-started',
      'trained',
      'round-started',
      'trained',
      'stopped',
    ]);
    expect(ofKind(events, 'round-started').map((e) => [e.round, e.received])).toEqual([
      [1, 'nothing'],
      [2, 'nothing'],
    ]);
    expect(ofKind(events, 'stopped')).toMatchObject([{ reason: 'round-limit', roundsTrained: 2, stateDir }]);
    const state = await loadState(stateDir);
    expect(state!.round).toBe(2);
    expect(state!.identity).toBeUndefined();
  });
});

describe('logLine', () => {
  it('writes one line per event, naming what a reader needs', () => {
    const cases: [ClientEvent, string][] = [
      [
        { kind: 'reconnecting', call: 'push', reason: 'No connection established', delayMs: 1500 },
        'push: coordinator unavailable (No connection established); retrying in 1.5 s',
      ],
      [{ kind: 'waiting', retryAfterMs: 500, consecutive: 1 }, 'no task yet; asking again every 500 ms'],
      [{ kind: 'waiting', retryAfterMs: 500, consecutive: 2 }, 'no task yet (2 asks in a row)'],
      [{ kind: 'refused', round: 4, reason: 'round 4 is closed' }, 'round 4: update refused (round 4 is closed); pulling again'],
      [
        { kind: 'rejoined', server: 'h:1', clientId: 'c9', previousClientId: 'c2', reason: 'unknown client c2' },
        'unknown client c2: joined h:1 again as c9 (was c2), personal state kept',
      ],
      [
        {
          kind: 'stopped',
          reason: 'signal',
          roundsTrained: 3,
          stateDir: '/s',
          bytesUp: 1,
          bytesDown: 2,
          failedBytesUp: 0,
          failedBytesDown: 0,
        },
        'stopped after 3 round(s); state saved in /s',
      ],
      [
        {
          kind: 'stopped',
          reason: 'signal',
          roundsTrained: 0,
          stateDir: undefined,
          bytesUp: 0,
          bytesDown: 0,
          failedBytesUp: 0,
          failedBytesDown: 0,
        },
        'stopped after 0 round(s); nothing to save',
      ],
      [
        {
          kind: 'finished',
          lastRound: 9,
          roundsTrained: 4,
          stateDir: '/s',
          bytesUp: 10,
          bytesDown: 20,
          failedBytesUp: 0,
          failedBytesDown: 0,
        },
        'training finished after round 9 (4 round(s) trained here); state saved in /s; up 10 B, down 20 B',
      ],
      [
        {
          kind: 'finished',
          lastRound: 9,
          roundsTrained: 4,
          stateDir: '/s',
          bytesUp: 10,
          bytesDown: 20,
          failedBytesUp: 62000,
          failedBytesDown: 0,
        },
        'training finished after round 9 (4 round(s) trained here); state saved in /s; up 10 B, down 20 B (and up 62000 B, down 0 B in failed attempts)',
      ],
    ];
    for (const [event, line] of cases) expect(logLine(event)).toBe(line);
  });
});
