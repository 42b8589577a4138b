// The coordinator SIGKILLed again and again, most often in the middle of
// committing a round, and restarted from the same SQLite file each time.
//
// The coordinator is a real child process (server/main.ts runServer, from a
// config file). Its store announces each step of a commit's transaction on
// stderr and pauses there (the test hook SUBFED_TEST_COMMIT_DELAY_MS, see
// server/store.ts), so a kill aimed at a commit lands inside the transaction
// at a random step, and the test knows which. Kill points are drawn from a
// seeded generator: inside a commit (after its "begin" announcement, a random
// delay within its pauses), just after a commit, or at any time after a start.
// Four scripted members, whose update (deltas and mask) in round r is a fixed
// function of (member, r) with values exact in float64, pull, push, and on any
// outage reconnect to the restarted coordinator and carry on.
//
// After each kill, with the process dead, the SQLite file is opened read-only:
// PRAGMA integrity_check is ok; the rounds are 1..last without a gap; no round
// the coordinator announced as committed is missing; a transaction cut short
// left nothing (last round = the cut round - 1); the global model after the
// last round equals, bit for bit, the one an uninterrupted run of the same
// members made after that round, and every member's stored mask is its mask of
// that round. The run finishes with the uninterrupted run's final model.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { Mask } from '../../proto/mask.js';
import { SeededRandom } from '../../proto/random.js';
import { modelFileJson, type CoordinatorConfigInput } from '../../server/config.js';
import { startCoordinator } from '../../server/main.js';
import type { TensorMap, TensorSpec } from '../../server/model.js';
import { ENROLL, ScriptedClient } from '../server/harness.js';
import { exactDeltas, hash, killChildren, spawnTsx, type Child } from './helpers.js';

const SEED = 10;
const MEMBERS = 4;
const ROUNDS = 30;
const KILLS = 20;
/** The pause at each of a commit's four steps inside its transaction. */
const COMMIT_DELAY_MS = 25;
/** An "any time" kill comes within this long after the coordinator is up. */
const ANYTIME_MS = 300;

const MANIFEST: TensorSpec[] = [
  { name: 'w', shape: [16, 8], prunable: true },
  { name: 'b', shape: [8], prunable: false },
];
const size = (s: TensorSpec) => s.shape.reduce((a, b) => a * b, 1);
const INITIAL: TensorMap = new Map(MANIFEST.map((s, i) => [s.name, exactDeltas(size(s), 1000, i)]));

const CONFIG: CoordinatorConfigInput = {
  rounds: ROUNDS,
  fraction: 1,
  minClients: MEMBERS,
  // Every member reports in every round: a round commits exactly when the last one did, whatever the timing.
  quorum: 1,
  roundDeadlineMs: 600_000,
  liveness: 'off',
  retryAfterMs: 10,
  weighting: 'examples',
  enrollmentToken: ENROLL,
  http: { enabled: false },
};

/** Member c's mask of tensor `spec` in round r: three quarters of a prunable tensor, all of a bias. */
function maskOf(c: number, r: number, spec: TensorSpec): Mask {
  const n = size(spec);
  return spec.prunable ? Mask.fromBytes(Array.from({ length: n }, (_, j) => (hash(c, r, j) % 4 === 0 ? 0 : 1))) : Mask.full(n);
}

function deltasOf(c: number, r: number): Record<string, number[]> {
  return Object.fromEntries(MANIFEST.map((s, i) => [s.name, Array.from(exactDeltas(size(s), c, r, i))]));
}

interface Identity {
  index: number;
  id: string;
  token: string;
}

/** Call outcomes a member met along the way, by gRPC code name and reason. */
type Outcomes = Map<string, number>;

/**
 * One member's rounds until the coordinator says training is finished: pull
 * (always dense: mask version 0), push its (c, r) update as a new mask version
 * r on top of whatever version the server holds. Any failure (the coordinator
 * gone, or the round closed while the ack was lost) is counted and the member
 * pulls again, reconnecting when the coordinator's address changed.
 */
async function member(who: Identity, address: () => string | undefined, outcomes: Outcomes): Promise<void> {
  let client: ScriptedClient | undefined;
  let at: string | undefined;
  try {
    for (;;) {
      const now = address();
      if (now === undefined) {
        await sleep(5);
        continue;
      }
      if (now !== at) {
        client?.close();
        client = Object.assign(new ScriptedClient(now), { id: who.id, token: who.token, manifest: MANIFEST });
        at = now;
      }
      try {
        const task = await client!.pull({ maskVersion: 0 });
        if (!task.header.hasTask) {
          if (task.header.finished) return;
          await sleep(task.header.retryAfterMs);
          continue;
        }
        const r = task.header.roundId;
        client!.masks = new Map(MANIFEST.map((s) => [s.name, maskOf(who.index, r, s)]));
        await client!.push(r, client!.encode(deltasOf(who.index, r)), {
          numExamples: who.index + 1,
          baseMaskVersion: task.header.maskVersion,
          maskChanged: true,
          newMaskVersion: r,
        });
      } catch (err) {
        const e = err as grpc.ServiceError;
        const reason = e.code === grpc.status.FAILED_PRECONDITION ? ` ${e.details.replace(/\d+/g, 'N')}` : '';
        const key = `${grpc.status[e.code] ?? String(err)}${reason}`;
        outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
        await sleep(5);
      }
    }
  } finally {
    client?.close();
  }
}

/** The reference: the same members against an in-process coordinator that is never interrupted; the global after each round. */
async function uninterruptedRun(): Promise<TensorMap[]> {
  const server = await startCoordinator(CONFIG, { manifest: MANIFEST, initial: INITIAL }, { logger: pino({ level: 'silent' }) });
  const after: TensorMap[] = [server.coordinator.globalModel()];
  server.coordinator.onRoundCommitted((s) => (after[s.round] = server.coordinator.globalModel()));
  try {
    const identities: Identity[] = [];
    for (let c = 0; c < MEMBERS; c++) identities.push(await enroll(server.grpcAddress, c));
    const outcomes: Outcomes = new Map();
    await Promise.all(identities.map((who) => member(who, () => server.grpcAddress, outcomes)));
    expect(outcomes).toEqual(new Map());
  } finally {
    await server.stop();
  }
  return after;
}

async function enroll(address: string, c: number): Promise<Identity> {
  const client = new ScriptedClient(address);
  try {
    await client.join(ENROLL, c + 1, `member-${c}`);
    return { index: c, id: client.id, token: client.token };
  } finally {
    client.close();
  }
}

/** What a dead coordinator left in its SQLite file, read with a read-only connection. */
function inspect(file: string) {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const integrity = db.pragma('integrity_check', { simple: true });
    const lastRound = Number((db.prepare("SELECT value FROM meta WHERE key = 'last_round'").get() as { value: string }).value);
    const rounds = db.prepare('SELECT id, reporters FROM rounds ORDER BY id').all() as { id: number; reporters: string }[];
    const global = new Map(
      (db.prepare('SELECT name, data FROM global').all() as { name: string; data: Buffer }[]).map((r) => [r.name, r.data]),
    );
    const clients = db.prepare('SELECT id, mask_version FROM clients ORDER BY seq').all() as {
      id: string;
      mask_version: number;
    }[];
    const masks = db.prepare('SELECT client_id, name, bits FROM masks').all() as {
      client_id: string;
      name: string;
      bits: Buffer;
    }[];
    return { integrity, lastRound, rounds, global, clients, masks };
  } finally {
    db.close();
  }
}

type Plan = 'in-commit' | 'after-commit' | 'any-time';

/** One commit step announced by the store's test hook. */
interface Step {
  round: number;
  step: string;
}

function parseStep(line: string): Step | undefined {
  const m = /^subfed-test-commit (\d+) (\w+)$/.exec(line);
  return m === null ? undefined : { round: Number(m[1]), step: m[2] };
}

function steps(child: Child): Step[] {
  return child.stderr.flatMap((line) => parseStep(line) ?? []);
}

const dir = mkdtempSync(join(tmpdir(), 'subfed-kill-'));
afterAll(() => {
  killChildren();
  rmSync(dir, { recursive: true, force: true });
});

describe('the coordinator killed during commits', () => {
  it(`survives ${KILLS} SIGKILLs, most inside a commit's transaction, and ends with the uninterrupted run's model`, async () => {
    const reference = await uninterruptedRun();
    expect(reference).toHaveLength(ROUNDS + 1);

    writeFileSync(join(dir, 'model.json'), modelFileJson(MANIFEST, INITIAL));
    const configPath = join(dir, 'server.json');
    writeFileSync(configPath, JSON.stringify({ ...CONFIG, model: 'model.json', sqlite: 'state.db', logLevel: 'info' }));
    const dbFile = join(dir, 'state.db');
    // A coordinator process starts in two steps: node loads the server's modules (most of a start's
    // time), then, told to on its standard input, calls runServer. The next process is loaded while
    // the current one runs, and runs only once the current one is dead: restarts are quick, so the
    // test's time goes to kills, not to module loading. The last process, never killed, runs the
    // remaining rounds without the commit pauses.
    const load = (last: boolean) =>
      spawnTsx(
        [
          '-e',
          `import('./server/main.ts').then((m) => process.stdin.once('data', () => m.runServer(process.argv[1])))`,
          configPath,
        ],
        last ? {} : { SUBFED_TEST_COMMIT_DELAY_MS: String(COMMIT_DELAY_MS) },
        { stdin: true },
      );
    let spare = load(false);
    let started = 0;
    const start = async (): Promise<{ child: Child; address: string }> => {
      const child = spare;
      child.send('run');
      started++;
      spare = load(started === KILLS);
      const listening = await child.line((r) => r.event === 'listening');
      return { child, address: `127.0.0.1:${listening.grpcPort as number}` };
    };
    let life = await start();
    let address: string | undefined = life.address;
    const identities: Identity[] = [];
    for (let c = 0; c < MEMBERS; c++) identities.push(await enroll(life.address, c));
    const outcomes: Outcomes = new Map();
    const members = Promise.all(identities.map((who) => member(who, () => address, outcomes)));

    const rand = new SeededRandom(SEED);
    /** Where each kill landed: inside round r's transaction at a step, or outside any. */
    const landed: { plan: Plan; where: string }[] = [];
    let lastRound = 0;
    const check = (file: string, announced: Step[], plan: Plan | 'shutdown') => {
      const state = inspect(file);
      expect(state.integrity).toBe('ok');
      // Nothing committed is lost, nothing half-written survives. A kill after the last step before
      // COMMIT may also land in COMMIT itself: then either outcome is right, as long as it is whole.
      const committed = Math.max(lastRound, ...announced.filter((s) => s.step === 'committed').map((s) => s.round));
      const last = announced.at(-1);
      const cut = last !== undefined && last.step !== 'committed' ? last : undefined;
      if (plan === 'shutdown') expect(state.lastRound).toBe(ROUNDS);
      else if (cut === undefined) expect(state.lastRound).toBe(committed);
      else {
        expect(committed).toBe(cut.round - 1);
        if (cut.step === 'history') expect([cut.round - 1, cut.round]).toContain(state.lastRound);
        else expect(state.lastRound).toBe(cut.round - 1);
      }
      expect(state.rounds.map((r) => r.id)).toEqual(Array.from({ length: state.lastRound }, (_, i) => i + 1));
      for (const r of state.rounds)
        expect((JSON.parse(r.reporters) as string[]).sort()).toEqual(identities.map((m) => m.id).sort());
      // The model and masks are exactly those after round lastRound of the uninterrupted run.
      for (const [name, values] of reference[state.lastRound]) {
        expect(state.global.get(name)?.equals(Buffer.from(values.buffer, values.byteOffset, values.byteLength)), name).toBe(true);
      }
      expect(state.clients.map((c) => c.mask_version)).toEqual(identities.map(() => state.lastRound));
      const expectedMasks = identities.flatMap((m) =>
        state.lastRound === 0
          ? []
          : MANIFEST.filter((s) => s.prunable).map((s) => ({
              client_id: m.id,
              name: s.name,
              bits: Buffer.from(maskOf(m.index, state.lastRound, s).pack()),
            })),
      );
      const byKey = (a: { client_id: string; name: string }, b: { client_id: string; name: string }) =>
        `${a.client_id}/${a.name}`.localeCompare(`${b.client_id}/${b.name}`);
      expect(state.masks.sort(byKey)).toEqual(expectedMasks.sort(byKey));
      lastRound = state.lastRound;
      const where =
        cut === undefined
          ? 'outside'
          : cut.step === 'history' && state.lastRound === cut.round
            ? 'in COMMIT (kept)'
            : `in ${cut.step} (rolled back)`;
      if (plan !== 'shutdown') landed.push({ plan, where });
    };

    for (let k = 0; k < KILLS; k++) {
      const u = rand.next();
      const plan: Plan = u < 0.6 ? 'in-commit' : u < 0.75 ? 'after-commit' : 'any-time';
      const delay = rand.next();
      const { child } = life;
      const seen = steps(child).length;
      const finished = child.line((r) => r.event === 'finished').then(() => 'finished' as const);
      const aimed =
        plan === 'any-time'
          ? sleep(delay * ANYTIME_MS)
          : child
              .until((line) => {
                const s = parseStep(line);
                return s?.step === (plan === 'in-commit' ? 'begin' : 'committed') && steps(child).length > seen;
              })
              .then(() => sleep(plan === 'in-commit' ? delay * 4 * COMMIT_DELAY_MS : 0));
      if ((await Promise.race([aimed, finished])) === 'finished') throw new Error(`all ${ROUNDS} rounds done after ${k} kills`);
      address = undefined;
      await child.kill9();
      check(dbFile, steps(child), plan);
      life = await start();
      address = life.address;
    }

    // No more kills: the run goes to its end, then the coordinator stops cleanly.
    await life.child.line((r) => r.event === 'finished');
    await members;
    address = undefined;
    life.child.process.kill('SIGTERM');
    expect((await life.child.exited).code).toBe(0);
    check(dbFile, steps(life.child), 'shutdown');
    await spare.kill9();
    expect(lastRound).toBe(ROUNDS);

    // The kills did land where they were aimed: many inside a transaction, at every step of it.
    const inside = landed.filter((l) => l.where.endsWith('(rolled back)'));
    const tally = new Map<string, number>();
    for (const l of landed) tally.set(`${l.plan} -> ${l.where}`, (tally.get(`${l.plan} -> ${l.where}`) ?? 0) + 1);
    console.log(`${KILLS} kills, aimed -> landed: ${[...tally].map(([k, n]) => `${k} x${n}`).join('; ')}`);
    expect(landed).toHaveLength(KILLS);
    expect(inside.length).toBeGreaterThanOrEqual(KILLS / 4);
    // The members only ever met the outage itself, or a round closed while its ack was lost.
    for (const key of outcomes.keys()) expect(key).toMatch(/^UNAVAILABLE$|^FAILED_PRECONDITION round N is closed/);
  }, 240_000); // 21 coordinator processes: about 45 s on a busy 2-core machine, past the default 60 s under more load
});
