/**
 * The simulator's statistics, pure functions with no I/O: mean, quantiles and
 * five-number summaries (the report's per-client distributions), and for
 * repeated measurements (one value per seed) the sample standard deviation and
 * a 95% confidence interval for the mean from Student's t with n - 1 degrees
 * of freedom. The seeds summary, the sweep table and the report all draw from here.
 *
 * The t quantile is computed, not looked up: Student's t CDF has a closed form
 * for an integer number of degrees of freedom (Abramowitz & Stegun 26.7.3 and
 * 26.7.4, a finite sum in sin and cos of atan(t / sqrt(dof))), and the quantile
 * is found by bisection on it. That is exact for every n, needs no table and
 * no package; test/sim/stats.test.ts checks it against published table values.
 */

export interface Spread {
  /** Number of values. */
  readonly n: number;
  readonly mean: number;
  /** Sample standard deviation (divisor n - 1); null for a single value. */
  readonly std: number | null;
  /** 95% confidence interval of the mean (Student t, n - 1 dof); null for a single value. */
  readonly ci95: { readonly low: number; readonly high: number } | null;
}

export function mean(values: readonly number[]): number {
  if (values.length === 0) throw new RangeError('mean: no values');
  return values.reduce((s, v) => s + v, 0) / values.length;
}

/** The q-quantile of ascending `sorted`, interpolating between order statistics (R's type 7, numpy's default). */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) throw new RangeError('quantile: no values');
  if (!(q >= 0 && q <= 1)) throw new RangeError(`quantile: q must be in [0, 1], got ${q}`);
  const at = (sorted.length - 1) * q;
  const below = Math.floor(at);
  const above = Math.min(below + 1, sorted.length - 1);
  return sorted[below] + (at - below) * (sorted[above] - sorted[below]);
}

/** Smallest, quartiles, median and largest of a sample. */
export interface FiveNumbers {
  readonly min: number;
  readonly q1: number;
  readonly median: number;
  readonly q3: number;
  readonly max: number;
}

export function fiveNumbers(values: readonly number[]): FiveNumbers {
  if (values.length === 0) throw new RangeError('fiveNumbers: no values');
  const sorted = [...values].sort((a, b) => a - b);
  return {
    min: sorted[0],
    q1: quantile(sorted, 0.25),
    median: quantile(sorted, 0.5),
    q3: quantile(sorted, 0.75),
    max: sorted[sorted.length - 1],
  };
}

/** Sample standard deviation (n - 1 in the divisor); needs at least two values. */
export function sampleStd(values: readonly number[]): number {
  if (values.length < 2) throw new RangeError(`sampleStd: needs at least 2 values, got ${values.length}`);
  const m = mean(values);
  return Math.sqrt(values.reduce((s, v) => s + (v - m) ** 2, 0) / (values.length - 1));
}

/**
 * P(|T| < t) for Student's t with `dof` degrees of freedom (a positive integer),
 * t >= 0: Abramowitz & Stegun 26.7.3 (odd dof) and 26.7.4 (even dof).
 */
export function studentTwoSided(t: number, dof: number): number {
  if (!Number.isInteger(dof) || dof < 1) throw new RangeError(`studentTwoSided: dof must be a positive integer, got ${dof}`);
  if (!(t >= 0)) throw new RangeError(`studentTwoSided: t must be >= 0, got ${t}`);
  if (t === Infinity) return 1;
  const theta = Math.atan(t / Math.sqrt(dof));
  const sin = Math.sin(theta);
  const cos2 = Math.cos(theta) ** 2;
  if (dof % 2 === 1) {
    // (2/pi) [theta + sin(theta) (cos + 2/3 cos^3 + (2*4)/(3*5) cos^5 + ... up to cos^(dof-2))]
    let term = Math.cos(theta);
    let sum = dof > 1 ? term : 0;
    for (let k = 3; k <= dof - 2; k += 2) {
      term *= ((k - 1) / k) * cos2;
      sum += term;
    }
    return (2 / Math.PI) * (theta + sin * sum);
  }
  // sin(theta) [1 + 1/2 cos^2 + (1*3)/(2*4) cos^4 + ... up to cos^(dof-2)]
  let term = 1;
  let sum = 1;
  for (let k = 2; k <= dof - 2; k += 2) {
    term *= ((k - 1) / k) * cos2;
    sum += term;
  }
  return sin * sum;
}

/** The t with P(|T| < t) = `coverage` (0.95 gives the 0.975 quantile), by bisection to float precision. */
export function studentQuantile(coverage: number, dof: number): number {
  if (!(coverage > 0 && coverage < 1)) throw new RangeError(`studentQuantile: coverage must be in (0, 1), got ${coverage}`);
  let low = 0;
  let high = 1;
  while (studentTwoSided(high, dof) < coverage) high *= 2;
  for (let i = 0; i < 200 && high - low > 1e-12 * high; i++) {
    const mid = (low + high) / 2;
    if (studentTwoSided(mid, dof) < coverage) low = mid;
    else high = mid;
  }
  return (low + high) / 2;
}

/** Mean, sample standard deviation and 95% CI (Student t, n - 1 dof) of `values`. */
export function spread(values: readonly number[]): Spread {
  const n = values.length;
  const m = mean(values);
  if (n < 2) return { n, mean: m, std: null, ci95: null };
  const std = sampleStd(values);
  const half = (studentQuantile(0.95, n - 1) * std) / Math.sqrt(n);
  return { n, mean: m, std, ci95: { low: m - half, high: m + half } };
}
