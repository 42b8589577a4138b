/**
 * Training losses on a batch's logits, computed in plain TypeScript with their
 * gradients written by hand, so that the native engine and the tfjs path train on
 * exactly the same objective (the engine runs forward and backward, the loss is ours).
 *
 * Knowledge distillation (Hinton, Vinyals & Dean, "Distilling the Knowledge in a
 * Neural Network", 2015): the student matches the teacher's softened distribution
 * p_T = softmax(z / T) besides the hard labels,
 *
 *   loss = alpha * T^2 * KL(p_T(teacher) || p_T(student)) + (1 - alpha) * CE(label, softmax(student)),
 *
 * the T^2 keeping the soft term's gradient on the scale of the hard one as T changes.
 */

/** The batch's mean loss, correct count (first maximum equals the label), and d(mean loss)/d(logits). */
export interface ObjectiveResult {
  readonly loss: number;
  readonly correct: number;
  readonly grad: Float32Array;
}

/** Soft targets for a whole training set: the teacher's logits per example. */
export interface SoftTargets {
  /** One row of numClasses teacher logits per example of the training set, in its index order. */
  readonly logits: Float32Array;
  /** Temperature T > 0 of the softened distributions. */
  readonly temperature: number;
  /** Weight of the soft term, in [0, 1]; 0 trains on the labels alone. */
  readonly alpha: number;
}

/** The defaults of CRD's knowledge-distillation baseline (Tian, Krishnan & Isola, ICLR 2020): T 4, soft weight 0.9. */
export const DISTILLATION_DEFAULTS = { temperature: 4, alpha: 0.9 } as const;

/** Writes softmax(row / T) of the row logits[base .. base+classes) into out[0 .. classes). */
function softmaxRow(logits: ArrayLike<number>, base: number, classes: number, T: number, out: Float64Array): void {
  let max = -Infinity;
  for (let c = 0; c < classes; c++) max = Math.max(max, logits[base + c] / T);
  let sum = 0;
  for (let c = 0; c < classes; c++) {
    const e = Math.exp(logits[base + c] / T - max);
    out[c] = e;
    sum += e;
  }
  for (let c = 0; c < classes; c++) out[c] /= sum;
}

/**
 * Softmax cross-entropy with the labels, mixed with the soft-target term when
 * `soft` is given (teacher: its logits for these rows, same layout as `logits`).
 */
export function logitObjective(
  logits: ArrayLike<number>,
  rows: number,
  classes: number,
  labels: ArrayLike<number>,
  soft?: { readonly teacher: ArrayLike<number>; readonly temperature: number; readonly alpha: number },
): ObjectiveResult {
  if (logits.length !== rows * classes) throw new Error(`objective: ${logits.length} logits for ${rows} rows of ${classes}`);
  if (labels.length !== rows) throw new Error(`objective: ${labels.length} labels for ${rows} rows`);
  if (soft !== undefined && soft.teacher.length !== rows * classes) {
    throw new Error(`objective: ${soft.teacher.length} teacher logits for ${rows} rows of ${classes}`);
  }
  const alpha = soft?.alpha ?? 0;
  const T = soft?.temperature ?? 1;
  const grad = new Float32Array(rows * classes);
  const p = new Float64Array(classes);
  const ps = new Float64Array(classes);
  const pt = new Float64Array(classes);
  let lossSum = 0;
  let correct = 0;
  for (let r = 0; r < rows; r++) {
    const base = r * classes;
    const label = labels[r];
    let best = 0;
    for (let c = 1; c < classes; c++) if (logits[base + c] > logits[base + best]) best = c;
    if (best === label) correct++;
    softmaxRow(logits, base, classes, 1, p);
    let rowLoss = -Math.log(Math.max(p[label], Number.MIN_VALUE)) * (1 - alpha);
    for (let c = 0; c < classes; c++) grad[base + c] = ((1 - alpha) * (p[c] - (c === label ? 1 : 0))) / rows;
    if (soft !== undefined && alpha > 0) {
      softmaxRow(logits, base, classes, T, ps);
      softmaxRow(soft.teacher, base, classes, T, pt);
      let kl = 0;
      for (let c = 0; c < classes; c++) {
        if (pt[c] > 0) kl += pt[c] * (Math.log(pt[c]) - Math.log(Math.max(ps[c], Number.MIN_VALUE)));
        // d/dz of T^2 * KL(pt || softmax(z/T)) = T * (ps - pt)
        grad[base + c] += (alpha * T * (ps[c] - pt[c])) / rows;
      }
      rowLoss += alpha * T * T * kl;
    }
    lossSum += rowLoss;
  }
  return { loss: lossSum / rows, correct, grad };
}

/** Checks soft targets against a training set of `count` examples and `classes` outputs. */
export function checkSoftTargets(targets: SoftTargets, count: number, classes: number): void {
  if (targets.logits.length !== count * classes) {
    throw new Error(
      `soft targets: ${targets.logits.length} logits, ${count} examples of ${classes} classes need ${count * classes}`,
    );
  }
  if (!(Number.isFinite(targets.temperature) && targets.temperature > 0)) {
    throw new Error(`soft targets: temperature must be a positive number, got ${targets.temperature}`);
  }
  if (!(targets.alpha >= 0 && targets.alpha <= 1)) throw new Error(`soft targets: alpha must be in [0, 1], got ${targets.alpha}`);
}

/** The teacher's rows for examples order[start .. start+count), packed. */
export function teacherRows(
  targets: SoftTargets,
  classes: number,
  order: ArrayLike<number>,
  start: number,
  count: number,
): Float32Array {
  const out = new Float32Array(count * classes);
  for (let i = 0; i < count; i++) {
    const from = order[start + i] * classes;
    out.set(targets.logits.subarray(from, from + classes), i * classes);
  }
  return out;
}
