/**
 * `subfed distill`: a smaller student trained on the client's own training
 * data with the client's personalized model as teacher (soft targets at
 * temperature T mixed with the hard labels by alpha; client/objective.ts), and
 * in the same run, on the same data, epochs, initialisation and shuffling, the
 * same student trained from scratch on the labels alone: the comparison that
 * says whether the teacher helped.
 *
 * The student is a zoo model, optionally width-scaled (every hidden width times
 * a factor), or the architecture of the client's compact export; it starts from
 * seeded initial weights either way.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DataToFit } from '../data/fit.js';
import { createModelFromArchitecture, scaleArchitecture, zooArchitecture, type Architecture } from '../model.js';
import type { ModelName } from '../model-names.js';
import { DISTILLATION_DEFAULTS } from '../objective.js';
import { fullMasks } from '../prune.js';
import { predictLogits, trainLocal } from '../train.js';
import { compactModel } from './compact.js';
import { accuracyOf, clientTraining, loadClientModel, type ExportData } from './export.js';
import { encodeExport, exportBytes, writeExport, type ExportFormat, type WrittenExport } from './files.js';
import { instantiate, parameterTotal, type PortableModel } from './portable.js';
import type { Quantization } from './quantize.js';

export { DISTILLATION_DEFAULTS };

export type StudentSpec =
  /** A zoo model with every hidden width times `width` (1: the zoo's own). */
  | { readonly kind: 'zoo'; readonly name: ModelName; readonly width: number }
  /** The architecture of the client's compact export. */
  | { readonly kind: 'compact' };

export function describeStudent(spec: StudentSpec): string {
  return spec.kind === 'compact' ? 'the compact export' : spec.width === 1 ? spec.name : `${spec.name} x${spec.width} width`;
}

export interface DistillOptions {
  readonly stateDir: string;
  readonly data: DataToFit;
  readonly student: StudentSpec;
  readonly out: string;
  readonly format: ExportFormat;
  readonly quantization: Quantization;
  readonly epochs: number;
  readonly temperature: number;
  readonly alpha: number;
  /** Student initialisation and shuffling. */
  readonly seed: number;
}

/** One model of the comparison. */
export interface DistillEntry {
  readonly model: string;
  readonly parameters: number;
  /** Its compact f32 LayersModel files. */
  readonly bytes: number;
  readonly accuracy: number;
}

export interface DistillReport {
  readonly student: string;
  readonly epochs: number;
  readonly temperature: number;
  readonly alpha: number;
  readonly trainExamples: number;
  readonly testExamples: number;
  readonly teacher: DistillEntry;
  readonly scratch: DistillEntry;
  readonly distilled: DistillEntry;
  readonly written: WrittenExport;
}

export class StudentError extends Error {
  override readonly name = 'StudentError';
}

/** The student's family and architecture; an error when it does not take the teacher's input or give its classes. */
function studentArchitecture(spec: StudentSpec, teacher: PortableModel): { family: ModelName; architecture: Architecture } {
  if (spec.kind === 'compact') return { family: teacher.family, architecture: teacher.architecture };
  const architecture = scaleArchitecture(zooArchitecture(spec.name), spec.width);
  const classes = (a: Architecture): number => {
    const last = a.layers[a.layers.length - 1];
    return last.kind === 'dense' ? last.outputs : 0;
  };
  if (
    architecture.inputShape.join('x') !== teacher.architecture.inputShape.join('x') ||
    classes(architecture) !== classes(teacher.architecture)
  ) {
    throw new StudentError(
      `student ${spec.name} takes ${architecture.inputShape.join('x')} inputs and gives ${classes(architecture)} classes; ` +
        `the teacher (${teacher.family}) takes ${teacher.architecture.inputShape.join('x')} and gives ${classes(teacher.architecture)}`,
    );
  }
  return { family: spec.name, architecture };
}

/** The teacher and the two students of one distillation run (the students trained on the same data, epochs, seed). */
export interface DistilledModels {
  readonly teacher: PortableModel;
  readonly scratch: PortableModel;
  readonly distilled: PortableModel;
  /** The client state's algorithm and round. */
  readonly algorithm: string;
  readonly round: number;
  readonly data: ExportData;
}

/** Trains the student from scratch and distilled from the client's compact model; writes nothing. */
export async function distillStudents(
  options: Omit<DistillOptions, 'out' | 'format' | 'quantization'>,
): Promise<DistilledModels> {
  const { state, portable: masked, data } = await loadClientModel(options.stateDir, options.data);
  if (data === undefined) throw new Error('distillation needs the client data');
  const teacher = compactModel(masked).model;
  const { family, architecture } = studentArchitecture(options.student, teacher);
  const training = { ...clientTraining(state.algorithm), epochs: options.epochs, seed: options.seed };

  const teacherModel = instantiate(teacher);
  let teacherLogits: Float32Array;
  try {
    teacherLogits = predictLogits(teacherModel, data.train);
  } finally {
    teacherModel.dispose();
  }

  const train = async (soft: boolean): Promise<PortableModel> => {
    const model = createModelFromArchitecture(family, architecture, options.seed);
    try {
      await trainLocal(model, data.train, {
        ...training,
        ...(soft ? { softTargets: { logits: teacherLogits, temperature: options.temperature, alpha: options.alpha } } : {}),
      });
      return {
        family,
        architecture,
        weights: model.getWeights(),
        personal: model.getPersonal(),
        masks: fullMasks(model.manifest),
        input: teacher.input,
      };
    } finally {
      model.dispose();
    }
  };
  const scratch = await train(false);
  const distilled = await train(true);
  return { teacher, scratch, distilled, algorithm: state.algorithm, round: state.round, data };
}

export async function runDistill(options: DistillOptions): Promise<DistillReport> {
  const { teacher, scratch, distilled, algorithm, round, data } = await distillStudents(options);
  const origin =
    `student ${describeStudent(options.student)} distilled from the ${algorithm} client model after round ${round} ` +
    `(T ${options.temperature}, alpha ${options.alpha}, ${options.epochs} epochs)`;
  const entry = (name: string, portable: PortableModel): DistillEntry => ({
    model: name,
    parameters: parameterTotal(portable),
    bytes: exportBytes(encodeExport(portable, { format: 'layers', quantization: 'f32', origin }).files),
    accuracy: accuracyOf(portable, data.test),
  });
  const written = await writeExport(options.out, distilled, {
    format: options.format,
    quantization: options.quantization,
    origin,
  });
  const report: DistillReport = {
    student: describeStudent(options.student),
    epochs: options.epochs,
    temperature: options.temperature,
    alpha: options.alpha,
    trainExamples: data.train.count,
    testExamples: data.test.count,
    teacher: entry(`teacher (${teacher.family}, compact)`, teacher),
    scratch: entry('student from scratch', scratch),
    distilled: entry('student distilled', distilled),
    written,
  };
  await mkdir(options.out, { recursive: true });
  await writeFile(join(options.out, 'distillation.json'), `${JSON.stringify({ ...report, written: undefined }, null, 2)}\n`);
  return report;
}

const pct = (v: number): string => `${(100 * v).toFixed(2)}%`;
const int = (n: number): string => n.toLocaleString('en-US');

export function formatDistillReport(r: DistillReport): string {
  const rows = [r.teacher, r.scratch, r.distilled].map((e) => [e.model, int(e.parameters), int(e.bytes), pct(e.accuracy)]);
  const header = ['model', 'parameters', 'bytes (f32)', 'test accuracy'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [
    `student ${r.student}: ${r.epochs} epochs on ${int(r.trainExamples)} training examples, T ${r.temperature}, alpha ${r.alpha}; accuracy on ${int(r.testExamples)} test examples`,
    '',
    line(header),
    widths.map((w) => '-'.repeat(w)).join('  '),
    ...rows.map(line),
    '',
    `wrote ${r.written.files.map((f) => `${f.name} (${int(f.bytes)} bytes)`).join(', ')} and distillation.json to ${r.written.dir}`,
  ].join('\n');
}
