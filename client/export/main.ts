/**
 * The commands of a client's finished model: `subfed export`, `subfed distill`
 * and `subfed predict`. They run on a device like `subfed client` does (client/
 * only, no tfjs-layers); each prints its report on stdout.
 *
 * Exit codes: 2 for bad input (a flag, the state folder, the data, a model
 * file), 1 for a failure while running.
 */
import type { Command } from 'commander';
import { BACKEND_CHOICES, initBackend, type BackendChoice } from '../backend.js';
import { DataFileError, DataFolderError } from '../data/errors.js';
import { loadClientData, type ClientDataSplits } from '../data/folder.js';
import { isModelName, MODEL_NAMES } from '../model-names.js';
import { StateFileError } from '../state.js';
import { DISTILLATION_DEFAULTS, formatDistillReport, runDistill, StudentError, type StudentSpec } from './distill.js';
import { formatExportReport, runExport } from './export.js';
import { EXPORT_FORMATS, readExport, type ExportFormat } from './files.js';
import { ExportFormatError } from './layers-format.js';
import { formatPredictions, predict, PredictInputError, readPredictInput } from './predict.js';
import { QUANTIZATIONS, type Quantization } from './quantize.js';

/** A flag with a bad value (exit code 2). */
class FlagError extends Error {
  override readonly name = 'FlagError';
}

function isBadInput(err: unknown): err is Error {
  return [FlagError, StateFileError, DataFileError, DataFolderError, ExportFormatError, PredictInputError, StudentError].some(
    (type) => err instanceof type,
  );
}

/** Runs a command body; bad input is one line on stderr and exit code 2. */
async function run(command: string, body: () => Promise<void>): Promise<number> {
  try {
    await body();
    return 0;
  } catch (err) {
    if (!isBadInput(err)) throw err;
    process.stderr.write(`subfed ${command}: ${err.message}\n`);
    return 2;
  }
}

function choice<T extends string>(flag: string, value: string, choices: readonly T[]): T {
  if (!(choices as readonly string[]).includes(value))
    throw new FlagError(`${flag}: expected one of ${choices.join(', ')}, got '${value}'`);
  return value as T;
}

function integer(flag: string, value: string, min: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min) {
    throw new FlagError(`${flag}: expected ${min === 0 ? 'a non-negative' : 'a positive'} integer, got '${value}'`);
  }
  return n;
}

function number(flag: string, value: string, accept: (n: number) => boolean, expected: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || !accept(n))
    throw new FlagError(`${flag}: expected ${expected}, got '${value}'`);
  return n;
}

async function readData(flag: string, folder: string, seed: number, labelColumn: string | undefined): Promise<ClientDataSplits> {
  try {
    return await loadClientData(folder, seed, { labelColumn });
  } catch (err) {
    if (err instanceof DataFolderError || err instanceof DataFileError) throw new FlagError(`${flag} ${folder}: ${err.message}`);
    throw err;
  }
}

interface CommonFlags {
  backend?: string;
  labelColumn?: string;
  seed: string;
  format: string;
  quantize: string;
}

interface ExportFlags extends CommonFlags {
  stateDir: string;
  out: string;
  data?: string;
  fineTune: string;
}

interface DistillFlags extends CommonFlags {
  stateDir: string;
  out: string;
  data: string;
  student: string;
  width: string;
  epochs: string;
  temperature: string;
  alpha: string;
}

interface PredictFlags {
  model: string;
  backend?: string;
}

function common(flags: CommonFlags): {
  backend: BackendChoice | undefined;
  seed: number;
  format: ExportFormat;
  quantization: Quantization;
} {
  return {
    backend: flags.backend === undefined ? undefined : choice('--backend', flags.backend, BACKEND_CHOICES),
    seed: integer('--seed', flags.seed, 0),
    format: choice('--format', flags.format, EXPORT_FORMATS),
    quantization: choice('--quantize', flags.quantize, QUANTIZATIONS),
  };
}

function student(name: string, width: string): StudentSpec {
  const factor = number('--width', width, (n) => n > 0 && n <= 4, 'a width factor in (0, 4]');
  if (name === 'compact') {
    if (factor !== 1)
      throw new FlagError(
        `--width: the compact student has the compact export's widths; --width ${width} applies to zoo students`,
      );
    return { kind: 'compact' };
  }
  if (!isModelName(name)) throw new FlagError(`--student: expected compact or one of ${MODEL_NAMES.join(', ')}, got '${name}'`);
  return { kind: 'zoo', name, width: factor };
}

const addCommon = (command: Command): Command =>
  command
    .option('--format <format>', `${EXPORT_FORMATS.join(' | ')}: a tfjs LayersModel folder, or the sparse container`, 'layers')
    .option('--quantize <values>', `${QUANTIZATIONS.join(' | ')}: weight values (int8: per-tensor affine uint8)`, 'f32')
    .option('--label-column <name>', 'the label column of CSV data (default label)')
    .option(
      '--seed <n>',
      "the client's seed: picks the test hold-out of a data folder without train/ and test/, and drives the shuffling",
      '0',
    )
    .option('--backend <name>', `tfjs backend: ${BACKEND_CHOICES.join(' | ')}`);

/** Adds `export`, `distill` and `predict` to the root program (their descriptions are cli.ts's). */
export function registerExportCommands(program: Command): Record<'export' | 'distill' | 'predict', Command> {
  const exportCommand = addCommon(
    program
      .command('export')
      .requiredOption('--state-dir <dir>', "the client's state folder (client-state.bin)")
      .requiredOption('--out <dir>', 'folder to write the model into')
      .option('--data <dir>', "the client's data folder: measures each variant's accuracy on its test split")
      .option('--fine-tune <epochs>', "train the compact model this many epochs on the client's training data first", '0'),
  ).action(async (flags: ExportFlags) => {
    process.exitCode = await run('export', async () => {
      const c = common(flags);
      const fineTuneEpochs = integer('--fine-tune', flags.fineTune, 0);
      if (fineTuneEpochs > 0 && flags.data === undefined) throw new FlagError('--fine-tune: needs the client data (--data)');
      await initBackend(c.backend);
      const data = flags.data === undefined ? undefined : await readData('--data', flags.data, c.seed, flags.labelColumn);
      const report = await runExport({
        stateDir: flags.stateDir,
        out: flags.out,
        format: c.format,
        quantization: c.quantization,
        data,
        fineTuneEpochs,
        seed: c.seed,
      });
      process.stdout.write(`${formatExportReport(report)}\n`);
    });
  });

  const distillCommand = addCommon(
    program
      .command('distill')
      .requiredOption('--state-dir <dir>', "the teacher: the client's state folder (client-state.bin)")
      .requiredOption('--data <dir>', "the client's data folder (trains on its training split, measures on its test split)")
      .requiredOption(
        '--student <model>',
        `compact (the compact export's architecture) or a zoo model: ${MODEL_NAMES.join(', ')}`,
      )
      .requiredOption('--out <dir>', 'folder to write the distilled student into')
      .option('--width <factor>', "a zoo student's hidden widths times this (0.5: half the channels)", '1')
      .option('--epochs <n>', 'training epochs of each student', '10')
      .option('--temperature <T>', 'softmax temperature of the soft targets', String(DISTILLATION_DEFAULTS.temperature))
      .option(
        '--alpha <a>',
        'weight of the soft targets against the hard labels, in [0, 1]',
        String(DISTILLATION_DEFAULTS.alpha),
      ),
  ).action(async (flags: DistillFlags) => {
    process.exitCode = await run('distill', async () => {
      const c = common(flags);
      const spec = student(flags.student, flags.width);
      const epochs = integer('--epochs', flags.epochs, 1);
      const temperature = number('--temperature', flags.temperature, (n) => n > 0, 'a positive number');
      const alpha = number('--alpha', flags.alpha, (n) => n >= 0 && n <= 1, 'a number in [0, 1]');
      await initBackend(c.backend);
      const data = await readData('--data', flags.data, c.seed, flags.labelColumn);
      const report = await runDistill({
        stateDir: flags.stateDir,
        data,
        student: spec,
        out: flags.out,
        format: c.format,
        quantization: c.quantization,
        epochs,
        temperature,
        alpha,
        seed: c.seed,
      });
      process.stdout.write(`${formatDistillReport(report)}\n`);
    });
  });

  const predictCommand = program
    .command('predict')
    .requiredOption('--model <path>', 'an export folder (model.json or model.sparse), or the file itself')
    .option('--backend <name>', `tfjs backend: ${BACKEND_CHOICES.join(' | ')}`)
    .argument('<inputs...>', 'PNG files or folders, or an IDX images file and optionally its labels file')
    .action(async (inputs: string[], flags: PredictFlags) => {
      process.exitCode = await run('predict', async () => {
        const backend = flags.backend === undefined ? undefined : choice('--backend', flags.backend, BACKEND_CHOICES);
        await initBackend(backend);
        const model = await readExport(flags.model);
        const last = model.portable.architecture.layers.at(-1)!;
        const input = await readPredictInput(inputs, last.kind === 'dense' ? last.outputs : 10);
        process.stdout.write(`${formatPredictions(predict(model.portable, input))}\n`);
      });
    });
  return { export: exportCommand, distill: distillCommand, predict: predictCommand };
}
