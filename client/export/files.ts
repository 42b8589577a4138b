/**
 * Export folders on disk: `model.json` + `weights.bin` (the tfjs LayersModel
 * format), or `model.sparse` (the sparse container). Reading accepts either,
 * given the folder or the file.
 */
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type * as tf from '@tensorflow/tfjs-core';
import {
  ExportFormatError,
  MODEL_JSON,
  WEIGHTS_FILE,
  modelJson,
  portableFromArtifacts,
  toLayersArtifacts,
  type ExportMetadata,
} from './layers-format.js';
import type { PortableModel } from './portable.js';
import type { Quantization } from './quantize.js';
import { SPARSE_FILE, decodeSparseModel, encodeSparseModel } from './sparse.js';

export const EXPORT_FORMATS = ['layers', 'sparse'] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];

export interface WrittenExport {
  readonly dir: string;
  readonly format: ExportFormat;
  readonly quantization: Quantization;
  /** The files written, with their sizes. */
  readonly files: readonly { readonly name: string; readonly bytes: number }[];
  /** Their total size. */
  readonly bytes: number;
  readonly metadata: ExportMetadata;
}

export interface ExportOptions {
  readonly format: ExportFormat;
  readonly quantization: Quantization;
  /** Where the model came from, in words (stored in the metadata). */
  readonly origin: string;
}

/** The files of an export, in memory (exactly what writeExport writes). */
export function encodeExport(
  portable: PortableModel,
  options: ExportOptions,
): { files: { name: string; content: Uint8Array }[]; metadata: ExportMetadata } {
  const layers = toLayersArtifacts(portable, options.format === 'sparse' ? 'f32' : options.quantization, options.origin);
  const files =
    options.format === 'sparse'
      ? [{ name: SPARSE_FILE, content: encodeSparseModel(layers, options.quantization) as Uint8Array }]
      : [
          {
            name: MODEL_JSON,
            content: Buffer.from(`${JSON.stringify(modelJson(layers, WEIGHTS_FILE))}\n`, 'utf8') as Uint8Array,
          },
          { name: WEIGHTS_FILE, content: layers.weightData },
        ];
  return { files, metadata: { ...layers.metadata, quantization: options.quantization } };
}

/** Total bytes of an export's files. */
export function exportBytes(files: readonly { content: Uint8Array }[]): number {
  return files.reduce((n, f) => n + f.content.length, 0);
}

/**
 * Writes `portable` into `dir` (created if needed). A folder holds one format: the
 * other format's files, if a previous export left them, are removed.
 */
export async function writeExport(dir: string, portable: PortableModel, options: ExportOptions): Promise<WrittenExport> {
  await mkdir(dir, { recursive: true });
  const { files, metadata } = encodeExport(portable, options);
  const stale = options.format === 'sparse' ? [MODEL_JSON, WEIGHTS_FILE] : [SPARSE_FILE];
  await Promise.all(stale.map((name) => rm(join(dir, name), { force: true })));
  for (const f of files) await writeFile(join(dir, f.name), f.content);
  const sizes = files.map((f) => ({ name: f.name, bytes: f.content.length }));
  return {
    dir,
    format: options.format,
    quantization: options.quantization,
    files: sizes,
    bytes: exportBytes(files),
    metadata,
  };
}

/**
 * An export decoded back from its files in memory, as a reader of them gets it
 * (quantized values dequantized by tfjs's decodeWeights).
 */
export function decodeExport(files: readonly { name: string; content: Uint8Array }[], where: string): PortableModel {
  const sparse = files.find((f) => f.name === SPARSE_FILE);
  if (sparse !== undefined) return portableFromArtifacts(decodeSparseModel(sparse.content, where), where).portable;
  const json = files.find((f) => f.name === MODEL_JSON);
  const weights = files.find((f) => f.name === WEIGHTS_FILE);
  if (json === undefined || weights === undefined) throw new Error(`${where}: no ${MODEL_JSON} and ${WEIGHTS_FILE}`);
  const model = JSON.parse(Buffer.from(json.content).toString('utf8')) as {
    modelTopology: unknown;
    weightsManifest: { weights: tf.io.WeightsManifestEntry[] }[];
    userDefinedMetadata: unknown;
  };
  const data = weights.content;
  return portableFromArtifacts(
    {
      modelTopology: model.modelTopology,
      weightSpecs: model.weightsManifest.flatMap((g) => g.weights),
      weightData: data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) as ArrayBuffer,
      userDefinedMetadata: model.userDefinedMetadata,
    },
    where,
  ).portable;
}

export interface ReadExport {
  readonly portable: PortableModel;
  readonly metadata: ExportMetadata;
  readonly format: ExportFormat;
  /** Bytes of the files read. */
  readonly bytes: number;
  /** What tf.loadLayersModel(tf.io.fromMemory(...)) takes: dense float32 for the sparse container. */
  readonly artifacts: tf.io.ModelArtifacts;
}

/** The export in `path`: a folder holding model.json or model.sparse, or one of those files. */
export async function readExport(path: string): Promise<ReadExport> {
  let file = path;
  if ((await statOrUndefined(path))?.isDirectory()) {
    const candidates = [join(path, MODEL_JSON), join(path, SPARSE_FILE)];
    const found = [];
    for (const c of candidates) if ((await statOrUndefined(c))?.isFile()) found.push(c);
    if (found.length === 0) throw new ExportFormatError(`'${path}' holds no ${MODEL_JSON} nor ${SPARSE_FILE}`);
    if (found.length > 1) throw new ExportFormatError(`'${path}' holds both ${MODEL_JSON} and ${SPARSE_FILE}; name the file`);
    file = found[0];
  } else if ((await statOrUndefined(path)) === undefined) {
    throw new ExportFormatError(`'${path}' does not exist`);
  }
  const bytes = await readFile(file);
  if (basename(file) === SPARSE_FILE || bytes.subarray(0, 8).toString('latin1') === 'SUBFEDSM') {
    const artifacts = decodeSparseModel(bytes, file);
    const read = portableFromArtifacts(artifacts, file);
    return { ...read, format: 'sparse', bytes: bytes.length, artifacts: artifacts };
  }
  return readLayersModel(file, bytes);
}

async function readLayersModel(file: string, bytes: Buffer): Promise<ReadExport> {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new ExportFormatError(`${file}: not valid JSON (${(err as Error).message})`);
  }
  const model = json as { modelTopology?: unknown; weightsManifest?: unknown; userDefinedMetadata?: unknown };
  const groups = model.weightsManifest;
  if (!Array.isArray(groups)) throw new ExportFormatError(`${file}: weightsManifest must be a list of groups`);
  const weightSpecs: tf.io.WeightsManifestEntry[] = [];
  const pieces: Buffer[] = [];
  let total = bytes.length;
  for (const [g, group] of (groups as { paths?: unknown; weights?: unknown }[]).entries()) {
    if (!Array.isArray(group?.paths) || !Array.isArray(group.weights)) {
      throw new ExportFormatError(`${file}: weightsManifest[${g}] needs paths and weights lists`);
    }
    for (const p of group.paths as unknown[]) {
      if (typeof p !== 'string' || p.includes('/') || p.includes('\\') || p.startsWith('.')) {
        throw new ExportFormatError(
          `${file}: weightsManifest[${g}].paths: ${JSON.stringify(p)} is not a file name beside model.json`,
        );
      }
      const weightsFile = join(dirname(file), p);
      let data: Buffer;
      try {
        data = await readFile(weightsFile);
      } catch (err) {
        throw new ExportFormatError(`${weightsFile}: cannot be read (${(err as Error).message})`);
      }
      pieces.push(data);
      total += data.length;
    }
    weightSpecs.push(...(group.weights as tf.io.WeightsManifestEntry[]));
  }
  const joined = Buffer.concat(pieces);
  const weightData = joined.buffer.slice(joined.byteOffset, joined.byteOffset + joined.byteLength);
  const artifacts = {
    modelTopology: model.modelTopology as object,
    weightSpecs,
    weightData,
    userDefinedMetadata: model.userDefinedMetadata as { [key: string]: object },
    format: 'layers-model',
  };
  const read = portableFromArtifacts(artifacts, file);
  return { ...read, format: 'layers', bytes: total, artifacts };
}

async function statOrUndefined(path: string): Promise<Awaited<ReturnType<typeof stat>> | undefined> {
  try {
    return await stat(path);
  } catch {
    return undefined;
  }
}
