import { describe, expect, it } from 'vitest';
import { DatasetError, labelCounts, subset, validateDataset, type ImageDataset } from '../../client/data/dataset.js';

function tiny(): ImageDataset {
  // 3 images of 1x2x1: pixel values encode the image index so copies are traceable.
  return {
    kind: 'images',
    images: Uint8Array.from([10, 11, 20, 21, 30, 31]),
    labels: Uint8Array.from([2, 0, 2]),
    count: 3,
    height: 1,
    width: 2,
    channels: 1,
    numClasses: 3,
    name: 'tiny',
  };
}

describe('subset', () => {
  it('copies the images and labels at the given indices, in order, repeats allowed', () => {
    const s = subset(tiny(), [2, 0, 2]);
    expect(s.count).toBe(3);
    expect([...s.images]).toEqual([30, 31, 10, 11, 30, 31]);
    expect([...s.labels]).toEqual([2, 2, 2]);
    expect(s.height).toBe(1);
    expect(s.numClasses).toBe(3);
    validateDataset(s);
  });

  it('does not share memory with the source', () => {
    const ds = tiny();
    const s = subset(ds, Int32Array.from([1]));
    s.images[0] = 99;
    expect(ds.images[2]).toBe(20);
  });

  it('accepts an empty index list', () => {
    const s = subset(tiny(), []);
    expect(s.count).toBe(0);
    expect(s.images.length).toBe(0);
  });

  it('rejects an index outside the dataset, naming it and its position', () => {
    expect(() => subset(tiny(), [0, 3])).toThrow(DatasetError);
    expect(() => subset(tiny(), [0, 3])).toThrow(/index 3 at position 1 is outside 0\.\.2/);
    expect(() => subset(tiny(), [-1])).toThrow(/index -1/);
    expect(() => subset(tiny(), [0.5])).toThrow(/index 0\.5/);
  });
});

describe('labelCounts', () => {
  it('counts each class, zero for absent ones', () => {
    expect(labelCounts(tiny())).toEqual([1, 0, 2]);
  });
});

describe('validateDataset', () => {
  it('accepts a consistent dataset', () => {
    expect(() => validateDataset(tiny())).not.toThrow();
  });

  it('names the inconsistency', () => {
    expect(() => validateDataset({ ...tiny(), images: new Uint8Array(5) })).toThrow(
      /tiny: images has 5 bytes but 3 images of 1x2x1 need 6/,
    );
    expect(() => validateDataset({ ...tiny(), labels: new Uint8Array(2) })).toThrow(/2 labels for 3 images/);
    expect(() => validateDataset({ ...tiny(), numClasses: 2 })).toThrow(/label 2 at index 0 is not below numClasses 2/);
    expect(() => validateDataset({ ...tiny(), width: 0 })).toThrow(/width must be a positive integer, got 0/);
  });
});
