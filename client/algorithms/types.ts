/**
 * The client-side strategy interface. Every algorithm is one small object with a
 * few hooks, in the spirit of Flower's Strategy but on the client:
 *
 *   prepare   the received global values -> the model to train
 *             (global at kept positions, zero elsewhere; BN running stats stay personal;
 *             federated algorithms only: a local one never receives a model)
 *   train     local epochs with masked gradients, then the mask decision
 *   evaluate  personalized accuracy (fedavg-ft fine-tunes a copy first)
 *
 * An algorithm's `kind` is part of its type (FederatedAlgorithm | LocalAlgorithm),
 * and so is the Participant that runs it (participant.ts).
 *
 * Building the update (delta at the new kept positions, mask only when changed)
 * is the same rule for all of them and lives in the Participant (participant.ts,
 * LocalUpdate); the coordinator's single aggregation rule (intersection
 * averaging) makes dense FedAvg the case of all-ones masks.
 * Algorithms are described and created through the registry (registry.ts);
 * AlgorithmBase (define.ts) supplies every hook but `train`.
 */
import type { Dataset } from '../data/dataset.js';
import type { Model } from '../model.js';
import type { MaskMap, TensorMap } from '../prune.js';
import type { TrainingOverrides } from '../../proto/training-config.js';
import type { GateConfig, TrainingConfig } from './config.js';

/** A client's data, already split: `gate` is what the accuracy-after-pruning gate measures. */
export interface ClientData {
  readonly train: Dataset;
  readonly test: Dataset;
  /**
   * The validation split, held out of the client's training data (the same
   * examples every round): what early stopping and a gate on 'val' measure.
   * Undefined when neither is on.
   */
  readonly val?: Dataset;
  /** The validation split (or the test split under gateOn 'test'); undefined for algorithms without a gate. */
  readonly gate?: Dataset;
}

export interface RoundContext {
  readonly model: Model;
  /** The client's mask before this round. */
  readonly masks: MaskMap;
  readonly data: ClientData;
  /** Training hyperparameters for this round (the algorithm's, with the coordinator's overrides). */
  readonly training: TrainingConfig;
  /** Drives this round's shuffling. */
  readonly seed: number;
  /** Progress lines (one per decision), e.g. to a logger. */
  readonly log?: (line: string) => void;
}

/** What local training says of itself: part of TrainOutcome, and of a round's metrics (participant.ts, RoundMetrics). */
export interface TrainMetrics {
  /** Mean training loss over the local epochs (the reference's epoch-loss mean). */
  readonly loss: number;
  /** Training accuracy of the last local epoch. */
  readonly trainAccuracy: number;
  /** Local epochs trained: the configured number, or fewer when early stopping ended the round's training. */
  readonly epochs: number;
  /** Alive channels per channel group, for hybrid pruning. */
  readonly channelsKept?: number[];
  /** What the mask decision did, for logs and tests. */
  readonly decisions: readonly MaskDecisionReport[];
}

/** What a round of local training produced; the model holds the final weights. */
export interface TrainOutcome extends TrainMetrics {
  /** The mask after this round (a new map; equal to the old one when nothing was pruned). */
  readonly masks: MaskMap;
}

export interface MaskDecisionReport {
  readonly kind: 'unstructured' | 'channel';
  readonly outcome: 'stable' | 'at-target' | 'accepted' | 'rejected';
  /** Hamming distance between the epoch-1 and last-epoch candidate masks. */
  readonly distance: number;
  /** Prune percent used (unstructured) or channel quantile (channel). */
  readonly step: number;
  /** Gate accuracy after pruning, when the gate ran. */
  readonly gateAccuracy?: number;
}

export interface EvalResult {
  readonly loss: number;
  readonly accuracy: number;
}

/** 'federated': pulls the model and pushes an update every round it is sampled; 'local': never communicates. */
export type AlgorithmKind = 'federated' | 'local';

/** What every algorithm object does, whatever its kind. */
interface AlgorithmHooks {
  /** The registry name (registry.ts). */
  readonly name: string;
  /** Where the pruning gate is measured; undefined when the algorithm never prunes. */
  readonly gate: GateConfig | undefined;
  /** The algorithm's own training hyperparameters. */
  readonly training: TrainingConfig;
  /**
   * A round's training hyperparameters: ours with the coordinator's overrides,
   * validated by the algorithm's own schema (AlgorithmConfigError naming the field).
   */
  withTraining(overrides: TrainingOverrides): TrainingConfig;
  /** Throws when the model cannot run this algorithm (e.g. hybrid without BatchNorm). */
  checkModel(model: Model): void;
  /** Local training and the mask decision. */
  train(ctx: RoundContext): Promise<TrainOutcome>;
  /**
   * Personalized accuracy on `dataset`. `received` is the last model received from
   * the coordinator (fedavg-ft fine-tunes a copy of it); undefined before any.
   * Ditto measures its personal model, not the one it uploads.
   */
  evaluate(ctx: RoundContext, dataset: Dataset, received: TensorMap | undefined): Promise<EvalResult>;
  /**
   * What the algorithm keeps between rounds beyond the model and masks (Ditto's
   * personal model, LotteryFL's initial weights), as named tensors for the state
   * file; empty for most.
   */
  exportState(): TensorMap;
  /** Takes back what exportState gave (a resumed client); throws when it does not fit `model`. */
  restoreState(state: TensorMap, model: Model): void;
  /**
   * The model this client's personalized accuracy is measured on, given the one it
   * holds: that one for most, Ditto's personal model once it has one. What an export
   * of the client writes.
   */
  personalizedModel(held: HeldModel): HeldModel;
}

/** A model's values: its parameters and its BatchNorm running statistics. */
export interface HeldModel {
  readonly weights: TensorMap;
  readonly personal: TensorMap;
}

/** Receives the global model and uploads an update every round it is sampled. */
export interface FederatedAlgorithm extends AlgorithmHooks {
  readonly kind: 'federated';
  /**
   * Load the received (dense, already scattered) global values into the model for
   * this mask. A personal tensor's "global" values are the client's own (the
   * participant puts them there), so loading them changes nothing.
   */
  prepare(model: Model, masks: MaskMap, global: TensorMap): void;
  /**
   * The tensors this client keeps to itself (FedRep's head, LG-FedAvg's body): never
   * shared, sent as PERSONAL (proto/PROTOCOL.md, section 5.1), never overwritten by a
   * task. Empty for the algorithms that share the whole model (under their masks).
   */
  personalTensors(model: Model): ReadonlySet<string>;
}

/** Never communicates: trains on the client's own data only. */
export interface LocalAlgorithm extends AlgorithmHooks {
  readonly kind: 'local';
}

export type ClientAlgorithm = FederatedAlgorithm | LocalAlgorithm;

interface AlgorithmsByKind {
  federated: FederatedAlgorithm;
  local: LocalAlgorithm;
}

/** The algorithm objects of one kind (an indexed type, so that a descriptor of one kind is a descriptor of any). */
export type AlgorithmOfKind<Kind extends AlgorithmKind> = AlgorithmsByKind[Kind];
