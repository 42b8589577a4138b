/**
 * A small seeded PRNG (mulberry32) with the few distributions subfed needs, in
 * proto/ because every part uses it: data splits and synthetic data, model
 * initialisation, the coordinator's member sampling, benchmarks. Determinism
 * matters more than statistical strength: the same seed must give the same
 * result on every machine, which Math.random cannot.
 */
export class SeededRandom {
  #state: number;
  #spareNormal: number | undefined;

  constructor(seed: number) {
    if (!Number.isFinite(seed)) throw new RangeError(`SeededRandom: seed must be a finite number, got ${seed}`);
    // Hash the seed so that nearby seeds (0, 1, 2) start far apart.
    this.#state = mix32(Math.trunc(seed) >>> 0);
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** Standard normal (Box-Muller; the second value of each pair is kept). */
  normal(): number {
    if (this.#spareNormal !== undefined) {
      const v = this.#spareNormal;
      this.#spareNormal = undefined;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.next();
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.#spareNormal = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** Gamma(shape, 1) by Marsaglia-Tsang; shape < 1 uses the u^(1/shape) boost. */
  gamma(shape: number): number {
    if (!(shape > 0)) throw new RangeError(`gamma: shape must be > 0, got ${shape}`);
    if (shape < 1) {
      let u = 0;
      while (u === 0) u = this.next();
      return this.gamma(shape + 1) * Math.pow(u, 1 / shape);
    }
    const d = shape - 1 / 3;
    const c = 1 / Math.sqrt(9 * d);
    for (;;) {
      let x: number;
      let v: number;
      do {
        x = this.normal();
        v = 1 + c * x;
      } while (v <= 0);
      v = v * v * v;
      const u = this.next();
      if (u < 1 - 0.0331 * x * x * x * x) return d * v;
      if (Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
    }
  }

  /** A draw from the symmetric Dirichlet(alpha, ..., alpha) over k categories. */
  dirichlet(alpha: number, k: number): Float64Array {
    const p = new Float64Array(k);
    let sum = 0;
    for (let i = 0; i < k; i++) {
      p[i] = this.gamma(alpha);
      sum += p[i];
    }
    // For tiny alpha every gamma draw can underflow to 0; put all mass on one category then.
    if (sum === 0) {
      p[this.int(k)] = 1;
      return p;
    }
    for (let i = 0; i < k; i++) p[i] /= sum;
    return p;
  }

  /** Fisher-Yates shuffle in place; returns its argument. */
  shuffle<T extends { length: number; [i: number]: unknown }>(a: T): T {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = a[i];
      a[i] = a[j];
      a[j] = tmp;
    }
    return a;
  }

  /** A random permutation of 0..n-1. */
  permutation(n: number): Int32Array {
    const p = new Int32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    return this.shuffle(p);
  }
}

/**
 * Derives an independent seed from a base seed and a path of integers, so that
 * e.g. the test split and the train split of one seed do not share a stream.
 */
export function deriveSeed(seed: number, ...path: number[]): number {
  let h = mix32(Math.trunc(seed) >>> 0);
  for (const p of path) h = mix32((h ^ Math.imul(Math.trunc(p) >>> 0, 0x9e3779b1)) >>> 0);
  return h;
}

/** murmur3's 32-bit finaliser: a cheap bijective bit mixer. */
function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}
