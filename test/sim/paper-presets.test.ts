/**
 * The paper-mnist and paper-cifar10 presets end to end on small files in the
 * datasets' own formats (MNIST IDX, CIFAR-10 binary batches), generated here:
 * the real sets are not on this machine (README "Datasets" says where to get
 * them). Each preset's loader, model and a round of a dense and a pruning
 * algorithm, scaled down by flags.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { resolveSimConfig } from '../../sim/presets.js';
import type { RoundReport } from '../../sim/report.js';
import { runSimulation } from '../../sim/run.js';
import { cifarBatch, gzip, idxImages, idxLabels, tempDir } from '../fixtures/data-files.js';

const tmp = tempDir('subfed-paper-presets-');
afterAll(() => tmp.cleanup());

/** Labels 0..9 in turn: every class present, so that a shard split can deal them out. */
const labels = (n: number, offset = 0): number[] => Array.from({ length: n }, (_, i) => (i + offset) % 10);

/** Pixels that depend on the label, so that there is something to learn. */
const cifarPixel = (batchLabels: number[]) => (r: number, c: number, p: number) => (batchLabels[r] * 25 + c * 7 + (p % 32)) % 256;

async function run(flags: Parameters<typeof resolveSimConfig>[0]): Promise<{ reports: RoundReport[]; notes: string[] }> {
  const config = resolveSimConfig({
    clients: '4',
    shardSize: '10',
    rounds: '1',
    fraction: '1',
    epochs: '2',
    maxTestPerClient: '10',
    workers: '1',
    compare: 'fedavg,subfedavg-hy',
    ...flags,
  });
  const reports: RoundReport[] = [];
  let notes: string[] = [];
  for await (const r of runSimulation(config, { onEvent: (e) => e.kind === 'setup' && (notes = e.notes) })) reports.push(r);
  return { reports, notes };
}

describe('the paper presets on files in the datasets own formats', () => {
  it('paper-cifar10: CIFAR-10 binary batches, lenet5-cifar and lenet5-bn-cifar on 32x32x3', async () => {
    const dir = `${tmp.dir}/cifar-10-batches-bin`;
    for (let i = 1; i <= 5; i++) {
      const batch = labels(20, i);
      tmp.write(`cifar-10-batches-bin/data_batch_${i}.bin`, cifarBatch(batch, cifarPixel(batch)));
    }
    const test = labels(50);
    tmp.write('cifar-10-batches-bin/test_batch.bin', cifarBatch(test, cifarPixel(test)));
    // The archive's folder or its parent both work.
    const { reports, notes } = await run({ preset: 'paper-cifar10', data: tmp.dir });
    expect(notes[0]).toBe(`data: cifar10 from ${dir} (100 train, 50 test)`);
    expect(notes[1]).toMatch(/^split: shards: 4 clients x 2 shards of 10/);
    expect(reports.map((r) => r.algorithm)).toEqual(['fedavg', 'subfedavg-hy']);
    for (const r of reports) expect(r.evaluation?.clients).toHaveLength(4);
    // Hy's channels are lenet5-bn-cifar's: 6 and 16 at most.
    const channels = reports[1].channelsKept!;
    expect(channels).toHaveLength(2);
    expect(channels[0]).toBeLessThanOrEqual(6);
    expect(channels[1]).toBeLessThanOrEqual(16);
  });

  it('paper-mnist: MNIST IDX files (gzip or raw), lenet5-mnist on 28x28x1', async () => {
    const train = labels(100);
    const test = labels(50, 3);
    const pixel = (set: number[]) => (i: number) => (set[Math.floor(i / 784)] * 20 + (i % 28)) % 256;
    tmp.write('mnist/train-images-idx3-ubyte.gz', gzip(idxImages(100, 28, 28, pixel(train))));
    tmp.write('mnist/train-labels-idx1-ubyte', idxLabels(train));
    tmp.write('mnist/t10k-images-idx3-ubyte', idxImages(50, 28, 28, pixel(test)));
    tmp.write('mnist/t10k-labels-idx1-ubyte', idxLabels(test));
    const { reports, notes } = await run({ preset: 'paper-mnist', data: `${tmp.dir}/mnist`, compare: 'fedavg,subfedavg-un' });
    expect(notes[0]).toBe(`data: mnist from ${tmp.dir}/mnist (100 train, 50 test)`);
    expect(reports.map((r) => [r.algorithm, r.members.length])).toEqual([
      ['fedavg', 4],
      ['subfedavg-un', 4],
    ]);
  });
});
