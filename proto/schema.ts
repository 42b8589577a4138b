// Loads proto/subfed.proto at run time and gives typed encode/decode for each
// message. Decoding never throws: bad bytes come back as a Malformed value so
// that gRPC handlers can answer INVALID_ARGUMENT instead of grpc-js's INTERNAL.
import { join } from 'node:path';
import protobuf from 'protobufjs';
import type * as M from './messages.js';
import { packageRoot } from './package-root.js';

/** A message whose bytes could not be decoded. */
export interface Malformed {
  readonly malformed: true;
  readonly error: string;
}

export function isMalformed(value: unknown): value is Malformed {
  return typeof value === 'object' && value !== null && (value as { malformed?: unknown }).malformed === true;
}

/** The .proto lives next to the sources, not in dist/. */
export function protoFilePath(): string {
  return join(packageRoot(), 'proto', 'subfed.proto');
}

export const schemaRoot: protobuf.Root = protobuf.loadSync(protoFilePath());

const CONVERSION: protobuf.IConversionOptions = {
  longs: Number,
  enums: Number,
  defaults: true,
  arrays: true,
  oneofs: true,
};

/** Typed codec for one message type. */
export interface MessageCodec<T> {
  readonly type: protobuf.Type;
  encode(message: T): Buffer;
  /** Never throws. */
  decode(bytes: Uint8Array): T | Malformed;
}

function messageCodec<T>(name: string, check?: (decoded: T) => string | undefined): MessageCodec<T> {
  const type = schemaRoot.lookupType(`subfed.v1.${name}`);
  return {
    type,
    encode(message: T): Buffer {
      const bytes = type.encode(message as unknown as protobuf.Message).finish();
      return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    },
    decode(bytes: Uint8Array): T | Malformed {
      try {
        const decoded = type.toObject(type.decode(bytes), CONVERSION) as T;
        const problem = check?.(decoded);
        return problem === undefined ? decoded : { malformed: true, error: `${name}: ${problem}` };
      } catch (err) {
        return { malformed: true, error: `${name}: undecodable protobuf (${(err as Error).message})` };
      }
    },
  };
}

const oneofRequired = (msg: { kind?: string }): string | undefined =>
  msg.kind === undefined ? 'neither header nor piece is set' : undefined;

export const codecs = {
  TensorSpec: messageCodec<M.TensorSpec>('TensorSpec'),
  SparseTensor: messageCodec<M.SparseTensor>('SparseTensor'),
  TensorPiece: messageCodec<M.TensorPiece>('TensorPiece'),
  JoinRequest: messageCodec<M.JoinRequest>('JoinRequest'),
  JoinResponse: messageCodec<M.JoinResponse>('JoinResponse'),
  TaskRequest: messageCodec<M.TaskRequest>('TaskRequest'),
  TaskChunk: messageCodec<M.TaskChunk>('TaskChunk', oneofRequired),
  UpdateChunk: messageCodec<M.UpdateChunk>('UpdateChunk', oneofRequired),
  UpdateAck: messageCodec<M.UpdateAck>('UpdateAck'),
  HeartbeatRequest: messageCodec<M.HeartbeatRequest>('HeartbeatRequest'),
  HeartbeatResponse: messageCodec<M.HeartbeatResponse>('HeartbeatResponse'),
  LeaveRequest: messageCodec<M.LeaveRequest>('LeaveRequest'),
  LeaveResponse: messageCodec<M.LeaveResponse>('LeaveResponse'),
} as const;
