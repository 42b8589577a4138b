/**
 * Past one machine: the coordinator and three `subfed client` processes, each
 * in its own Linux network namespace, joined by veth links; client 3's link is
 * rate-limited with a token bucket (tc tbf, both directions). The federation
 * must complete its rounds over those links.
 *
 * Topology (names unique per run; addresses exist only inside the namespaces,
 * so no traffic can leave them):
 *
 *   <id>-coord: lo, c1 10.77.1.1/24, c2 10.77.2.1/24, c3 10.77.3.1/24 (tbf)
 *   <id>-n<i>:  lo, eth0 10.77.<i>.2/24 (client 3's eth0: tbf)
 *
 * The commands, in order (ns = the namespace names above):
 *   ip netns add <id>-coord; ip -n <id>-coord link set lo up
 *   for i in 1 2 3:
 *     ip netns add <id>-n<i>; ip -n <id>-n<i> link set lo up
 *     ip -n <id>-coord link add c<i> type veth peer name eth0 netns <id>-n<i>
 *     ip -n <id>-coord addr add 10.77.<i>.1/24 dev c<i>; ip -n <id>-n<i> addr add 10.77.<i>.2/24 dev eth0
 *     ip -n <id>-coord link set c<i> up; ip -n <id>-n<i> link set eth0 up
 *   tc -n <id>-coord qdisc add dev c3 root tbf rate 1mbit burst 16kb latency 1s   (to client 3)
 *   tc -n <id>-n3 qdisc add dev eth0 root tbf rate 1mbit burst 16kb latency 1s    (from client 3)
 *   ip netns exec <id>-coord node --import tsx cli.ts server --config server.json
 *   ip netns exec <id>-n<i> node --import tsx cli.ts client --server 10.77.<i>.1:<port> ... (SUBFED_TOKEN in env)
 *   tc -n ... -s qdisc show dev ...; ip -n ... -s -j link show ...   (what crossed the links)
 *   ip netns del ...   (also removes the veth pairs)
 *
 * Needs root, iproute2 (ip, tc) and the kernel's veth and sch_tbf: where any is
 * missing the suite is skipped with a notice saying which.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../proto/package-root.js';
import { writeIdxFolder } from '../client/client-run-helpers.js';

const ROUNDS = 3;
const CLIENTS = [1, 2, 3] as const;
/** The client whose link is shaped. */
const LIMITED = 3;
const TBF = ['tbf', 'rate', '1mbit', 'burst', '16kb', 'latency', '1s'];
const TOKEN = 'netns-test-token';

const root = packageRoot();
const id = `sf${process.pid.toString(36)}${randomBytes(3).toString('hex')}`;
const coordNs = `${id}-coord`;
const clientNs = (i: number) => `${id}-n${i}`;
const coordAddress = (i: number) => `10.77.${i}.1`;
const clientAddress = (i: number) => `10.77.${i}.2`;

/** Namespaces this run created (or tried to), deleted after the suite. */
const namespaces: string[] = [];
/** Processes this run started, each the leader of its own process group. */
const started: Proc[] = [];
let dir: string | undefined;

/** Runs a command to completion; throws with its output when it fails. */
function sh(cmd: string, ...args: string[]): string {
  const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8' });
  if (r.error !== undefined) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr.trim()}`);
  return r.stdout;
}

function addNamespace(name: string): void {
  namespaces.push(name);
  sh('ip', 'netns', 'add', name);
  sh('ip', '-n', name, 'link', 'set', 'lo', 'up');
}

/**
 * Why namespaces cannot be made here, or undefined when they can: root, ip and
 * tc, a namespace with a veth pair and a tbf qdisc, tried once and removed.
 */
function whyUnavailable(): string | undefined {
  if (process.platform !== 'linux') return `not Linux (${process.platform})`;
  if (process.getuid?.() !== 0) return 'not root (creating network namespaces needs CAP_SYS_ADMIN)';
  for (const tool of ['ip', 'tc']) {
    const r = spawnSync(tool, ['-V'], { encoding: 'utf8' });
    if (r.error !== undefined || r.status !== 0) return `no working '${tool}' command (install iproute2)`;
  }
  const probe = `${id}-probe`;
  try {
    addNamespace(probe);
    sh('ip', '-n', probe, 'link', 'add', 'p0', 'type', 'veth', 'peer', 'name', 'p1');
    sh('tc', '-n', probe, 'qdisc', 'add', 'dev', 'p0', 'root', ...TBF);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  } finally {
    spawnSync('ip', ['netns', 'del', probe]);
    namespaces.splice(namespaces.indexOf(probe), 1);
  }
}

const unavailable = whyUnavailable();
if (unavailable !== undefined)
  console.warn(`test/e2e/netns.test.ts skipped: cannot make network namespaces here: ${unavailable}`);

/** The coordinator namespace, one namespace per client, a veth pair between them; client LIMITED's pair shaped both ways. */
function buildTopology(): void {
  addNamespace(coordNs);
  for (const i of CLIENTS) {
    const ns = clientNs(i);
    addNamespace(ns);
    sh('ip', '-n', coordNs, 'link', 'add', `c${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    sh('ip', '-n', coordNs, 'addr', 'add', `${coordAddress(i)}/24`, 'dev', `c${i}`);
    sh('ip', '-n', ns, 'addr', 'add', `${clientAddress(i)}/24`, 'dev', 'eth0');
    sh('ip', '-n', coordNs, 'link', 'set', `c${i}`, 'up');
    sh('ip', '-n', ns, 'link', 'set', 'eth0', 'up');
  }
  // tbf shapes what leaves an interface: c3 carries the downloads to client 3, its eth0 the uploads.
  sh('tc', '-n', coordNs, 'qdisc', 'add', 'dev', `c${LIMITED}`, 'root', ...TBF);
  sh('tc', '-n', clientNs(LIMITED), 'qdisc', 'add', 'dev', 'eth0', 'root', ...TBF);
}

interface Proc {
  child: ChildProcess;
  /** Parsed JSON log lines of stdout and stderr (pino), in order. */
  records: Record<string, unknown>[];
  output: () => string;
  exited: Promise<number | null>;
}

/** `subfed <args>` from the sources inside namespace `ns`, in a process group of its own. */
function subfedIn(ns: string, args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', 'cli.ts', ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const records: Record<string, unknown>[] = [];
  const lines: string[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream }).on('line', (line) => {
      lines.push(line);
      try {
        records.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not a log record
      }
    });
  }
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    // 'close': the exit code, and every line of output read.
    child.once('close', (code) => resolve(code));
  });
  const proc = { child, records, output: () => lines.join('\n'), exited };
  started.push(proc);
  return proc;
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

/** Resolves with the first record of `event`; rejects if the process exits first. */
function waitForRecord(proc: Proc, event: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const timer = setInterval(() => {
      const found = proc.records.find((r) => r.event === event);
      if (found !== undefined) {
        clearInterval(timer);
        resolve(found);
      }
    }, 50);
    void proc.exited.then((code) => {
      clearInterval(timer);
      const found = proc.records.find((r) => r.event === event);
      if (found !== undefined) resolve(found);
      else reject(new Error(`exited with ${code} before logging '${event}':\n${proc.output()}`));
    });
  });
}

/** What the tbf qdisc on `dev` in `ns` let through: bytes, and how often a packet had to wait for tokens. */
function shaped(ns: string, dev: string): { kind: string; bytes: number; overlimits: number } {
  const text = sh('tc', '-n', ns, '-s', 'qdisc', 'show', 'dev', dev);
  const m = /^qdisc (\S+) .*\n\s*Sent (\d+) bytes \d+ pkt \(dropped \d+, overlimits (\d+)/m.exec(text);
  if (m === null) throw new Error(`cannot read tc stats of ${dev} in ${ns}:\n${text}`);
  return { kind: m[1], bytes: Number(m[2]), overlimits: Number(m[3]) };
}

/** Bytes sent and received by interface `dev` in `ns`. */
function linkBytes(ns: string, dev: string): { tx: number; rx: number } {
  const [link] = JSON.parse(sh('ip', '-n', ns, '-s', '-j', 'link', 'show', dev)) as {
    stats64: { tx: { bytes: number }; rx: { bytes: number } };
  }[];
  return { tx: link.stats64.tx.bytes, rx: link.stats64.rx.bytes };
}

afterAll(async () => {
  for (const p of started) killGroup(p.child, 'SIGKILL');
  await Promise.all(started.map((p) => p.exited.catch(() => null)));
  // Deleting a namespace also deletes the veth ends in it (and so their peers).
  for (const ns of namespaces) spawnSync('ip', ['netns', 'del', ns]);
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(unavailable !== undefined)('a federation across network namespaces', () => {
  it(`coordinator and ${CLIENTS.length} clients in their own namespaces, client ${LIMITED} behind a tbf-shaped link, complete ${ROUNDS} rounds`, async () => {
    dir = mkdtempSync(join(tmpdir(), 'subfed-netns-'));
    buildTopology();

    // The model file, from the CLI (outside the namespaces: no network involved).
    sh(
      process.execPath,
      '--import',
      'tsx',
      join(root, 'cli.ts'),
      'model',
      '--name',
      'lenet5-mnist',
      '--out',
      join(dir, 'model.json'),
    );
    const config = join(dir, 'server.json');
    writeFileSync(
      config,
      JSON.stringify({
        model: 'model.json',
        grpc: { host: '0.0.0.0', port: 0 },
        http: { enabled: false },
        rounds: ROUNDS,
        fraction: 1,
        minClients: CLIENTS.length,
        enrollmentToken: TOKEN,
        training: { epochs: 2, batchSize: 10, lr: 0.05 },
      }),
    );
    const server = subfedIn(coordNs, ['server', '--config', config]);
    try {
      const listening = await waitForRecord(server, 'listening');
      const port = listening.grpcPort as number;

      const clients = await Promise.all(
        CLIENTS.map(async (i) => {
          const data = join(dir!, `data-${i}`);
          await writeIdxFolder(data, i, 60, 20);
          const started = performance.now();
          const proc = subfedIn(
            clientNs(i),
            ['client', '--server', `${coordAddress(i)}:${port}`, '--data', data, '--state-dir', join(dir!, `state-${i}`)],
            { SUBFED_TOKEN: TOKEN },
          );
          const code = await proc.exited;
          return { i, proc, code, seconds: (performance.now() - started) / 1000 };
        }),
      );

      for (const c of clients) expect(c.code, `client ${c.i}:\n${c.proc.output()}`).toBe(0);
      const finished = clients.map((c) => {
        const f = c.proc.records.find((r) => r.event === 'finished');
        expect(f, `client ${c.i} logged no 'finished':\n${c.proc.output()}`).toBeDefined();
        return f as { lastRound: number; roundsTrained: number; bytesUp: number; bytesDown: number };
      });
      for (const f of finished) expect(f).toMatchObject({ lastRound: ROUNDS, roundsTrained: ROUNDS });

      // The coordinator committed every round with all three reports, then stops cleanly.
      killGroup(server.child, 'SIGTERM');
      expect(await server.exited, server.output()).toBe(0);
      const commits = server.records.filter((r) => r.event === 'round_commit');
      expect(commits.map((r) => [r.round, r.reported])).toEqual(
        Array.from({ length: ROUNDS }, (_, k) => [k + 1, CLIENTS.length]),
      );
      expect(server.records.find((r) => r.event === 'shutdown')).toMatchObject({
        lastCommittedRound: ROUNDS,
        phase: 'finished',
      });

      // Every client's bytes crossed its own veth link (the link carries them plus TCP, HTTP/2 and gRPC framing).
      const links = clients.map((c) => linkBytes(coordNs, `c${c.i}`));
      clients.forEach((c, k) => {
        expect(links[k].tx, `link c${c.i}: to client`).toBeGreaterThan(finished[k].bytesDown);
        expect(links[k].rx, `link c${c.i}: from client`).toBeGreaterThan(finished[k].bytesUp);
      });
      // ... and client LIMITED's went through the token buckets both ways, which held packets back.
      const k = CLIENTS.indexOf(LIMITED);
      const down = shaped(coordNs, `c${LIMITED}`);
      const up = shaped(clientNs(LIMITED), 'eth0');
      expect(down.kind).toBe('tbf');
      expect(up.kind).toBe('tbf');
      expect(down.bytes).toBeGreaterThan(finished[k].bytesDown);
      expect(up.bytes).toBeGreaterThan(finished[k].bytesUp);
      expect(down.overlimits).toBeGreaterThan(0);

      console.log(
        [
          `federation across network namespaces (${id}): ${commits.length} rounds committed, ` +
            `reports per round ${commits.map((r) => r.reported).join('/')}`,
          ...clients.map(
            (c, j) =>
              `  client ${c.i} (${clientAddress(c.i)}${c.i === LIMITED ? `, tbf ${TBF.slice(1).join(' ')}` : ''}): ` +
              `exit ${c.code}, ${finished[j].roundsTrained} rounds, ${c.seconds.toFixed(1)} s; ` +
              `client counted up ${finished[j].bytesUp} B, down ${finished[j].bytesDown} B; ` +
              `link carried up ${links[j].rx} B, down ${links[j].tx} B`,
          ),
          `  tbf to client ${LIMITED}: ${down.bytes} B shaped, ${down.overlimits} overlimits; ` +
            `from client ${LIMITED}: ${up.bytes} B shaped, ${up.overlimits} overlimits`,
        ].join('\n'),
      );
    } finally {
      killGroup(server.child, 'SIGTERM');
    }
  }, 240_000);
});
