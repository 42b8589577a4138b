/**
 * The sparse container: a model whose weight tensors keep their shape but are
 * mostly zeros (Sub-FedAvg (Un)) stored as mask + kept values, with the wire
 * codec (proto/codec.ts: the smallest of bitmap, index-delta, channel or full
 * mask encodings; f32, f16 or int8 values) and the wire's SparseTensor message.
 *
 * File layout (`model.sparse`, little-endian), like the client state file:
 *   8 bytes  magic "SUBFEDSM"
 *   4 bytes  u32 header length H
 *   H bytes  UTF-8 JSON header: format version, the Keras topology, the subfed
 *            metadata, and per tensor its tfjs name, shape and byte length
 *   payload  one serialized SparseTensor per tensor, back to back, in header order
 *
 * The loader rebuilds LayersModel artifacts in memory (dense float32 weights):
 * `tf.loadLayersModel(sparseModelHandler(bytes))` gives the model, and subfed's
 * own engine reads the same artifacts.
 */
import type * as tf from '@tensorflow/tfjs-core';
import { z } from 'zod';
import { CodecError, decodeSparseTensor, encodeSparseTensor } from '../../proto/codec.js';
import { Mask } from '../../proto/mask.js';
import { codecs, isMalformed } from '../../proto/schema.js';
import { decodeFramed, encodeFramed } from '../framed-file.js';
import { ExportFormatError, parseMetadata, type LayersArtifacts, type WeightSpec } from './layers-format.js';
import type { Quantization } from './quantize.js';

export const SPARSE_FILE = 'model.sparse';
const MAGIC = Buffer.from('SUBFEDSM', 'ascii');
const SPARSE_FORMAT_VERSION = 1;

const headerSchema = z.object({
  formatVersion: z.number().int(),
  modelTopology: z.record(z.string(), z.unknown()),
  userDefinedMetadata: z.record(z.string(), z.unknown()),
  tensors: z.array(
    z.object({
      name: z.string().min(1),
      shape: z.array(z.number().int().nonnegative()),
      bytes: z.number().int().nonnegative(),
    }),
  ),
});

const SPARSE_FILE_KIND = {
  magic: MAGIC,
  what: 'a subfed sparse model',
  schema: headerSchema,
  version: SPARSE_FORMAT_VERSION,
} as const;

/** What a LayersModel loader takes (tf.io.ModelArtifacts, with the fields we fill). */
export interface DenseArtifacts {
  readonly modelTopology: object;
  readonly weightSpecs: WeightSpec[];
  readonly weightData: ArrayBuffer;
  readonly userDefinedMetadata: { [key: string]: object };
  readonly format: 'layers-model';
}

/**
 * The container of a model's artifacts (written as float32 by toLayersArtifacts):
 * every tensor as its non-zero entries, values in `values` for kernels and weight
 * matrices (vectors stay f32, as in the dense formats).
 */
export function encodeSparseModel(artifacts: LayersArtifacts, values: Quantization): Buffer {
  if (artifacts.weightSpecs.some((s) => s.quantization !== undefined)) {
    throw new Error('encodeSparseModel: expects float32 artifacts (the container quantizes values itself)');
  }
  const view = new DataView(artifacts.weightData.buffer, artifacts.weightData.byteOffset, artifacts.weightData.byteLength);
  let at = 0;
  const tensors: z.infer<typeof headerSchema>['tensors'] = [];
  const pieces: Buffer[] = [];
  for (const spec of artifacts.weightSpecs) {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const dense = new Float32Array(n);
    for (let i = 0; i < n; i++) dense[i] = view.getFloat32(at + 4 * i, true);
    at += 4 * n;
    const mask = Mask.build(n, (bits) => dense.forEach((v, i) => (bits[i] = v !== 0 ? 1 : 0)));
    const message = encodeSparseTensor(spec.name, { mask, kept: mask.gather(dense) }, spec.shape, {
      values: spec.shape.length >= 2 ? values : 'f32',
    });
    const bytes = codecs.SparseTensor.encode(message);
    tensors.push({ name: spec.name, shape: spec.shape, bytes: bytes.length });
    pieces.push(bytes);
  }
  const metadata = { ...artifacts.metadata, quantization: values };
  return encodeFramed(
    MAGIC,
    {
      formatVersion: SPARSE_FORMAT_VERSION,
      modelTopology: artifacts.modelTopology,
      userDefinedMetadata: { subfed: metadata },
      tensors,
    },
    pieces,
  );
}

/** Decodes a container into dense float32 LayersModel artifacts; `file` names it in errors. */
export function decodeSparseModel(bytes: Uint8Array, file: string): DenseArtifacts {
  const fail = (reason: string): never => {
    throw new ExportFormatError(`${file}: ${reason}`);
  };
  const { header, payload } = decodeFramed(bytes, SPARSE_FILE_KIND, fail);
  parseMetadata(header.userDefinedMetadata, file);
  const total = header.tensors.reduce((n, t) => n + t.bytes, 0);
  if (total !== payload.length) fail(`payload is ${payload.length} bytes, the header lists ${total} (truncated or padded file)`);
  const denseBytes = header.tensors.reduce((n, t) => n + 4 * t.shape.reduce((a, b) => a * b, 1), 0);
  const weightData = new ArrayBuffer(denseBytes);
  const out = new Float32Array(weightData);
  const weightSpecs: WeightSpec[] = [];
  let at = 0;
  let offset = 0;
  for (const t of header.tensors) {
    const message = codecs.SparseTensor.decode(payload.subarray(at, at + t.bytes));
    at += t.bytes;
    if (isMalformed(message)) fail(`tensor '${t.name}': ${message.error}`);
    const sparse = message as Exclude<typeof message, { malformed: true }>;
    if (sparse.name !== t.name) fail(`tensor '${t.name}': the payload holds '${sparse.name}' in its place`);
    try {
      const { mask, kept } = decodeSparseTensor(sparse, t.shape);
      mask.scatter(kept, out.subarray(offset, offset + mask.length));
      offset += mask.length;
    } catch (err) {
      if (err instanceof CodecError) fail(err.message);
      throw err;
    }
    weightSpecs.push({ name: t.name, shape: t.shape, dtype: 'float32' });
  }
  return {
    modelTopology: header.modelTopology,
    weightSpecs,
    weightData,
    userDefinedMetadata: { subfed: (header.userDefinedMetadata as { subfed: object }).subfed },
    format: 'layers-model',
  };
}

/**
 * An IOHandler for tf.loadLayersModel that reads a sparse container from memory:
 * `await tf.loadLayersModel(sparseModelHandler(bytes))`.
 */
export function sparseModelHandler(bytes: Uint8Array, file = SPARSE_FILE): tf.io.IOHandler {
  return { load: () => Promise.resolve(decodeSparseModel(bytes, file) as tf.io.ModelArtifacts) };
}
