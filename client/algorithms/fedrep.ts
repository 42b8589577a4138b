/**
 * FedRep: a shared representation (the body) learned by all clients and a
 * personal head that never leaves the client. Each round the client loads the
 * global body, trains its head for `headEpochs` with the body frozen, then the
 * body for the round's epochs with the head frozen, and uploads the body only:
 * the head goes PERSONAL (proto/PROTOCOL.md, section 5.1), so the coordinator
 * averages the body over the members and never sees a head.
 *
 * Reference: L. Collins, H. Hassani, A. Mokhtari, S. Shakkottai, "Exploiting
 * Shared Representations for Personalized Federated Learning", ICML 2021;
 * github.com/lgcollins/FedRep.
 *
 * Why FedRep rather than FedPer (Arivazhagan et al. 2019, the same split with
 * head and body trained together): FedRep is the later and stronger of the two
 * in its authors' and PFLlib's comparisons, and its alternating phases are a
 * step of its own to test; FedPer is FedRep with both phases merged.
 *
 * Knobs: `headLayers` (default 1: the final layer is the head, as in the
 * paper) and `headEpochs` (default 10, the paper's head epochs; the reference
 * runs the body for 1 epoch, here the round's `epochs`). No pruning: masks stay
 * all ones on the body.
 */
import { z } from 'zod';
import { Mask } from '../../proto/mask.js';
import type { Model } from '../model.js';
import type { MaskMap } from '../prune.js';
import { deriveSeed } from '../../proto/random.js';
import { historyMetrics, lastLayersTensors, layerSplitProblem, trainMasked } from './common.js';
import { trainingDefaults } from './config.js';
import { FederatedAlgorithmBase, defineAlgorithm } from './define.js';
import type { FederatedAlgorithm, RoundContext, TrainOutcome } from './types.js';

export const fedrepConfig = z.strictObject({
  ...trainingDefaults,
  /** The last this many weight layers form the personal head (a conv layer with its BatchNorm). */
  headLayers: z.int().min(1).default(1),
  /** Epochs training the head, body frozen, before the body's epochs. */
  headEpochs: z.int().min(1).default(10),
});
export type FedRepConfig = z.infer<typeof fedrepConfig>;

/** The seed stream of the head phase, apart from the body phase's shuffling. */
export const HEAD_PHASE_STREAM = 0x4ead;

/** `masks` with every tensor outside `trained` frozen (a mask keeping nothing: its gradient is zeroed). */
export function freezeAllBut(masks: MaskMap, trained: ReadonlySet<string>): MaskMap {
  return new Map([...masks].map(([name, mask]) => [name, trained.has(name) ? mask : Mask.none(mask.length)]));
}

export class FedRep extends FederatedAlgorithmBase<FedRepConfig> implements FederatedAlgorithm {
  override personalTensors(model: Model): ReadonlySet<string> {
    return lastLayersTensors(model, this.config.headLayers);
  }

  async train(ctx: RoundContext): Promise<TrainOutcome> {
    const head = this.personalTensors(ctx.model);
    const body = new Set(ctx.model.manifest.map((s) => s.name).filter((name) => !head.has(name)));
    // Phase 1: the head on the received body; phase 2: the body under the new head.
    const headHistory = await trainMasked(
      { ...ctx, seed: deriveSeed(ctx.seed, HEAD_PHASE_STREAM) },
      { masks: freezeAllBut(ctx.masks, head), epochs: this.config.headEpochs },
    );
    const bodyHistory = await trainMasked(ctx, { masks: freezeAllBut(ctx.masks, body) });
    ctx.log?.(`fedrep: head ${headHistory.length} epochs, then body ${bodyHistory.length} epochs`);
    return { masks: ctx.masks, ...historyMetrics([...headHistory, ...bodyHistory]), decisions: [] };
  }
}

export const fedrep = defineAlgorithm({
  name: 'fedrep',
  summary: 'FedRep: a shared body and a personal head (never uploaded), trained head first, then body',
  reference:
    'Collins et al., "Exploiting Shared Representations for Personalized Federated Learning", ICML 2021; github.com/lgcollins/FedRep',
  kind: 'federated',
  schema: fedrepConfig,
  modelProblem: (model, config) => layerSplitProblem('fedrep', 'headLayers', model, config.headLayers),
  implementation: FedRep,
});
