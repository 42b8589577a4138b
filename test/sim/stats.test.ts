import { describe, expect, it } from 'vitest';
import { fiveNumbers, mean, quantile, sampleStd, spread, studentQuantile, studentTwoSided } from '../../sim/stats.js';

// The 0.975 quantiles of Student's t as printed in every table (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2).
const TABLE: ReadonlyArray<[number, number]> = [
  [1, 12.706],
  [2, 4.303],
  [3, 3.182],
  [4, 2.776],
  [5, 2.571],
  [6, 2.447],
  [7, 2.365],
  [8, 2.306],
  [9, 2.262],
  [10, 2.228],
  [15, 2.131],
  [20, 2.086],
  [30, 2.042],
  [60, 2.0],
  [100, 1.984],
];

describe("Student's t", () => {
  it('has the closed-form CDF of 1 and 2 degrees of freedom (Cauchy, and t/sqrt(2+t^2))', () => {
    for (const t of [0, 0.3, 1, 2.5, 40]) {
      expect(studentTwoSided(t, 1)).toBeCloseTo((2 / Math.PI) * Math.atan(t), 14);
      expect(studentTwoSided(t, 2)).toBeCloseTo(t / Math.sqrt(2 + t * t), 14);
    }
  });

  it('tends to the normal distribution: P(|T| < 1.959964) -> 0.95', () => {
    expect(studentTwoSided(1.959964, 100_000)).toBeCloseTo(0.95, 4);
    expect(studentQuantile(0.95, 100_000)).toBeCloseTo(1.96, 2);
  });

  it('gives the printed 0.975 quantiles', () => {
    for (const [dof, t] of TABLE) expect(studentQuantile(0.95, dof), `dof ${dof}`).toBeCloseTo(t, 3);
  });

  it('refuses a non-integer or zero dof and a coverage outside (0, 1)', () => {
    expect(() => studentTwoSided(1, 0)).toThrow(/dof must be a positive integer, got 0/);
    expect(() => studentTwoSided(1, 2.5)).toThrow(/dof must be a positive integer/);
    expect(() => studentQuantile(1, 3)).toThrow(/coverage must be in \(0, 1\)/);
  });
});

describe('spread', () => {
  it('mean, sample standard deviation (n - 1) and the t interval of three values', () => {
    const s = spread([0.8, 0.82, 0.84]);
    expect(s.n).toBe(3);
    expect(s.mean).toBeCloseTo(0.82, 12);
    expect(s.std).toBeCloseTo(0.02, 12);
    // mean ± t(0.975, 2) * s / sqrt(3)
    const half = (4.302652729911275 * 0.02) / Math.sqrt(3);
    expect(s.ci95?.low).toBeCloseTo(0.82 - half, 9);
    expect(s.ci95?.high).toBeCloseTo(0.82 + half, 9);
  });

  it('a single value has no spread and no interval', () => {
    expect(spread([0.7])).toEqual({ n: 1, mean: 0.7, std: null, ci95: null });
  });

  it('equal values: zero width', () => {
    expect(spread([2, 2, 2, 2])).toEqual({ n: 4, mean: 2, std: 0, ci95: { low: 2, high: 2 } });
  });

  it('refuses no values', () => {
    expect(() => mean([])).toThrow(/no values/);
    expect(() => sampleStd([1])).toThrow(/at least 2 values/);
  });
});

describe('quantiles', () => {
  it('interpolates between order statistics (numpy default)', () => {
    expect(quantile([1, 2, 3, 4], 0.25)).toBe(1.75);
    expect(quantile([1, 2, 3, 4], 0.5)).toBe(2.5);
    expect(quantile([1, 2, 3, 4], 1)).toBe(4);
    expect(quantile([7], 0.75)).toBe(7);
    expect(() => quantile([], 0.5)).toThrow(/no values/);
    expect(() => quantile([1], 1.5)).toThrow(/q must be in \[0, 1\], got 1.5/);
  });

  it('gives the five numbers of an unsorted sample', () => {
    expect(fiveNumbers([0.92, 0.72, 0.82])).toEqual({ min: 0.72, q1: 0.77, median: 0.82, q3: 0.87, max: 0.92 });
  });
});
