import { describe, expect, it } from 'vitest';
import { SeededRandom, deriveSeed } from '../../proto/random.js';

const draws = (seed: number, n: number): number[] => {
  const r = new SeededRandom(seed);
  return Array.from({ length: n }, () => r.next());
};

describe('SeededRandom', () => {
  it('repeats its sequence for the same seed and differs for another', () => {
    expect(draws(7, 50)).toEqual(draws(7, 50));
    expect(draws(7, 50)).not.toEqual(draws(8, 50));
  });

  it('draws uniforms in [0, 1) with mean near 1/2', () => {
    const xs = draws(1, 20_000);
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
    const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.01);
  });

  it('draws integers covering [0, n)', () => {
    const r = new SeededRandom(2);
    const seen = new Set(Array.from({ length: 1000 }, () => r.int(5)));
    expect([...seen].sort()).toEqual([0, 1, 2, 3, 4]);
  });

  it('draws standard normals (mean 0, variance 1)', () => {
    const r = new SeededRandom(3);
    const xs = Array.from({ length: 20_000 }, () => r.normal());
    const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
    const variance = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length;
    expect(Math.abs(mean)).toBeLessThan(0.03);
    expect(Math.abs(variance - 1)).toBeLessThan(0.05);
  });

  it.each([0.1, 0.5, 1, 3.5])('draws Gamma(%f) with mean equal to the shape', (shape) => {
    const r = new SeededRandom(4);
    const xs = Array.from({ length: 20_000 }, () => r.gamma(shape));
    expect(xs.every((x) => x >= 0)).toBe(true);
    const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(Math.abs(mean - shape) / shape).toBeLessThan(0.05);
  });

  it('draws Dirichlet vectors on the simplex, concentrated for small alpha', () => {
    const r = new SeededRandom(5);
    const maxShare = (alpha: number): number => {
      let total = 0;
      for (let t = 0; t < 200; t++) {
        const p = r.dirichlet(alpha, 10);
        expect(p.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 9);
        total += Math.max(...p);
      }
      return total / 200;
    };
    // numpy agrees: E[max] is about 0.78 for Dir(0.05 x 10) and 0.116 for Dir(100 x 10).
    expect(maxShare(0.05)).toBeGreaterThan(0.7);
    expect(maxShare(100)).toBeLessThan(0.14);
  });

  it('shuffles into a permutation', () => {
    const p = new SeededRandom(6).permutation(100);
    expect([...p].sort((a, b) => a - b)).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect([...p]).not.toEqual(Array.from({ length: 100 }, (_, i) => i));
  });

  it('rejects a non-finite seed and a non-positive gamma shape', () => {
    expect(() => new SeededRandom(Number.NaN)).toThrow(/seed must be a finite number, got NaN/);
    expect(() => new SeededRandom(1).gamma(0)).toThrow(/shape must be > 0, got 0/);
  });
});

describe('deriveSeed', () => {
  it('is deterministic and separates paths', () => {
    expect(deriveSeed(1, 2, 3)).toBe(deriveSeed(1, 2, 3));
    const seeds = new Set([deriveSeed(1), deriveSeed(1, 0), deriveSeed(1, 1), deriveSeed(2, 0), deriveSeed(1, 0, 0)]);
    expect(seeds.size).toBe(5);
  });
});
