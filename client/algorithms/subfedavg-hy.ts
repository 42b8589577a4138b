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
import { z } from 'zod';
import type { Mask } from '../../proto/mask.js';
import type { Model } from '../model.js';
import { channelMaskOf, prunePercentile, prunedFraction, selectChannels, type MaskMap, type TensorMap } from '../prune.js';
import { gateAccuracy, historyMetrics, shapesOf, trainMasked } from './common.js';
import { SUB_FEDAVG_REFERENCE, gateFields, pickGate, pruningTrainingDefaults, unstructuredFields } from './config.js';
import { decideChannels, decideUnstructured } from './decisions.js';
import { FederatedAlgorithmBase, defineAlgorithm } from './define.js';
import type { FederatedAlgorithm, MaskDecisionReport, RoundContext, TrainOutcome } from './types.js';

/** Reference defaults: dense layers p 10%, target 50%, dist thresh 5e-4; channels q 0.45, L1 1e-4, Hamming thresh 0.01; gate 50%. */
export const subfedavgHyConfig = z.strictObject({
  ...pruningTrainingDefaults,
  ...gateFields,
  // The unstructured rule on dense layers, with the hybrid defaults.
  p: unstructuredFields.p,
  target: z.number().min(0).lt(100).default(50),
  distThresh: z.number().min(0).default(5e-4),
  /** Channels with |gamma| at or below the q-quantile of their layer are removed. */
  q: z.number().gt(0).lt(1).default(0.45),
  /** L1 penalty s*sign(gamma) added to gamma's gradient (0 disables). */
  l1: z.number().min(0).default(1e-4),
  /** Channel decision only when the epoch-1 and last-epoch channel masks differ by more than this. */
  channelDistThresh: z.number().min(0).default(0.01),
  /**
   * Per-layer floor, as a fraction of the layer's channels (rounded up): a layer
   * never keeps fewer. 0.5 gives the reference's cfg_prune [3, 8] on LeNet-5 CIFAR (6, 16 channels).
   */
  channelFloor: z.number().gt(0).max(1).default(0.5),
});
export type SubFedAvgHyConfig = z.infer<typeof subfedavgHyConfig>;

export class SubFedAvgHy extends FederatedAlgorithmBase<SubFedAvgHyConfig> implements FederatedAlgorithm {
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
      ...historyMetrics(history),
      channelsKept,
      decisions,
    };
  }
}

export const subfedavgHy = defineAlgorithm({
  name: 'subfedavg-hy',
  summary: 'Sub-FedAvg (Hy): prunes whole channels by BatchNorm |gamma| and single weights of the dense layers',
  reference: SUB_FEDAVG_REFERENCE,
  kind: 'federated',
  schema: subfedavgHyConfig,
  requiresBatchNorm: true,
  gate: pickGate,
  implementation: SubFedAvgHy,
});
