import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  backoffDelay,
  CoordinatorClient,
  DEFAULT_RETRY,
  probeTransport,
  RemoteError,
  TransportMismatchError,
} from '../../client/remote.js';
import { decodeSparseTensor, encodeSparseTensor } from '../../proto/codec.js';
import { Mask } from '../../proto/mask.js';
import {
  createCoordinatorDefinition,
  isMalformed,
  messageLimitOptions,
  splitTensor,
  TensorAssembler,
  WireError,
  type CoordinatorHandlers,
  type Malformed,
  type SparseTensor,
  type TaskChunk,
  type TensorSpec,
  type UpdateChunk,
  type UpdateHeader,
} from '../../proto/rpc.js';

// A minimal coordinator built from the rpc definition: enough behaviour to
// exercise the client's wire path, nothing of the real server.
const BIG = 400_000; // 1.6 MB of f32: more than one 1 MiB chunk
const manifest: TensorSpec[] = [
  { name: 'dense/kernel', shape: [1000, 400], prunable: true },
  { name: 'dense/bias', shape: [400], prunable: false },
];
const globalKernel = new Float32Array(BIG).map((_, i) => Math.sin(i));
const globalBias = new Float32Array(400).map((_, i) => i / 400);
const clientMask = Mask.build(BIG, (bits) => {
  for (let i = 0; i < BIG; i++) bits[i] = i % 3 === 0 ? 0 : 1;
});

/** Byte equality of typed arrays; far faster than toEqual on 400k elements. */
const sameBytes = (a: ArrayBufferView, b: ArrayBufferView) =>
  Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

interface Received {
  header: UpdateHeader;
  tensors: SparseTensor[];
}

class FakeCoordinator {
  server = new grpc.Server(messageLimitOptions());
  port = 0;
  upBytes = 0;
  downBytes = 0;
  received: Received[] = [];
  /** Status codes to fail the next heartbeats with. */
  heartbeatFailures: grpc.status[] = [];
  /** Refusals of the next uploads, each after reading the whole stream (an outage, or a limit with a pushback). */
  pushFailures: { code: grpc.status; pushbackMs?: number }[] = [];
  pushCalls = 0;
  /** Bytes of each upload received, in order. */
  pushBytes: number[] = [];
  heartbeatCalls = 0;
  hasTask = true;
  /** With hasTask false: answer that training is finished. */
  finished = false;
  /** Send a task whose header says dense but whose kernel keeps only the client's mask. */
  denseButMasked = false;

  async start(): Promise<void> {
    const def = createCoordinatorDefinition((dir, _id, n) => (dir === 'up' ? (this.upBytes += n) : (this.downBytes += n)));
    const reject = (m: Malformed) => ({ code: grpc.status.INVALID_ARGUMENT, details: m.error });
    const checkToken = (req: { clientToken: string }) =>
      req.clientToken === 'secret' ? null : { code: grpc.status.UNAUTHENTICATED, details: 'bad client token' };
    const handlers: CoordinatorHandlers = {
      join: (call, cb) => {
        const req = call.request;
        if (isMalformed(req)) return cb(reject(req));
        if (req.enrollmentToken !== 'enroll')
          return cb({ code: grpc.status.UNAUTHENTICATED, details: 'unknown enrollment token' });
        cb(null, {
          protocolVersion: 1,
          clientId: `c-${req.clientName}`,
          clientToken: 'secret',
          manifest,
          configJson: '{"epochs":5}',
        });
      },
      heartbeat: (call, cb) => {
        this.heartbeatCalls++;
        const failure = this.heartbeatFailures.shift();
        if (failure !== undefined) return cb({ code: failure, details: 'try later' });
        const req = call.request;
        if (isMalformed(req)) return cb(reject(req));
        cb(checkToken(req), { currentRound: 3, taskAvailable: true, finished: false });
      },
      leave: (call, cb) => {
        const req = call.request;
        if (isMalformed(req)) return cb(reject(req));
        cb(checkToken(req), {});
      },
      pullTask: (call) => {
        const req = call.request;
        if (isMalformed(req)) return call.emit('error', reject(req));
        const dense = req.maskVersion === 0;
        if (!this.hasTask) {
          const roundId = this.finished ? 9 : 0;
          call.write({
            kind: 'header',
            header: {
              protocolVersion: 1,
              hasTask: false,
              retryAfterMs: 250,
              roundId,
              configJson: '',
              dense: false,
              maskVersion: 0,
              tensorCount: 0,
              finished: this.finished,
            },
          });
          return call.end();
        }
        const kernel =
          dense && !this.denseButMasked
            ? { mask: Mask.full(BIG), kept: globalKernel }
            : { mask: clientMask, kept: clientMask.gather(globalKernel) };
        const tensors = [
          encodeSparseTensor('dense/kernel', kernel, [1000, 400], {
            values: 'f32',
            previousMask: dense ? undefined : clientMask,
          }),
          encodeSparseTensor('dense/bias', { mask: Mask.full(400), kept: globalBias }, [400], { values: 'f32' }),
        ];
        const chunks: TaskChunk[] = [
          {
            kind: 'header',
            header: {
              protocolVersion: 1,
              hasTask: true,
              retryAfterMs: 0,
              roundId: 7,
              configJson: '{"lr":0.01}',
              dense,
              maskVersion: req.maskVersion,
              tensorCount: 2,
              finished: false,
            },
          },
          ...tensors.flatMap((t) => splitTensor(t).map((piece): TaskChunk => ({ kind: 'piece', piece }))),
        ];
        for (const c of chunks) call.write(c);
        call.end();
      },
      pushUpdate: (call, cb) => {
        this.pushCalls++;
        const upBefore = this.upBytes;
        let header: UpdateHeader | undefined;
        const tensors: SparseTensor[] = [];
        const assembler = new TensorAssembler({ maxPieces: 64 });
        call.on('data', (chunk: UpdateChunk | Malformed) => {
          try {
            if (isMalformed(chunk)) throw new WireError(grpc.status.INVALID_ARGUMENT, chunk.error);
            if (chunk.kind === 'header') {
              header = chunk.header;
              if (header.roundId !== 7)
                throw new WireError(grpc.status.FAILED_PRECONDITION, `round ${header.roundId} is not open`);
            } else {
              const t = assembler.push(chunk.piece);
              if (t) tensors.push(t);
            }
          } catch (err) {
            const e = err as WireError;
            cb({ code: e.code, details: e.message });
            call.destroy();
          }
        });
        call.on('end', () => {
          this.pushBytes.push(this.upBytes - upBefore);
          const failure = this.pushFailures.shift();
          if (failure !== undefined) {
            const metadata = new grpc.Metadata();
            if (failure.pushbackMs !== undefined) metadata.set('grpc-retry-pushback-ms', String(failure.pushbackMs));
            return cb({ code: failure.code, details: 'not now', metadata });
          }
          this.received.push({ header: header!, tensors });
          cb(null, { accepted: true, message: 'ok', maskVersion: header!.newMaskVersion });
        });
      },
    };
    this.server.addService(def, handlers);
    this.port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) =>
        err ? reject(err) : resolve(port),
      ),
    );
  }
}

let fake: FakeCoordinator;
const clients: CoordinatorClient[] = [];
const connect = (options: Parameters<typeof CoordinatorClient.connect>[1] = {}) => {
  const c = CoordinatorClient.connect(`127.0.0.1:${fake.port}`, { retry: { initialDelayMs: 1, maxDelayMs: 5 }, ...options });
  clients.push(c);
  return c;
};

beforeAll(async () => {
  fake = new FakeCoordinator();
  await fake.start();
});
afterAll(() => fake.server.forceShutdown());
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  fake.heartbeatFailures = [];
  fake.pushFailures = [];
  fake.hasTask = true;
  fake.finished = false;
  fake.denseButMasked = false;
});

describe('CoordinatorClient', () => {
  it('joins and receives identity, manifest and config', async () => {
    const client = connect();
    const joined = await client.join('enroll', 'alice', 600);
    expect(joined).toEqual({ clientId: 'c-alice', manifest, config: { epochs: 5 } });
    expect(client.clientId).toBe('c-alice');
    expect(await client.heartbeat()).toEqual({ currentRound: 3, taskAvailable: true, finished: false });
    await client.leave('done');
  });

  it('resumes a saved identity without joining again', async () => {
    const first = connect();
    await first.join('enroll', 'kim', 5);
    const saved = first.identity!;
    expect(saved).toEqual({ clientId: 'c-kim', clientToken: 'secret', manifest });
    const second = connect();
    second.resume(saved);
    expect(await second.heartbeat()).toEqual({ currentRound: 3, taskAvailable: true, finished: false });
    const forged = connect();
    forged.resume({ ...saved, clientToken: 'guess' });
    await expect(forged.heartbeat()).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED, details: 'bad client token' });
    expect(() => connect().resume({ ...saved, clientToken: '' })).toThrow(/client id and token must not be empty/);
    // A manifest no dense task could carry within the client's limits is refused before anything is sized by it.
    expect(() => connect().resume({ ...saved, manifest: [{ name: 'w', shape: [100_000, 100_000], prunable: true }] })).toThrow(
      'manifest tensor "w" has 10000000000 elements; as f32 that is more than this client\'s limit of 536870912 bytes per tensor',
    );
    expect(() =>
      connect({ limits: { maxTensorBytes: 1000 } }).resume({ ...saved, manifest: [{ name: 'w', shape: [251], prunable: true }] }),
    ).toThrow(/has 251 elements/);
  });

  it('counts the same bytes as the server sees', async () => {
    const before = { up: fake.upBytes, down: fake.downBytes };
    const client = connect();
    await client.join('enroll', 'bob', 10);
    await client.heartbeat();
    await client.pullTask(0);
    expect(client.bytesUp).toBeGreaterThan(0);
    expect(client.bytesUp).toBe(fake.upBytes - before.up);
    expect(client.bytesDown).toBe(fake.downBytes - before.down);
    expect(client.bytesDown).toBeGreaterThan(BIG * 4); // the dense task
  });

  it('reassembles a dense task larger than one chunk', async () => {
    const client = connect();
    await client.join('enroll', 'carol', 10);
    const pulled = await client.pullTask(0);
    if (pulled.kind !== 'task') throw new Error(`expected a task, got ${pulled.kind}`);
    const task = pulled.task;
    if (task.kind !== 'dense') throw new Error('expected a dense task');
    expect(task.round).toBe(7);
    expect(task.maskVersion).toBe(0);
    expect(task.config).toEqual({ lr: 0.01 });
    expect(sameBytes(task.tensors.get('dense/kernel')!, globalKernel)).toBe(true);
    expect(task.tensors.get('dense/bias')).toEqual(globalBias);
    // A dense task carries every element: a tensor that keeps fewer is refused, named.
    fake.denseButMasked = true;
    await expect(client.pullTask(0)).rejects.toThrow(/dense task, but tensor "dense\/kernel" keeps only 266666 of 400000/);
  });

  it('decodes a sparse task against the masks it holds', async () => {
    const client = connect();
    await client.join('enroll', 'dave', 10);
    const pulled = await client.pullTask(2, new Map([['dense/kernel', clientMask]]));
    if (pulled.kind !== 'task') throw new Error(`expected a task, got ${pulled.kind}`);
    const task = pulled.task;
    if (task.kind !== 'sparse') throw new Error('expected a sparse task');
    expect(task.round).toBe(7);
    expect(task.maskVersion).toBe(2);
    const kernel = task.tensors.get('dense/kernel')!;
    expect(kernel.mask.equals(clientMask)).toBe(true);
    expect(sameBytes(kernel.kept, clientMask.gather(globalKernel))).toBe(true);
    // Without its masks the client cannot decode UNCHANGED, and says so.
    await expect(client.pullTask(2)).rejects.toThrow(/tensor "dense\/kernel": mask encoding UNCHANGED needs the previous mask/);
  });

  it('returns the wait time when there is no task', async () => {
    fake.hasTask = false;
    const client = connect();
    await client.join('enroll', 'erin', 10);
    expect(await client.pullTask(0)).toEqual({ kind: 'wait', retryAfterMs: 250 });
  });

  it('says so when training is finished', async () => {
    fake.hasTask = false;
    fake.finished = true;
    const client = connect();
    await client.join('enroll', 'fiona', 10);
    expect(await client.pullTask(0)).toEqual({ kind: 'finished', lastRound: 9 });
  });

  it('pushes an update in pieces with DIFF masks and f16 values', async () => {
    const client = connect({ valueEncoding: 'f16', chunkBytes: 64 * 1024 });
    await client.join('enroll', 'frank', 10);
    const newMask = clientMask.derive((bits) => {
      for (let i = 1; i < bits.length; i += 50) bits[i] = 0;
    });
    const delta = new Float32Array(BIG).map((_, i) => (newMask.has(i) ? Math.cos(i) / 10 : 0));
    const ack = await client.pushUpdate(
      {
        roundId: 7,
        numExamples: 10,
        baseMaskVersion: 2,
        maskChange: { kind: 'changed', version: 3 },
        metrics: { loss: 0.5, localAccuracy: 0.9, sparsity: 0.4, receivedAccuracy: 0.6, channelsKept: [] },
      },
      new Map([
        ['dense/kernel', { mask: newMask, kept: newMask.gather(delta), previousMask: clientMask }],
        ['dense/bias', { mask: Mask.full(400), kept: globalBias }],
      ]),
    );
    expect(ack).toEqual({ accepted: true, message: 'ok', maskVersion: 3 });
    const got = fake.received.at(-1)!;
    expect(got.header).toMatchObject({
      clientId: 'c-frank',
      clientToken: 'secret',
      protocolVersion: 1,
      tensorCount: 2,
      maskChanged: true,
      newMaskVersion: 3,
    });
    const kernel = got.tensors.find((t) => t.name === 'dense/kernel')!;
    expect(kernel.mask?.encoding).toBe(3 /* DIFF */);
    const decoded = decodeSparseTensor(kernel, [1000, 400], clientMask);
    expect(decoded.mask.equals(newMask)).toBe(true);
    const expected = newMask.gather(delta);
    let maxErr = 0;
    for (let i = 0; i < expected.length; i++) maxErr = Math.max(maxErr, Math.abs(decoded.kept[i] - expected[i]));
    expect(maxErr).toBeLessThan(1e-4);
  });

  it('surfaces a refused update with its gRPC code and message', async () => {
    const client = connect();
    await client.join('enroll', 'gina', 10);
    const err = await client
      .pushUpdate(
        { roundId: 99, numExamples: 1, baseMaskVersion: 0, maskChange: { kind: 'unchanged' }, metrics: null },
        new Map([['dense/kernel', { mask: Mask.full(BIG), kept: globalKernel }]]),
      )
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RemoteError);
    expect(err).toMatchObject({ code: grpc.status.FAILED_PRECONDITION, details: 'round 99 is not open', method: 'PushUpdate' });
    expect((err as Error).message).toBe('PushUpdate failed: FAILED_PRECONDITION (9): round 99 is not open');
  });

  it('surfaces authentication failures without retrying', async () => {
    const client = connect();
    const err = await client.join('wrong', 'hank', 1).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: grpc.status.UNAUTHENTICATED,
      codeName: 'UNAUTHENTICATED',
      details: 'unknown enrollment token',
    });
    await expect(client.heartbeat()).rejects.toThrow(/Heartbeat: call join\(\) first/);
  });

  it('retries UNAVAILABLE with backoff and then succeeds', async () => {
    const client = connect();
    await client.join('enroll', 'ivan', 1);
    fake.heartbeatCalls = 0;
    fake.heartbeatFailures = [grpc.status.UNAVAILABLE, grpc.status.UNAVAILABLE];
    expect(await client.heartbeat()).toEqual({ currentRound: 3, taskAvailable: true, finished: false });
    expect(fake.heartbeatCalls).toBe(3);
  });

  it('counts an upload retried through an outage once as traffic, and the failed attempts apart', async () => {
    const client = connect();
    await client.join('enroll', 'olga', 1);
    const joined = { up: client.bytesUp, down: client.bytesDown };
    fake.pushCalls = 0;
    fake.pushBytes = [];
    // The coordinator reads the whole upload twice and answers UNAVAILABLE, then accepts the third attempt.
    fake.pushFailures = [{ code: grpc.status.UNAVAILABLE }, { code: grpc.status.UNAVAILABLE }];
    const ack = await client.pushUpdate(
      { roundId: 7, numExamples: 1, baseMaskVersion: 0, maskChange: { kind: 'unchanged' }, metrics: null },
      new Map([['dense/bias', { mask: Mask.full(400), kept: globalBias }]]),
    );
    expect(ack.accepted).toBe(true);
    expect(fake.pushCalls).toBe(3);
    const [first, second, third] = fake.pushBytes;
    expect(first).toBeGreaterThan(400 * 4);
    expect([second, third]).toEqual([first, first]);
    // One upload's bytes in the traffic, not three; the two failed attempts counted apart.
    expect(client.bytesUp - joined.up).toBe(first);
    expect(client.failedBytes).toEqual({ up: 2 * first, down: 0 });
    expect(client.bytesDown - joined.down).toBeGreaterThan(0); // the ack
  });

  it('retries RESOURCE_EXHAUSTED only when it carries a pushback', async () => {
    const client = connect();
    await client.join('enroll', 'pia', 1);
    const update = () =>
      client.pushUpdate(
        { roundId: 7, numExamples: 1, baseMaskVersion: 0, maskChange: { kind: 'unchanged' }, metrics: null },
        new Map([['dense/bias', { mask: Mask.full(400), kept: globalBias }]]),
      );
    fake.pushCalls = 0;
    fake.pushFailures = [{ code: grpc.status.RESOURCE_EXHAUSTED, pushbackMs: 50 }];
    expect((await update()).accepted).toBe(true);
    expect(fake.pushCalls).toBe(2);
    // Without a pushback it is a limit that does not pass (e.g. too large): no retry.
    fake.pushCalls = 0;
    fake.pushFailures = [{ code: grpc.status.RESOURCE_EXHAUSTED }];
    await expect(update()).rejects.toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, details: 'not now' });
    expect(fake.pushCalls).toBe(1);
  });

  it('gives up after the configured number of attempts', async () => {
    const client = connect({ retry: { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 2 } });
    await client.join('enroll', 'judy', 1);
    fake.heartbeatCalls = 0;
    fake.heartbeatFailures = [grpc.status.UNAVAILABLE, grpc.status.UNAVAILABLE, grpc.status.UNAVAILABLE, grpc.status.UNAVAILABLE];
    await expect(client.heartbeat()).rejects.toThrow(/Heartbeat failed: UNAVAILABLE \(14\): try later \(after 3 attempts\)/);
    expect(fake.heartbeatCalls).toBe(3);
  });

  it('reports UNAVAILABLE when nothing listens (nothing to probe: no transport hint)', async () => {
    const closed = new grpc.Server();
    const port = await new Promise<number>((resolve, reject) =>
      closed.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    closed.forceShutdown();
    const client = CoordinatorClient.connect(`127.0.0.1:${port}`, {
      retry: { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 1 },
    });
    clients.push(client);
    await expect(client.join('enroll', 'x', 1)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
  });

  it('enforces its explicit per-message limit', async () => {
    const client = connect({ maxMessageBytes: 64 * 1024 }); // the fake sends 1 MiB pieces
    await client.join('enroll', 'lee', 1);
    await expect(client.pullTask(0)).rejects.toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, method: 'PullTask' });
  });

  it('rejects bad options with a clear error', () => {
    expect(() => connect({ valueEncoding: 'bf16' as 'f32' })).toThrow(/valueEncoding "bf16" is not f32, f16 or int8/);
    expect(() => connect({ retry: { maxAttempts: 0 } })).toThrow(/retry.maxAttempts must be a positive integer, got 0/);
  });
});

describe('malformed bytes on the wire', () => {
  it('a raw client sending garbage gets INVALID_ARGUMENT, not INTERNAL', async () => {
    const raw = new grpc.Client(`127.0.0.1:${fake.port}`, grpc.credentials.createInsecure());
    try {
      const identity = (b: Buffer) => b;
      const err = await new Promise<grpc.ServiceError | null>((resolve) =>
        raw.makeUnaryRequest('/subfed.v1.Coordinator/Join', identity, identity, Buffer.from([0x12, 0xff, 0xff, 0x01]), (e) =>
          resolve(e),
        ),
      );
      expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(err?.details).toMatch(/JoinRequest: undecodable protobuf/);
    } finally {
      raw.close();
    }
  });
});

describe('backoffDelay', () => {
  it('grows exponentially, is capped, and jitters between half and all of the step', () => {
    const policy = { ...DEFAULT_RETRY, initialDelayMs: 100, maxDelayMs: 1000, multiplier: 2 };
    expect([1, 2, 3, 4, 5].map((n) => backoffDelay(n, policy, () => 1))).toEqual([100, 200, 400, 800, 1000]);
    expect([1, 2, 3].map((n) => backoffDelay(n, policy, () => 0))).toEqual([50, 100, 200]);
  });
});

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe.skipIf(!hasOpenssl())('TLS', () => {
  it('connects with the server certificate as the root, and refuses a plaintext client', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'subfed-tls-'));
    const server = new grpc.Server();
    try {
      // prettier-ignore
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
        '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
      const cert = readFileSync(join(dir, 'cert.pem'));
      server.addService(createCoordinatorDefinition(), {
        join: (_call, cb) => cb(null, { protocolVersion: 1, clientId: 'tls-1', clientToken: 't', manifest: [], configJson: '' }),
        heartbeat: (_call, cb) => cb(null, { currentRound: 0, taskAvailable: false, finished: false }),
        leave: (_call, cb) => cb(null, {}),
        pullTask: (call) => call.end(),
        pushUpdate: (_call, cb) => cb(null, { accepted: false, message: '', maskVersion: 0 }),
      } satisfies CoordinatorHandlers);
      const port = await new Promise<number>((resolve, reject) =>
        server.bindAsync(
          '127.0.0.1:0',
          grpc.ServerCredentials.createSsl(null, [{ private_key: readFileSync(join(dir, 'key.pem')), cert_chain: cert }]),
          (err, p) => (err ? reject(err) : resolve(p)),
        ),
      );
      const secure = CoordinatorClient.connect(`localhost:${port}`, { tls: { ca: cert } });
      clients.push(secure);
      expect(await secure.join('any', 'tls', 1)).toEqual({ clientId: 'tls-1', manifest: [], config: {} });
      // A plaintext client is told what is wrong at its first failure, instead of retrying "Failed to connect".
      const plain = CoordinatorClient.connect(`localhost:${port}`);
      clients.push(plain);
      const err = await plain.join('any', 'plain', 1).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TransportMismatchError);
      expect(err).toMatchObject({ code: grpc.status.UNAVAILABLE });
      expect((err as Error).message).toMatch(
        new RegExp(
          `the coordinator at localhost:${port} speaks TLS and this client connects in plaintext: give the coordinator's CA certificate \\(--tls-ca, or tlsCa in the config file\\)$`,
        ),
      );
      expect(await probeTransport(`127.0.0.1:${port}`)).toBe('tls');
      // And a TLS client at a plaintext coordinator (the fake one) is told the other way round.
      const wrongWay = CoordinatorClient.connect(`127.0.0.1:${fake.port}`, { tls: { ca: cert } });
      clients.push(wrongWay);
      await expect(wrongWay.join('enroll', 'tls', 1)).rejects.toThrow(
        new RegExp(`the coordinator at 127\\.0\\.0\\.1:${fake.port} does not answer TLS \\(a plaintext coordinator\\?\\)`),
      );
      expect(await probeTransport(`127.0.0.1:${fake.port}`)).toBe('not-tls');
    } finally {
      server.forceShutdown();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
