// Scripted gRPC clients for the coordinator tests: no tfjs, they push known deltas.
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { decodeSparseTensor, encodeSparseTensor, type SparseValues } from '../../proto/codec.js';
import { elementCount } from '../../proto/shape.js';
import { Mask } from '../../proto/mask.js';
import { codecs } from '../../proto/schema.js';
import {
  PROTOCOL_VERSION,
  createCoordinatorDefinition,
  isMalformed,
  messageLimitOptions,
  splitTensor,
  type JoinRequest,
  type JoinResponse,
  type SparseTensor,
  type TaskHeader,
  type UpdateAck,
  type UpdateChunk,
  type UpdateHeader,
} from '../../proto/rpc.js';
import { parseConfig, type CoordinatorConfigInput } from '../../server/config.js';
import { Coordinator } from '../../server/coordinator.js';
import { CoordinatorError } from '../../server/errors.js';
import { CoordinatorMetrics } from '../../server/metrics.js';
import type { TensorMap, TensorSpec } from '../../server/model.js';

export const ENROLL = 'enroll-secret';
const def = createCoordinatorDefinition();

/** A small model: a prunable [2,3] matrix and a [3] bias. */
export function toyModel(): { manifest: TensorSpec[]; initial: TensorMap } {
  return {
    manifest: [
      { name: 'dense/kernel', shape: [2, 3], prunable: true },
      { name: 'dense/bias', shape: [3], prunable: false },
    ],
    initial: new Map([
      ['dense/kernel', Float32Array.from([0.5, -0.25, 1, 2, -3, 0.125])],
      ['dense/bias', Float32Array.from([0, 0.1, -0.1])],
    ]),
  };
}

/** A pino logger that keeps its JSON lines in memory. */
export function memoryLogger(): { logger: pino.Logger; lines: () => Record<string, unknown>[] } {
  const out: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out.push(
        ...chunk
          .toString('utf8')
          .split('\n')
          .filter((l) => l !== ''),
      );
      cb();
    },
  });
  return { logger: pino({ level: 'info' }, sink), lines: () => out.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

// ---------------------------------------------------------------- in-process calls (no gRPC)

/** A client joined by calling Coordinator.join directly. */
export interface Joined {
  id: string;
  token: string;
}

/** Joins `n` clients in order (named n0, n1, ...), each with 10 examples. */
export function joinClients(coord: Coordinator, n: number): Joined[] {
  const clients: Joined[] = [];
  for (let i = 0; i < n; i++) {
    const res = coord.join({ protocolVersion: PROTOCOL_VERSION, enrollmentToken: ENROLL, clientName: `n${i}`, numExamples: 10 });
    clients.push({ id: res.clientId, token: res.clientToken });
  }
  return clients;
}

/**
 * A coordinator on the toy model, called directly, with `clients` joined
 * (default minClients). Defaults: 3 rounds, everyone sampled, 4 clients
 * needed, quorum 0.5, a 1 s deadline, unweighted averaging.
 */
export function inProcessCoordinator(overrides: Partial<CoordinatorConfigInput> = {}, clients?: number) {
  const log = memoryLogger();
  const metrics = new CoordinatorMetrics();
  const config = parseConfig({
    rounds: 3,
    fraction: 1,
    minClients: 4,
    quorum: 0.5,
    roundDeadlineMs: 1000,
    enrollmentToken: ENROLL,
    weighting: 'unweighted',
    ...overrides,
  });
  const coord = new Coordinator(config, toyModel(), { logger: log.logger, metrics });
  return { coord, clients: joinClients(coord, clients ?? config.minClients), log, metrics };
}

/** An update header for an in-process push: 10 examples, no mask change, no metrics, both toy tensors unless told. */
export function updateHeader(c: Joined, round: number, o: Partial<UpdateHeader> = {}, tensorCount = 2): UpdateHeader {
  return {
    protocolVersion: PROTOCOL_VERSION,
    clientId: c.id,
    clientToken: c.token,
    roundId: round,
    numExamples: 10,
    baseMaskVersion: 0,
    maskChanged: false,
    newMaskVersion: 0,
    metrics: null,
    tensorCount,
    ...o,
  };
}

/** The toy model's kernel delta: `values` at the kept positions of `mask`, relative to `previous` if given. */
export function kernelDelta(values: number[], mask = [1, 1, 1, 1, 1, 1], previous?: number[]): SparseTensor {
  return encodeSparseTensor('dense/kernel', { mask: Mask.fromBytes(mask), kept: Float32Array.from(values) }, [2, 3], {
    values: 'f32',
    previousMask: previous ? Mask.fromBytes(previous) : undefined,
  });
}

/** A whole toy-model update: `kernel`, and a zero delta for the bias (an update carries every tensor). */
export function withBias(kernel: SparseTensor): SparseTensor[] {
  const bias = encodeSparseTensor('dense/bias', { mask: Mask.full(3), kept: new Float32Array(3) }, [3], { values: 'f32' });
  return [kernel, bias];
}

/** The CoordinatorError `fn` throws (fails the test if it throws nothing, or something else). */
export function refusal(fn: () => unknown): CoordinatorError {
  try {
    fn();
  } catch (err) {
    if (err instanceof CoordinatorError) return err;
    throw err;
  }
  throw new Error('expected a CoordinatorError');
}

// ---------------------------------------------------------------- over gRPC

export interface CallError {
  code: grpc.status;
  details: string;
}

function asCallError(err: unknown): CallError {
  const e = err as grpc.ServiceError;
  return { code: e.code, details: e.details };
}

/** Runs `fn` and returns the gRPC error it failed with (fails the test if it succeeded). */
export async function expectCallError(fn: () => Promise<unknown>): Promise<CallError> {
  try {
    await fn();
  } catch (err) {
    return asCallError(err);
  }
  throw new Error('expected the call to fail');
}

export interface PulledTask {
  header: TaskHeader;
  tensors: Map<string, SparseValues>;
}

export class ScriptedClient {
  readonly grpc: grpc.Client;
  id = '';
  token = '';
  manifest: TensorSpec[] = [];
  /** The mask version this client holds. */
  maskVersion = 0;

  constructor(address: string, credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(), options = {}) {
    this.grpc = new grpc.Client(address, credentials, { ...messageLimitOptions(), ...options });
  }

  close(): void {
    this.grpc.close();
  }

  unary<Req, Res>(
    m: { path: string; requestSerialize: (v: Req) => Buffer; responseDeserialize: (b: Buffer) => unknown },
    req: Req,
  ): Promise<Res> {
    return new Promise((resolve, reject) => {
      this.grpc.makeUnaryRequest(
        m.path,
        m.requestSerialize,
        (b: Buffer) => b,
        req,
        (err: grpc.ServiceError | null, bytes?: Buffer) => {
          if (err) return reject(err);
          const res = m.responseDeserialize(bytes as Buffer);
          if (isMalformed(res)) return reject(new Error(`malformed response: ${res.error}`));
          resolve(res as Res);
        },
      );
    });
  }

  /** Sends raw bytes as the request of a unary method. */
  rawUnary(path: string, bytes: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.grpc.makeUnaryRequest(
        path,
        (b: Buffer) => b,
        (b: Buffer) => b,
        bytes,
        (err: grpc.ServiceError | null, res?: Buffer) => (err ? reject(err) : resolve(res as Buffer)),
      );
    });
  }

  async join(enrollmentToken = ENROLL, numExamples = 10, clientName = 'scripted'): Promise<void> {
    const res = await this.unary<JoinRequest, JoinResponse>(def.join, {
      protocolVersion: PROTOCOL_VERSION,
      enrollmentToken,
      clientName,
      numExamples,
    });
    this.id = res.clientId;
    this.token = res.clientToken;
    this.manifest = res.manifest;
  }

  credentials() {
    return { protocolVersion: PROTOCOL_VERSION, clientId: this.id, clientToken: this.token };
  }

  async pull(
    overrides: Partial<{ maskVersion: number; protocolVersion: number; clientToken: string }> = {},
  ): Promise<PulledTask> {
    const stream = this.grpc.makeServerStreamRequest(
      def.pullTask.path,
      def.pullTask.requestSerialize,
      def.pullTask.responseDeserialize,
      { ...this.credentials(), maskVersion: this.maskVersion, valueEncoding: 1, ...overrides },
    );
    let header: TaskHeader | undefined;
    const pieces = new Map<string, Uint8Array[]>();
    for await (const chunk of stream as AsyncIterable<unknown>) {
      if (isMalformed(chunk)) throw new Error(`malformed task chunk: ${chunk.error}`);
      const c = chunk as { header?: TaskHeader | null; piece?: { name: string; data: Uint8Array } | null };
      if (c.header) header = c.header;
      else if (c.piece) pieces.set(c.piece.name, [...(pieces.get(c.piece.name) ?? []), c.piece.data]);
    }
    if (header === undefined) throw new Error('task had no header');
    const tensors = new Map<string, SparseValues>();
    for (const [name, parts] of pieces) {
      const msg = codecs.SparseTensor.decode(Buffer.concat(parts));
      if (isMalformed(msg)) throw new Error(msg.error);
      const spec = this.manifest.find((s) => s.name === name) as TensorSpec;
      tensors.set(name, decodeSparseTensor(msg, spec.shape, this.maskFor(name)));
    }
    return { header, tensors };
  }

  /** Masks this client keeps (all ones unless set). */
  masks = new Map<string, Mask>();

  maskFor(name: string): Mask {
    const spec = this.manifest.find((s) => s.name === name) as TensorSpec;
    return this.masks.get(name) ?? Mask.full(elementCount(spec.shape));
  }

  /**
   * Encodes dense deltas at this client's masks as SparseTensors; a manifest
   * tensor not given goes as a zero delta (an update carries every tensor).
   */
  encode(given: Record<string, number[]>, previous?: Map<string, Mask>): SparseTensor[] {
    const deltas: Record<string, number[]> = { ...given };
    for (const spec of this.manifest) deltas[spec.name] ??= new Array<number>(elementCount(spec.shape)).fill(0);
    return Object.entries(deltas).map(([name, d]) => {
      const spec = this.manifest.find((s) => s.name === name);
      const shape = spec?.shape ?? [d.length];
      const mask = this.maskFor(name);
      return encodeSparseTensor(name, { mask, kept: mask.gather(Float32Array.from(d)) }, shape, {
        values: 'f32',
        previousMask: previous?.get(name),
      });
    });
  }

  header(round: number, overrides: Partial<UpdateHeader> = {}, tensorCount = 0): UpdateHeader {
    return {
      ...this.credentials(),
      roundId: round,
      numExamples: 10,
      baseMaskVersion: this.maskVersion,
      maskChanged: false,
      newMaskVersion: this.maskVersion,
      metrics: { loss: 1, localAccuracy: 0.5, sparsity: 0, receivedAccuracy: 0.4, channelsKept: [] },
      tensorCount,
      ...overrides,
    };
  }

  /** Sends arbitrary chunks on PushUpdate. */
  pushChunks(chunks: UpdateChunk[], rawTail: Buffer[] = []): Promise<UpdateAck> {
    return new Promise((resolve, reject) => {
      const call = this.grpc.makeClientStreamRequest(
        def.pushUpdate.path,
        (v: UpdateChunk | Buffer) => (Buffer.isBuffer(v) ? v : def.pushUpdate.requestSerialize(v)),
        (b: Buffer) => b,
        (err: grpc.ServiceError | null, bytes?: Buffer) => {
          if (err) return reject(err);
          const ack = def.pushUpdate.responseDeserialize(bytes as Buffer);
          if (isMalformed(ack)) return reject(new Error(ack.error));
          resolve(ack);
        },
      );
      call.on('error', () => undefined);
      for (const c of chunks) call.write(c);
      for (const b of rawTail) call.write(b);
      call.end();
    });
  }

  /** A normal upload: header + tensors (pieces of at most chunkBytes). */
  push(round: number, tensors: SparseTensor[], overrides: Partial<UpdateHeader> = {}, chunkBytes?: number): Promise<UpdateAck> {
    const chunks: UpdateChunk[] = [{ kind: 'header', header: this.header(round, overrides, tensors.length) }];
    for (const t of tensors) for (const piece of splitTensor(t, chunkBytes)) chunks.push({ kind: 'piece', piece });
    return this.pushChunks(chunks);
  }
}
