// A coordinator in a process of its own, as deployed: `subfed server --config`
// (cli.ts from the sources) with a model file, a SQLite file and HTTP on, so a
// benchmark's clients and the coordinator do not share one event loop, and the
// coordinator's memory is its own. Read through its HTTP API and /metrics.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { packageRoot } from '../proto/package-root.js';
import { modelFileJson, type CoordinatorConfigInput } from '../server/config.js';
import type { TensorMap, TensorSpec } from '../server/model.js';
import type { RoundSummary } from '../server/store.js';

export interface CoordinatorProcess {
  readonly pid: number;
  readonly grpcAddress: string;
  /** Resolves once `round` is committed (polls /api/status). */
  waitForRound(round: number): Promise<void>;
  status(): Promise<{ lastCommittedRound: number }>;
  /** Every committed round, oldest first. */
  rounds(): Promise<RoundSummary[]>;
  /** The Prometheus samples of /metrics: `name{labels}` -> value. */
  metrics(): Promise<Map<string, number>>;
  /** Peak resident set size of the process so far (VmHWM), MB. */
  peakRssMB(): number;
  stop(): Promise<void>;
}

export async function startCoordinatorProcess(
  config: Omit<CoordinatorConfigInput, 'model' | 'sqlite' | 'http' | 'logLevel'>,
  model: { manifest: readonly TensorSpec[]; initial: TensorMap },
): Promise<CoordinatorProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'subfed-bench-coordinator-'));
  writeFileSync(join(dir, 'model.json'), modelFileJson(model.manifest, model.initial));
  const configPath = join(dir, 'server.json');
  writeFileSync(
    configPath,
    JSON.stringify({ ...config, model: 'model.json', sqlite: 'state.db', http: { enabled: true }, logLevel: 'info' }),
  );
  const root = packageRoot();
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'cli.ts'), 'server', '--config', configPath], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  // Every line is read (a full pipe would block the coordinator); the first 'listening' one gives the ports.
  const ports = await new Promise<{ grpcPort: number; httpPort: number }>((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (!line.includes('"listening"')) return;
      const entry = JSON.parse(line) as { event?: string; grpcPort: number; httpPort: number };
      if (entry.event === 'listening') resolve(entry);
    });
    void exited.then((code) => reject(new Error(`coordinator exited with ${code} before listening: ${stderr}`)));
  });
  const http = `http://127.0.0.1:${ports.httpPort}`;
  const get = async <T>(path: string): Promise<T> => {
    const res = await fetch(`${http}${path}`);
    if (!res.ok) throw new Error(`GET ${path}: HTTP ${res.status}`);
    return (await res.json()) as T;
  };
  const status = () => get<{ lastCommittedRound: number }>('/api/status');
  return {
    pid: child.pid!,
    grpcAddress: `127.0.0.1:${ports.grpcPort}`,
    status,
    async waitForRound(round) {
      while ((await status()).lastCommittedRound < round) await new Promise((r) => setTimeout(r, 200));
    },
    async rounds() {
      const out: RoundSummary[] = [];
      for (let before: number | undefined; ;) {
        const page = await get<{ rounds: RoundSummary[] }>(
          `/api/rounds?limit=100${before === undefined ? '' : `&before=${before}`}`,
        );
        out.push(...page.rounds);
        if (page.rounds.length < 100) return out.reverse();
        before = page.rounds[page.rounds.length - 1].round;
      }
    },
    async metrics() {
      const text = await (await fetch(`${http}/metrics`)).text();
      const samples = new Map<string, number>();
      for (const line of text.split('\n')) {
        const m = /^([a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
        if (m !== null) samples.set(m[1], Number(m[2]));
      }
      return samples;
    },
    peakRssMB() {
      const kb = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1];
      return Number(kb) / 1024;
    },
    async stop() {
      child.kill('SIGTERM');
      const code = await exited;
      rmSync(dir, { recursive: true, force: true });
      if (code !== 0) throw new Error(`coordinator exited with ${code}: ${stderr}`);
    },
  };
}
