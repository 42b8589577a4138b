// Resume after kill -9: a real child process runs the coordinator from a config
// file with a SQLite path; it is SIGKILLed in the middle of a round and
// restarted. Clients keep their id and token, pull again, and the round
// history and global model continue from the last committed round.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { Mask } from '../../proto/mask.js';
import { modelFileJson } from '../../server/config.js';
import { ENROLL, ScriptedClient, toyModel } from '../server/harness.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'subfed-resume-'));
const children: ChildProcess[] = [];
/** Every JSON log line the children printed. */
const logs: Record<string, unknown>[] = [];

interface Running {
  child: ChildProcess;
  grpcPort: number;
  httpPort: number;
}

/** Starts `runServer(config)` in a child process and waits for its "listening" log line. */
function startChild(configPath: string): Promise<Running> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', '-e', `import('./server/main.ts').then((m) => m.runServer(process.argv[1]))`, configPath],
    { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  children.push(child);
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      try {
        const entry = JSON.parse(line) as { event?: string; grpcPort?: number; httpPort?: number };
        logs.push(entry);
        if (entry.event === 'listening') resolve({ child, grpcPort: entry.grpcPort!, httpPort: entry.httpPort! });
      } catch {
        // not a log line
      }
    });
    child.once('exit', (code) => reject(new Error(`coordinator exited with ${code} before listening: ${stderr}`)));
  });
}

/** `subfed server --config <file>` (the CLI, from the sources) until it exits. */
function runCli(configPath: string): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'cli.ts', 'server', '--config', configPath], {
    cwd: root,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(child);
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, stderr })));
}

function kill9(r: Running): Promise<void> {
  return new Promise((resolve) => {
    r.child.once('exit', () => resolve());
    r.child.kill('SIGKILL');
  });
}

afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

describe('coordinator resume after kill -9', () => {
  it('continues from the last committed round with the same clients, ids and tokens', async () => {
    const { manifest, initial } = toyModel();
    writeFileSync(join(dir, 'model.json'), modelFileJson(manifest, initial));
    const configPath = join(dir, 'server.json');
    writeFileSync(
      configPath,
      JSON.stringify({
        model: 'model.json',
        sqlite: 'state.db',
        rounds: 3,
        fraction: 1,
        minClients: 2,
        enrollmentToken: ENROLL,
        weighting: 'unweighted',
        roundDeadlineMs: 600_000,
        logLevel: 'info',
      }),
    );

    let server = await startChild(configPath);
    let a = new ScriptedClient(`127.0.0.1:${server.grpcPort}`);
    let b = new ScriptedClient(`127.0.0.1:${server.grpcPort}`);
    await a.join();
    await b.join();
    const ids = { a: [a.id, a.token], b: [b.id, b.token] };

    // Round 1 commits: A prunes its first row, B stays dense.
    await a.pull();
    await b.pull();
    a.masks.set('dense/kernel', Mask.fromBytes([0, 0, 0, 1, 1, 1]));
    const ackA = await a.push(1, a.encode({ 'dense/kernel': [0, 0, 0, 2, 2, 2] }), { maskChanged: true, newMaskVersion: 1 });
    a.maskVersion = ackA.maskVersion;
    await b.push(1, b.encode({ 'dense/kernel': [4, 4, 4, 4, 4, 4] }));
    // Round 2: only A reports before the crash.
    await a.pull();
    await b.pull();
    await a.push(2, a.encode({ 'dense/kernel': [0, 0, 0, 100, 100, 100] }, a.masks));
    await kill9(server);
    a.close();
    b.close();

    server = await startChild(configPath);
    a = Object.assign(new ScriptedClient(`127.0.0.1:${server.grpcPort}`), {
      id: ids.a[0],
      token: ids.a[1],
      manifest,
      masks: a.masks,
      maskVersion: 1,
    });
    b = Object.assign(new ScriptedClient(`127.0.0.1:${server.grpcPort}`), { id: ids.b[0], token: ids.b[1], manifest });
    const taskA = await a.pull();
    // Round 2 re-opened; A's mask (version 1) survived, so its download is sparse.
    expect(taskA.header).toMatchObject({ hasTask: true, roundId: 2, dense: false, maskVersion: 1 });
    const k1 = [4.5, 3.75, 5, 5, 0, 3.125]; // row 1: B only (+4); row 2: (2 + 4) / 2 = +3
    expect(Array.from(taskA.tensors.get('dense/kernel')!.kept)).toEqual(k1.slice(3));
    expect((await b.pull()).header).toMatchObject({ hasTask: true, roundId: 2, dense: true });
    await a.push(2, a.encode({ 'dense/kernel': [0, 0, 0, 1, 1, 1] }, a.masks));
    await b.push(2, b.encode({ 'dense/kernel': [1, 1, 1, 1, 1, 1] }));

    // Round 3's dense task shows the global model: the lost pre-crash upload (+100) left no trace.
    const task3 = await b.pull();
    expect(task3.header).toMatchObject({ hasTask: true, roundId: 3 });
    expect(Array.from(task3.tensors.get('dense/kernel')!.kept)).toEqual(k1.map((x) => x + 1));
    const rounds = (await (await fetch(`http://127.0.0.1:${server.httpPort}/api/rounds`)).json()) as {
      rounds: { round: number; reporters: string[] }[];
    };
    expect(rounds.rounds.map((r) => r.round)).toEqual([2, 1]);
    expect(rounds.rounds[0].reporters.sort()).toEqual([ids.a[0], ids.b[0]].sort());
    // Each client's history spans the crash: round 1 comes from the database, round 2 from this process.
    const listed = (await (await fetch(`http://127.0.0.1:${server.httpPort}/api/clients`)).json()) as {
      clients: { id: string; state: string; roundsTaken: number; lastRound: number | null }[];
    };
    expect(listed.clients.map((c) => [c.id, c.state, c.roundsTaken, c.lastRound])).toEqual([
      [ids.a[0], 'alive', 2, 2],
      [ids.b[0], 'alive', 2, 2],
    ]);
    a.close();
    b.close();
    await kill9(server);
  });

  it('refuses a second coordinator on the same SQLite file, and logs its shutdown on SIGTERM', async () => {
    const { manifest, initial } = toyModel();
    writeFileSync(join(dir, 'model.json'), modelFileJson(manifest, initial));
    const configPath = join(dir, 'locked.json');
    writeFileSync(
      configPath,
      JSON.stringify({
        model: 'model.json',
        sqlite: 'locked.db',
        rounds: 3,
        fraction: 1,
        enrollmentToken: ENROLL,
        logLevel: 'info',
      }),
    );
    const first = await startChild(configPath);
    const second = await runCli(configPath);
    expect(second.code).toBe(1);
    expect(second.stderr).toContain(`sqlite: ${join(dir, 'locked.db')} is in use by another coordinator`);

    const exited = new Promise<number | null>((resolve) => first.child.once('exit', (code) => resolve(code)));
    first.child.kill('SIGTERM');
    expect(await exited).toBe(0);
    const lastLines = logs.slice(-2);
    expect(lastLines.map((l) => l.event)).toEqual(['signal', 'shutdown']);
    expect(lastLines[1]).toMatchObject({ lastCommittedRound: 0, totalRounds: 3, msg: 'coordinator stopped after round 0 of 3' });
  });
});
