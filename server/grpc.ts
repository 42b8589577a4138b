import * as http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import type * as M from '../proto/messages.js';
import {
  TensorAssembler,
  WireError,
  attributeTo,
  isMalformed,
  splitTensor,
  wireSize,
  type AssemblyLimits,
  type CoordinatorDefinition,
  type CoordinatorHandlers,
  type CoordinatorMethod,
  type Malformed,
} from '../proto/rpc.js';
import type { Coordinator } from './coordinator.js';
import { CoordinatorError, unauthenticated, type RejectCode } from './errors.js';
import { peerAddress } from './limits.js';
import type { StreamGuard, StreamTicket } from './streams.js';

const STATUS: Record<RejectCode, grpc.status> = {
  DEADLINE_EXCEEDED: grpc.status.DEADLINE_EXCEEDED,
  INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
  UNAUTHENTICATED: grpc.status.UNAUTHENTICATED,
  FAILED_PRECONDITION: grpc.status.FAILED_PRECONDITION,
  RESOURCE_EXHAUSTED: grpc.status.RESOURCE_EXHAUSTED,
};

const WIRE_REASON: Partial<Record<grpc.status, string>> = {
  [grpc.status.INVALID_ARGUMENT]: 'bad_stream',
  [grpc.status.RESOURCE_EXHAUSTED]: 'too_large',
};

/** Trailer saying how long to wait before retrying a refusal that passes (gRFC A6). */
export const RETRY_PUSHBACK = 'grpc-retry-pushback-ms';

/** A refusal as a gRPC error object; unexpected errors become INTERNAL without leaking details. */
function toServiceError(err: unknown): Partial<grpc.StatusObject> & { reason: string; message: string } {
  if (err instanceof CoordinatorError) {
    const e = { code: STATUS[err.code], details: err.message, message: err.message, reason: err.reason };
    if (err.retryAfterMs === undefined) return e;
    // gRFC A6's pushback: when to try again (subfed's client honours it for RESOURCE_EXHAUSTED).
    const metadata = new grpc.Metadata();
    metadata.set(RETRY_PUSHBACK, String(err.retryAfterMs));
    return { ...e, metadata };
  }
  if (err instanceof WireError) {
    return { code: err.code, details: err.message, message: err.message, reason: WIRE_REASON[err.code] ?? 'bad_stream' };
  }
  // grpc-js itself fails a stream with a status object, e.g. RESOURCE_EXHAUSTED for a message over the limit.
  const transport = err as Partial<grpc.StatusObject> | null;
  if (typeof transport?.code === 'number' && typeof transport.details === 'string' && transport.code !== grpc.status.OK) {
    const code = transport.code;
    return { code, details: transport.details, message: transport.details, reason: WIRE_REASON[code] ?? 'transport' };
  }
  return { code: grpc.status.INTERNAL, details: 'internal error', message: String(err), reason: 'internal' };
}

/** A request message over the configured limit, tagged by the deserializer (see limitMessageSizes). */
interface Oversized extends Malformed {
  readonly oversized: number;
}

function malformed(what: string, m: Malformed): CoordinatorError {
  if ('oversized' in m) return new CoordinatorError('RESOURCE_EXHAUSTED', 'too_large', `${what}: ${m.error}`);
  return new CoordinatorError('INVALID_ARGUMENT', 'malformed', `malformed ${what}: ${m.error}`);
}

/**
 * grpc-js refuses a message over its receive limit with RESOURCE_EXHAUSTED
 * before any handler sees it, so nothing could log who sent it. The server
 * therefore sets grpc-js's limit at twice the configured one (the hard cap on
 * what is buffered) and enforces the configured limit here, where the
 * handler can refuse it with the same code and log client and reason.
 */
export function limitMessageSizes(definition: CoordinatorDefinition, maxMessageBytes: number): CoordinatorDefinition {
  const limit = <Req, Res>(m: CoordinatorMethod<Req, Res>): CoordinatorMethod<Req, Res> => ({
    ...m,
    requestDeserialize(bytes: Buffer): Req | Malformed {
      const value = m.requestDeserialize(bytes);
      if (bytes.length <= maxMessageBytes) return value;
      const oversized: Oversized = {
        malformed: true,
        oversized: bytes.length,
        error: `message of ${bytes.length} bytes is larger than the limit of ${maxMessageBytes}`,
      };
      return oversized;
    },
  });
  return {
    join: limit(definition.join),
    pullTask: limit(definition.pullTask),
    pushUpdate: limit(definition.pushUpdate),
    heartbeat: limit(definition.heartbeat),
    leave: limit(definition.leave),
  };
}

export interface GrpcServiceOptions {
  /** Assembly limits for one upload, derived from the model size. */
  limits: AssemblyLimits;
  /** Serialized bytes per tensor piece on the downlink. */
  chunkBytes: number;
  /** Admits PullTask and PushUpdate streams and accounts for what they buffer (streams.*). */
  streams: StreamGuard;
  /**
   * Mutual TLS (tls.clientCa): the client certificate's subject CN is the
   * client's name. Join records it as the name; every later call must come
   * with a certificate naming the client whose id it carries.
   */
  clientCertificates?: boolean;
}

/** A call that can tell the TLS peer's certificate (every grpc-js server call can). */
type AuthenticatedCall = Pick<grpc.ServerUnaryCall<unknown, unknown>, 'getAuthContext'>;

/** The subject CN of the client certificate a call came with, if any. */
function certificateName(call: AuthenticatedCall): string | undefined {
  const cn = call.getAuthContext()?.sslPeerCertificate?.subject?.CN;
  const name = Array.isArray(cn) ? cn[0] : cn;
  return typeof name === 'string' && name !== '' ? name : undefined;
}

/** Serialized size of a SparseTensor without serializing it: its byte fields dominate, the rest is a few dozen bytes. */
function encodedSize(t: M.SparseTensor): number {
  return t.name.length + (t.mask?.data.length ?? 0) + (t.values?.data.length ?? 0) + 32;
}

/** A download whose client stopped reading: no write completed within idleMs. */
class StalledError extends Error {}

/** Writes one message and waits until the transport took it (the client read enough of what came before). */
function send(call: grpc.ServerWritableStream<unknown, M.TaskChunk>, chunk: M.TaskChunk, idleMs: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (call.cancelled) return resolve();
    const done = () => {
      clearTimeout(timer);
      call.off('cancelled', done);
      resolve();
    };
    const timer = setTimeout(() => {
      call.off('cancelled', done);
      reject(new StalledError());
    }, idleMs);
    call.once('cancelled', done);
    call.write(chunk, done);
  });
}

/** The next chunk of an upload, or DEADLINE_EXCEEDED idle_upload when none comes within idleMs. */
async function nextWithin<T>(chunks: AsyncIterator<T>, idleMs: number): Promise<IteratorResult<T>> {
  const next = chunks.next();
  let timer: NodeJS.Timeout | undefined;
  const idle = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(new CoordinatorError('DEADLINE_EXCEEDED', 'idle_upload', `upload sent nothing for ${idleMs} ms (streams.idleMs)`)),
      idleMs,
    );
  });
  try {
    return await Promise.race([next, idle]);
  } finally {
    clearTimeout(timer);
    // When the timer won, `next` settles later (the stream is destroyed): nobody awaits it any more.
    next.catch(() => undefined);
  }
}

/**
 * Resets the call's HTTP/2 stream. grpc-js has no public way to drop a
 * server stream: a status waits behind unsent data (a download the client
 * stopped reading) and does not stop a client that is still sending (an
 * upload refused mid-way), and either way the stream's buffers stay. Its
 * innermost call object holds the stream (server-interceptors.ts,
 * BaseServerInterceptingCall.stream); test/server/streams.test.ts fails if a
 * grpc-js update moves it.
 */
export function resetStream(call: object, code: number): boolean {
  let node: unknown = (call as { call?: unknown }).call;
  for (let depth = 0; depth < 8 && typeof node === 'object' && node !== null; depth++) {
    const stream = (node as { stream?: unknown }).stream;
    if (isHttp2Stream(stream)) {
      if (!stream.closed && !stream.destroyed) stream.close(code);
      return true;
    }
    node = (node as { nextCall?: unknown }).nextCall;
  }
  return false;
}

function isHttp2Stream(value: unknown): value is http2.ServerHttp2Stream {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { close?: unknown }).close === 'function' &&
    'rstCode' in value &&
    'session' in value
  );
}

/**
 * The gRPC face of the coordinator: decodes, reassembles pieces, maps
 * refusals to status codes and logs each one. All decisions live in Coordinator.
 */
export function createGrpcHandlers(coord: Coordinator, options: GrpcServiceOptions): CoordinatorHandlers {
  const { streams } = options;
  const idleMs = streams.limits.idleMs;
  const mutualTls = options.clientCertificates === true;

  /** Under mutual TLS: the call's certificate must name the client whose id it carries (before anything happens). */
  const checkCertificate = (call: AuthenticatedCall, clientId: string) => {
    if (!mutualTls) return;
    const name = certificateName(call);
    if (name === undefined || coord.clientName(clientId) !== name) {
      throw unauthenticated(
        'certificate_mismatch',
        `the client certificate ${name === undefined ? 'names no one' : `names "${name}"`}, not client "${clientId}"`,
      );
    }
  };
  /** Under mutual TLS, the name a client joins under is its certificate's. */
  const joinName = (call: AuthenticatedCall, asked: string): string => {
    if (!mutualTls) return asked;
    const name = certificateName(call);
    if (name === undefined) throw unauthenticated('certificate_mismatch', 'the client certificate names no one (no subject CN)');
    return name;
  };
  const refuse = (clientId: string | undefined, err: unknown) => {
    const e = toServiceError(err);
    coord.recordReject(clientId, {
      code: grpc.status[e.code ?? grpc.status.UNKNOWN] ?? 'UNKNOWN',
      reason: e.reason,
      message: e.message,
    });
    return e;
  };

  /** Size of a message that went through the definition (0 when grpc-js has not serialized it yet). */
  const size = (message: object | undefined) => (message === undefined ? 0 : (wireSize(message) ?? 0));

  /** A unary call: answers, then accounts its bytes as accepted, or refuses and accounts them as refused. */
  const unary = <Req extends object, Res extends object>(
    request: Req | Malformed,
    what: string,
    callback: grpc.sendUnaryData<Res>,
    answer: (req: Req) => Res,
    clientOf: (req: Req, res: Res) => string,
  ) => {
    const clientId = isMalformed(request) ? undefined : (request as { clientId?: string }).clientId;
    try {
      if (isMalformed(request)) throw malformed(what, request);
      const res = answer(request);
      callback(null, res);
      coord.recordCall(clientOf(request, res), 'accepted', { up: size(request), down: size(res) });
    } catch (err) {
      callback(refuse(clientId, err));
      coord.recordCall(clientId, 'refused', { up: size(request), down: 0 });
    }
  };

  return {
    join(call, callback) {
      unary(
        call.request,
        'JoinRequest',
        callback,
        (req) => coord.join({ ...req, clientName: joinName(call, req.clientName) }, peerAddress(call.getPeer())),
        (_, res) => res.clientId,
      );
    },

    heartbeat(call, callback) {
      unary(
        call.request,
        'HeartbeatRequest',
        callback,
        (req) => {
          checkCertificate(call, req.clientId);
          return coord.heartbeat(req);
        },
        (req) => req.clientId,
      );
    },

    leave(call, callback) {
      unary(
        call.request,
        'LeaveRequest',
        callback,
        (req) => {
          checkCertificate(call, req.clientId);
          return coord.leave(req);
        },
        (req) => req.clientId,
      );
    },

    pullTask(call) {
      const req = call.request;
      let clientId = isMalformed(req) ? undefined : req.clientId;
      let ticket: StreamTicket | undefined;
      let task;
      try {
        ticket = streams.open('download');
        if (isMalformed(req)) throw malformed('TaskRequest', req);
        checkCertificate(call, req.clientId);
        task = coord.task(req);
        ticket.claim(req.clientId);
        ticket.hold(task.tensors.reduce((sum, t) => sum + encodedSize(t), 0));
      } catch (err) {
        ticket?.release();
        call.emit('error', refuse(clientId, err));
        coord.recordCall(clientId, 'refused', { up: size(req), down: 0 });
        return;
      }
      const id = (clientId = req.clientId);
      const open = ticket;
      let down = 0;
      let sent = false;
      void (async () => {
        // One piece in flight at a time, so "no progress for idleMs" means the client stopped reading.
        const write = async (chunk: M.TaskChunk) => {
          await send(call, attributeTo(chunk, id), idleMs);
          down += size(chunk);
        };
        await write({ kind: 'header', header: task.header });
        for (const tensor of task.tensors) {
          for (const piece of splitTensor(tensor, options.chunkBytes)) {
            if (call.cancelled) return;
            await write({ kind: 'piece', piece });
          }
        }
        open.release();
        call.end();
        sent = true;
      })()
        .finally(() => coord.recordCall(id, sent ? 'accepted' : 'refused', { up: size(req), down }))
        .catch((err: unknown) => {
          if (err instanceof StalledError) {
            // Flow control holds the status back behind the unsent data, so the stream is reset instead.
            coord.recordReject(id, {
              code: 'CANCELLED',
              reason: 'idle_download',
              message: `task download made no progress for ${idleMs} ms (streams.idleMs); stream reset`,
            });
            resetStream(call, http2.constants.NGHTTP2_CANCEL);
            return;
          }
          call.emit('error', refuse(id, err));
        })
        .finally(() => open.release());
    },

    pushUpdate(call, callback) {
      let clientId: string | undefined;
      let ticket: StreamTicket | undefined;
      /** Bytes received on this stream; a repeat of an accepted upload is counted as a retry, not as traffic. */
      let up = 0;
      let retry = false;
      const chunks = (call as AsyncIterable<M.UpdateChunk | Malformed>)[Symbol.asyncIterator]();
      void (async () => {
        ticket = streams.open('upload');
        let header: M.UpdateHeader | undefined;
        const tensors: M.SparseTensor[] = [];
        const assembler = new TensorAssembler(options.limits);
        for (;;) {
          const next = await nextWithin(chunks, idleMs);
          if (next.done === true) break;
          const chunk = next.value;
          up += size(chunk);
          if (isMalformed(chunk)) throw malformed('UpdateChunk', chunk);
          if (header === undefined) {
            if (chunk.kind !== 'header') {
              throw new CoordinatorError('INVALID_ARGUMENT', 'missing_header', 'the first UpdateChunk must be a header');
            }
            header = chunk.header;
            clientId = header.clientId;
            // Identity, round and membership are refused before any tensor is read. A retry of an
            // accepted upload is read whole too: pushUpdate acknowledges it only if it is the same update.
            checkCertificate(call, header.clientId);
            retry = coord.checkUpdateHeader(header).receipt !== undefined;
            ticket.claim(header.clientId);
            continue;
          }
          if (chunk.kind !== 'piece') {
            throw new CoordinatorError('INVALID_ARGUMENT', 'duplicate_header', 'only the first UpdateChunk may be a header');
          }
          ticket.hold(chunk.piece.data.length);
          const tensor = assembler.push(chunk.piece);
          if (tensor !== undefined) tensors.push(tensor);
        }
        if (header === undefined) {
          throw new CoordinatorError('INVALID_ARGUMENT', 'missing_header', 'the update stream was empty');
        }
        assembler.finish();
        return coord.pushUpdate(header, tensors, { upBytes: up });
      })()
        .finally(() => ticket?.release())
        .then(
          (ack) => {
            callback(null, ack);
            // An accepted upload and its ack are already in its round's traffic (pushUpdate, before the round could commit).
            coord.recordUploadCall(retry ? 'retry' : 'accepted', { up, down: size(ack) });
          },
          (err: unknown) => {
            coord.recordCall(clientId, 'refused', { up, down: 0 });
            if ((err as { code?: unknown }).code === 'ERR_STREAM_PREMATURE_CLOSE') {
              // The call ended outside this handler: the client cancelled, or grpc-js
              // refused a message beyond its hard cap and already sent the status.
              coord.recordReject(clientId, {
                code: 'CANCELLED',
                reason: 'stream_closed',
                message: 'upload stream closed before its end (client cancelled or transport size cap)',
              });
              return;
            }
            callback(refuse(clientId, err));
            // The client may still be sending: stop it, so that nothing more of it is buffered (RFC 9113 8.1).
            setImmediate(() => resetStream(call, http2.constants.NGHTTP2_NO_ERROR));
            void chunks.return?.();
          },
        );
    },
  };
}
