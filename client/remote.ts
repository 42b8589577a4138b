// The client's gRPC connection to the coordinator: join, pull a task, push an
// update, heartbeat, leave. Tensors travel through proto/codec and are chunked
// with proto/rpc; every byte is counted at the message layer, per attempt: the
// attempts that succeed are the accepted traffic, the others (retried or given
// up) are counted apart, so an outage does not multiply the traffic reported.
// Calls failing with UNAVAILABLE, or with RESOURCE_EXHAUSTED and a retry
// pushback (a limit that passes), are retried with exponential backoff and
// jitter; every other failure surfaces as a RemoteError carrying the gRPC code
// and message.
import { once } from 'node:events';
import { isIP } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { decodeSparseTensor, encodePersonalTensor, encodeSparseTensor, type MaskMap, type SparseValues } from '../proto/codec.js';
import { elementCount } from '../proto/shape.js';
import type { Mask } from '../proto/mask.js';
import type { ReceivedTask } from './participant.js';
import {
  createCoordinatorDefinition,
  DEFAULT_ASSEMBLY_LIMITS,
  DEFAULT_CHUNK_BYTES,
  DEFAULT_MAX_MESSAGE_BYTES,
  isMalformed,
  MaskEncoding,
  messageLimitOptions,
  PROTOCOL_VERSION,
  splitTensor,
  TensorAssembler,
  VALUE_ENCODING_BY_NAME,
  type AssemblyLimits,
  type CoordinatorDefinition,
  type CoordinatorMethod,
  type Credentials,
  type Malformed,
  type MaskChange,
  type TaskChunk,
  type TaskHeader,
  type TensorSpec,
  type UpdateAck,
  type UpdateChunk,
  type UpdateHeader,
  type ValueEncodingName,
  type WireCounter,
} from '../proto/rpc.js';

/** A failed call: the gRPC status code (and its name) and the server's message. */
export class RemoteError extends Error {
  readonly codeName: string;
  constructor(
    readonly method: string,
    readonly code: grpc.status,
    readonly details: string,
  ) {
    const codeName = grpc.status[code] ?? `code ${code}`;
    super(`${method} failed: ${codeName} (${code}): ${details}`);
    this.name = 'RemoteError';
    this.codeName = codeName;
  }
}

/**
 * The coordinator cannot be reached because the two sides disagree on TLS
 * (a plaintext client at a TLS coordinator, or the other way round). Retrying
 * cannot help, so callers that wait for an unreachable coordinator stop on it;
 * the message says what to change.
 */
export class TransportMismatchError extends RemoteError {
  constructor(method: string, details: string) {
    super(method, grpc.status.UNAVAILABLE, details);
    this.name = 'TransportMismatchError';
  }
}

/** What answers at host:port, as a TLS handshake tells: TLS, something that is not TLS, or nothing known. */
export type TransportProbe = 'tls' | 'not-tls' | 'unknown';

/**
 * Opens a TLS handshake to `address` (host:port, [v6]:port, dns:host:port),
 * not checking the certificate: 'tls' when it completes, 'not-tls' when the
 * TCP connection opened but the answer was not TLS (a plaintext HTTP/2
 * server answers a ClientHello with a frame), 'unknown' when nothing answered
 * within `timeoutMs`.
 */
export function probeTransport(address: string, timeoutMs = 2000): Promise<TransportProbe> {
  const target = address.replace(/^dns:(\/\/[^/]*\/)?/, '');
  const m = target.match(/^\[([^\]]+)\]:(\d+)$/) ?? target.match(/^([^:]+):(\d+)$/);
  if (m === null) return Promise.resolve('unknown');
  const [host, port] = [m[1], Number(m[2])];
  return new Promise((resolve) => {
    let connected = false;
    const socket = tlsConnect({
      host,
      port,
      rejectUnauthorized: false,
      ALPNProtocols: ['h2'],
      ...(isIP(host) === 0 ? { servername: host } : {}),
    });
    const done = (result: TransportProbe) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done('unknown'), timeoutMs);
    socket.once('connect', () => (connected = true));
    socket.once('secureConnect', () => done('tls'));
    socket.once('error', () => done(connected ? 'not-tls' : 'unknown'));
    socket.once('close', () => done(connected ? 'not-tls' : 'unknown'));
  });
}

export interface RetryPolicy {
  /** Total attempts per call, the first included (1 = no retry). */
  readonly maxAttempts: number;
  readonly initialDelayMs: number;
  readonly maxDelayMs: number;
  readonly multiplier: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 6, initialDelayMs: 200, maxDelayMs: 10_000, multiplier: 2 };

/**
 * Delay before retry number `retry` (1 = first retry): exponential, capped,
 * with "equal jitter" (between half and all of the step) so that many clients
 * dropped together do not reconnect in lockstep.
 */
export function backoffDelay(retry: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const step = Math.min(policy.maxDelayMs, policy.initialDelayMs * policy.multiplier ** (retry - 1));
  return step / 2 + random() * (step / 2);
}

export interface ConnectOptions {
  /**
   * PEM root certificate(s) to verify the server with; omitted = plaintext.
   * `cert` and `key`: this client's certificate, for a coordinator that requires one (mutual TLS).
   */
  tls?: { ca: Buffer | string; client?: { cert: Buffer | string; key: Buffer | string } };
  /** Encoding of uploaded values, and the one asked for downloads. Default f32. */
  valueEncoding?: ValueEncodingName;
  /** Serialized bytes per tensor piece on the uplink. Default 1 MiB. */
  chunkBytes?: number;
  /** Per-message send/receive limit. Default DEFAULT_MAX_MESSAGE_BYTES. */
  maxMessageBytes?: number;
  /** Limits when reassembling downloaded tensors. */
  limits?: Partial<AssemblyLimits>;
  retry?: Partial<RetryPolicy>;
  /** Deadline per call; none by default. */
  callTimeoutMs?: number;
  /** Also told about every message (after this client's own counters). */
  onWire?: WireCounter;
}

export interface JoinResult {
  clientId: string;
  manifest: TensorSpec[];
  /** The server's training config, parsed from JSON ({} when empty). */
  config: unknown;
}

export interface ClientIdentity {
  clientId: string;
  clientToken: string;
  manifest: TensorSpec[];
}

/**
 * What a pull brings: a task (dense or sparse, decoded); no task for now (pull
 * again after `retryAfterMs`); or the end of training (every configured round
 * committed, `lastRound` the last one).
 */
export type PullOutcome =
  | { readonly kind: 'task'; readonly task: ReceivedTask }
  | { readonly kind: 'wait'; readonly retryAfterMs: number }
  | { readonly kind: 'finished'; readonly lastRound: number };

/** An uploaded tensor shared under its mask: the client's (new) mask, the delta at its kept positions, and the mask the server holds. */
export interface SharedOutgoingTensor extends SparseValues {
  readonly kind?: 'shared';
  /** The mask at base_mask_version; enables UNCHANGED/DIFF mask encodings. */
  readonly previousMask?: Mask;
}

/** A tensor the client keeps to itself: sent as PERSONAL, no values (proto/PROTOCOL.md, section 5.1). */
export interface PersonalOutgoingTensor {
  readonly kind: 'personal';
}

export type OutgoingTensor = SharedOutgoingTensor | PersonalOutgoingTensor;

/**
 * What the caller provides of an update header: identity and tensor count are
 * filled in, and the mask change becomes mask_changed + new_mask_version.
 */
export interface UpdateFields extends Omit<UpdateHeader, keyof Credentials | 'tensorCount' | 'maskChanged' | 'newMaskVersion'> {
  readonly maskChange: MaskChange;
}

function maskChangeFields(change: MaskChange): Pick<UpdateHeader, 'maskChanged' | 'newMaskVersion'> {
  switch (change.kind) {
    case 'unchanged':
      return { maskChanged: false, newMaskVersion: 0 };
    case 'changed':
      return { maskChanged: true, newMaskVersion: change.version };
  }
}

function parseConfig(json: string, where: string): unknown {
  if (json === '') return {};
  try {
    return JSON.parse(json);
  } catch (err) {
    throw new Error(`${where}: config_json is not valid JSON (${(err as Error).message})`);
  }
}

/**
 * Checks a manifest the coordinator sent before anything is sized by it: names
 * unique and non-empty, shapes valid, and no tensor larger than a dense f32
 * task of it could be under the client's own limit (the first task is
 * always dense), so a hostile or broken manifest cannot make the client
 * allocate a mask of billions of elements.
 */
function checkManifest(manifest: TensorSpec[], maxTensorBytes: number): void {
  const names = new Set<string>();
  for (const spec of manifest) {
    if (spec.name === '' || names.has(spec.name))
      throw new Error(`manifest has an empty or duplicate tensor name "${spec.name}"`);
    names.add(spec.name);
    const n = elementCount(spec.shape);
    if (4 * n > maxTensorBytes) {
      throw new Error(
        `manifest tensor "${spec.name}" has ${n} elements; as f32 that is more than this client's limit of ${maxTensorBytes} bytes per tensor`,
      );
    }
  }
}

/** Bytes of serialized messages, per direction. */
export interface WireBytes {
  up: number;
  down: number;
}

/** Trailer of a refusal that passes: wait this long, then retry (gRFC A6; the coordinator sets it on its limits). */
const RETRY_PUSHBACK = 'grpc-retry-pushback-ms';

/** The pushback of a refusal in milliseconds, when the server sent one. */
export function retryPushback(err: grpc.ServiceError): number | undefined {
  const value = err.metadata?.get(RETRY_PUSHBACK)[0];
  const ms = typeof value === 'string' ? Number(value) : NaN;
  return Number.isFinite(ms) && ms >= 0 ? ms : undefined;
}

function isServiceError(err: unknown): err is grpc.ServiceError {
  return typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'number' && 'details' in err;
}

export class CoordinatorClient {
  readonly #client: grpc.Client;
  readonly #def: CoordinatorDefinition;
  readonly #valueEncoding: ValueEncodingName;
  readonly #chunkBytes: number;
  readonly #limits: Partial<AssemblyLimits>;
  readonly #maxTensorBytes: number;
  readonly #retry: RetryPolicy;
  readonly #callTimeoutMs: number | undefined;
  readonly #onWire: WireCounter | undefined;
  readonly #address: string;
  readonly #usesTls: boolean;
  /** Bytes of the attempts that succeeded. */
  readonly #accepted: WireBytes = { up: 0, down: 0 };
  /** Bytes of the attempts that failed: retried, or given up. */
  readonly #failed: WireBytes = { up: 0, down: 0 };
  #identity: { clientId: string; clientToken: string } | undefined;
  #manifest = new Map<string, TensorSpec>();

  private constructor(address: string, options: ConnectOptions) {
    this.#onWire = options.onWire;
    this.#address = address;
    this.#usesTls = options.tls !== undefined;
    // Counted per attempt (#counted), not here: a call's bytes are accepted or failed as its attempt turns out.
    this.#def = createCoordinatorDefinition();
    const credentials =
      options.tls === undefined
        ? grpc.credentials.createInsecure()
        : grpc.credentials.createSsl(
            Buffer.from(options.tls.ca),
            options.tls.client === undefined ? null : Buffer.from(options.tls.client.key),
            options.tls.client === undefined ? null : Buffer.from(options.tls.client.cert),
          );
    this.#client = new grpc.Client(
      address,
      credentials,
      messageLimitOptions(options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES),
    );
    this.#valueEncoding = options.valueEncoding ?? 'f32';
    if (!Object.hasOwn(VALUE_ENCODING_BY_NAME, this.#valueEncoding)) {
      throw new Error(`valueEncoding "${this.#valueEncoding}" is not f32, f16 or int8`);
    }
    this.#chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    this.#limits = options.limits ?? {};
    this.#maxTensorBytes = this.#limits.maxTensorBytes ?? DEFAULT_ASSEMBLY_LIMITS.maxTensorBytes;
    this.#retry = { ...DEFAULT_RETRY, ...options.retry };
    if (!Number.isInteger(this.#retry.maxAttempts) || this.#retry.maxAttempts < 1) {
      throw new Error(`retry.maxAttempts must be a positive integer, got ${this.#retry.maxAttempts}`);
    }
    this.#callTimeoutMs = options.callTimeoutMs;
  }

  /** Opens a channel (lazily: the first call connects). */
  static connect(address: string, options: ConnectOptions = {}): CoordinatorClient {
    return new CoordinatorClient(address, options);
  }

  /** Bytes of serialized messages sent to the server so far, in calls that succeeded (each counted once). */
  get bytesUp(): number {
    return this.#accepted.up;
  }

  /** Bytes of serialized messages received from the server so far, in calls that succeeded. */
  get bytesDown(): number {
    return this.#accepted.down;
  }

  /**
   * Bytes of attempts that failed, per direction: retried after UNAVAILABLE
   * (an outage) or a pushback, or refused. Serialized is not necessarily sent:
   * during an outage the messages of an attempt may never leave.
   */
  get failedBytes(): Readonly<WireBytes> {
    return { ...this.#failed };
  }

  get clientId(): string | undefined {
    return this.#identity?.clientId;
  }

  get manifest(): TensorSpec[] {
    return [...this.#manifest.values()];
  }

  /** What a restarted client needs to resume() without joining again; undefined before join(). */
  get identity(): ClientIdentity | undefined {
    return this.#identity === undefined ? undefined : { ...this.#identity, manifest: this.manifest };
  }

  /** Resumes a saved identity instead of joining; the server checks the token on the next call. */
  resume(identity: ClientIdentity): void {
    if (identity.clientId === '' || identity.clientToken === '') throw new Error('resume: client id and token must not be empty');
    checkManifest(identity.manifest, this.#maxTensorBytes);
    this.#identity = { clientId: identity.clientId, clientToken: identity.clientToken };
    this.#manifest = new Map(identity.manifest.map((spec) => [spec.name, spec]));
  }

  async join(enrollmentToken: string, name: string, numExamples: number): Promise<JoinResult> {
    const res = await this.#withRetry('Join', (tally) =>
      this.#unary(this.#def.join, { protocolVersion: PROTOCOL_VERSION, enrollmentToken, clientName: name, numExamples }, tally),
    );
    if (res.protocolVersion !== PROTOCOL_VERSION) {
      throw new Error(`Join: server speaks protocol version ${res.protocolVersion}, this client ${PROTOCOL_VERSION}`);
    }
    if (res.clientId === '') throw new Error('Join: server returned an empty client id');
    checkManifest(res.manifest, this.#maxTensorBytes);
    this.#identity = { clientId: res.clientId, clientToken: res.clientToken };
    this.#manifest = new Map(res.manifest.map((spec) => [spec.name, spec]));
    return { clientId: res.clientId, manifest: res.manifest, config: parseConfig(res.configJson, 'Join') };
  }

  /**
   * Pulls this client's task. `masks` are the masks the client holds at
   * `maskVersion`; they decode tensors sent as UNCHANGED/DIFF relative to them
   * and are used only when the server's view of the version matches.
   */
  async pullTask(maskVersion: number, masks?: MaskMap): Promise<PullOutcome> {
    const request = {
      ...this.#credentials('PullTask'),
      maskVersion,
      valueEncoding: VALUE_ENCODING_BY_NAME[this.#valueEncoding],
    };
    return this.#withRetry('PullTask', async (tally) => {
      const method = this.#counted(this.#def.pullTask, tally);
      const call = this.#client.makeServerStreamRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        request,
        this.#callOptions(),
      );
      let header: TaskHeader | undefined;
      const assembler = new TensorAssembler(this.#limits);
      const dense = new Map<string, Float32Array>();
      const sparse = new Map<string, SparseValues>();
      try {
        for await (const chunk of call as AsyncIterable<TaskChunk | Malformed>) {
          if (isMalformed(chunk)) throw new RemoteError('PullTask', grpc.status.INTERNAL, `malformed response: ${chunk.error}`);
          if (header === undefined) {
            if (chunk.kind !== 'header') {
              throw new RemoteError('PullTask', grpc.status.INTERNAL, 'the first TaskChunk is not a header');
            }
            header = chunk.header;
            if (header.protocolVersion !== PROTOCOL_VERSION) {
              throw new Error(
                `PullTask: server speaks protocol version ${header.protocolVersion}, this client ${PROTOCOL_VERSION}`,
              );
            }
            if (!header.hasTask) {
              return header.finished
                ? { kind: 'finished', lastRound: header.roundId }
                : { kind: 'wait', retryAfterMs: header.retryAfterMs };
            }
            continue;
          }
          if (chunk.kind !== 'piece') {
            throw new RemoteError('PullTask', grpc.status.INTERNAL, 'a second header in the task stream');
          }
          const tensor = assembler.push(chunk.piece);
          if (tensor === undefined) continue;
          const spec = this.#manifest.get(tensor.name);
          if (spec === undefined) throw new Error(`PullTask: tensor "${tensor.name}" is not in the manifest`);
          if (tensor.mask?.encoding === MaskEncoding.PERSONAL) {
            throw new Error(`PullTask: tensor "${tensor.name}" arrived PERSONAL, which only an upload may carry`);
          }
          if (header.dense) {
            const { mask, kept } = decodeSparseTensor(tensor, spec.shape);
            if (!mask.isFull) {
              throw new Error(`PullTask: dense task, but tensor "${tensor.name}" keeps only ${mask.keptCount} of ${mask.length}`);
            }
            dense.set(tensor.name, kept);
          } else {
            const previous = header.maskVersion === maskVersion ? masks?.get(tensor.name) : undefined;
            sparse.set(tensor.name, decodeSparseTensor(tensor, spec.shape, previous));
          }
        }
      } finally {
        call.cancel(); // no-op once the stream ended; stops the server after an early return or error
      }
      if (header === undefined) throw new RemoteError('PullTask', grpc.status.INTERNAL, 'the task stream was empty');
      assembler.finish();
      const received = dense.size + sparse.size;
      if (received !== header.tensorCount) {
        throw new Error(`PullTask: header announced ${header.tensorCount} tensors, received ${received}`);
      }
      const task = { round: header.roundId, config: parseConfig(header.configJson, 'PullTask'), maskVersion: header.maskVersion };
      return {
        kind: 'task',
        task: header.dense ? { kind: 'dense', ...task, tensors: dense } : { kind: 'sparse', ...task, tensors: sparse },
      };
    });
  }

  /** Uploads an update: the header, then each tensor as pieces. */
  async pushUpdate(fields: UpdateFields, tensors: ReadonlyMap<string, OutgoingTensor>): Promise<UpdateAck> {
    const { maskChange, ...rest } = fields;
    const header: UpdateHeader = {
      ...rest,
      ...maskChangeFields(maskChange),
      ...this.#credentials('PushUpdate'),
      tensorCount: tensors.size,
    };
    for (const name of tensors.keys()) {
      if (!this.#manifest.has(name)) throw new Error(`PushUpdate: tensor "${name}" is not in the manifest`);
    }
    return this.#withRetry('PushUpdate', async (tally) => {
      const method = this.#counted(this.#def.pushUpdate, tally);
      let settle!: (result: { err: grpc.ServiceError | null; ack: UpdateAck | Malformed | undefined }) => void;
      const response = new Promise<{ err: grpc.ServiceError | null; ack: UpdateAck | Malformed | undefined }>(
        (r) => (settle = r),
      );
      const call = this.#client.makeClientStreamRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        this.#callOptions(),
        (err, ack) => settle({ err, ack }),
      );
      // Stop writing as soon as the server answered (e.g. refused the header).
      let answered = false;
      void response.then(() => (answered = true));
      const write = async (chunk: UpdateChunk) => {
        if (!call.write(chunk)) await Promise.race([once(call, 'drain'), response]);
      };
      await write({ kind: 'header', header });
      outer: for (const [name, t] of tensors) {
        const spec = this.#manifest.get(name)!;
        const encoded =
          t.kind === 'personal'
            ? encodePersonalTensor(name, this.#valueEncoding)
            : encodeSparseTensor(name, t, spec.shape, { values: this.#valueEncoding, previousMask: t.previousMask });
        for (const piece of splitTensor(encoded, this.#chunkBytes)) {
          if (answered) break outer;
          await write({ kind: 'piece', piece });
        }
      }
      call.end();
      const { err, ack } = await response;
      if (err) throw err;
      if (ack === undefined || isMalformed(ack)) {
        throw new RemoteError('PushUpdate', grpc.status.INTERNAL, `malformed response: ${ack?.error ?? 'missing'}`);
      }
      return ack;
    });
  }

  async heartbeat() {
    return this.#withRetry('Heartbeat', (tally) => this.#unary(this.#def.heartbeat, this.#credentials('Heartbeat'), tally));
  }

  async leave(reason = ''): Promise<void> {
    await this.#withRetry('Leave', (tally) => this.#unary(this.#def.leave, { ...this.#credentials('Leave'), reason }, tally));
  }

  close(): void {
    this.#client.close();
  }

  #credentials(method: string): Credentials {
    if (this.#identity === undefined) throw new Error(`${method}: call join() first`);
    return { protocolVersion: PROTOCOL_VERSION, ...this.#identity };
  }

  #callOptions(): grpc.CallOptions {
    return this.#callTimeoutMs === undefined ? {} : { deadline: Date.now() + this.#callTimeoutMs };
  }

  /**
   * Why the coordinator is unreachable when it is a TLS disagreement, else
   * undefined. Asked after each UNAVAILABLE (a coordinator that was down may
   * come back as either), it costs one TCP connection.
   */
  async #transportMismatch(): Promise<string | undefined> {
    const probe = await probeTransport(this.#address);
    if (!this.#usesTls && probe === 'tls') {
      return (
        `the coordinator at ${this.#address} speaks TLS and this client connects in plaintext: ` +
        "give the coordinator's CA certificate (--tls-ca, or tlsCa in the config file)"
      );
    }
    if (this.#usesTls && probe === 'not-tls') {
      return (
        `the coordinator at ${this.#address} does not answer TLS (a plaintext coordinator?): ` +
        'drop --tls-ca (tlsCa), or give the coordinator a certificate (tls in its config)'
      );
    }
    return undefined;
  }

  /** `method` with its messages counted into one attempt's tally (and told to onWire). */
  #counted<Req, Res>(method: CoordinatorMethod<Req, Res>, tally: WireBytes): CoordinatorMethod<Req, Res> {
    const told = (direction: 'up' | 'down', bytes: number, clientId: unknown) => {
      tally[direction] += bytes;
      this.#onWire?.(direction, typeof clientId === 'string' && clientId !== '' ? clientId : this.#identity?.clientId, bytes);
    };
    return {
      ...method,
      requestSerialize: (value: Req) => {
        const bytes = method.requestSerialize(value);
        told('up', bytes.length, (value as { clientId?: unknown }).clientId);
        return bytes;
      },
      responseDeserialize: (bytes: Buffer) => {
        const value = method.responseDeserialize(bytes);
        told('down', bytes.length, (value as { clientId?: unknown }).clientId);
        return value;
      },
    };
  }

  #unary<Req, Res>(m: CoordinatorMethod<Req, Res>, request: Req, tally: WireBytes): Promise<Res> {
    const method = this.#counted(m, tally);
    return new Promise((resolve, reject) => {
      this.#client.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        request,
        new grpc.Metadata(),
        this.#callOptions(),
        (err, res) => {
          if (err) reject(err);
          else if (res === undefined) reject(new RemoteError(method.originalName, grpc.status.INTERNAL, 'missing response'));
          else if (isMalformed(res))
            reject(new RemoteError(method.originalName, grpc.status.INTERNAL, `malformed response: ${res.error}`));
          else resolve(res);
        },
      );
    });
  }

  /**
   * Runs a call, retrying on UNAVAILABLE and on a RESOURCE_EXHAUSTED that
   * carries a pushback (waiting at least that long); gRPC failures become
   * RemoteError. Each attempt counts its own bytes: into the accepted traffic
   * when it succeeds, into failedBytes when it does not.
   */
  async #withRetry<T>(method: string, attempt: (tally: WireBytes) => Promise<T>): Promise<T> {
    for (let n = 1; ; n++) {
      const tally: WireBytes = { up: 0, down: 0 };
      try {
        const result = await attempt(tally);
        this.#accepted.up += tally.up;
        this.#accepted.down += tally.down;
        return result;
      } catch (err) {
        this.#failed.up += tally.up;
        this.#failed.down += tally.down;
        if (err instanceof RemoteError || !isServiceError(err)) throw err;
        if (err.code === grpc.status.UNAVAILABLE) {
          const mismatch = await this.#transportMismatch();
          if (mismatch !== undefined) throw new TransportMismatchError(method, `${err.details}; ${mismatch}`);
        }
        const pushback = err.code === grpc.status.RESOURCE_EXHAUSTED ? retryPushback(err) : undefined;
        const retryable = err.code === grpc.status.UNAVAILABLE || pushback !== undefined;
        if (retryable && n < this.#retry.maxAttempts) {
          await sleep(Math.max(pushback ?? 0, backoffDelay(n, this.#retry)));
          continue;
        }
        const suffix = retryable ? ` (after ${n} attempts)` : '';
        throw new RemoteError(method, err.code, err.details + suffix);
      }
    }
  }
}
