/**
 * `subfed export`: a client's personalized model from its state folder, made
 * really smaller (compact: pruned channels and neurons removed), optionally
 * fine-tuned on the client's own training data, written as a tfjs LayersModel
 * (f32, f16 or int8 weights) or the sparse container. With the client's data,
 * every variant's accuracy on its test split is measured from the bytes a
 * reader would get, next to the masked model's.
 */
import { createAlgorithm, describeAlgorithm, isAlgorithmName } from '../algorithms/registry.js';
import type { HeldModel } from '../algorithms/types.js';
import type { Dataset } from '../data/dataset.js';
import { createModel, zooArchitecture, type Architecture, type Model } from '../model.js';
import { isModelName, type ModelName } from '../model-names.js';
import { assertStateMatches, loadState, stateFilePath, StateFileError, type ClientState } from '../state.js';
import { evaluate, trainLocal } from '../train.js';
import { compactModel, type LayerReduction } from './compact.js';
import { decodeExport, encodeExport, exportBytes, writeExport, type ExportFormat, type WrittenExport } from './files.js';
import { fitDataToModel, type DataToFit, type ModelInput } from '../data/fit.js';
import {
  inputEncodingOf,
  instantiate,
  keptParameterTotal,
  parameterTotal,
  withInputEncoding,
  type InputEncoding,
  type PortableModel,
} from './portable.js';
import type { Quantization } from './quantize.js';

/** A client's data as the model takes it (see withInputEncoding). */
export interface ExportData {
  readonly train: Dataset;
  readonly test: Dataset;
}

/** The default input when neither the state nor the data says: what `subfed client` feeds image data. */
const DEFAULT_IMAGE_INPUT = (channels: number): InputEncoding => ({
  kind: 'images',
  mean: new Array<number>(channels).fill(0.5),
  std: new Array<number>(channels).fill(0.5),
});

/**
 * A client state and the model it holds, loaded from a state folder; errors name
 * the file. `data` (the client's data folder, read) supplies the input standardisation
 * when the state does not record it, and comes back fitted to the model and
 * standardised as the model expects.
 */
export async function loadClientModel(
  stateDir: string,
  data: DataToFit | undefined,
): Promise<{ state: ClientState; portable: PortableModel; data: ExportData | undefined }> {
  const file = stateFilePath(stateDir);
  const state = await loadState(stateDir);
  if (state === undefined) throw new StateFileError(file, 'does not exist (is this a client state folder?)');
  if (!isModelName(state.model)) throw new StateFileError(file, `holds model '${state.model}', which is not a zoo model`);
  const family: ModelName = state.model;
  const probe = createModel(family, 0);
  let personalized: HeldModel;
  try {
    assertStateMatches(state, { manifest: probe.manifest }, file);
    personalized = personalizedModelOf(state, probe, file);
  } finally {
    probe.dispose();
  }
  const architecture = zooArchitecture(family);
  const fitted = data === undefined ? undefined : fitDataToModel(data, modelInputOf(family, architecture));
  // What the client trained with: recorded in the state; older states do not say, then the data's, else subfed client's image default.
  const input = state.input ?? (fitted ? inputEncodingOf(fitted.train) : DEFAULT_IMAGE_INPUT(architecture.inputShape[2]));
  const portable: PortableModel = {
    family,
    architecture,
    weights: personalized.weights,
    personal: personalized.personal,
    masks: state.masks,
    input,
  };
  return { state, portable, data: fitted && standardised(fitted, input, data!.layout.folder) };
}

/**
 * The model a state's personalized accuracy is measured on: the one it holds, or the
 * algorithm's own (Ditto keeps its personal model in the algorithm's state).
 */
function personalizedModelOf(state: ClientState, model: Model, file: string): HeldModel {
  if (!isAlgorithmName(state.algorithm))
    throw new StateFileError(file, `was written by algorithm '${state.algorithm}', which subfed does not know`);
  const algorithm = createAlgorithm(state.algorithm);
  try {
    algorithm.restoreState(state.algorithmState, model);
  } catch (e) {
    throw new StateFileError(file, `holds ${state.algorithm} state that does not fit: ${(e as Error).message}`);
  }
  return algorithm.personalizedModel({ weights: state.weights, personal: state.personal });
}

/** What a data folder must match of a model (client/data/fit.ts). */
export function modelInputOf(name: string, architecture: Architecture): ModelInput {
  const last = architecture.layers[architecture.layers.length - 1];
  return { name, inputShape: architecture.inputShape, numClasses: last.kind === 'dense' ? last.outputs : last.outC };
}

/** Train and test standardised as `input` says; an error naming the folder when the kinds differ. */
export function standardised(data: ExportData, input: InputEncoding, folder: string): ExportData {
  return { train: withInputEncoding(data.train, input, `'${folder}'`), test: withInputEncoding(data.test, input, `'${folder}'`) };
}

/** Training hyperparameters for extra epochs on the client: its algorithm's own (batch, lr, momentum). */
export function clientTraining(algorithm: string): { batchSize: number; lr: number; momentum: number } {
  const training = isAlgorithmName(algorithm)
    ? describeAlgorithm(algorithm).parseConfig({})
    : { batchSize: 10, lr: 0.01, momentum: 0.5 };
  return { batchSize: training.batchSize, lr: training.lr, momentum: training.momentum };
}

/** Accuracy of a model on a dataset (our engine, inference mode). */
export function accuracyOf(portable: PortableModel, data: Dataset): number {
  const model = instantiate(portable);
  try {
    return evaluate(model, data).accuracy;
  } finally {
    model.dispose();
  }
}

export interface FineTuneOptions {
  readonly epochs: number;
  readonly batchSize: number;
  readonly lr: number;
  readonly momentum: number;
  readonly seed: number;
}

/**
 * `portable` trained further on `train`; pruned entries (masks) stay zero, so a
 * compact model stays compact and sparse.
 */
export async function fineTune(portable: PortableModel, train: Dataset, options: FineTuneOptions): Promise<PortableModel> {
  const model = instantiate(portable);
  try {
    await trainLocal(model, train, { ...options, gradMasks: portable.masks });
    return { ...portable, weights: model.getWeights(), personal: model.getPersonal() };
  } finally {
    model.dispose();
  }
}

/** One way to store the model, measured. */
export interface VariantReport {
  readonly name: string;
  readonly format: ExportFormat;
  readonly quantization: Quantization;
  readonly compact: boolean;
  readonly bytes: number;
  /** Accuracy on the client's test split, from the decoded files; undefined without data. */
  readonly accuracy: number | undefined;
}

export interface ExportReport {
  readonly model: ModelName;
  readonly algorithm: string;
  readonly round: number;
  readonly layers: readonly LayerReduction[];
  readonly parameters: { readonly masked: number; readonly kept: number; readonly compact: number; readonly compactKept: number };
  /** The masked model (full shape, zeros kept) and every compact variant, after fine-tuning if asked. */
  readonly variants: readonly VariantReport[];
  readonly fineTune: { readonly epochs: number; readonly before: number; readonly after: number } | undefined;
  readonly written: WrittenExport;
}

export interface ExportCommandOptions {
  readonly stateDir: string;
  readonly out: string;
  readonly format: ExportFormat;
  readonly quantization: Quantization;
  /** The client's data folder, read, for accuracies and fine-tuning. */
  readonly data: DataToFit | undefined;
  /** Epochs of fine-tuning the compact model before it is written (0: none). */
  readonly fineTuneEpochs: number;
  readonly seed: number;
}

const VARIANTS: readonly { format: ExportFormat; quantization: Quantization }[] = [
  { format: 'layers', quantization: 'f32' },
  { format: 'layers', quantization: 'f16' },
  { format: 'layers', quantization: 'int8' },
  { format: 'sparse', quantization: 'f32' },
];

const variantName = (format: ExportFormat, quantization: Quantization): string =>
  format === 'sparse' ? `sparse ${quantization}` : `compact ${quantization}`;

export async function runExport(options: ExportCommandOptions): Promise<ExportReport> {
  const { state, portable: masked, data } = await loadClientModel(options.stateDir, options.data);
  const { model: compact, layers } = compactModel(masked);
  let final = compact;
  let fineTuneReport: ExportReport['fineTune'];
  if (options.fineTuneEpochs > 0) {
    if (data === undefined) throw new Error('fine-tuning needs the client data (--data)');
    const before = accuracyOf(compact, data.test);
    final = await fineTune(compact, data.train, {
      epochs: options.fineTuneEpochs,
      seed: options.seed,
      ...clientTraining(state.algorithm),
    });
    fineTuneReport = { epochs: options.fineTuneEpochs, before, after: accuracyOf(final, data.test) };
  }
  const origin =
    `${state.algorithm} client ${state.identity?.clientId ?? '(local)'} after round ${state.round}, compact` +
    (options.fineTuneEpochs > 0 ? `, fine-tuned ${options.fineTuneEpochs} epoch(s)` : '');
  const measure = (
    portable: PortableModel,
    format: ExportFormat,
    quantization: Quantization,
    compactFlag: boolean,
  ): VariantReport => {
    const { files } = encodeExport(portable, { format, quantization, origin });
    const accuracy =
      data === undefined ? undefined : accuracyOf(decodeExport(files, variantName(format, quantization)), data.test);
    return {
      name: compactFlag ? variantName(format, quantization) : `masked ${quantization}`,
      format,
      quantization,
      compact: compactFlag,
      bytes: exportBytes(files),
      accuracy,
    };
  };
  const variants = [
    measure(masked, 'layers', 'f32', false),
    ...VARIANTS.map((v) => measure(final, v.format, v.quantization, true)),
  ];
  const written = await writeExport(options.out, final, { format: options.format, quantization: options.quantization, origin });
  return {
    model: masked.family,
    algorithm: state.algorithm,
    round: state.round,
    layers,
    parameters: {
      masked: parameterTotal(masked),
      kept: keptParameterTotal(masked),
      compact: parameterTotal(final),
      compactKept: keptParameterTotal(final),
    },
    variants,
    fineTune: fineTuneReport,
    written,
  };
}

const pct = (v: number | undefined): string => (v === undefined ? '-' : `${(100 * v).toFixed(2)}%`);
const int = (n: number): string => n.toLocaleString('en-US');

/** The report as lines for the terminal. */
export function formatExportReport(r: ExportReport): string {
  const lines: string[] = [];
  lines.push(`${r.model}, ${r.algorithm} client state after round ${r.round}`);
  lines.push(`layers: ${r.layers.map((l) => `${l.name} ${l.before}${l.after !== l.before ? ` -> ${l.after}` : ''}`).join(', ')}`);
  lines.push(
    `parameters: ${int(r.parameters.masked)} (${int(r.parameters.kept)} kept by the mask) -> compact ${int(r.parameters.compact)} (${int(r.parameters.compactKept)} non-zero)`,
  );
  if (r.fineTune !== undefined) {
    lines.push(
      `fine-tuned ${r.fineTune.epochs} epoch(s) on the client's training data: accuracy ${pct(r.fineTune.before)} -> ${pct(r.fineTune.after)}`,
    );
  }
  const reference = r.variants.find((v) => v.compact && v.format === 'layers' && v.quantization === 'f32');
  const measured = r.variants.some((v) => v.accuracy !== undefined);
  const points = (v: VariantReport): string =>
    v.accuracy !== undefined && reference?.accuracy !== undefined && v !== reference && v.compact
      ? `${v.accuracy >= reference.accuracy ? '+' : ''}${((v.accuracy - reference.accuracy) * 100).toFixed(2)}`
      : '';
  const rows = r.variants.map((v) => [v.name, int(v.bytes), ...(measured ? [pct(v.accuracy), points(v)] : [])]);
  const header = ['variant', 'bytes', ...(measured ? ['test accuracy', 'vs compact f32 (points)'] : [])];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])))
      .join('  ')
      .trimEnd();
  if (r.fineTune !== undefined) {
    lines.push('the compact and sparse variants are the fine-tuned model; the masked model is the client state as it was');
  }
  if (!measured) lines.push("(no accuracies: give the client's data folder, --data)");
  lines.push('', line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line), '');
  lines.push(`wrote ${r.written.files.map((f) => `${f.name} (${int(f.bytes)} bytes)`).join(', ')} to ${r.written.dir}`);
  return lines.join('\n');
}
