/**
 * How a client algorithm is described once: `defineAlgorithm` turns a short
 * spec (name, summary, reference, kind, config schema, what it needs) into the
 * descriptor the registry lists, with the shared defaults filled in; and
 * `AlgorithmBase` gives the per-client objects everything they have in common
 * (config, training fields, model check, evaluation), so an algorithm's class
 * holds only its own `train` and what it does differently. It extends
 * `FederatedAlgorithmBase` (which receives the model) or `LocalAlgorithmBase`,
 * whose `kind` must be the one its descriptor declares; `DenseAlgorithm` adds
 * dense FedAvg's `train`.
 */
import type { z } from 'zod';
import {
  applyTrainingOverrides,
  pickTraining,
  type TrainingConfig,
  type TrainingOverrides,
} from '../../proto/training-config.js';
import type { Dataset } from '../data/dataset.js';
import type { Model } from '../model.js';
import type { MaskMap, TensorMap } from '../prune.js';
import { evaluate } from '../train.js';
import { prepareAtKept, trainDense } from './common.js';
import { parseConfig, type GateConfig } from './config.js';
import type {
  AlgorithmKind,
  AlgorithmOfKind,
  EvalResult,
  FederatedAlgorithm,
  HeldModel,
  RoundContext,
  TrainOutcome,
} from './types.js';

/** A strict zod object whose every field has a default, so `{}` parses to the reference configuration. */
export type AlgorithmSchema<Config extends TrainingConfig = TrainingConfig> = z.ZodType<Config>;

/** What an algorithm may require of a model: a built Model has it, and so has model.ts's `modelStructure(name)`. */
export type ModelStructure = Pick<Model, 'name' | 'channelGroups'>;

export interface AlgorithmDescriptor<
  Name extends string = string,
  Schema extends AlgorithmSchema = AlgorithmSchema,
  Kind extends AlgorithmKind = AlgorithmKind,
> {
  readonly name: Name;
  /** One line for the CLI help and reports. */
  readonly summary: string;
  /** Where the method comes from (paper, reference code). */
  readonly reference: string;
  readonly kind: Kind;
  /**
   * The coordinator's model is a usable model on its own (dense FedAvg), so the
   * simulator also reports its accuracy on every client's test data.
   */
  readonly evaluatesGlobalModel: boolean;
  /** Needs BatchNorm after its convs (a non-empty `Model.channelGroups`). */
  readonly requiresBatchNorm: boolean;
  /** 'gated': prunes, accepting a pruned mask only above an accuracy threshold on gate data (`gateOf`). */
  readonly pruning: 'none' | 'gated';
  readonly schema: Schema;
  /** The validated config with defaults; throws AlgorithmConfigError naming every bad field. */
  parseConfig(input: unknown): z.output<Schema>;
  /** Where and how strictly the pruning gate measures accuracy; undefined when the algorithm never prunes. */
  gateOf(config: z.output<Schema>): GateConfig | undefined;
  /** Why `model` cannot run this algorithm with `config` (default: the reference config), or undefined when it can. */
  modelProblem(model: ModelStructure, config?: z.output<Schema>): string | undefined;
  /** A new per-client algorithm object (fedavg-ft keeps per-client bookkeeping), of this kind; `input` is validated. */
  create(input: unknown): AlgorithmOfKind<Kind>;
}

export interface AlgorithmSpec<Name extends string, Schema extends AlgorithmSchema, Kind extends AlgorithmKind> {
  readonly name: Name;
  readonly summary: string;
  readonly reference: string;
  readonly kind: Kind;
  readonly schema: Schema;
  /** Default false. */
  readonly evaluatesGlobalModel?: boolean;
  /** Default false. */
  readonly requiresBatchNorm?: boolean;
  /** Pruning algorithms: the gate fields of their config. Absent: the algorithm never prunes. */
  readonly gate?: (config: z.output<Schema>) => GateConfig;
  /** What else the model must be for this config (e.g. more layers than a personal head takes); undefined when it fits. */
  readonly modelProblem?: (model: ModelStructure, config: z.output<Schema>) => string | undefined;
  /** The per-client class, of the same kind; extending a base below, it adds `train` and whatever it does differently. */
  readonly implementation: new (
    descriptor: AlgorithmDescriptor<Name, Schema, Kind>,
    config: z.output<Schema>,
  ) => AlgorithmOfKind<Kind>;
}

export function defineAlgorithm<const Name extends string, Schema extends AlgorithmSchema, const Kind extends AlgorithmKind>(
  spec: AlgorithmSpec<Name, Schema, Kind>,
): AlgorithmDescriptor<Name, Schema, Kind> {
  const requiresBatchNorm = spec.requiresBatchNorm ?? false;
  const descriptor: AlgorithmDescriptor<Name, Schema, Kind> = {
    name: spec.name,
    summary: spec.summary,
    reference: spec.reference,
    kind: spec.kind,
    evaluatesGlobalModel: spec.evaluatesGlobalModel ?? false,
    requiresBatchNorm,
    pruning: spec.gate === undefined ? 'none' : 'gated',
    schema: spec.schema,
    parseConfig: (input) => parseConfig(spec.name, spec.schema, input),
    gateOf: (config) => spec.gate?.(config),
    modelProblem: (model, config) =>
      requiresBatchNorm && model.channelGroups.length === 0
        ? `${spec.name} needs a model with BatchNorm after its convs (lenet5-bn-*); '${model.name}' has none`
        : spec.modelProblem?.(model, config ?? descriptor.parseConfig({})),
    create: (input) => new spec.implementation(descriptor, descriptor.parseConfig(input)),
  };
  return descriptor;
}

/**
 * What every algorithm object shares, whatever its kind. A class extends one of
 * the two kinds below, declares `train` (and `implements FederatedAlgorithm` or
 * `LocalAlgorithm`), and overrides `prepare` or `evaluate` only when it
 * receives or evaluates differently (fedavg-ft).
 */
abstract class AlgorithmBase<Config extends TrainingConfig> {
  readonly name: string;
  readonly gate: GateConfig | undefined;
  readonly config: Readonly<Config>;
  /** The algorithm's own training fields (a round's task config may override them: `withTraining`). */
  readonly training: TrainingConfig;
  readonly #descriptor: AlgorithmDescriptor<string, AlgorithmSchema<Config>>;

  constructor(descriptor: AlgorithmDescriptor<string, AlgorithmSchema<Config>>, config: Config) {
    this.#descriptor = descriptor;
    this.name = descriptor.name;
    this.config = config;
    this.training = pickTraining(config);
    this.gate = descriptor.gateOf(config);
  }

  /**
   * This round's training: ours with the coordinator's fields laid over, checked
   * by our own schema, so a field the algorithm cannot work with (Sub-FedAvg
   * with 1 epoch) is an AlgorithmConfigError naming it.
   */
  withTraining(overrides: TrainingOverrides): TrainingConfig {
    return pickTraining(this.#descriptor.parseConfig(applyTrainingOverrides(this.config, overrides)));
  }

  checkModel(model: Model): void {
    const problem = this.#descriptor.modelProblem(model, this.config);
    if (problem !== undefined) throw new Error(problem);
  }

  evaluate(ctx: RoundContext, dataset: Dataset, _received: TensorMap | undefined): Promise<EvalResult> {
    return Promise.resolve(evaluate(ctx.model, dataset));
  }

  /** Most algorithms keep nothing beyond the model and masks. */
  exportState(): TensorMap {
    return new Map();
  }

  restoreState(state: TensorMap, _model: Model): void {
    if (state.size > 0) {
      throw new Error(`${this.name} keeps no state of its own, but the saved state holds ${[...state.keys()].join(', ')}`);
    }
  }

  /** The model held is the personalized one. */
  personalizedModel(held: HeldModel): HeldModel {
    return held;
  }
}

/** An algorithm that receives the global model (at its kept positions) and uploads an update. */
export abstract class FederatedAlgorithmBase<Config extends TrainingConfig> extends AlgorithmBase<Config> {
  readonly kind = 'federated' as const;

  prepare(model: Model, masks: MaskMap, global: TensorMap): void {
    prepareAtKept(model, masks, global);
  }

  /** The whole model is shared (under the masks). */
  personalTensors(_model: Model): ReadonlySet<string> {
    return new Set();
  }
}

/** An algorithm that never communicates: nothing to receive, nothing to upload. */
export abstract class LocalAlgorithmBase<Config extends TrainingConfig> extends AlgorithmBase<Config> {
  readonly kind = 'local' as const;
}

/** Dense FedAvg: masked local training and no mask decision, so masks stay all ones. */
export class DenseAlgorithm<Config extends TrainingConfig> extends FederatedAlgorithmBase<Config> implements FederatedAlgorithm {
  train(ctx: RoundContext): Promise<TrainOutcome> {
    return trainDense(ctx);
  }
}
