// TypeScript shapes of the subfed.v1 messages (proto/subfed.proto), field names
// in camelCase as protobufjs maps them. Decoded messages carry every scalar with
// its proto3 default; an absent sub-message decodes as null.
// Keep in sync with subfed.proto: test/proto/schema.test.ts checks that every
// field listed here exists in the loaded schema and vice versa.

export const MaskEncoding = {
  UNSPECIFIED: 0,
  FULL: 1,
  UNCHANGED: 2,
  DIFF: 3,
  BITMAP: 4,
  INDEX_DELTA: 5,
  CHANNEL: 6,
  PERSONAL: 7,
} as const;
export type MaskEncoding = (typeof MaskEncoding)[keyof typeof MaskEncoding];

export const ValueEncoding = {
  UNSPECIFIED: 0,
  F32: 1,
  F16: 2,
  INT8: 3,
} as const;
export type ValueEncoding = (typeof ValueEncoding)[keyof typeof ValueEncoding];

/** The value encodings by the name used in configs and CLI flags. */
export type ValueEncodingName = 'f32' | 'f16' | 'int8';
export const VALUE_ENCODING_BY_NAME: Readonly<Record<ValueEncodingName, ValueEncoding>> = {
  f32: ValueEncoding.F32,
  f16: ValueEncoding.F16,
  int8: ValueEncoding.INT8,
};
/** The names, as a list for validators and help texts. */
export const VALUE_ENCODING_NAMES = ['f32', 'f16', 'int8'] as const satisfies readonly ValueEncodingName[];

export interface TensorSpec {
  name: string;
  shape: number[];
  prunable: boolean;
}

export interface MaskPart {
  encoding: MaskEncoding;
  data: Uint8Array;
}

export interface ValuePart {
  encoding: ValueEncoding;
  data: Uint8Array;
  /** INT8 only; 0 otherwise. */
  scale: number;
}

export interface SparseTensor {
  name: string;
  mask: MaskPart | null;
  values: ValuePart | null;
}

export interface TensorPiece {
  name: string;
  index: number;
  total: number;
  data: Uint8Array;
}

/** Fields every request carries after Join. */
export interface Credentials {
  protocolVersion: number;
  clientId: string;
  clientToken: string;
}

export interface JoinRequest {
  protocolVersion: number;
  enrollmentToken: string;
  clientName: string;
  numExamples: number;
}

export interface JoinResponse {
  protocolVersion: number;
  clientId: string;
  clientToken: string;
  manifest: TensorSpec[];
  configJson: string;
}

export interface TaskRequest extends Credentials {
  maskVersion: number;
  valueEncoding: ValueEncoding;
}

export interface TaskHeader {
  protocolVersion: number;
  hasTask: boolean;
  retryAfterMs: number;
  roundId: number;
  configJson: string;
  dense: boolean;
  maskVersion: number;
  tensorCount: number;
  /** Every configured round is committed: no task will come again (hasTask is false). */
  finished: boolean;
}

/**
 * One message of the task stream. `kind` is the proto's oneof: protobufjs
 * encodes by the field present and ignores `kind`, and the decoder
 * (proto/schema.ts) sets it and refuses a chunk that holds neither field.
 */
export type TaskChunk = { kind: 'header'; header: TaskHeader } | { kind: 'piece'; piece: TensorPiece };

export interface UpdateMetrics {
  loss: number;
  localAccuracy: number;
  sparsity: number;
  receivedAccuracy: number;
  /** Channels kept per BatchNorm layer (channel pruning); empty otherwise. */
  channelsKept: number[];
}

export interface UpdateHeader extends Credentials {
  roundId: number;
  numExamples: number;
  baseMaskVersion: number;
  maskChanged: boolean;
  newMaskVersion: number;
  metrics: UpdateMetrics | null;
  tensorCount: number;
}

/** One message of the update stream; `kind` as in TaskChunk. */
export type UpdateChunk = { kind: 'header'; header: UpdateHeader } | { kind: 'piece'; piece: TensorPiece };

export interface UpdateAck {
  accepted: boolean;
  message: string;
  maskVersion: number;
}

export type HeartbeatRequest = Credentials;

export interface HeartbeatResponse {
  currentRound: number;
  taskAvailable: boolean;
  /** Every configured round is committed. */
  finished: boolean;
}

export interface LeaveRequest extends Credentials {
  reason: string;
}

// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface LeaveResponse {}
