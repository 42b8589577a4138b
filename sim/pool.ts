/**
 * A fixed pool of worker_threads with client affinity: client i always runs on
 * worker i % size, so its model, masks and gRPC channel stay in that worker's
 * memory between rounds. Each worker handles one request at a time (tfjs keeps
 * global state per thread), so a 2-core machine trains two clients at once.
 *
 * The main side (`WorkerPool`) and the worker side (`serveWorkerRequests`) speak
 * a tiny request/response protocol; a crashed worker rejects everything pending
 * on it with an error naming the worker.
 */
import { parentPort, Worker } from 'node:worker_threads';

interface RequestEnvelope<Req> {
  readonly kind: 'request';
  readonly id: number;
  readonly request: Req;
}
interface CloseEnvelope {
  readonly kind: 'close';
}
type ToWorker<Req> = RequestEnvelope<Req> | CloseEnvelope;

type FromWorker<Res> =
  | { readonly kind: 'result'; readonly id: number; readonly result: Res }
  | { readonly kind: 'failure'; readonly id: number; readonly message: string; readonly stack: string | undefined }
  | { readonly kind: 'closed' };

/** A task failed inside the worker (the worker is still alive). */
export class WorkerTaskError extends Error {
  override readonly name = 'WorkerTaskError';
  constructor(
    readonly workerIndex: number,
    message: string,
    readonly workerStack?: string,
  ) {
    super(`worker ${workerIndex}: ${message}`);
  }
}

/** The worker thread itself died (uncaught error or exit); every task on it fails. */
export class WorkerCrashedError extends Error {
  override readonly name = 'WorkerCrashedError';
  constructor(
    readonly workerIndex: number,
    reason: string,
  ) {
    super(`worker ${workerIndex} crashed: ${reason}`);
  }
}

/**
 * How to start a worker module that sits next to `moduleUrl`: the compiled .js
 * directly, or, when running from sources (vitest, tsx), the .ts through tsx.
 * `--import tsx` in a worker's execArgv does not hook the worker's own entry on
 * Node 20, so the source case boots through a one-line ESM module (a data:
 * URL, which Worker loads as ESM) that registers tsx's loader first.
 */
export function workerEntry(moduleUrl: string, baseName: string): URL {
  if (!moduleUrl.endsWith('.ts')) return new URL(`./${baseName}.js`, moduleUrl);
  const target = new URL(`./${baseName}.ts`, moduleUrl);
  const tsxApi = import.meta.resolve('tsx/esm/api');
  const boot = `import { register } from ${JSON.stringify(tsxApi)}; register(); await import(${JSON.stringify(target.href)});`;
  return new URL(`data:text/javascript,${encodeURIComponent(boot)}`);
}

export interface WorkerPoolOptions {
  /** From `workerEntry`, or a plain .js/.mjs file URL. */
  readonly entry: URL;
  readonly size: number;
  /** Handed to every worker once at start (use SharedArrayBuffer-backed arrays for data). */
  readonly workerData?: unknown;
}

interface Pending<Res> {
  resolve(result: Res): void;
  reject(error: Error): void;
}

class PoolMember<Req, Res> {
  readonly #worker: Worker;
  readonly #pending = new Map<number, Pending<Res>>();
  #crash: WorkerCrashedError | undefined;
  #closing = false;
  readonly #exited: Promise<number>;

  constructor(
    readonly index: number,
    options: WorkerPoolOptions,
  ) {
    this.#worker = new Worker(options.entry, {
      workerData: { ...(options.workerData as object | undefined), workerIndex: index },
    });
    this.#worker.on('message', (message: FromWorker<Res>) => this.#onMessage(message));
    this.#worker.on('error', (error: Error) => this.#fail(error.message));
    this.#exited = new Promise((resolve) => {
      this.#worker.on('exit', (code) => {
        if (!this.#closing) this.#fail(`exited with code ${code}`);
        resolve(code);
      });
    });
  }

  get crashed(): WorkerCrashedError | undefined {
    return this.#crash;
  }

  #onMessage(message: FromWorker<Res>): void {
    switch (message.kind) {
      case 'result':
        this.#take(message.id)?.resolve(message.result);
        return;
      case 'failure':
        this.#take(message.id)?.reject(new WorkerTaskError(this.index, message.message, message.stack));
        return;
      case 'closed':
        return;
    }
  }

  #take(id: number): Pending<Res> | undefined {
    const pending = this.#pending.get(id);
    this.#pending.delete(id);
    return pending;
  }

  #fail(reason: string): void {
    this.#crash ??= new WorkerCrashedError(this.index, reason);
    for (const pending of this.#pending.values()) pending.reject(this.#crash);
    this.#pending.clear();
  }

  run(id: number, request: Req): Promise<Res> {
    if (this.#crash) return Promise.reject(this.#crash);
    if (this.#closing) return Promise.reject(new Error(`worker ${this.index}: pool is closed`));
    return new Promise<Res>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      const envelope: ToWorker<Req> = { kind: 'request', id, request };
      this.#worker.postMessage(envelope);
    });
  }

  /** Ask the worker to finish its current task and release its resources; terminate it if it does not exit in time. */
  async close(graceMs: number): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    if (!this.#crash) this.#worker.postMessage({ kind: 'close' } satisfies CloseEnvelope);
    const timer = setTimeout(() => void this.#worker.terminate(), graceMs);
    await this.#exited;
    clearTimeout(timer);
    for (const pending of this.#pending.values())
      pending.reject(new Error(`worker ${this.index}: pool closed before the task finished`));
    this.#pending.clear();
  }
}

export class WorkerPool<Req, Res> {
  readonly #members: PoolMember<Req, Res>[];
  #nextId = 0;

  constructor(options: WorkerPoolOptions) {
    if (!Number.isInteger(options.size) || options.size < 1) {
      throw new RangeError(`worker pool size: expected a positive integer, got ${options.size}`);
    }
    this.#members = Array.from({ length: options.size }, (_, i) => new PoolMember<Req, Res>(i, options));
  }

  get size(): number {
    return this.#members.length;
  }

  /** The worker a client lives on. */
  workerOf(clientIndex: number): number {
    return clientIndex % this.#members.length;
  }

  /** Run a request on one worker; requests to the same worker run one after another. */
  run(workerIndex: number, request: Req): Promise<Res> {
    const member = this.#members[workerIndex];
    if (!member) throw new RangeError(`worker index ${workerIndex} outside 0..${this.#members.length - 1}`);
    return member.run(this.#nextId++, request);
  }

  /** Run a request on every worker (setup, broadcast). */
  runOnAll(request: Req): Promise<Res[]> {
    return Promise.all(this.#members.map((_, i) => this.run(i, request)));
  }

  /** Crashed workers, if any. */
  crashes(): WorkerCrashedError[] {
    return this.#members.flatMap((m) => (m.crashed ? [m.crashed] : []));
  }

  async close(graceMs = 5_000): Promise<void> {
    await Promise.all(this.#members.map((m) => m.close(graceMs)));
  }
}

/**
 * Worker side: answer requests one at a time with `handle`; on close, run
 * `onClose` (dispose models, close channels) and let the thread exit.
 */
export function serveWorkerRequests<Req, Res>(
  handle: (request: Req) => Promise<Res>,
  onClose: () => Promise<void> = async () => {},
): void {
  const port = parentPort;
  if (!port) throw new Error('serveWorkerRequests must run inside a worker thread');
  let queue: Promise<void> = Promise.resolve();
  port.on('message', (message: ToWorker<Req>) => {
    queue = queue.then(async () => {
      switch (message.kind) {
        case 'request':
          try {
            const result = await handle(message.request);
            port.postMessage({ kind: 'result', id: message.id, result } satisfies FromWorker<Res>);
          } catch (error) {
            const e = error instanceof Error ? error : new Error(String(error));
            port.postMessage({ kind: 'failure', id: message.id, message: e.message, stack: e.stack } satisfies FromWorker<Res>);
          }
          return;
        case 'close':
          await onClose();
          port.postMessage({ kind: 'closed' } satisfies FromWorker<Res>);
          port.close();
          return;
      }
    });
  });
}
