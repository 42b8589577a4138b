/**
 * `npm run bench:export`: how much smaller and faster a personalized model really gets.
 * One run: the `quick` simulation with subfedavg-hy and, as the dense baseline, fedavg
 * on the same split, rounds, seed and model (lenet5-bn-mnist), every client exported
 * (subfed sim --export); then one Hy client (the one with the median compact size) is
 * measured as:
 *
 *   dense              the same client's model under FedAvg (no pruning)
 *   masked             its Sub-FedAvg (Hy) model at full shape, zeros kept
 *   compact-f32        pruned channels and neurons removed (subfed export)
 *   compact-int8       the same, per-tensor affine 8-bit weights
 *   sparse             the compact model in the sparse container (bitmap/index-delta + f32 values)
 *   student-distilled  lenet5-bn-mnist at half width, distilled from the client model
 *   student-scratch    the same student trained on the labels alone (same data, epochs, seed)
 *
 * Columns: file bytes, parameters (values stored) and kept (non-pruned) parameters,
 * accuracy on the client's test set (decoded from the files), and the latency of
 * LayersModel.predict (tfjs-layers, wasm backend) on 1 image and on a batch of 32,
 * median of repetitions taken round-robin over the variants (so that load on the shared
 * machine hits them alike). Writes bench/results/export.json (the records) and
 * bench/results/export-details.json (client, goals, distillation comparison).
 *
 *   npm run bench:export [-- --rounds 10 --client <k> --epochs 10 --reps 300 --dirichlet <alpha>]
 *
 * --dirichlet splits the data by a Dirichlet(alpha) draw per class instead of the preset's
 * two label shards per client: clients with more classes, on which a student has more to learn.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { initBackend } from '../client/backend.js';
import { subset, type ImageDataset } from '../client/data/dataset.js';
import { compactModel } from '../client/export/compact.js';
import { distillStudents } from '../client/export/distill.js';
import { accuracyOf, loadClientModel } from '../client/export/export.js';
import { decodeExport, encodeExport, exportBytes, type ExportFormat } from '../client/export/files.js';
import { MODEL_JSON, WEIGHTS_FILE } from '../client/export/layers-format.js';
import { keptParameterTotal, parameterTotal, type PortableModel } from '../client/export/portable.js';
import type { Quantization } from '../client/export/quantize.js';
import { SPARSE_FILE, decodeSparseModel } from '../client/export/sparse.js';
import { loadDataset } from '../sim/datasets.js';
import { resolveSimConfig, validateSimConfig } from '../sim/presets.js';
import type { AlgorithmExports } from '../sim/report.js';
import { runSimulation, splitForRun } from '../sim/run.js';
import { writeBenchResult } from './results.js';

type Variant = 'dense' | 'masked' | 'compact-f32' | 'compact-int8' | 'sparse' | 'student-distilled' | 'student-scratch';

interface ExportRecord {
  variant: Variant;
  bytes: number;
  parameters: number;
  keptParameters: number;
  accuracy: number;
  latencyMs1: number;
  latencyMs32: number;
}

function arg(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
}

/** A model stored one way: its files in memory and what a reader gets back from them. */
interface Stored {
  variant: Variant;
  files: { name: string; content: Uint8Array }[];
  portable: PortableModel;
  decoded: PortableModel;
}

function store(variant: Variant, portable: PortableModel, format: ExportFormat, quantization: Quantization): Stored {
  const { files } = encodeExport(portable, { format, quantization, origin: `bench:export ${variant}` });
  return { variant, files, portable, decoded: decodeExport(files, variant) };
}

/** The LayersModel tfjs-layers builds from the stored files (the sparse container through its loader). */
async function layersModel(s: Stored): Promise<tfl.LayersModel> {
  const sparse = s.files.find((f) => f.name === SPARSE_FILE);
  if (sparse !== undefined) return tfl.loadLayersModel(tf.io.fromMemory(decodeSparseModel(sparse.content, s.variant)));
  const json = JSON.parse(Buffer.from(s.files.find((f) => f.name === MODEL_JSON)!.content).toString('utf8')) as {
    modelTopology: object;
    weightsManifest: { weights: tf.io.WeightsManifestEntry[] }[];
  };
  const weights = s.files.find((f) => f.name === WEIGHTS_FILE)!.content;
  return tfl.loadLayersModel(
    tf.io.fromMemory({
      modelTopology: json.modelTopology,
      weightSpecs: json.weightsManifest.flatMap((g) => g.weights),
      weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength) as ArrayBuffer,
    }),
  );
}

/** The first `count` test images, standardised, as a [count, 28, 28, 1] tensor. */
function inputBatch(data: ImageDataset, portable: PortableModel, count: number): tf.Tensor4D {
  const { mean, std } = portable.input;
  const size = data.height * data.width * data.channels;
  const values = new Float32Array(count * size);
  for (let i = 0; i < count * size; i++)
    values[i] = (data.images[i % (data.count * size)] / 255 - mean[i % data.channels]) / std[i % data.channels];
  return tf.tensor4d(values, [count, data.height, data.width, data.channels]);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const reps = Number(arg(argv, '--reps') ?? '300');
  const epochs = Number(arg(argv, '--epochs') ?? '10');
  await initBackend('wasm');
  const config = validateSimConfig({
    ...resolveSimConfig({
      preset: 'quick',
      compare: 'subfedavg-hy,fedavg',
      rounds: arg(argv, '--rounds'),
      data: process.env.SUBFED_DATA_DIR,
    }),
    // FedAvg on the same BatchNorm model: the dense baseline of the same architecture.
    model: 'lenet5-bn-mnist',
    ...(arg(argv, '--dirichlet') !== undefined
      ? { partition: { kind: 'dirichlet', alpha: Number(arg(argv, '--dirichlet')) } }
      : {}),
  });
  const dir = mkdtempSync(join(tmpdir(), 'subfed-bench-export-'));
  try {
    const data = await loadDataset(config.dataset, { data: config.data, seed: config.seed });
    const exported = new Map<string, AlgorithmExports>();
    process.stderr.write(
      `simulating ${config.algorithms.join(' and ')}, ${config.rounds} rounds, ${config.clients} clients (${data.source})\n`,
    );
    for await (const round of runSimulation(config, {
      data,
      exportTo: dir,
      onEvent: (e) => {
        if (e.kind === 'exported') exported.set(e.algorithm, e);
      },
    })) {
      if (round.evaluation)
        process.stderr.write(
          `${round.algorithm} round ${round.round}: personalized accuracy ${(100 * round.evaluation.personalized.mean).toFixed(1)}%\n`,
        );
    }
    const hy = exported.get('subfedavg-hy')!;
    const bySize = [...hy.clients].sort((a, b) => a.bytes - b.bytes || a.client - b.client);
    const client = arg(argv, '--client') !== undefined ? Number(arg(argv, '--client')) : bySize[bySize.length >> 1].client;
    const { split, testData } = splitForRun(config, data);
    const own = split.clients[client];
    const test = subset(testData, own.test, `client ${client} test`);
    const clientData = { train: subset(data.train, own.train), test };

    const stateDir = (algorithm: string): string => join(dir, algorithm, `client-${client}`);
    const masked = (await loadClientModel(stateDir('subfedavg-hy'), undefined)).portable;
    const dense = (await loadClientModel(stateDir('fedavg'), undefined)).portable;
    const compact = compactModel(masked).model;
    process.stderr.write(`client ${client}: distilling a half-width student, ${epochs} epochs\n`);
    const students = await distillStudents({
      stateDir: stateDir('subfedavg-hy'),
      data: { layout: { folder: `client ${client}` }, ...clientData },
      student: { kind: 'zoo', name: 'lenet5-bn-mnist', width: 0.5 },
      epochs,
      temperature: 4,
      alpha: 0.9,
      seed: config.seed,
    });
    const stored: Stored[] = [
      store('dense', dense, 'layers', 'f32'),
      store('masked', masked, 'layers', 'f32'),
      store('compact-f32', compact, 'layers', 'f32'),
      store('compact-int8', compact, 'layers', 'int8'),
      store('sparse', compact, 'sparse', 'f32'),
      store('student-distilled', students.distilled, 'layers', 'f32'),
      store('student-scratch', students.scratch, 'layers', 'f32'),
    ];

    // Latency: every variant as tfjs-layers builds it, on the wasm backend, round-robin.
    const models = await Promise.all(stored.map(layersModel));
    const one = inputBatch(test, masked, 1);
    const batch = inputBatch(test, masked, 32);
    const run = (m: tfl.LayersModel, x: tf.Tensor): number => {
      const started = performance.now();
      tf.tidy(() => (m.predict(x) as tf.Tensor).dataSync());
      return performance.now() - started;
    };
    for (const m of models) for (let i = 0; i < 20; i++) run(m, i % 2 ? one : batch);
    const t1: number[][] = models.map(() => []);
    const t32: number[][] = models.map(() => []);
    for (let r = 0; r < reps; r++) {
      models.forEach((m, k) => t1[k].push(run(m, one)));
      if (r % 4 === 0) models.forEach((m, k) => t32[k].push(run(m, batch)));
    }
    tf.dispose([one, batch]);
    models.forEach((m) => m.dispose());

    const records: ExportRecord[] = stored.map((s, k) => ({
      variant: s.variant,
      bytes: exportBytes(s.files),
      parameters: parameterTotal(s.decoded),
      keptParameters: keptParameterTotal(s.portable),
      accuracy: accuracyOf(s.decoded, test),
      latencyMs1: median(t1[k]),
      latencyMs32: median(t32[k]),
    }));
    const file = writeBenchResult('export', records);
    const get = (v: Variant): ExportRecord => records.find((r) => r.variant === v)!;
    const denseRecord = get('dense');
    const header = [
      'variant',
      'bytes',
      'x dense',
      'parameters',
      'kept',
      'accuracy',
      '1 image ms',
      'x dense',
      'batch 32 ms',
      'x dense',
    ];
    const rows = records.map((r) => [
      r.variant,
      r.bytes.toLocaleString('en-US'),
      (r.bytes / denseRecord.bytes).toFixed(3),
      r.parameters.toLocaleString('en-US'),
      r.keptParameters.toLocaleString('en-US'),
      `${(100 * r.accuracy).toFixed(2)}%`,
      r.latencyMs1.toFixed(3),
      (r.latencyMs1 / denseRecord.latencyMs1).toFixed(2),
      r.latencyMs32.toFixed(3),
      (r.latencyMs32 / denseRecord.latencyMs32).toFixed(2),
    ]);
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
    const line = (cells: string[]): string =>
      cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');

    const c32 = get('compact-f32');
    const i8 = get('compact-int8');
    const m = get('masked');
    const goals = [
      {
        goal: 'compact f32 file <= kept parameters x 4 bytes + 10%',
        value: c32.bytes,
        limit: Math.floor(1.1 * 4 * c32.keptParameters),
        met: c32.bytes <= 1.1 * 4 * c32.keptParameters,
      },
      { goal: 'int8 file <= compact f32 / 3', value: i8.bytes, limit: Math.floor(c32.bytes / 3), met: i8.bytes <= c32.bytes / 3 },
      { goal: 'compact accuracy = masked accuracy', value: c32.accuracy, limit: m.accuracy, met: c32.accuracy === m.accuracy },
      {
        goal: 'int8 accuracy within 1 point of compact f32',
        value: i8.accuracy,
        limit: c32.accuracy - 0.01,
        met: Math.abs(i8.accuracy - c32.accuracy) <= 0.01,
      },
      {
        goal: 'compact single-image latency <= 0.8 x dense',
        value: c32.latencyMs1 / denseRecord.latencyMs1,
        limit: 0.8,
        met: c32.latencyMs1 <= 0.8 * denseRecord.latencyMs1,
      },
    ];
    const distillation = {
      student: 'lenet5-bn-mnist x0.5 width',
      epochs,
      temperature: 4,
      alpha: 0.9,
      teacher: { parameters: parameterTotal(students.teacher), accuracy: accuracyOf(students.teacher, test) },
      scratch: { parameters: parameterTotal(students.scratch), accuracy: get('student-scratch').accuracy },
      distilled: { parameters: parameterTotal(students.distilled), accuracy: get('student-distilled').accuracy },
    };
    const hyClient = hy.clients.find((c) => c.client === client)!;
    writeBenchResult('export-details', {
      config: {
        preset: 'quick',
        algorithms: config.algorithms,
        rounds: config.rounds,
        clients: config.clients,
        seed: config.seed,
        dataset: data.source,
      },
      client,
      trainExamples: clientData.train.count,
      testExamples: test.count,
      compactWidths: hyClient.widths,
      compactBytesOverClients: {
        min: bySize[0].bytes,
        median: bySize[bySize.length >> 1].bytes,
        max: bySize[bySize.length - 1].bytes,
      },
      reps,
      goals,
      distillation,
    });
    console.log(
      [
        `client ${client} of ${config.clients} after ${config.rounds} rounds of subfedavg-hy (dense: fedavg, same split and seed); ` +
          `${test.count} test images; compact widths ${hyClient.widths.map((w) => `${w.name} ${w.width}`).join(', ')}`,
        `latency: tfjs-layers LayersModel.predict on the wasm backend, median of ${reps} (1 image) and ${Math.ceil(reps / 4)} (batch 32) runs, round-robin`,
        '',
        line(header),
        widths.map((w) => '-'.repeat(w)).join('  '),
        ...rows.map(line),
        '',
        'goals:',
        ...goals.map(
          (g) =>
            `  ${g.met ? 'met    ' : 'NOT met'}  ${g.goal}: ${typeof g.value === 'number' && g.value < 10 ? g.value.toFixed(4) : g.value} (limit ${typeof g.limit === 'number' && g.limit < 10 ? g.limit.toFixed(4) : g.limit})`,
        ),
        '',
        `distillation (${distillation.student}, ${epochs} epochs, T 4, alpha 0.9, ${clientData.train.count} training images): ` +
          `teacher ${(100 * distillation.teacher.accuracy).toFixed(2)}% (${distillation.teacher.parameters} parameters), ` +
          `scratch ${(100 * distillation.scratch.accuracy).toFixed(2)}%, distilled ${(100 * distillation.distilled.accuracy).toFixed(2)}% ` +
          `(${distillation.distilled.parameters} parameters)`,
        `wrote ${file}`,
      ].join('\n'),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
