// Clients that die in the middle of a round, as real processes killed with
// SIGKILL at a known point: one in the middle of its download (the task
// stream read up to one piece, then left paused), one in the middle of its
// upload (the header and three pieces sent, the stream never ended), and the
// real `subfed client` in the middle of local training. Two scripted members
// report. The round closes at its deadline on quorum, and the dead members
// leave no trace: the global model is what the two reporters alone make (bit
// for bit), the round lists no report, metrics or receipt of theirs.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import { createModel } from '../../client/model.js';
import { CoordinatorClient, RemoteError, type SharedOutgoingTensor } from '../../client/remote.js';
import { Mask } from '../../proto/mask.js';
import type { CallOutcome } from '../../server/coordinator.js';
import { startCoordinator, type CoordinatorHandle } from '../../server/main.js';
import type { TensorSpec } from '../../server/model.js';
import type { StreamKind, StreamTicket } from '../../server/streams.js';
import { writeIdxFolder } from '../client/client-run-helpers.js';
import { memoryLogger } from '../server/harness.js';
import { exactDeltas, killChildren, spawnTsx, type Child } from './helpers.js';

const TOKEN = 'killed-enroll';
let dir: string;
let server: CoordinatorHandle | undefined;
const connections: CoordinatorClient[] = [];

beforeAll(async () => {
  await initBackend('wasm', { logger: { info: () => {} } });
  dir = await mkdtemp(join(tmpdir(), 'subfed-killed-'));
  await writeIdxFolder(join(dir, 'data'), 5, 60, 20);
  await writeFile(join(dir, 'token'), TOKEN, { mode: 0o600 });
});

afterAll(async () => {
  killChildren();
  for (const c of connections) c.close();
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** Reporter `c`'s update: dense deltas exact in float32 (see exactDeltas), num_examples 10 * (c + 1). */
function reporterUpdate(manifest: readonly TensorSpec[], c: number) {
  const tensors = new Map<string, SharedOutgoingTensor>();
  for (const [i, s] of manifest.entries()) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    tensors.set(s.name, { mask: Mask.full(n), kept: exactDeltas(n, c, i).map((x) => x / 8) });
  }
  return { numExamples: 10 * (c + 1), tensors };
}

describe('clients killed mid-download, mid-upload and mid-training', () => {
  it('the round closes at its deadline on quorum, and the dead members leave no trace', async () => {
    const model = createModel('mlp', 0);
    const manifest = model.manifest.map((s) => ({ ...s, shape: [...s.shape] }));
    const initial = model.getWeights();
    model.dispose();
    const log = memoryLogger();
    server = await startCoordinator(
      {
        rounds: 1,
        fraction: 1,
        // The round opens when the fifth member joins: two reporters and three victims.
        minClients: 5,
        quorum: 0.4,
        // From the round's opening; the victims reach their kill points within a fraction of it.
        roundDeadlineMs: 4000,
        retryAfterMs: 50,
        enrollmentToken: TOKEN,
        http: { enabled: false },
        // Long training, so the real client is surely killed in the middle of it.
        training: { epochs: 50, lr: 0.05 },
      },
      { manifest, initial },
      { logger: log.logger },
    );
    const coord = server.coordinator;
    // What each client's calls moved, however they ended, as the gRPC layer tells the coordinator.
    const wire = new Map<string, { up: number; down: number }>();
    const recordCall = coord.recordCall.bind(coord);
    coord.recordCall = (clientId: string | undefined, outcome: CallOutcome, bytes: { up: number; down: number }) => {
      if (clientId !== undefined) {
        const w = wire.get(clientId) ?? { up: 0, down: 0 };
        w.up += bytes.up;
        w.down += bytes.down;
        wire.set(clientId, w);
      }
      recordCall(clientId, outcome, bytes);
    };
    // The bytes each open upload stream holds on the server (its pieces until the update is folded).
    const uploads: StreamTicket[] = [];
    const openStream = server.streams.open.bind(server.streams);
    server.streams.open = (kind: StreamKind) => {
      const ticket = openStream(kind);
      if (kind === 'upload') uploads.push(ticket);
      return ticket;
    };

    const reporters = [0, 1].map(() => {
      const client = CoordinatorClient.connect(server!.grpcAddress);
      connections.push(client);
      return client;
    });
    for (const [c, client] of reporters.entries()) await client.join(TOKEN, `reporter-${c}`, 10 * (c + 1));

    const fixture = 'test/faults/fixtures/partial-client.ts';
    const downloader = spawnTsx([fixture, server.grpcAddress, TOKEN, 'victim-download', 'download']);
    const uploader = spawnTsx([fixture, server.grpcAddress, TOKEN, 'victim-upload', 'upload']);
    const trainer = spawnTsx([
      'cli.ts',
      'client',
      ...['--server', server.grpcAddress, '--token-file', join(dir, 'token'), '--data', join(dir, 'data')],
      ...['--state-dir', join(dir, 'state'), '--backend', 'wasm', '--name', 'victim-train', '--log-level', 'info'],
    ]);

    // Each victim is killed once it is where it should die, in round 1.
    const killAt = async (child: Child, event: string) => {
      const record = await child.line((r) => r.event === event);
      await child.kill9();
      expect(record.round, event).toBe(1);
      return record;
    };
    const [download, upload] = await Promise.all([
      killAt(downloader, 'stopped-downloading'),
      (async () => {
        await uploader.line((r) => r.event === 'stopped-uploading');
        // Kill once the server holds the header and the three pieces of 4 KiB.
        // (Only its upload is open now: the reporters push later.)
        while (!uploads.some((t) => t.held >= 3 * 4096)) await new Promise((r) => setTimeout(r, 10));
        return killAt(uploader, 'stopped-uploading');
      })(),
      killAt(trainer, 'round-started'),
    ]);
    const trainerId = (await trainer.line((r) => r.event === 'joined')).clientId as string;
    // The real client died training: it had started round 1 and never finished it.
    expect(trainer.stderr.filter((l) => l.includes('"event":"trained"'))).toEqual([]);
    const open = coord.status();
    expect(open.lastCommittedRound).toBe(0); // every victim died while round 1 was open
    expect(open.round).toMatchObject({ id: 1, members: 5 });

    // The reporters pull and push; the round then waits for the dead members until the deadline.
    for (const [c, client] of reporters.entries()) {
      const pulled = await client.pullTask(0);
      expect(pulled.kind).toBe('task');
      const u = reporterUpdate(manifest, c);
      await client.pushUpdate(
        {
          roundId: 1,
          numExamples: u.numExamples,
          baseMaskVersion: 0,
          maskChange: { kind: 'unchanged' },
          metrics: { loss: 1, localAccuracy: 0.5, sparsity: 0, receivedAccuracy: 0.25, channelsKept: [] },
        },
        u.tensors,
      );
    }
    await server.waitForRound(1);
    const [round] = coord.rounds(1);
    const victims = [download.clientId as string, upload.clientId as string, trainerId];
    const reporterIds = reporters.map((r) => r.clientId!);
    expect(round.committedAt).toBeGreaterThanOrEqual(open.round!.deadlineAt);
    expect(round.members.sort()).toEqual([...reporterIds, ...victims].sort());
    expect(round.reporters.sort()).toEqual([...reporterIds].sort());
    expect(Object.keys(round.metrics).sort()).toEqual([...reporterIds].sort());
    expect((await server.metrics.updatesAccepted.get()).values[0].value).toBe(2);
    // The victims did get that far: the downloader received part of its task, the uploader sent part of its update.
    expect(wire.get(victims[0])!.down).toBeGreaterThan(0);
    expect(wire.get(victims[1])!.up).toBeGreaterThan(0);
    // The uploader's stream ended with the process, incomplete: refused, nothing folded.
    const refused = log.lines().filter((l) => l.event === 'reject' && l.clientId === victims[1]);
    expect(refused).toHaveLength(1);
    expect(refused[0].msg).toMatch(/incomplete at end of stream \(3\/\d+ pieces\)|stream closed before its end/);

    // The global model is exactly what the two reporters alone make.
    const global = coord.globalModel();
    for (const spec of manifest) {
      const g = initial.get(spec.name)!;
      const [u0, u1] = [0, 1].map((c) => reporterUpdate(manifest, c));
      const k0 = u0.tensors.get(spec.name)!.kept;
      const k1 = u1.tensors.get(spec.name)!.kept;
      const expected = g.map((x, j) => x + (u0.numExamples * k0[j] + u1.numExamples * k1[j]) / (u0.numExamples + u1.numExamples));
      expect(global.get(spec.name), spec.name).toEqual(expected);
    }

    // No receipt was kept for the uploader: its retry for the closed round is refused, not acknowledged.
    const ghost = CoordinatorClient.connect(server.grpcAddress, { retry: { maxAttempts: 1 } });
    connections.push(ghost);
    ghost.resume({ clientId: victims[1], clientToken: upload.clientToken as string, manifest });
    const u = reporterUpdate(manifest, 2);
    const retry = await ghost
      .pushUpdate(
        { roundId: 1, numExamples: 10, baseMaskVersion: 0, maskChange: { kind: 'unchanged' }, metrics: null },
        u.tensors,
      )
      .catch((err: unknown) => err);
    expect(retry).toBeInstanceOf(RemoteError);
    expect(retry).toMatchObject({ code: grpc.status.FAILED_PRECONDITION });
  }, 120_000);
});
