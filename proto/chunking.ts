// Chunking: a serialized SparseTensor travels as TensorPiece messages of at most
// chunkBytes of data each, so no single gRPC message grows with the model.
import { status } from '@grpc/grpc-js';
import type { SparseTensor, TensorPiece } from './messages.js';
import { codecs, isMalformed } from './schema.js';

export const DEFAULT_CHUNK_BYTES = 1024 * 1024;

/** A wire-level failure carrying the gRPC status it should be reported as. */
export class WireError extends Error {
  constructor(
    readonly code: status,
    message: string,
  ) {
    super(message);
    this.name = 'WireError';
  }
}

/** Serializes a tensor and slices it into pieces (views, no copy). Always at least one piece. */
export function splitTensor(tensor: SparseTensor, chunkBytes: number = DEFAULT_CHUNK_BYTES): TensorPiece[] {
  if (!Number.isInteger(chunkBytes) || chunkBytes < 1) {
    throw new RangeError(`chunkBytes must be a positive integer, got ${chunkBytes}`);
  }
  const bytes = codecs.SparseTensor.encode(tensor);
  const total = Math.max(1, Math.ceil(bytes.length / chunkBytes));
  const pieces: TensorPiece[] = [];
  for (let index = 0; index < total; index++) {
    pieces.push({ name: tensor.name, index, total, data: bytes.subarray(index * chunkBytes, (index + 1) * chunkBytes) });
  }
  return pieces;
}

export interface AssemblyLimits {
  /** Most pieces one tensor may announce. */
  readonly maxPieces: number;
  /** Most serialized bytes one tensor may have. */
  readonly maxTensorBytes: number;
  /** Most tensors one stream may carry. */
  readonly maxTensors: number;
  /** Most serialized bytes of all tensors of one stream. */
  readonly maxTotalBytes: number;
}

export const DEFAULT_ASSEMBLY_LIMITS: AssemblyLimits = {
  maxPieces: 4096,
  maxTensorBytes: 512 * 1024 * 1024,
  maxTensors: 10_000,
  maxTotalBytes: 1024 * 1024 * 1024,
};

/**
 * Reassembles the tensors of one stream. Pieces of a tensor must arrive
 * consecutively with index 0..total-1; a tensor name may occur once per stream.
 * Limit breaches throw WireError(RESOURCE_EXHAUSTED), inconsistent sequences
 * WireError(INVALID_ARGUMENT).
 */
export class TensorAssembler {
  readonly #limits: AssemblyLimits;
  readonly #seen = new Set<string>();
  #current: { name: string; total: number; next: number; parts: Uint8Array[]; bytes: number } | undefined;
  #totalBytes = 0;

  constructor(limits: Partial<AssemblyLimits> = {}) {
    this.#limits = { ...DEFAULT_ASSEMBLY_LIMITS, ...limits };
  }

  /** Number of tensors completed so far. */
  get completed(): number {
    return this.#seen.size - (this.#current === undefined ? 0 : 1);
  }

  /** Adds a piece; returns the tensor when its last piece arrived. */
  push(piece: TensorPiece): SparseTensor | undefined {
    const invalid = (why: string) => new WireError(status.INVALID_ARGUMENT, `tensor piece "${piece.name}": ${why}`);
    const exhausted = (why: string) => new WireError(status.RESOURCE_EXHAUSTED, `tensor piece "${piece.name}": ${why}`);
    const { maxPieces, maxTensorBytes, maxTensors, maxTotalBytes } = this.#limits;

    if (this.#current === undefined) {
      if (piece.index !== 0) throw invalid(`first piece has index ${piece.index}, expected 0`);
      if (piece.total < 1) throw invalid(`total must be at least 1, got ${piece.total}`);
      if (piece.total > maxPieces) throw exhausted(`${piece.total} pieces exceed the limit of ${maxPieces}`);
      if (this.#seen.has(piece.name)) throw invalid('tensor sent twice in one stream');
      if (this.#seen.size >= maxTensors) throw exhausted(`more than ${maxTensors} tensors in one stream`);
      this.#seen.add(piece.name);
      this.#current = { name: piece.name, total: piece.total, next: 0, parts: [], bytes: 0 };
    }
    const current = this.#current;
    if (piece.name !== current.name) {
      throw invalid(`arrived while "${current.name}" is incomplete (${current.next}/${current.total} pieces)`);
    }
    if (piece.total !== current.total) throw invalid(`total changed from ${current.total} to ${piece.total}`);
    if (piece.index !== current.next) throw invalid(`index ${piece.index} out of sequence, expected ${current.next}`);

    current.bytes += piece.data.length;
    this.#totalBytes += piece.data.length;
    if (current.bytes > maxTensorBytes) throw exhausted(`tensor exceeds ${maxTensorBytes} bytes`);
    if (this.#totalBytes > maxTotalBytes) throw exhausted(`stream exceeds ${maxTotalBytes} bytes of tensors`);
    current.parts.push(piece.data);
    current.next++;
    if (current.next < current.total) return undefined;

    this.#current = undefined;
    const bytes = current.parts.length === 1 ? current.parts[0] : Buffer.concat(current.parts);
    const tensor = codecs.SparseTensor.decode(bytes);
    if (isMalformed(tensor)) throw invalid(tensor.error);
    if (tensor.name !== current.name) throw invalid(`reassembled tensor is named "${tensor.name}"`);
    return tensor;
  }

  /** Call at end of stream: a tensor cut off mid-way is INVALID_ARGUMENT. */
  finish(): void {
    const current = this.#current;
    if (current !== undefined) {
      throw new WireError(
        status.INVALID_ARGUMENT,
        `tensor "${current.name}" incomplete at end of stream (${current.next}/${current.total} pieces)`,
      );
    }
  }
}
