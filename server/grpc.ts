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
import { CoordinatorError, type RejectCode } from './errors.js';
import { peerAddress } from './limits.js';

const STATUS: Record<RejectCode, grpc.status> = {
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
}

/**
 * The gRPC face of the coordinator: decodes, reassembles pieces, maps
 * refusals to status codes and logs each one. All decisions live in Coordinator.
 */
export function createGrpcHandlers(coord: Coordinator, options: GrpcServiceOptions): CoordinatorHandlers {
  const refuse = (clientId: string | undefined, err: unknown) => {
    const e = toServiceError(err);
    coord.recordReject(clientId, {
      code: grpc.status[e.code ?? grpc.status.UNKNOWN] ?? 'UNKNOWN',
      reason: e.reason,
      message: e.message,
    });
    return e;
  };

  return {
    join(call, callback) {
      const req = call.request;
      try {
        if (isMalformed(req)) throw malformed('JoinRequest', req);
        callback(null, coord.join(req, peerAddress(call.getPeer())));
      } catch (err) {
        callback(refuse(undefined, err));
      }
    },

    heartbeat(call, callback) {
      const req = call.request;
      try {
        if (isMalformed(req)) throw malformed('HeartbeatRequest', req);
        callback(null, coord.heartbeat(req));
      } catch (err) {
        callback(refuse(isMalformed(req) ? undefined : req.clientId, err));
      }
    },

    leave(call, callback) {
      const req = call.request;
      try {
        if (isMalformed(req)) throw malformed('LeaveRequest', req);
        callback(null, coord.leave(req));
      } catch (err) {
        callback(refuse(isMalformed(req) ? undefined : req.clientId, err));
      }
    },

    pullTask(call) {
      const req = call.request;
      const clientId = isMalformed(req) ? undefined : req.clientId;
      let task;
      try {
        if (isMalformed(req)) throw malformed('TaskRequest', req);
        task = coord.task(req);
      } catch (err) {
        call.emit('error', refuse(clientId, err));
        return;
      }
      const id = req.clientId;
      void (async () => {
        // Wait for 'drain' under back-pressure, but not forever: a client that went away never drains.
        const write = (chunk: M.TaskChunk) =>
          call.write(attributeTo(chunk, id))
            ? Promise.resolve()
            : new Promise<void>((resolve) => {
                const done = () => {
                  call.off('drain', done);
                  call.off('close', done);
                  call.off('cancelled', done);
                  resolve();
                };
                call.once('drain', done);
                call.once('close', done);
                call.once('cancelled', done);
              });
        await write({ header: task.header });
        for (const tensor of task.tensors) {
          for (const piece of splitTensor(tensor, options.chunkBytes)) {
            if (call.cancelled) return;
            await write({ piece });
          }
        }
        call.end();
      })().catch((err: unknown) => call.emit('error', refuse(id, err)));
    },

    pushUpdate(call, callback) {
      let clientId: string | undefined;
      void (async () => {
        let header: M.UpdateHeader | undefined;
        const tensors: M.SparseTensor[] = [];
        const assembler = new TensorAssembler(options.limits);
        for await (const chunk of call as AsyncIterable<M.UpdateChunk | Malformed>) {
          if (isMalformed(chunk)) throw malformed('UpdateChunk', chunk);
          if (header === undefined) {
            if (chunk.header === undefined || chunk.header === null) {
              throw new CoordinatorError('INVALID_ARGUMENT', 'missing_header', 'the first UpdateChunk must be a header');
            }
            header = chunk.header;
            clientId = header.clientId;
            // Identity, round and membership are refused before any tensor is read. A retry of an
            // accepted upload is read whole too: pushUpdate acknowledges it only if it is the same update.
            coord.checkUpdateHeader(header);
            continue;
          }
          if (chunk.piece === undefined || chunk.piece === null) {
            throw new CoordinatorError('INVALID_ARGUMENT', 'duplicate_header', 'only the first UpdateChunk may be a header');
          }
          coord.recordWire('up', clientId, wireSize(chunk.piece) ?? 0);
          const tensor = assembler.push(chunk.piece);
          if (tensor !== undefined) tensors.push(tensor);
        }
        if (header === undefined) {
          throw new CoordinatorError('INVALID_ARGUMENT', 'missing_header', 'the update stream was empty');
        }
        assembler.finish();
        return coord.pushUpdate(header, tensors);
      })().then(
        (ack) => callback(null, ack),
        (err: unknown) => {
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
        },
      );
    },
  };
}
