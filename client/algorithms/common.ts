/** Pieces every client algorithm shares: receiving the model, masked training, the gate, the model's layers. */
import type { Dataset } from '../data/dataset.js';
import { zooArchitecture, type Model } from '../model.js';
import type { ModelName } from '../model-names.js';
import { applyMasks, type MaskMap, type TensorMap } from '../prune.js';
import { evaluate, trainLocal, type EpochStats, type Proximal, type TrainOptions } from '../train.js';
import type { RoundContext, TrainMetrics, TrainOutcome } from './types.js';

/**
 * w = global at the kept positions, zero elsewhere. BatchNorm running statistics
 * are not part of the manifest, so they stay the client's own.
 */
export function prepareAtKept(model: Model, masks: MaskMap, global: TensorMap): void {
  model.setWeights(applyMasks(global, masks));
}

export interface MaskedTrainingOptions {
  /** Gradients of these tensors get s*sign(value) added before masking (L1 on BN gamma). */
  readonly l1?: { readonly names: ReadonlySet<string>; readonly s: number };
  /** mu*(w - anchor) added to the gradients before masking (FedProx, Ditto's personal model). */
  readonly proximal?: Proximal;
  /** The gradient masks, when not the round's masks (FedRep freezes the head or the body with them). */
  readonly masks?: MaskMap;
  /** The epochs, when not the round's (FedRep's head epochs). */
  readonly epochs?: number;
  readonly onEpochEnd?: (epoch: number, stats: EpochStats) => void | Promise<void>;
}

/**
 * The options of one local training run of the round: its hyperparameters and
 * seed, early stopping on the validation split and augmentation when the round's
 * config asks for them.
 */
export function roundTrainOptions(ctx: RoundContext): TrainOptions {
  const { earlyStopping, augmentation, ...hyper } = ctx.training;
  let stopping: TrainOptions['earlyStopping'];
  if (earlyStopping !== undefined) {
    if (ctx.data.val === undefined) throw new Error('early stopping is on but the participant held out no validation split');
    stopping = { ...earlyStopping, validation: ctx.data.val };
  }
  return {
    ...hyper,
    seed: ctx.seed,
    ...(stopping !== undefined ? { earlyStopping: stopping } : {}),
    ...(augmentation !== undefined ? { augmentation } : {}),
  };
}

/**
 * Local epochs with every gradient multiplied by its mask before the SGD step, so
 * pruned weights (zero) stay exactly zero. Masks without a zero are skipped.
 */
export async function trainMasked(ctx: RoundContext, opts: MaskedTrainingOptions = {}): Promise<EpochStats[]> {
  const masks = opts.masks ?? ctx.masks;
  for (const spec of ctx.model.manifest) {
    if (!masks.has(spec.name)) throw new Error(`no mask for tensor '${spec.name}'`);
  }
  return trainLocal(ctx.model, ctx.data.train, {
    ...roundTrainOptions(ctx),
    ...(opts.epochs !== undefined ? { epochs: opts.epochs } : {}),
    // The training loop multiplies each gradient by its mask (skipping masks without a
    // zero) after adding the proximal and L1 terms: g' = (g + mu*(w - anchor) + s*sign(w)) * mask.
    gradMasks: masks,
    ...(opts.l1 !== undefined && opts.l1.s > 0 ? { l1: opts.l1 } : {}),
    ...(opts.proximal !== undefined && opts.proximal.mu > 0 ? { proximal: opts.proximal } : {}),
    ...(opts.onEpochEnd !== undefined ? { onEpochEnd: opts.onEpochEnd } : {}),
  });
}

/** Masked local training without a mask decision: the dense baselines (their masks stay all ones). */
export async function trainDense(ctx: RoundContext, opts: MaskedTrainingOptions = {}): Promise<TrainOutcome> {
  const history = await trainMasked(ctx, opts);
  return { masks: ctx.masks, ...historyMetrics(history), decisions: [] };
}

/** Loss, last-epoch accuracy and epochs trained of one training run. */
export function historyMetrics(history: readonly EpochStats[]): Omit<TrainMetrics, 'decisions' | 'channelsKept'> {
  return { loss: meanLoss(history), trainAccuracy: history[history.length - 1]?.accuracy ?? 0, epochs: history.length };
}

export function meanLoss(history: readonly EpochStats[]): number {
  return history.length === 0 ? 0 : history.reduce((sum, e) => sum + e.loss, 0) / history.length;
}

/**
 * The gate: accuracy of `weights` on the gate data. Leaves the model holding
 * `weights`; the caller restores whatever it decides to keep.
 */
export function gateAccuracy(model: Model, data: Dataset | undefined): (weights: TensorMap) => number {
  return (weights) => {
    if (data === undefined) throw new Error('this algorithm prunes but the participant gave it no gate data');
    model.setWeights(weights);
    return evaluate(model, data).accuracy;
  };
}

/** Names of the manifest's prunable tensors (conv kernels and dense matrices). */
export function prunableNames(model: Model): string[] {
  return model.manifest.filter((s) => s.prunable).map((s) => s.name);
}

export function shapesOf(model: Model): Map<string, readonly number[]> {
  return new Map(model.manifest.map((s) => [s.name, s.shape]));
}

/**
 * The model's weight layers in order, each with its tensors (a conv layer's
 * BatchNorm gamma and beta belong to it): what "the last k layers" means for a
 * personal head (FedRep) or a shared head (LG-FedAvg).
 */
export function layerTensors(model: { readonly name: ModelName }): string[][] {
  return zooArchitecture(model.name).layers.map((layer) => [
    `${layer.name}.weight`,
    `${layer.name}.bias`,
    ...(layer.kind === 'conv' && layer.batchNorm !== undefined ? [`${layer.batchNorm}.weight`, `${layer.batchNorm}.bias`] : []),
  ]);
}

/** The tensors of the last `count` layers. */
export function lastLayersTensors(model: { readonly name: ModelName }, count: number): Set<string> {
  return new Set(layerTensors(model).slice(-count).flat());
}

/** Why a split of the model into the last `count` layers and the rest leaves one side empty, or undefined. */
export function layerSplitProblem(
  algorithm: string,
  field: string,
  model: { readonly name: ModelName },
  count: number,
): string | undefined {
  const layers = layerTensors(model).length;
  return count < layers
    ? undefined
    : `${algorithm}: ${field} ${count} leaves no layer on the other side: '${model.name}' has ${layers} layers`;
}

/**
 * Named tensors under `prefix/` (an algorithm's state: `exportState`), checked
 * against the model's `names`, each of `size(name)` values: a state file for
 * another model or algorithm is an error naming the tensor, not a silent mix-up.
 */
export function takePrefixed(
  state: ReadonlyMap<string, Float32Array>,
  prefix: string,
  names: readonly string[],
  size: (name: string) => number,
): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const name of names) {
    const values = state.get(`${prefix}/${name}`);
    if (values === undefined) throw new Error(`the saved algorithm state lacks '${prefix}/${name}'`);
    if (values.length !== size(name)) {
      throw new Error(
        `the saved algorithm state's '${prefix}/${name}' has ${values.length} values, the model needs ${size(name)}`,
      );
    }
    out.set(name, values);
  }
  return out;
}

/** `tensors` under `prefix/`, for exportState. */
export function prefixed(prefix: string, tensors: ReadonlyMap<string, Float32Array>): [string, Float32Array][] {
  return [...tensors].map(([name, values]) => [`${prefix}/${name}`, values]);
}
