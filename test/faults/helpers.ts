// Helpers of the fault tests: a TCP proxy that cuts connections on cue, child
// processes whose output is read line by line, and updates whose values are
// exact in float32 and float64 (so an average does not depend on the order
// the uploads arrived in, and a run can be compared bit for bit with another).
import { spawn, type ChildProcess } from 'node:child_process';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { packageRoot } from '../../proto/package-root.js';

export const root = packageRoot();

// ---------------------------------------------------------------- TCP proxy

/** One proxied connection: its two sockets and the bytes that crossed each way so far. */
export interface ProxiedConnection {
  readonly index: number;
  /** Client to server. */
  up: number;
  /** Server to client. */
  down: number;
  cut(): void;
}

/**
 * A TCP proxy on 127.0.0.1 (port 0) in front of `target`. Every byte is
 * forwarded both ways and counted per connection; `cutWhenUp` destroys a
 * connection once the bytes it carried from the client reach a count, and
 * `cutAll` destroys every open connection at once (both sides, no FIN: the
 * peers see a reset, as when a link goes down).
 */
export class TcpProxy {
  readonly #server: Server;
  readonly #target: { host: string; port: number };
  readonly connections: ProxiedConnection[] = [];
  readonly #open = new Set<ProxiedConnection>();
  /** Armed cut: connection index and the client-to-server byte count at which it is cut. */
  #cutAt: { index: number; up: number; done: () => void } | undefined;
  port = 0;

  private constructor(target: { host: string; port: number }) {
    this.#target = target;
    this.#server = createServer((client) => this.#accept(client));
  }

  static async start(target: string): Promise<TcpProxy> {
    const [host, port] = target.split(':');
    const proxy = new TcpProxy({ host, port: Number(port) });
    await new Promise<void>((resolve) => proxy.#server.listen(0, '127.0.0.1', resolve));
    proxy.port = (proxy.#server.address() as { port: number }).port;
    return proxy;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  #accept(client: Socket): void {
    const upstream = createConnection(this.#target);
    const sockets = [client, upstream];
    const conn: ProxiedConnection = {
      index: this.connections.length,
      up: 0,
      down: 0,
      cut: () => {
        for (const s of sockets) s.resetAndDestroy();
        this.#open.delete(conn);
      },
    };
    this.connections.push(conn);
    this.#open.add(conn);
    const closed = () => this.#open.delete(conn);
    for (const s of sockets) {
      s.on('error', () => conn.cut());
      s.on('close', closed);
    }
    client.on('data', (chunk: Buffer) => {
      const cut = this.#cutAt;
      if (cut !== undefined && cut.index === conn.index && conn.up + chunk.length >= cut.up) {
        // Forward only the bytes before the cut point, then cut.
        const keep = cut.up - conn.up;
        conn.up += keep;
        this.#cutAt = undefined;
        upstream.write(chunk.subarray(0, keep), () => {
          conn.cut();
          cut.done();
        });
        return;
      }
      conn.up += chunk.length;
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      conn.down += chunk.length;
      client.write(chunk);
    });
  }

  /** The newest connection (fails when there is none). */
  get last(): ProxiedConnection {
    const conn = this.connections.at(-1);
    if (conn === undefined) throw new Error('proxy: no connection yet');
    return conn;
  }

  /** Cuts connection `conn` once `up` bytes from the client have crossed it; resolves when cut. */
  cutWhenUp(conn: ProxiedConnection, up: number): Promise<void> {
    return new Promise((done) => (this.#cutAt = { index: conn.index, up, done }));
  }

  cutAll(): void {
    for (const conn of [...this.#open]) conn.cut();
  }

  async close(): Promise<void> {
    this.cutAll();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

// ---------------------------------------------------------------- child processes

/** A child process and every line it printed. */
export interface Child {
  readonly process: ChildProcess;
  readonly stdout: string[];
  readonly stderr: string[];
  /** Resolves with the first line (stdout or stderr, so far or to come) that `match` accepts; rejects if the child exits first. */
  until(match: (line: string) => boolean): Promise<string>;
  /** The same for the first JSON line (an object) that `match` accepts. */
  line(match: (record: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  /** Writes a line to the child's standard input (see spawnTsx's `stdin`). */
  send(line: string): void;
  /** Resolves once the process has exited and its output is read to the end. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill9(): Promise<void>;
}

const children = new Set<ChildProcess>();

/** The line as a JSON object, or undefined. */
export function jsonRecord(line: string): Record<string, unknown> | undefined {
  try {
    const value = JSON.parse(line) as unknown;
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** `node --import tsx <args>` from the package root; `stdin: true` keeps a pipe to its standard input open. */
export function spawnTsx(args: readonly string[], env: Record<string, string> = {}, options: { stdin?: boolean } = {}): Child {
  const child = spawn(process.execPath, ['--import', 'tsx', ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: [options.stdin === true ? 'pipe' : 'ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const stdout: string[] = [];
  const stderr: string[] = [];
  const all: string[] = [];
  const waiters = new Set<{ match: (line: string) => boolean; resolve: (line: string) => void }>();
  const readers = [
    [child.stdout, stdout],
    [child.stderr, stderr],
  ].map(([stream, lines]) => {
    const rl = createInterface({ input: stream as NodeJS.ReadableStream });
    rl.on('line', (line) => {
      (lines as string[]).push(line);
      all.push(line);
      for (const w of waiters) {
        if (w.match(line)) {
          waiters.delete(w);
          w.resolve(line);
        }
      }
    });
    return new Promise<void>((resolve) => rl.once('close', resolve));
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      void Promise.all(readers).then(() => resolve({ code, signal }));
    }),
  );
  const until = (match: (line: string) => boolean): Promise<string> => {
    const found = all.find(match);
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      waiters.add({ match, resolve });
      void exited.then(({ code, signal }) =>
        reject(new Error(`child exited (${signal ?? code}) before the line; stderr: ${stderr.join('\n').slice(-2000)}`)),
      );
    });
  };
  return {
    process: child,
    stdout,
    stderr,
    exited,
    until,
    send(line) {
      if (child.stdin === null) throw new Error('spawnTsx: started without { stdin: true }');
      child.stdin.write(`${line}\n`);
    },
    async line(match) {
      return jsonRecord(
        await until((line) => {
          const record = jsonRecord(line);
          return record !== undefined && match(record);
        }),
      )!;
    },
    async kill9() {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** SIGKILLs every child still running (for afterAll). */
export function killChildren(): void {
  for (const c of children) c.kill('SIGKILL');
}

// ---------------------------------------------------------------- exact updates

/** A small deterministic hash of integers (FNV-1a over their 32-bit words). */
export function hash(...xs: number[]): number {
  let h = 0x811c9dc5;
  for (const x of xs) {
    for (let s = 0; s < 32; s += 8) h = Math.imul(h ^ ((x >>> s) & 0xff), 0x01000193) >>> 0;
  }
  return h;
}

/**
 * `n` deltas in [-1, 1], multiples of 1/1024: exact in float32, and their
 * products with small integer weights and sums of a few hundred of them are
 * exact in float64, so an intersection average of them does not depend on the
 * order the uploads are folded in.
 */
export function exactDeltas(n: number, ...seed: number[]): Float32Array {
  const out = new Float32Array(n);
  for (let j = 0; j < n; j++) out[j] = ((hash(...seed, j) % 2049) - 1024) / 1024;
  return out;
}
