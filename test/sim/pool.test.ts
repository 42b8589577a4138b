import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { WorkerCrashedError, WorkerPool, WorkerTaskError, workerEntry } from '../../sim/pool.js';

// Fixture workers are TypeScript files written to a temp folder, so the test
// also exercises the tsx bootstrap that the simulator uses under vitest.
const dir = mkdtempSync(path.join(tmpdir(), 'subfed-pool-'));
writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}');
const poolModule = pathToFileURL(path.resolve('sim/pool.ts')).href;

writeFileSync(
  path.join(dir, 'fixture-worker.ts'),
  `import { threadId, workerData } from 'node:worker_threads';
import { serveWorkerRequests } from ${JSON.stringify(poolModule)};
type Req = { op: 'whoami' } | { op: 'fail' } | { op: 'crash' } | { op: 'sum'; data: 'shared' };
const shared: Uint8Array | undefined = (workerData as { shared?: Uint8Array }).shared;
const index: number = (workerData as { workerIndex: number }).workerIndex;
let served = 0;
serveWorkerRequests(async (req: Req) => {
  served += 1;
  switch (req.op) {
    case 'whoami': return { index, threadId, served };
    case 'fail': throw new Error('bad request for this fixture');
    case 'crash': setImmediate(() => { throw new Error('fixture blew up'); }); return new Promise(() => {});
    case 'sum': { shared![index] = 100 + index; return { sum: shared!.reduce((a, b) => a + b, 0) }; }
  }
}, async () => {
  // The close hook runs before the thread exits: record it where the main thread can see.
  if (shared) shared[2 + index] = 1;
});
`,
);

const entry = workerEntry(pathToFileURL(path.join(dir, 'pool.ts')).href, 'fixture-worker');
const pools: WorkerPool<unknown, Record<string, number>>[] = [];
function makePool(size: number, workerData?: unknown): WorkerPool<unknown, Record<string, number>> {
  const pool = new WorkerPool<unknown, Record<string, number>>({ entry, size, workerData });
  pools.push(pool);
  return pool;
}

afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.close()));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('WorkerPool', () => {
  it('runs tasks on two distinct workers with client affinity i % size', async () => {
    const pool = makePool(2);
    expect([0, 1, 2, 3, 4].map((i) => pool.workerOf(i))).toEqual([0, 1, 0, 1, 0]);
    const results = await Promise.all([0, 1, 2, 3].map((client) => pool.run(pool.workerOf(client), { op: 'whoami' })));
    expect(results.map((r) => r.index)).toEqual([0, 1, 0, 1]);
    expect(new Set(results.map((r) => r.threadId)).size).toBe(2);
    // Worker state survives between tasks: each worker counted its own two requests.
    expect(results.map((r) => r.served)).toEqual([1, 1, 2, 2]);
  });

  it('shares data given once at start through SharedArrayBuffer', async () => {
    const shared = new Uint8Array(new SharedArrayBuffer(4));
    const pool = makePool(2, { shared });
    await pool.run(0, { op: 'sum', data: 'shared' });
    await pool.run(1, { op: 'sum', data: 'shared' });
    // Both workers wrote into the same memory the main thread sees.
    expect([...shared.subarray(0, 2)]).toEqual([100, 101]);
  });

  it('reports a failing task without losing the worker', async () => {
    const pool = makePool(1);
    await expect(pool.run(0, { op: 'fail' })).rejects.toThrow(WorkerTaskError);
    await expect(pool.run(0, { op: 'fail' })).rejects.toThrow('worker 0: bad request for this fixture');
    await expect(pool.run(0, { op: 'whoami' })).resolves.toMatchObject({ index: 0 });
  });

  it('reports a crashed worker to its pending and later tasks, and the other worker keeps going', async () => {
    const pool = makePool(2);
    const crash = pool.run(1, { op: 'crash' });
    await expect(crash).rejects.toThrow(WorkerCrashedError);
    await expect(crash).rejects.toThrow(/worker 1 crashed: fixture blew up/);
    await expect(pool.run(1, { op: 'whoami' })).rejects.toThrow(/worker 1 crashed/);
    expect(pool.crashes().map((c) => c.workerIndex)).toEqual([1]);
    await expect(pool.run(0, { op: 'whoami' })).resolves.toMatchObject({ index: 0 });
  });

  it('shuts down cleanly: every worker runs its close hook, later tasks are refused', async () => {
    const shared = new Uint8Array(new SharedArrayBuffer(4));
    const pool = makePool(2, { shared });
    await pool.run(0, { op: 'whoami' });
    await pool.close();
    expect([...shared.subarray(2)]).toEqual([1, 1]);
    expect(pool.crashes()).toEqual([]);
    await expect(pool.run(0, { op: 'whoami' })).rejects.toThrow(/pool is closed/);
  });

  it('starts compiled workers directly and source workers through tsx', () => {
    expect(workerEntry('file:///app/dist/sim/run.js', 'client-worker').href).toBe('file:///app/dist/sim/client-worker.js');
    const boot = workerEntry('file:///app/sim/run.ts', 'client-worker');
    expect(boot.protocol).toBe('data:');
    const code = decodeURIComponent(boot.href.slice('data:text/javascript,'.length));
    expect(code).toContain('register()');
    expect(code).toContain('"file:///app/sim/client-worker.ts"');
  });

  it('rejects a bad pool size', () => {
    expect(() => new WorkerPool({ entry, size: 0 })).toThrow(/worker pool size: expected a positive integer, got 0/);
  });
});
