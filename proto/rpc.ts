// The subfed.v1.Coordinator gRPC service, defined by hand over the protobufjs
// message types so that (a) every message's size is counted where it is
// (de)serialized and (b) malformed bytes reach the handler as a Malformed value
// (answer INVALID_ARGUMENT) instead of making grpc-js answer INTERNAL.
import type * as grpc from '@grpc/grpc-js';
import type * as M from './messages.js';
import { codecs, type Malformed, type MessageCodec } from './schema.js';

export * from './messages.js';
export { isMalformed, type Malformed } from './schema.js';
export {
  splitTensor,
  TensorAssembler,
  WireError,
  DEFAULT_CHUNK_BYTES,
  DEFAULT_ASSEMBLY_LIMITS,
  type AssemblyLimits,
} from './chunking.js';

export const PROTOCOL_VERSION = 1;

/**
 * What an update says about the client's mask. On the wire it is
 * UpdateHeader.mask_changed plus new_mask_version (0 when unchanged).
 */
export type MaskChange = { readonly kind: 'unchanged' } | { readonly kind: 'changed'; readonly version: number };

/**
 * Per-message limit set explicitly on both sides. Tensors travel in pieces of
 * DEFAULT_CHUNK_BYTES, so this only bounds one piece plus headers.
 */
export const DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024;

/** grpc-js channel/server options with explicit send and receive limits. */
export function messageLimitOptions(maxMessageBytes: number = DEFAULT_MAX_MESSAGE_BYTES): grpc.ChannelOptions {
  return {
    'grpc.max_send_message_length': maxMessageBytes,
    'grpc.max_receive_message_length': maxMessageBytes,
  };
}

/** 'up' = client to server, 'down' = server to client. */
export type WireDirection = 'up' | 'down';

/**
 * Called once per message serialized or deserialized through the definition.
 * clientId is the message's own clientId (requests after Join, update headers,
 * the Join response), else the id given with attributeTo(), else undefined
 * (e.g. an upload's tensor pieces: the handler knows the client from the
 * stream's header and can read wireSize(piece)).
 */
export type WireCounter = (direction: WireDirection, clientId: string | undefined, bytes: number) => void;

const attributed = new WeakMap<object, string>();
const sizes = new WeakMap<object, number>();

/** Attributes an outgoing message that has no clientId of its own (e.g. a TaskChunk) to a client. */
export function attributeTo<T extends object>(message: T, clientId: string): T {
  attributed.set(message, clientId);
  return message;
}

/**
 * Encoded size of a message that went through the definition (either way), if
 * known. For a received TaskChunk/UpdateChunk, its header or piece answers too.
 */
export function wireSize(message: object): number | undefined {
  return sizes.get(message);
}

function clientIdOf(message: object): string | undefined {
  const own = (message as { clientId?: unknown }).clientId;
  if (typeof own === 'string' && own !== '') return own;
  const headerId = (message as { header?: { clientId?: unknown } | null }).header?.clientId;
  if (typeof headerId === 'string' && headerId !== '') return headerId;
  return attributed.get(message);
}

/** One method; deserializers never throw. */
export interface CoordinatorMethod<Req, Res> {
  readonly path: string;
  readonly originalName: string;
  readonly requestStream: boolean;
  readonly responseStream: boolean;
  // Function-typed properties, not methods: grpc-js calls them detached from this object.
  readonly requestSerialize: (value: Req) => Buffer;
  readonly requestDeserialize: (bytes: Buffer) => Req | Malformed;
  readonly responseSerialize: (value: Res) => Buffer;
  readonly responseDeserialize: (bytes: Buffer) => Res | Malformed;
}

// A type alias, not an interface, so that it is assignable to grpc.ServiceDefinition's index signature.
export type CoordinatorDefinition = {
  readonly join: CoordinatorMethod<M.JoinRequest, M.JoinResponse>;
  readonly pullTask: CoordinatorMethod<M.TaskRequest, M.TaskChunk>;
  readonly pushUpdate: CoordinatorMethod<M.UpdateChunk, M.UpdateAck>;
  readonly heartbeat: CoordinatorMethod<M.HeartbeatRequest, M.HeartbeatResponse>;
  readonly leave: CoordinatorMethod<M.LeaveRequest, M.LeaveResponse>;
};

/** What the server implements; every request may be Malformed. */
export interface CoordinatorHandlers extends grpc.UntypedServiceImplementation {
  join: grpc.handleUnaryCall<M.JoinRequest | Malformed, M.JoinResponse>;
  pullTask: grpc.handleServerStreamingCall<M.TaskRequest | Malformed, M.TaskChunk>;
  pushUpdate: grpc.handleClientStreamingCall<M.UpdateChunk | Malformed, M.UpdateAck>;
  heartbeat: grpc.handleUnaryCall<M.HeartbeatRequest | Malformed, M.HeartbeatResponse>;
  leave: grpc.handleUnaryCall<M.LeaveRequest | Malformed, M.LeaveResponse>;
}

export const SERVICE_NAME = 'subfed.v1.Coordinator';

function counted<T extends object>(codec: MessageCodec<T>, direction: WireDirection, counter: WireCounter | undefined) {
  return {
    serialize: (value: T): Buffer => {
      const bytes = codec.encode(value);
      sizes.set(value, bytes.length);
      counter?.(direction, clientIdOf(value), bytes.length);
      return bytes;
    },
    deserialize: (bytes: Buffer): T | Malformed => {
      const value = codec.decode(bytes);
      sizes.set(value, bytes.length);
      // A chunk's oneof member carries the whole chunk's size, so wireSize(chunk.piece) works too.
      const member = (value as { piece?: unknown; header?: unknown }).piece ?? (value as { header?: unknown }).header;
      if (typeof member === 'object' && member !== null) sizes.set(member, bytes.length);
      counter?.(direction, clientIdOf(value), bytes.length);
      return value;
    },
  };
}

function method<Req extends object, Res extends object>(
  name: string,
  request: MessageCodec<Req>,
  response: MessageCodec<Res>,
  requestStream: boolean,
  responseStream: boolean,
  counter: WireCounter | undefined,
): CoordinatorMethod<Req, Res> {
  const up = counted(request, 'up', counter);
  const down = counted(response, 'down', counter);
  return {
    path: `/${SERVICE_NAME}/${name}`,
    originalName: name,
    requestStream,
    responseStream,
    requestSerialize: up.serialize,
    requestDeserialize: up.deserialize,
    responseSerialize: down.serialize,
    responseDeserialize: down.deserialize,
  };
}

/**
 * The service definition for `server.addService(def, handlers)` or for a
 * client's makeUnaryRequest & co. Attach a counter to count wire bytes.
 */
export function createCoordinatorDefinition(counter?: WireCounter): CoordinatorDefinition {
  return {
    join: method('Join', codecs.JoinRequest, codecs.JoinResponse, false, false, counter),
    pullTask: method('PullTask', codecs.TaskRequest, codecs.TaskChunk, false, true, counter),
    pushUpdate: method('PushUpdate', codecs.UpdateChunk, codecs.UpdateAck, true, false, counter),
    heartbeat: method('Heartbeat', codecs.HeartbeatRequest, codecs.HeartbeatResponse, false, false, counter),
    leave: method('Leave', codecs.LeaveRequest, codecs.LeaveResponse, false, false, counter),
  };
}
