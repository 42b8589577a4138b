// subfed distill and subfed predict on a Sub-FedAvg (Hy) client's state and data folder.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../client/backend.js';
import { loadClientData } from '../../client/data/folder.js';
import { compactModel } from '../../client/export/compact.js';
import { runDistill } from '../../client/export/distill.js';
import { accuracyOf, loadClientModel } from '../../client/export/export.js';
import { readExport, writeExport } from '../../client/export/files.js';
import { predict, PredictInputError, readPredictInput } from '../../client/export/predict.js';
import { scaleArchitecture, zooArchitecture } from '../../client/model.js';
import { pngImage } from '../fixtures/data-files.js';
import { hyClient, type HyClient } from './fixture.js';

const dir = mkdtempSync(join(tmpdir(), 'subfed-distill-'));
let client: HyClient;

beforeAll(async () => {
  await initBackend('wasm', { logger: { info: () => {} } });
  client = await hyClient(dir);
}, 120_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('subfed distill', () => {
  it('trains a half-width student from scratch and distilled, on the same data, and writes the distilled one', async () => {
    const data = await loadClientData(client.dataDir, 0);
    const out = join(dir, 'student');
    const report = await runDistill({
      stateDir: client.stateDir,
      data,
      student: { kind: 'zoo', name: 'lenet5-bn-mnist', width: 0.5 },
      out,
      format: 'layers',
      quantization: 'f32',
      epochs: 3,
      temperature: 4,
      alpha: 0.9,
      seed: 1,
    });
    expect(report).toMatchObject({ student: 'lenet5-bn-mnist x0.5 width', epochs: 3, trainExamples: 100, testExamples: 40 });
    const { portable } = await loadClientModel(client.stateDir, undefined);
    const teacher = compactModel(portable).model;
    expect(report.teacher.accuracy).toBe(accuracyOf(teacher, client.test));
    expect(report.scratch.parameters).toBe(report.distilled.parameters);
    expect(report.distilled.parameters).toBeLessThan(report.teacher.parameters);
    for (const e of [report.teacher, report.scratch, report.distilled]) expect(e.accuracy).toBeGreaterThan(0.25);
    const written = await readExport(out);
    expect(written.portable.architecture).toEqual(scaleArchitecture(zooArchitecture('lenet5-bn-mnist'), 0.5));
    expect(accuracyOf(written.portable, client.test)).toBe(report.distilled.accuracy);
    expect(written.metadata.origin).toMatch(
      /student lenet5-bn-mnist x0\.5 width distilled from the subfedavg-hy client model after round 3 \(T 4, alpha 0\.9, 3 epochs\)/,
    );
    const recorded = JSON.parse(readFileSync(join(out, 'distillation.json'), 'utf8')) as { scratch: { accuracy: number } };
    expect(recorded.scratch.accuracy).toBe(report.scratch.accuracy);
  });

  it('the compact export as student: its architecture, seeded afresh', async () => {
    const data = await loadClientData(client.dataDir, 0);
    const report = await runDistill({
      stateDir: client.stateDir,
      data,
      student: { kind: 'compact' },
      out: join(dir, 'compact-student'),
      format: 'sparse',
      quantization: 'f32',
      epochs: 1,
      temperature: 2,
      alpha: 0.5,
      seed: 1,
    });
    expect(report.distilled.parameters).toBe(report.teacher.parameters);
    const written = await readExport(join(dir, 'compact-student'));
    expect(written.format).toBe('sparse');
    expect(written.portable.architecture.layers.slice(0, 2).map((l) => (l.kind === 'conv' ? l.outC : 0))).toEqual(
      client.channelsKept,
    );
  });

  it('refuses a student that does not take the teacher’s input', async () => {
    const data = await loadClientData(client.dataDir, 0);
    await expect(
      runDistill({
        stateDir: client.stateDir,
        data,
        student: { kind: 'zoo', name: 'lenet5-cifar', width: 1 },
        out: join(dir, 'never'),
        format: 'layers',
        quantization: 'f32',
        epochs: 1,
        temperature: 4,
        alpha: 0.9,
        seed: 1,
      }),
    ).rejects.toThrow(
      'student lenet5-cifar takes 32x32x3 inputs and gives 10 classes; the teacher (lenet5-bn-mnist) takes 28x28x1 and gives 10',
    );
    expect(existsSync(join(dir, 'never'))).toBe(false);
  });
});

describe('subfed predict', () => {
  let modelDir: string;
  beforeAll(async () => {
    const { portable } = await loadClientModel(client.stateDir, undefined);
    modelDir = join(dir, 'model');
    await writeExport(modelDir, compactModel(portable).model, { format: 'layers', quantization: 'f32', origin: 'test' });
  });

  it('an IDX images file with its labels: the accuracy is the model’s test accuracy', async () => {
    const model = await readExport(modelDir);
    const input = await readPredictInput(
      [join(client.dataDir, 'test', 'labels.idx'), join(client.dataDir, 'test', 'images.idx')],
      10,
    );
    expect(input.labelled).toBe(true);
    const result = predict(model.portable, input);
    expect(result.predictions).toHaveLength(40);
    expect(result.predictions[3]).toMatchObject({ name: 'images.idx[3]', label: client.test.labels[3] });
    expect(result.accuracy).toBe(accuracyOf(model.portable, client.test));
    const unlabelled = predict(model.portable, await readPredictInput([join(client.dataDir, 'test', 'images.idx')], 10));
    expect(unlabelled.accuracy).toBeUndefined();
    expect(unlabelled.predictions.map((p) => p.predicted)).toEqual(result.predictions.map((p) => p.predicted));
  });

  it('PNG files: labels from class folders, the same predictions as the IDX images', async () => {
    const model = await readExport(modelDir);
    const pngDir = join(dir, 'png');
    const files: string[] = [];
    for (let i = 0; i < 6; i++) {
      const folder = join(pngDir, String(client.test.labels[i]));
      mkdirSync(folder, { recursive: true });
      const file = join(folder, `image-${i}.png`);
      writeFileSync(
        file,
        pngImage(28, 28, (x, y) => {
          const v = client.test.images[i * 784 + y * 28 + x];
          return [v, v, v, 255];
        }),
      );
      files.push(file);
    }
    const fromPng = predict(model.portable, await readPredictInput(files, 10));
    const fromIdx = predict(model.portable, await readPredictInput([join(client.dataDir, 'test', 'images.idx')], 10));
    expect(fromPng.predictions.map((p) => p.predicted)).toEqual(fromIdx.predictions.slice(0, 6).map((p) => p.predicted));
    expect(fromPng.predictions.map((p) => p.label)).toEqual(Array.from(client.test.labels.subarray(0, 6)));
    // A folder is searched for its PNG files.
    expect((await readPredictInput([pngDir], 10)).images.count).toBe(6);
  });

  it.each([
    ['nothing', [], 'give images to classify: PNG files or folders, or an IDX images file'],
    ['a missing file', ['nope.png'], "'nope.png' does not exist"],
    [
      'two IDX image files',
      ['test/images.idx', 'train/images.idx'],
      'give one IDX images file, optionally with its IDX labels file, and nothing else',
    ],
    ['a text file', ['notes.txt'], 'is neither a PNG image nor an IDX file'],
  ])('refuses %s', async (_name, inputs, message) => {
    writeFileSync(join(client.dataDir, 'notes.txt'), 'hello');
    const paths = inputs.map((p) => (p === 'nope.png' ? p : join(client.dataDir, p)));
    const error = await readPredictInput(paths, 10).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PredictInputError);
    expect((error as Error).message).toContain(message);
  });

  it('refuses images of another size, naming both', async () => {
    const model = await readExport(modelDir);
    const file = 'small.png';
    expect(() =>
      predict(model.portable, {
        images: {
          kind: 'images',
          images: new Uint8Array(400),
          labels: new Uint8Array(1),
          count: 1,
          height: 20,
          width: 20,
          channels: 1,
          numClasses: 10,
          name: file,
        },
        names: [file],
        labelled: false,
      }),
    ).toThrow(`${file}: the images are 20x20, the model takes 28x28 (height x width); resize them (subfed does not)`);
  });
});
