/**
 * Sub-FedAvg (Hy): structured channel pruning of the BatchNorm'd conv layers
 * (network slimming on |gamma|, with an L1 penalty on gamma during training)
 * plus the unstructured rule on the dense layers. Masks are element masks
 * either way: a removed channel zeroes every entry it owns and the next layer's
 * inputs from it, so the coordinator needs no notion of channels.
 *
 * Order within a round, as the reference: first the dense-layer decision, then
 * the channel decision on top of it, each with its own accuracy gate.
 */
import type { Mask } from '../../proto/mask.js';
import type { Dataset } from '../data/dataset.js';
import type { Model } from '../model.js';
import { channelMaskOf, prunePercentile, prunedFraction, selectChannels, type MaskMap, type TensorMap } from '../prune.js';
import { evaluate } from '../train.js';
import { gateAccuracy, meanLoss, prepareAtKept, shapesOf, trainMasked } from './common.js';
import { parseConfig, subfedavgHyConfig, type SubFedAvgHyConfig } from './config.js';
import { decideChannels, decideUnstructured } from './decisions.js';
import type { ClientAlgorithm, EvalResult, MaskDecisionReport, RoundContext, TrainOutcome } from './types.js';

export class SubFedAvgHy implements ClientAlgorithm {
  readonly name = 'subfedavg-hy' as const;
  readonly communicates = true;
  readonly config: Readonly<SubFedAvgHyConfig>;

  constructor(config: unknown = {}) {
    this.config = parseConfig(this.name, subfedavgHyConfig, config);
  }

  get gate(): SubFedAvgHyConfig {
    return this.config;
  }

  get training(): SubFedAvgHyConfig {
    return this.config;
  }

  prepare = prepareAtKept;

  checkModel(model: Model): void {
    if (model.channelGroups.length === 0) {
      throw new Error(`subfedavg-hy needs a model with BatchNorm after its convs (lenet5-bn-*); '${model.name}' has none`);
    }
  }

  /** Per-layer floor: the layer never keeps fewer channels than this. */
  floorOf(channels: number): number {
    return Math.max(1, Math.ceil(channels * this.config.channelFloor));
  }

  #selectAll(weights: TensorMap, masks: MaskMap, model: Model): Mask[] {
    return model.channelGroups.map((g) => {
      const gamma = weights.get(g.gamma);
      if (gamma === undefined) throw new Error(`no weights for '${g.gamma}'`);
      return selectChannels(gamma, channelMaskOf(masks, g), this.config.q, this.floorOf(g.channels));
    });
  }

  async train(ctx: RoundContext): Promise<TrainOutcome> {
    const { model } = ctx;
    this.checkModel(model);
    const cfg = this.config;
    const denseNames = model.manifest.filter((s) => s.prunable && s.shape.length === 2).map((s) => s.name);
    const allNames = model.manifest.map((s) => s.name);
    let denseM1: MaskMap = ctx.masks;
    let channelsFirst: Mask[] = [];
    const history = await trainMasked(ctx, {
      l1: { names: new Set(model.channelGroups.map((g) => g.gamma)), s: cfg.l1 },
      onEpochEnd: (epoch) => {
        if (epoch !== 1) return;
        const w = model.getWeights();
        denseM1 = prunePercentile(w, ctx.masks, cfg.p, denseNames);
        channelsFirst = this.#selectAll(w, ctx.masks, model);
      },
    });
    const trained = model.getWeights();
    const gate = gateAccuracy(model, ctx.data.gate);
    // The reference compares the dense target with the pruned share of the whole model.
    const dense = await decideUnstructured({
      weights: trained,
      masks: ctx.masks,
      m1: denseM1,
      names: denseNames,
      prunedPercent: prunedFraction(ctx.masks, allNames),
      p: cfg.p,
      target: cfg.target,
      distThresh: cfg.distThresh,
      accThresh: cfg.accThresh,
      gateAccuracy: gate,
    });
    const channels = await decideChannels({
      weights: dense.weights,
      masks: dense.masks,
      groups: model.channelGroups,
      shapes: shapesOf(model),
      first: channelsFirst,
      last: this.#selectAll(trained, ctx.masks, model),
      q: cfg.q,
      channelDistThresh: cfg.channelDistThresh,
      accThresh: cfg.accThresh,
      gateAccuracy: gate,
    });
    model.setWeights(channels.weights);
    const channelsKept = model.channelGroups.map((g) => channelMaskOf(channels.masks, g).keptCount);
    const decisions: MaskDecisionReport[] = [dense.report, channels.report];
    for (const r of decisions) {
      ctx.log?.(
        `${r.kind}: ${r.outcome} (dist ${r.distance.toExponential(2)}` +
          `${r.gateAccuracy === undefined ? '' : `, gate acc ${(100 * r.gateAccuracy).toFixed(1)}%`})`,
      );
    }
    ctx.log?.(`channels kept [${channelsKept.join(', ')}], pruned ${prunedFraction(channels.masks, allNames).toFixed(1)}%`);
    return {
      masks: channels.masks,
      loss: meanLoss(history),
      trainAccuracy: history[history.length - 1]?.accuracy ?? 0,
      channelsKept,
      decisions,
    };
  }

  evaluate(ctx: RoundContext, dataset: Dataset): Promise<EvalResult> {
    return Promise.resolve(evaluate(ctx.model, dataset));
  }
}
