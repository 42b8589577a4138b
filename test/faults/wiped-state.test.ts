// A device whose local state was wiped (reset, new SD card) while the
// coordinator still knows its old identity. What the client does today: with
// no state file it has no identity to resume, so it joins afresh and gets a new
// client id; the coordinator holds no mask for that id (version 0), so its
// first task is the dense model, and the mask it uploads becomes the server's
// copy. The test runs the real `subfed client` twice against one coordinator,
// wiping the state folder in between, and checks that the server's mask for
// the new id is the one the client saved, version and bits, and that the next
// task is sparse again. The old identity is left enrolled, silent: it turns
// gone and is no longer sampled.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import { createModel } from '../../client/model.js';
import { loadState } from '../../client/state.js';
import { Mask } from '../../proto/mask.js';
import { startCoordinator, type CoordinatorHandle } from '../../server/main.js';
import { writeIdxFolder } from '../client/client-run-helpers.js';
import { killChildren, spawnTsx, type Child } from './helpers.js';

const TOKEN = 'wiped-enroll';
let dir: string;
let server: CoordinatorHandle | undefined;

beforeAll(async () => {
  await initBackend('wasm', { logger: { info: () => {} } });
  dir = await mkdtemp(join(tmpdir(), 'subfed-wiped-'));
  await writeIdxFolder(join(dir, 'data'), 11, 60, 20);
  await writeFile(join(dir, 'token'), TOKEN, { mode: 0o600 });
});

afterAll(async () => {
  killChildren();
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** `subfed client` (the CLI, from the sources) for `rounds` rounds; resolves with its event records once it exited. */
async function runClient(address: string, rounds: number): Promise<Record<string, unknown>[]> {
  const child: Child = spawnTsx([
    'cli.ts',
    'client',
    ...['--server', address, '--token-file', join(dir, 'token'), '--data', join(dir, 'data')],
    ...['--state-dir', join(dir, 'state'), '--backend', 'wasm', '--name', 'device', '--seed', '1'],
    ...['--rounds', String(rounds), '--heartbeat-ms', '200', '--log-level', 'info'],
  ]);
  const { code } = await child.exited;
  expect(code, child.stderr.join('\n')).toBe(0);
  return child.stderr.flatMap((line) => {
    try {
      return [JSON.parse(line) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

describe('a client whose local state was wiped', () => {
  it('joins again under a new id, gets the dense model, and the server then holds the mask it saved', async () => {
    const model = createModel('mlp', 0);
    const manifest = model.manifest.map((s) => ({ ...s, shape: [...s.shape] }));
    const initial = model.getWeights();
    model.dispose();
    server = await startCoordinator(
      {
        rounds: 3,
        fraction: 1,
        minClients: 1,
        roundDeadlineMs: 600_000,
        retryAfterMs: 100,
        // The old identity falls silent for good: once gone, round 2 stops waiting for it.
        liveness: { staleAfterMs: 1000, goneAfterMs: 2000 },
        enrollmentToken: TOKEN,
        http: { enabled: false },
        training: { epochs: 2, lr: 0.05 },
      },
      { manifest, initial },
      { logger: pino({ level: 'silent' }) },
    );
    const coord = server.coordinator;

    const first = await runClient(server.grpcAddress, 1);
    const oldId = first.find((e) => e.event === 'joined')?.clientId as string;
    expect(first.find((e) => e.event === 'pushed')).toMatchObject({ round: 1 });
    expect(coord.clientMasks(oldId)?.version).toBe(1);

    await rm(join(dir, 'state'), { recursive: true, force: true });

    const second = await runClient(server.grpcAddress, 2);
    const joined = second.find((e) => e.event === 'joined');
    expect(second.find((e) => e.event === 'resumed')).toBeUndefined();
    const newId = joined?.clientId as string;
    expect(newId).toBeDefined();
    expect(newId).not.toBe(oldId);
    // First contact of the new identity: dense; then sparse at the mask the server now holds.
    expect(second.filter((e) => e.event === 'round-started').map((e) => [e.round, e.received])).toEqual([
      [2, 'dense'],
      [3, 'sparse'],
    ]);
    expect(second.filter((e) => e.event === 'pushed').map((e) => e.round)).toEqual([2, 3]);
    expect(coord.rounds(10).map((r) => [r.round, r.reporters])).toEqual([
      [3, [newId]],
      [2, [newId]],
      [1, [oldId]],
    ]);

    // The server's copy of the new identity's mask is the client's, bit for bit.
    const saved = await loadState(join(dir, 'state'));
    const held = coord.clientMasks(newId)!;
    expect(saved?.identity?.clientId).toBe(newId);
    expect(held.version).toBe(saved!.maskVersion);
    expect(held.version).toBeGreaterThan(0);
    let pruned = 0;
    for (const spec of manifest) {
      const mine = saved!.masks.get(spec.name)!;
      const theirs = held.masks.get(spec.name) ?? Mask.full(mine.length);
      expect(theirs, spec.name).toEqual(mine);
      pruned += mine.length - mine.keptCount;
    }
    expect(pruned).toBeGreaterThan(0); // a mask worth comparing
    // The wiped identity stays enrolled but silent: gone, and in no later round.
    expect(coord.listClients().clients.map((c) => [c.id, c.state])).toEqual([
      [oldId, 'gone'],
      [newId, expect.stringMatching(/alive|stale|gone/)],
    ]);
  }, 120_000);
});
