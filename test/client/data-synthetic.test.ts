import { describe, expect, it } from 'vitest';
import { labelCounts, validateDataset, type ImageDataset } from '../../client/data/dataset.js';
import { syntheticDataset, type SyntheticOptions } from '../../client/data/synthetic.js';

const base: SyntheticOptions = { count: 600, classes: 6, height: 12, width: 12, channels: 1, seed: 3 };

/** Accuracy of a nearest-class-mean classifier fit on `train`: a stand-in for "a small model can learn it". */
function nearestMeanAccuracy(train: ImageDataset, test: ImageDataset): number {
  const size = train.height * train.width * train.channels;
  const means = Array.from({ length: train.numClasses }, () => new Float64Array(size));
  const counts = labelCounts(train);
  for (let i = 0; i < train.count; i++) {
    const m = means[train.labels[i]];
    for (let j = 0; j < size; j++) m[j] += train.images[i * size + j] / counts[train.labels[i]];
  }
  let correct = 0;
  for (let i = 0; i < test.count; i++) {
    let best = -1;
    let bestDist = Infinity;
    means.forEach((m, c) => {
      let d = 0;
      for (let j = 0; j < size; j++) d += (test.images[i * size + j] - m[j]) ** 2;
      if (d < bestDist) [best, bestDist] = [c, d];
    });
    if (best === test.labels[i]) correct++;
  }
  return correct / test.count;
}

describe('syntheticDataset', () => {
  it('has the requested geometry and balanced classes', () => {
    const ds = syntheticDataset({ ...base, count: 603 });
    validateDataset(ds);
    expect([ds.count, ds.height, ds.width, ds.channels, ds.numClasses, ds.name]).toEqual([603, 12, 12, 1, 6, 'synthetic']);
    expect(labelCounts(ds)).toEqual([101, 101, 101, 100, 100, 100]);
  });

  it('is deterministic by seed', () => {
    const a = syntheticDataset(base);
    const b = syntheticDataset(base);
    expect(Buffer.from(a.images).equals(Buffer.from(b.images))).toBe(true);
    expect(Buffer.from(a.labels).equals(Buffer.from(b.labels))).toBe(true);
    const c = syntheticDataset({ ...base, seed: 4 });
    expect(Buffer.from(a.images).equals(Buffer.from(c.images))).toBe(false);
  });

  it('draws different examples from another sample stream of the same patterns', () => {
    const train = syntheticDataset(base);
    const test = syntheticDataset({ ...base, sampleStream: 1 });
    expect(Buffer.from(train.images).equals(Buffer.from(test.images))).toBe(false);
    expect(nearestMeanAccuracy(train, test)).toBeGreaterThan(0.9);
  });

  it('is learnable in colour, and only from the same seed patterns', () => {
    const rgb = { ...base, channels: 3, classes: 10, count: 1000 };
    const train = syntheticDataset(rgb);
    const test = syntheticDataset({ ...rgb, sampleStream: 1 });
    expect(nearestMeanAccuracy(train, test)).toBeGreaterThan(0.9);
    // Another seed's patterns are unrelated: a classifier fit on them is near chance.
    const other = syntheticDataset({ ...rgb, seed: 99 });
    expect(nearestMeanAccuracy(other, test)).toBeLessThan(0.5);
  });

  it('uses the whole byte range without saturating everything', () => {
    const ds = syntheticDataset(base);
    const mean = ds.images.reduce((a, b) => a + b, 0) / ds.images.length;
    expect(mean).toBeGreaterThan(20);
    expect(mean).toBeLessThan(200);
    expect(new Set(ds.images).size).toBeGreaterThan(100);
  });

  it('rejects bad options naming them', () => {
    expect(() => syntheticDataset({ ...base, classes: 0 })).toThrow(/classes must be an integer >= 1, got 0/);
    expect(() => syntheticDataset({ ...base, height: 2.5 })).toThrow(/height must be an integer >= 1, got 2.5/);
    expect(() => syntheticDataset({ ...base, classes: 300 })).toThrow(/at most 256/);
    expect(() => syntheticDataset({ ...base, noise: -1 })).toThrow(/noise must be a finite number >= 0, got -1/);
  });
});
