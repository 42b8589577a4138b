/** Helpers of the `subfed client` tests: a data folder on disk, an in-process coordinator, a logger in memory. */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { ImageDataset } from '../../client/data/dataset.js';
import { createModel } from '../../client/model.js';
import type { TrainingOverrides } from '../../proto/training-config.js';
import { startCoordinator, type CoordinatorHandle } from '../../server/main.js';
import { tinyData } from './participant-helpers.js';

export const TOKEN = 'enroll-secret';

/** The IDX images and labels files of a dataset. */
export function idxFiles(ds: ImageDataset): { images: Buffer; labels: Buffer } {
  const images = Buffer.alloc(16 + ds.images.length);
  images.writeUInt32BE(0x00000803, 0);
  images.writeUInt32BE(ds.count, 4);
  images.writeUInt32BE(ds.height, 8);
  images.writeUInt32BE(ds.width, 12);
  images.set(ds.images, 16);
  const labels = Buffer.alloc(8 + ds.count);
  labels.writeUInt32BE(0x00000801, 0);
  labels.writeUInt32BE(ds.count, 4);
  labels.set(ds.labels, 8);
  return { images, labels };
}

/** `folder/train` and `folder/test` as IDX files of a synthetic 28x28 two-class task. */
export async function writeIdxFolder(folder: string, seed: number, trainCount: number, testCount: number): Promise<void> {
  const { train, test } = tinyData(seed, trainCount, testCount);
  for (const [split, ds] of [
    ['train', train],
    ['test', test],
  ] as const) {
    await mkdir(join(folder, split), { recursive: true });
    const { images, labels } = idxFiles(ds);
    await writeFile(join(folder, split, 'images-idx3-ubyte'), images);
    await writeFile(join(folder, split, 'labels-idx1-ubyte'), labels);
  }
}

/** A coordinator of the mlp for `rounds` rounds, every client sampled. */
export async function startMlpCoordinator(
  rounds: number,
  training: TrainingOverrides = { epochs: 2, lr: 0.05 },
): Promise<CoordinatorHandle> {
  const model = createModel('mlp', 0);
  const manifest = model.manifest.map((s) => ({ ...s, shape: [...s.shape] }));
  const initial = model.getWeights();
  model.dispose();
  return startCoordinator(
    {
      rounds,
      fraction: 1,
      minClients: 1,
      enrollmentToken: TOKEN,
      http: { enabled: false },
      training,
      logLevel: 'silent',
    },
    { manifest, initial },
    { logger: pino({ level: 'silent' }) },
  );
}

/** A pino logger keeping its records (parsed JSON) and raw text in memory. */
export function memoryLogger(level = 'info'): { logger: pino.Logger; records: Record<string, unknown>[]; text: () => string } {
  const records: Record<string, unknown>[] = [];
  const chunks: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      const text = chunk.toString('utf8');
      chunks.push(text);
      for (const line of text.split('\n')) if (line !== '') records.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: pino({ level }, sink), records, text: () => chunks.join('') };
}
