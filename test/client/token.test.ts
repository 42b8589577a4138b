/**
 * The enrollment token never leaves its file or variable: run `subfed client`
 * as a user would (a child process, the real CLI) with a distinctive token,
 * capture every byte of its stdout and stderr and every event, and find the
 * token nowhere; the same on the error paths (a token the coordinator refuses,
 * a token on the command line, a token in the config file). The client's own
 * per-client token (the coordinator's answer to a join) is a secret too.
 */
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import type { ClientEvent } from '../../client/events.js';
import { createClientLogger } from '../../client/log.js';
import { runClient, runClientCommand } from '../../client/main.js';
import { createModel } from '../../client/model.js';
import { clientOptionsFromCommandLine } from '../../client/options.js';
import { loadState } from '../../client/state.js';
import { startCoordinator, type CoordinatorHandle } from '../../server/main.js';
import { memoryLogger, writeIdxFolder } from './client-run-helpers.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
/** Distinctive, so that any copy of it, anywhere in the output, is found. */
const SECRET = 'tok-7f3c9a1e-SHOULD-NEVER-BE-LOGGED';
const WRONG = 'tok-wrong-0b5d-ALSO-NEVER-LOGGED';

interface ChildRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `subfed client ...args` in a child process (cli.ts through tsx), every byte of its output kept. */
function cli(args: readonly string[], env: Record<string, string> = {}): Promise<ChildRun> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'cli.ts', 'client', ...args], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...withoutToken(process.env), ...env },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
}

function withoutToken(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { SUBFED_TOKEN: _dropped, ...rest } = env;
  return rest;
}

/** The JSON records of a log (lines that are not JSON, such as tfjs's banner, are skipped). */
function records(text: string): Record<string, unknown>[] {
  return text.split('\n').flatMap((line) => {
    try {
      const value = JSON.parse(line) as Record<string, unknown> | null;
      return typeof value === 'object' && value !== null ? [value] : [];
    } catch {
      return [];
    }
  });
}

describe('the enrollment token', () => {
  let dir: string;
  let server: CoordinatorHandle;
  const serverLog = memoryLogger('trace');

  /** A coordinator of the mlp whose enrollment token is SECRET, logging everything to serverLog. */
  async function coordinator(): Promise<CoordinatorHandle> {
    const model = createModel('mlp', 0);
    const manifest = model.manifest.map((s) => ({ ...s, shape: [...s.shape] }));
    const initial = model.getWeights();
    model.dispose();
    return startCoordinator(
      {
        rounds: 1,
        fraction: 1,
        minClients: 1,
        enrollmentToken: SECRET,
        http: { enabled: false },
        training: { epochs: 1, lr: 0.05 },
        logLevel: 'trace',
      },
      { manifest, initial },
      { logger: serverLog.logger },
    );
  }

  beforeAll(async () => {
    await initBackend('wasm', { logger: { info: () => {} } });
    dir = await mkdtemp(join(tmpdir(), 'subfed-token-'));
    await writeIdxFolder(join(dir, 'data'), 3, 60, 20);
    await writeFile(join(dir, 'token'), `${SECRET}\n`);
    await chmod(join(dir, 'token'), 0o600);
    server = await coordinator();
  });

  afterAll(async () => {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('appears in no output of a whole run of the real CLI, at the most detailed log level', async () => {
    const config = join(dir, 'client.json');
    await writeFile(
      config,
      JSON.stringify({
        server: server.grpcAddress,
        tokenFile: 'token', // relative to the config file's folder
        data: 'data',
        stateDir: 'state',
        algorithm: 'fedavg',
        backend: 'wasm',
        rounds: 1,
        logLevel: 'trace',
        heartbeatMs: 20,
      }),
    );
    const run = await cli(['--config', config]);
    expect(run.code, run.stderr).toBe(0);
    const output = run.stdout + run.stderr;
    expect(run.stdout).toBe(''); // the log is on stderr
    const logged = records(run.stderr);
    // every event became a record (JSON, as stderr is not a terminal), with its kind and fields
    expect(logged.map((r) => r.event)).toEqual(expect.arrayContaining(['data-loaded', 'joined', 'trained', 'pushed', 'stopped']));
    expect(logged.find((r) => r.event === 'joined')).toMatchObject({ level: 30, service: 'subfed-client', clientId: 'c1' });
    const state = await loadState(join(dir, 'state'));
    const clientToken = state!.identity!.clientToken;
    expect(clientToken.length).toBeGreaterThan(8);
    expect(output).not.toContain(SECRET);
    expect(output).not.toContain(clientToken);
    // nor does the coordinator log it
    expect(serverLog.text()).not.toContain(SECRET);
    expect(serverLog.text()).not.toContain(clientToken);
  });

  it('appears in no output when the coordinator refuses it (UNAUTHENTICATED), nor does the wrong one', async () => {
    const run = await cli(
      [
        '--server',
        server.grpcAddress,
        '--data',
        join(dir, 'data'),
        '--state-dir',
        join(dir, 'state-wrong'),
        '--algorithm',
        'fedavg',
      ],
      { SUBFED_TOKEN: WRONG, SUBFED_BACKEND: 'wasm' },
    );
    expect(run.code).toBe(1);
    const failed = records(run.stderr).find((r) => r.event === 'failed');
    expect(failed).toMatchObject({ level: 50, call: 'Join', code: 'UNAUTHENTICATED', exitCode: 1 });
    expect(failed!.msg).toBe('subfed client: Join failed: UNAUTHENTICATED (16): enrollment token is not valid');
    for (const secret of [SECRET, WRONG]) expect(run.stdout + run.stderr).not.toContain(secret);
  });

  it('is refused on the command line, and the message does not repeat it', async () => {
    const run = await cli(['--server', server.grpcAddress, '--data', join(dir, 'data'), '--token', SECRET]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(
      /^subfed client: --token: the enrollment token is not taken from the command line, where ps shows it to every user of the machine; set SUBFED_TOKEN, or put it in a file readable only by you and give --token-file <file>\n$/m,
    );
    expect(run.stdout + run.stderr).not.toContain(SECRET);
  });

  /** runClientCommand in this process, with every write to stdout and stderr captured. */
  async function inProcess(flags: Record<string, string | boolean>, env: Record<string, string>) {
    let captured = '';
    const writes = [process.stdout, process.stderr].map((stream) => {
      const original = stream.write.bind(stream);
      stream.write = (chunk: string | Uint8Array, ...rest: never[]): boolean => {
        captured += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
        return original(chunk, ...rest);
      };
      return () => (stream.write = original);
    });
    const stream = { write: (s: string) => ((captured += s), true), isTTY: false } as unknown as NodeJS.WritableStream;
    try {
      const code = await runClientCommand(flags, { env, stream });
      return { code, output: captured };
    } finally {
      for (const restore of writes) restore();
    }
  }

  it('appears in no error about the token: a config file holding it, an empty or unreadable token file', async () => {
    const inFile = join(dir, 'with-token.json');
    await writeFile(inFile, JSON.stringify({ server: server.grpcAddress, data: 'data', token: SECRET }));
    let r = await inProcess({ config: inFile }, {});
    expect(r.code).toBe(2);
    expect(r.output).toContain(`${inFile}: token: the config file holds no token`);
    expect(r.output).not.toContain(SECRET);

    const open = join(dir, 'open-token');
    await writeFile(open, SECRET);
    await chmod(open, 0o644);
    const options = await clientOptionsFromCommandLine(
      { server: server.grpcAddress, data: join(dir, 'data'), tokenFile: open },
      {},
    );
    expect(options.warnings).toEqual([`--token-file: '${open}' can be read by other users (mode 644); chmod 600 it`]);

    r = await inProcess({ server: server.grpcAddress, data: join(dir, 'data'), tokenFile: join(dir, 'missing') }, {});
    expect([r.code, r.output]).toEqual([
      2,
      `subfed client: --token-file: cannot read '${join(dir, 'missing')}' (ENOENT: no such file or directory, open '${join(dir, 'missing')}')\n`,
    ]);
    r = await inProcess({ server: 'nohost', data: join(dir, 'data') }, { SUBFED_TOKEN: SECRET });
    expect(r.code).toBe(2);
    expect(r.output).toBe('subfed client: --server: expected host:port, got "nohost"\n');
    r = await inProcess({ server: server.grpcAddress, data: join(dir, 'data') }, {});
    expect(r.output).toMatch(/^subfed client: no enrollment token: set SUBFED_TOKEN/);
  });

  it('is in no event of a run, nor in its readable terminal form', async () => {
    const events: ClientEvent[] = [];
    let pretty = '';
    const terminal = Object.assign(
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          pretty += chunk.toString();
          cb();
        },
      }),
      { isTTY: true },
    );
    const logger = await createClientLogger('trace', { stream: terminal, pretty: true });
    // A coordinator of its own: the first one's round has a member that is gone.
    const own = await coordinator();
    const options = await clientOptionsFromCommandLine(
      {
        server: own.grpcAddress,
        data: join(dir, 'data'),
        stateDir: join(dir, 'state-events'),
        algorithm: 'fedavg',
        backend: 'wasm',
        rounds: '1',
        heartbeatMs: '20',
      },
      { SUBFED_TOKEN: SECRET },
    );
    await runClient(options, { logger, onEvent: (e) => events.push(e) }).finally(() => own.stop());
    expect(events.map((e) => e.kind)).toContain('pushed');
    const clientToken = (await loadState(join(dir, 'state-events')))!.identity!.clientToken;
    for (const secret of [SECRET, clientToken]) {
      expect(JSON.stringify(events)).not.toContain(secret);
      expect(pretty).not.toContain(secret);
    }
    // readable: one line per event, time, level and message, no JSON
    pretty = pretty.replace(new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, 'g'), ''); // colours, as on a terminal
    expect(pretty).toMatch(/^\[\d\d:\d\d:\d\d(\.\d+)?\] INFO: .*joined .* as c\d+ \(algorithm fedavg, values f32\)$/m);
    expect(pretty).not.toMatch(/^\{/m);
  });
});
