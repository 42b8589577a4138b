import { createHash } from 'node:crypto';
import type { Mask } from '../proto/mask.js';
import { codecs } from '../proto/schema.js';
import type { MaskChange, SparseTensor, UpdateHeader, UpdateMetrics } from '../proto/rpc.js';
import type { CoordinatorConfig } from './config.js';
import { invalid, precondition } from './errors.js';
import type { MaskMap, TensorSpec } from './model.js';
import type { ReportMetrics } from './rounds.js';
import { decodeUpdateTensor } from './wire.js';

/** One tensor of a validated update. */
export interface ValidatedTensor {
  readonly name: string;
  /** The client's mask of this tensor after the update (full = every position kept). */
  readonly mask: Mask;
  /** Deltas at the mask's kept positions, in index order; all finite. */
  readonly deltas: Float32Array;
}

/** An update that passed every check: all an aggregator or a round record needs, nothing left to doubt. */
export interface ValidatedUpdate {
  readonly clientId: string;
  readonly round: number;
  /** num_examples under `examples` weighting, 1 under `unweighted`; always > 0. */
  readonly weight: number;
  readonly metrics: ReportMetrics;
  readonly maskChange: MaskChange;
  readonly tensors: readonly ValidatedTensor[];
  /** The L2 norm the delta had when it was scaled down to updateNormBound (mode `clip`); null when it was within. */
  readonly clippedFrom: number | null;
}

/** What an update is checked against: the model, the limits, and the server's copy of the sender's masks. */
export interface ValidationContext {
  readonly specs: ReadonlyMap<string, TensorSpec>;
  readonly limits: Pick<CoordinatorConfig, 'weighting' | 'maxExamples' | 'updateNormBound' | 'updateNormMode'>;
  /** The masks the server holds for the sender (tensors absent = all kept) and their version. */
  readonly held: { readonly maskVersion: number; readonly masks: MaskMap };
}

/** The header's two mask fields as one value; new_mask_version means nothing when mask_changed is false. */
export function maskChangeOf(header: Pick<UpdateHeader, 'maskChanged' | 'newMaskVersion'>): MaskChange {
  return header.maskChanged ? { kind: 'changed', version: header.newMaskVersion } : { kind: 'unchanged' };
}

/**
 * A digest of what an upload says: the header fields that decide what is
 * folded and recorded (round, num_examples, mask versions, metrics, tensor
 * count; not the credentials) and every tensor as it travelled (its
 * serialized SparseTensor). An honest retry resends the same header and the
 * same encoded tensors, so it has the same digest; any other content does not.
 * The tensors are compared as sent rather than decoded because a retry after
 * the commit would decode against masks that have moved on since.
 */
export function uploadDigest(header: UpdateHeader, tensors: readonly SparseTensor[]): string {
  const m = header.metrics;
  const fields = {
    roundId: header.roundId,
    numExamples: header.numExamples,
    baseMaskVersion: header.baseMaskVersion,
    maskChange: maskChangeOf(header),
    tensorCount: header.tensorCount,
    // JSON would write NaN and the infinities as null; their text keeps them apart.
    metrics:
      m === null
        ? null
        : [m.loss, m.localAccuracy, m.sparsity, m.receivedAccuracy].map((x) => String(x)).concat(m.channelsKept.join(',')),
  };
  const hash = createHash('sha256').update(JSON.stringify(fields));
  for (const t of tensors) {
    const bytes = codecs.SparseTensor.encode(t);
    hash.update(`${bytes.length}:`).update(bytes);
  }
  return hash.digest('hex');
}

/**
 * Checks a whole update (header already authenticated and placed in its
 * round by the caller) and returns it decoded. Pure: no I/O, no state read
 * beyond `context`, nothing changed; a bad update throws the CoordinatorError
 * that names its first fault, so nothing of it is ever applied.
 */
export function validateUpdate(
  header: UpdateHeader,
  tensors: readonly SparseTensor[],
  context: ValidationContext,
): ValidatedUpdate {
  const { limits, held, specs } = context;
  if (header.tensorCount !== tensors.length) {
    throw invalid('tensor_count', `header announces ${header.tensorCount} tensors, the stream carried ${tensors.length}`);
  }
  if (limits.weighting === 'examples' && header.numExamples < 1) {
    throw invalid('num_examples', `num_examples must be at least 1, got ${header.numExamples}`);
  }
  if (header.numExamples > limits.maxExamples) {
    throw invalid('num_examples', `num_examples ${header.numExamples} exceeds the limit of ${limits.maxExamples}`);
  }
  checkMetrics(header.metrics, specs.size);
  const maskChange = maskChangeOf(header);
  if (maskChange.kind === 'changed' && maskChange.version <= held.maskVersion) {
    throw invalid(
      'mask_version',
      `new_mask_version ${maskChange.version} must be greater than the held mask version ${held.maskVersion}`,
    );
  }
  const baseMatches = header.baseMaskVersion === held.maskVersion;
  const seen = new Set<string>();
  const out: ValidatedTensor[] = [];
  let squares = 0;
  let personal = 0;
  for (const t of tensors) {
    const spec = specs.get(t.name);
    if (spec === undefined) throw invalid('unknown_tensor', `unknown tensor "${t.name}"`);
    if (seen.has(t.name)) throw invalid('duplicate_tensor', `tensor "${t.name}" appears more than once`);
    seen.add(t.name);
    const reference = held.masks.get(t.name) ?? null;
    const d = decodeUpdateTensor(t, spec, reference);
    if (d.mask.keptCount === 0 && !d.personal) {
      // A layer with no weight left passes no signal (for a bias or BatchNorm tensor: every channel is gone), so the
      // client's network no longer depends on its input. No Sub-FedAvg client prunes that far; a tensor the client
      // keeps to itself is declared PERSONAL instead (see proto/PROTOCOL.md, section 14.1).
      throw invalid(
        'empty_mask',
        `tensor "${t.name}" keeps no position; a layer pruned entirely cuts the network (a personal tensor is sent PERSONAL)`,
      );
    }
    if (d.personal) personal += 1;
    if (d.usesReference && !baseMatches) {
      throw precondition(
        'mask_version_mismatch',
        `tensor "${t.name}" refers to mask version ${header.baseMaskVersion}, the server holds ${held.maskVersion}; pull again`,
      );
    }
    const unchanged = d.mask.isFull ? reference === null : reference !== null && d.mask.equals(reference);
    if (maskChange.kind === 'unchanged' && !unchanged) {
      throw invalid('mask_changed', `tensor "${t.name}" carries a new mask but mask_changed is false`);
    }
    const v = d.values;
    for (let i = 0; i < v.length; i++) {
      const x = v[i];
      if (!Number.isFinite(x)) {
        throw invalid('non_finite', `tensor "${t.name}" has a non-finite value (${x}) at kept entry ${i}`);
      }
      squares += x * x;
    }
    // An unchanged mask keeps the held object, whose kept-index list is derived already.
    out.push({ name: t.name, mask: unchanged && reference !== null ? reference : d.mask, deltas: v });
  }
  if (seen.size < specs.size) {
    const missing = [...specs.keys()].filter((name) => !seen.has(name));
    throw invalid(
      'missing_tensor',
      `the update lacks ${missing.length} of the model's ${specs.size} tensors (first: "${missing[0]}"); ` +
        'an update carries every tensor, with its delta at the kept positions',
    );
  }
  if (personal === specs.size) {
    // Such an update contributes nothing, so it must not count toward the round's quorum either.
    throw invalid('all_personal', `every one of the model's ${specs.size} tensors is personal: the update shares nothing`);
  }
  const norm = Math.sqrt(squares);
  const bound = limits.updateNormBound;
  if (norm > bound && limits.updateNormMode === 'reject') {
    throw invalid('norm_bound', `update L2 norm ${norm.toPrecision(6)} exceeds the bound ${bound}`);
  }
  if (norm > bound) clip(out, bound / norm);
  const m = header.metrics;
  return {
    clientId: header.clientId,
    round: header.roundId,
    weight: limits.weighting === 'examples' ? header.numExamples : 1,
    metrics: {
      numExamples: header.numExamples,
      loss: m?.loss ?? 0,
      localAccuracy: m?.localAccuracy ?? 0,
      sparsity: m?.sparsity ?? 0,
      receivedAccuracy: m?.receivedAccuracy ?? 0,
      ...(m !== null && m.channelsKept.length > 0 ? { channelsKept: [...m.channelsKept] } : {}),
    },
    maskChange,
    tensors: out,
    clippedFrom: norm > bound ? norm : null,
  };
}

/**
 * Scales every delta by `factor` in place (the decoded arrays are the
 * update's own). Float32 rounding can lift each value by a relative 2^-24, so
 * the factor is shortened by 2^-22: the clipped norm never exceeds the bound.
 */
function clip(tensors: readonly ValidatedTensor[], factor: number): void {
  const f = factor * (1 - 2 ** -22);
  for (const t of tensors) {
    const v = t.deltas;
    for (let i = 0; i < v.length; i++) v[i] *= f;
  }
}

/** Fractions a client reports (accuracies on its own data, its pruned share); the proto's field names. */
const FRACTION_METRICS = [
  ['localAccuracy', 'local_accuracy'],
  ['receivedAccuracy', 'received_accuracy'],
  ['sparsity', 'sparsity'],
] as const;

/**
 * The metrics land in the round history and on the dashboard, so a value
 * that cannot be what it claims is refused like a bad tensor: NaN or an
 * infinity (JSON would show it as 0 or null), a negative loss, a fraction
 * outside [0, 1]. Absent metrics (null) stay allowed and read as zeros.
 */
function checkMetrics(m: UpdateMetrics | null, tensors: number): void {
  if (m === null) return;
  if (!Number.isFinite(m.loss) || m.loss < 0) {
    throw invalid('metrics', `metrics.loss is ${m.loss}; expected a finite number >= 0`);
  }
  for (const [field, wire] of FRACTION_METRICS) {
    const v = m[field];
    if (!(v >= 0 && v <= 1)) throw invalid('metrics', `metrics.${wire} is ${v}; expected a fraction in [0, 1]`);
  }
  // channels_kept has one entry per BatchNorm'd layer at most, so never more than the model has tensors.
  if (m.channelsKept.length > tensors) {
    throw invalid('metrics', `metrics.channels_kept has ${m.channelsKept.length} entries; the model has ${tensors} tensors`);
  }
}

/** The sender's complete set of non-all-ones masks once `update` is adopted. */
export function masksAfter(held: MaskMap, update: ValidatedUpdate): MaskMap {
  const masks = new Map(held);
  for (const t of update.tensors) {
    if (t.mask.isFull) masks.delete(t.name);
    else masks.set(t.name, t.mask);
  }
  return masks;
}
