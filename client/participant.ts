/**
 * One federated client, independent of any transport: the simulator's worker
 * threads and the real `subfed client` both drive it. It holds the client's
 * model (weights + personal BatchNorm statistics), its mask and mask version,
 * its data splits and its algorithm, and turns a received task into an update:
 *
 *   const participant = createParticipant({ algorithm, model, train, test, seed });
 *   // federated (participant.kind === 'federated'): a task in, an update out
 *   const { update, metrics } = await participant.localRound(task);
 *   // local: no task, no update
 *   const { metrics } = await participant.localRound();
 *
 * Shapes:
 * - ReceivedTask: `dense` (first contact or mask version mismatch) carries every
 *   tensor whole; `sparse` carries per tensor the global values at the kept
 *   positions of the mask the coordinator holds for us, which is ours at
 *   `maskVersion`.
 * - LocalUpdate.tensors: per manifest tensor, `shared`: `kept` = (w_trained -
 *   w_received) at the NEW mask's kept positions (index order), `mask` = the new
 *   mask, and `maskChanged` = whether the coordinator needs this mask (it changed
 *   this round, or the coordinator's mask version differs from ours); or
 *   `personal`: a tensor the algorithm keeps to itself (FedRep's head, LG-FedAvg's
 *   body), sent as PERSONAL without values. The encoder sends exactly these
 *   values: nothing is scattered back to dense on the way.
 * - The masks the coordinator holds for us (`wireMasks`) are ours, with each
 *   personal tensor keeping no position once we have uploaded (mask version > 0).
 * - baseMaskVersion = the coordinator's mask version the task was built on;
 *   maskChange = changed (with ours + 1) when any tensor's mask must be sent.
 */
import type { SparseValues } from '../proto/codec.js';
import { Mask } from '../proto/mask.js';
import type { MaskChange } from '../proto/rpc.js';
import { parseTrainingOverrides, TrainingConfigError, type TrainingConfig } from '../proto/training-config.js';
import { AlgorithmConfigError, createAlgorithm, type AlgorithmKindOf, type AlgorithmName } from './algorithms/index.js';
import type {
  ClientAlgorithm,
  ClientData,
  EvalResult,
  FederatedAlgorithm,
  LocalAlgorithm,
  RoundContext,
  TrainMetrics,
  TrainOutcome,
} from './algorithms/types.js';
import { subset, type Dataset } from './data/dataset.js';
import { SeededRandom, deriveSeed } from '../proto/random.js';
import type { Model } from './model.js';
import { elementCount } from '../proto/shape.js';
import { fullMasks, prunedFraction, type MaskMap, type TensorMap } from './prune.js';
import { evaluate } from './train.js';

interface TaskBase {
  readonly round: number;
  /**
   * The coordinator's training config (parsed JSON), in the shared strict schema
   * (proto/training-config.ts): the fields it sets override the algorithm's own.
   */
  readonly config?: unknown;
  /** The coordinator's view of this client's mask version (0 = it holds none); the update is based on it. */
  readonly maskVersion: number;
}

/** Every tensor whole: first contact, or the coordinator holds another mask version than ours. */
export interface DenseTask extends TaskBase {
  readonly kind: 'dense';
  readonly tensors: ReadonlyMap<string, Float32Array>;
}

/** The global values at our kept positions only, laid out on our mask at `maskVersion`. */
export interface SparseTask extends TaskBase {
  readonly kind: 'sparse';
  readonly tensors: ReadonlyMap<string, SparseValues>;
}

export type ReceivedTask = DenseTask | SparseTask;

/** A tensor shared under its mask: the delta at the new mask's kept positions. */
export interface SharedUpdateTensor extends SparseValues {
  readonly kind: 'shared';
  /** The new mask. */
  readonly mask: Mask;
  /** Delta at the new mask's kept positions, index order. */
  readonly kept: Float32Array;
  /** Whether the coordinator needs this tensor's mask. */
  readonly maskChanged: boolean;
}

/** A tensor the client keeps to itself: no value leaves, the coordinator holds a mask keeping nothing. */
export interface PersonalUpdateTensor {
  readonly kind: 'personal';
  /** Whether the coordinator must learn that the tensor is personal (it held another mask). */
  readonly maskChanged: boolean;
}

export type UpdateTensor = SharedUpdateTensor | PersonalUpdateTensor;

export interface LocalUpdate {
  readonly round: number;
  readonly tensors: ReadonlyMap<string, UpdateTensor>;
  readonly numExamples: number;
  readonly baseMaskVersion: number;
  /** Changed (to our new version) when any tensor's mask must be sent. */
  readonly maskChange: MaskChange;
}

/** A round's metrics: what training says of itself, plus accuracy before and after and the sparsity reached. */
export interface RoundMetrics extends TrainMetrics {
  /** Personalized accuracy on the client's test data after this round (fedavg-ft: after fine-tuning). */
  readonly accuracy: number;
  /** Personalized loss on the client's test data after this round (the model `accuracy` is of). */
  readonly testLoss: number;
  /** Test accuracy of the model as received, before local training (local: before this round's training). */
  readonly receivedAccuracy: number;
  /** Test loss of the same received model. */
  readonly receivedLoss: number;
  /** Pruned share of all manifest elements, in [0, 1]. */
  readonly sparsity: number;
}

/** A federated round always owes the coordinator an update. */
export interface FederatedRoundResult {
  readonly update: LocalUpdate;
  readonly metrics: RoundMetrics;
}

/** A local round has nothing to send. */
export interface LocalRoundResult {
  readonly metrics: RoundMetrics;
}

/** What a client keeps between processes (see client/state.ts for the file). */
export interface PersonalState {
  readonly weights: TensorMap;
  readonly masks: MaskMap;
  readonly personal: TensorMap;
  /** The algorithm's own tensors (Ditto's personal model, LotteryFL's initial weights); empty for most. */
  readonly algorithmState: TensorMap;
  readonly maskVersion: number;
  readonly round: number;
}

/** A participant's model, data and state, whatever its algorithm. */
export interface ParticipantSetup {
  readonly model: Model;
  /** The client's training data; a validation split for the pruning gate is held out of it (gateOn 'val'). */
  readonly train: Dataset;
  readonly test: Dataset;
  /** Drives the validation split and each round's shuffling. */
  readonly seed: number;
  /** Resume from a saved state instead of the model's initial weights. */
  readonly restore?: PersonalState;
  readonly log?: (line: string) => void;
}

export interface ParticipantOptions<Name extends AlgorithmName = AlgorithmName> extends ParticipantSetup {
  readonly algorithm: Name;
  /** The algorithm's config (validated; reference defaults for missing fields). */
  readonly config?: unknown;
}

/** A task that does not fit this client (names, lengths, values). */
export class TaskError extends Error {
  override readonly name = 'TaskError';
}

/** Local training done, before the client moves to its new mask. */
interface Trained {
  readonly round: number;
  readonly ctx: RoundContext;
  readonly outcome: TrainOutcome;
  /** The model as it stood before training, on the test data. */
  readonly received: EvalResult;
}

/** What every participant holds and does; the two kinds below add their rounds. */
abstract class ParticipantBase<Algorithm extends ClientAlgorithm> {
  readonly model: Model;
  readonly algorithm: Algorithm;
  /** The splits the algorithm's own config asks for; a round whose config turns early stopping on adds the validation split. */
  readonly data: ClientData;
  /** `data` with the validation split held out, made when a round first needs it and not before (roundData). */
  #withVal: ClientData | undefined;
  readonly #fullTrain: Dataset;
  readonly #seed: number;
  readonly #log: ((line: string) => void) | undefined;
  #masks: MaskMap;
  #maskVersion = 0;
  #round = 0;

  constructor(setup: ParticipantSetup, algorithm: Algorithm) {
    this.model = setup.model;
    this.algorithm = algorithm;
    algorithm.checkModel(setup.model);
    this.#seed = setup.seed;
    this.#log = setup.log;
    this.#fullTrain = setup.train;
    this.data = splitData(setup.train, setup.test, algorithm, setup.seed);
    this.#masks = fullMasks(this.model.manifest);
    if (setup.restore !== undefined) this.#restore(setup.restore);
  }

  get maskVersion(): number {
    return this.#maskVersion;
  }

  /** Last round this client trained in. */
  get round(): number {
    return this.#round;
  }

  /** The current masks. */
  get masks(): MaskMap {
    return this.#masks;
  }

  get numExamples(): number {
    return this.data.train.count;
  }

  /** Pruned share of all manifest elements, in [0, 1]. */
  get sparsity(): number {
    return (
      prunedFraction(
        this.#masks,
        this.model.manifest.map((s) => s.name),
      ) / 100
    );
  }

  /** The last global model received (dense, as sent), for fedavg-ft's fine-tuning; a local participant never has one. */
  protected abstract get received(): TensorMap | undefined;

  /**
   * The round's data: `data`, with the validation split held out when the round's
   * config turns early stopping on and the algorithm's own config did not (the
   * same seeded split a gate on 'val' uses, so the same examples every round).
   */
  protected roundData(training: TrainingConfig): ClientData {
    if (training.earlyStopping === undefined || this.data.val !== undefined) return this.data;
    this.#withVal ??= { ...this.data, ...holdOutValidation(this.#fullTrain, this.algorithm.gate?.valFraction, this.#seed) };
    return this.#withVal;
  }

  /**
   * Personalized accuracy and loss on the client's own test data, or on its own
   * training data ('train': with the test figures, the overfitting gap).
   */
  async evaluate(on: 'test' | 'train' = 'test'): Promise<EvalResult> {
    const ctx: RoundContext = {
      model: this.model,
      masks: this.#masks,
      data: this.data,
      training: this.algorithm.training,
      seed: deriveSeed(this.#seed, this.#round, 0xe7a1),
    };
    return this.algorithm.evaluate(ctx, on === 'test' ? this.data.test : this.data.train, this.received);
  }

  /** Everything needed to resume this client in another process. */
  exportState(): PersonalState {
    return {
      weights: this.model.getWeights(),
      masks: this.#masks,
      personal: this.model.getPersonal(),
      algorithmState: this.algorithm.exportState(),
      maskVersion: this.#maskVersion,
      round: this.#round,
    };
  }

  /** Round `round`'s local training on the model as it stands (received, for a federated round), from our current masks. */
  protected async trainLocally(round: number, training: TrainingConfig): Promise<Trained> {
    const ctx: RoundContext = {
      model: this.model,
      masks: this.#masks,
      data: this.roundData(training),
      training,
      seed: deriveSeed(this.#seed, round),
      ...(this.#log !== undefined ? { log: this.#log } : {}),
    };
    const received = evaluate(this.model, this.data.test);
    const outcome = await this.algorithm.train(ctx);
    return { round, ctx, outcome, received };
  }

  /** Moves to the new masks and round, and measures the personalized model. */
  protected async conclude(trained: Trained): Promise<RoundMetrics> {
    const { masks, ...trainMetrics } = trained.outcome;
    this.#masks = masks;
    this.#round = trained.round;
    const personalized = await this.algorithm.evaluate({ ...trained.ctx, masks }, this.data.test, this.received);
    return {
      ...trainMetrics,
      accuracy: personalized.accuracy,
      testLoss: personalized.loss,
      receivedAccuracy: trained.received.accuracy,
      receivedLoss: trained.received.loss,
      sparsity: this.sparsity,
    };
  }

  /**
   * The mask version an update that changes a mask moves to: one above both
   * ours and the one the coordinator holds for us (the task's). The
   * coordinator refuses a new version that is not above its own, and ours
   * can be behind it: a state saved before an accepted upload (a crash in
   * between, a restored backup) never learnt of that upload's version.
   */
  protected nextMaskVersion(heldByCoordinator: number): number {
    this.#maskVersion = Math.max(this.#maskVersion, heldByCoordinator) + 1;
    return this.#maskVersion;
  }

  #restore(state: PersonalState): void {
    for (const spec of this.model.manifest) {
      const mask = state.masks.get(spec.name);
      if (mask === undefined) throw new TaskError(`restored state has no mask for '${spec.name}'`);
      if (mask.length !== elementCount(spec.shape)) {
        throw new TaskError(
          `restored mask of '${spec.name}' has ${mask.length} entries, the model needs ${elementCount(spec.shape)}`,
        );
      }
    }
    this.model.setWeights(state.weights);
    this.model.setPersonal(state.personal);
    this.algorithm.restoreState(state.algorithmState, this.model);
    this.#masks = new Map(state.masks);
    this.#maskVersion = state.maskVersion;
    this.#round = state.round;
  }
}

/** A participant of a federated algorithm: every round starts from a task and ends with an update. */
export class FederatedParticipant extends ParticipantBase<FederatedAlgorithm> {
  readonly kind = 'federated' as const;
  #received: TensorMap | undefined;
  /** The tensors the algorithm keeps to itself; fixed by the algorithm and the model. */
  readonly personalTensors: ReadonlySet<string>;

  constructor(setup: ParticipantSetup, algorithm: FederatedAlgorithm) {
    super(setup, algorithm);
    this.personalTensors = algorithm.personalTensors(setup.model);
    for (const name of this.personalTensors) {
      if (!this.masks.has(name)) throw new Error(`${algorithm.name} keeps unknown tensor '${name}' personal`);
    }
    if (this.personalTensors.size === this.model.manifest.length) {
      throw new Error(`${algorithm.name} keeps every tensor personal: it would share nothing (that is the local algorithm)`);
    }
  }

  protected get received(): TensorMap | undefined {
    return this.#received;
  }

  /**
   * The masks the coordinator holds for us at our mask version: ours, and for a
   * personal tensor none once we have uploaded (version 0: it holds nothing, i.e. all kept).
   * What a sparse task is laid out on and what UNCHANGED and DIFF refer to.
   */
  get wireMasks(): MaskMap {
    if (this.personalTensors.size === 0 || this.maskVersion === 0) return this.masks;
    const masks = new Map(this.masks);
    for (const name of this.personalTensors) masks.set(name, Mask.none((this.masks.get(name) as Mask).length));
    return masks;
  }

  /** One round: receive the task, train, decide the mask, build the update. */
  async localRound(task: ReceivedTask): Promise<FederatedRoundResult> {
    const training = withOverrides(this.algorithm, task);
    const global = this.#globalFrom(task);
    // A personal tensor stays ours: whatever the task holds for it (nothing in a sparse task) is not loaded.
    const own = this.model.getWeights();
    for (const name of this.personalTensors) global.set(name, own.get(name) as Float32Array);
    this.algorithm.prepare(this.model, this.masks, global);
    this.#received = global;
    const baseline = this.model.getWeights();
    const trained = await this.trainLocally(task.round, training);
    const update = this.#buildUpdate(task, baseline, trained);
    return { update, metrics: await this.conclude(trained) };
  }

  /** Dense global values from the task, validated whole before anything is used. */
  #globalFrom(task: ReceivedTask): TensorMap {
    if (task.kind === 'sparse' && task.maskVersion !== this.maskVersion) {
      throw new TaskError(
        `round ${task.round}: sparse task is laid out on mask version ${task.maskVersion}, this client holds ${this.maskVersion}`,
      );
    }
    const manifestNames = new Set(this.model.manifest.map((s) => s.name));
    for (const name of task.tensors.keys()) {
      if (!manifestNames.has(name)) throw new TaskError(`round ${task.round}: unknown tensor '${name}' in the task`);
    }
    const global: TensorMap = new Map();
    for (const spec of this.model.manifest) {
      const dense = denseTensor(task, spec.name, elementCount(spec.shape));
      for (let i = 0; i < dense.length; i++) {
        if (!Number.isFinite(dense[i]))
          throw new TaskError(`round ${task.round}: '${spec.name}' holds a non-finite value at ${i}`);
      }
      global.set(spec.name, dense);
    }
    return global;
  }

  /** The update against `baseline` (the received model), on the new masks; called while ours are still the old ones. */
  #buildUpdate(task: ReceivedTask, baseline: TensorMap, done: Trained): LocalUpdate {
    const newMasks = done.outcome.masks;
    const trained = this.model.getWeights();
    const resendAll = task.maskVersion !== this.maskVersion;
    const held = this.wireMasks;
    const tensors = new Map<string, UpdateTensor>();
    let anyChanged = false;
    for (const spec of this.model.manifest) {
      const oldMask = held.get(spec.name) as Mask;
      const mask = newMasks.get(spec.name);
      if (mask === undefined) throw new Error(`${this.algorithm.name} returned no mask for '${spec.name}'`);
      if (this.personalTensors.has(spec.name)) {
        // The coordinator holds a mask keeping nothing for a tensor it knows is personal.
        const maskChanged = resendAll || oldMask.keptCount !== 0;
        anyChanged ||= maskChanged;
        tensors.set(spec.name, { kind: 'personal', maskChanged });
        continue;
      }
      const maskChanged = resendAll || !oldMask.equals(mask);
      anyChanged ||= maskChanged;
      tensors.set(spec.name, {
        kind: 'shared',
        mask,
        maskChanged,
        kept: updateDelta(trained.get(spec.name)!, baseline.get(spec.name)!, mask),
      });
    }
    return {
      round: task.round,
      tensors,
      // What this round trained on (without a validation split it held out).
      numExamples: done.ctx.data.train.count,
      baseMaskVersion: task.maskVersion,
      maskChange: anyChanged ? { kind: 'changed', version: this.nextMaskVersion(task.maskVersion) } : { kind: 'unchanged' },
    };
  }
}

/** A participant of a local algorithm: it trains on its own, never takes a task and never owes an update. */
export class LocalParticipant extends ParticipantBase<LocalAlgorithm> {
  readonly kind = 'local' as const;

  protected get received(): undefined {
    return undefined;
  }

  /** One round of local training, on the algorithm's own training config. */
  async localRound(): Promise<LocalRoundResult> {
    const trained = await this.trainLocally(this.round + 1, this.algorithm.training);
    return { metrics: await this.conclude(trained) };
  }
}

export type Participant = FederatedParticipant | LocalParticipant;

/** The participant an algorithm runs in, by the kind the registry gives its name. */
export type ParticipantFor<Name extends AlgorithmName> = Name extends AlgorithmName
  ? AlgorithmKindOf<Name> extends 'federated'
    ? FederatedParticipant
    : LocalParticipant
  : never;

/** A participant for the named algorithm (created with `config`), of the algorithm's kind. */
export function createParticipant<Name extends AlgorithmName>(options: ParticipantOptions<Name>): ParticipantFor<Name> {
  const algorithm = createAlgorithm(options.algorithm, options.config);
  const participant: Participant =
    algorithm.kind === 'federated' ? new FederatedParticipant(options, algorithm) : new LocalParticipant(options, algorithm);
  // The registry's kind for Name is the kind of the object it creates for Name.
  return participant as ParticipantFor<Name>;
}

/** One task tensor as a whole new tensor (zero outside the kept positions of a sparse one), checked against its size. */
function denseTensor(task: ReceivedTask, name: string, size: number): Float32Array {
  const missing = () => new TaskError(`round ${task.round}: tensor '${name}' is missing from the task`);
  switch (task.kind) {
    case 'dense': {
      const t = task.tensors.get(name);
      if (t === undefined) throw missing();
      if (t.length !== size) {
        throw new TaskError(`round ${task.round}: dense tensor '${name}' has ${t.length} values, shape needs ${size}`);
      }
      return Float32Array.from(t);
    }
    case 'sparse': {
      const t = task.tensors.get(name);
      if (t === undefined) throw missing();
      if (t.mask.length !== size) {
        throw new TaskError(`round ${task.round}: mask of '${name}' has ${t.mask.length} entries, shape needs ${size}`);
      }
      if (t.kept.length !== t.mask.keptCount) {
        throw new TaskError(`round ${task.round}: '${name}' has ${t.kept.length} values for ${t.mask.keptCount} kept positions`);
      }
      return t.mask.scatter(t.kept);
    }
  }
}

/** (trained - received) at the kept positions of `mask`, index order. */
export function updateDelta(trained: Float32Array, received: Float32Array, mask: Mask): Float32Array {
  if (trained.length !== received.length)
    throw new RangeError(`delta: ${trained.length} trained vs ${received.length} received values`);
  if (mask.length !== trained.length) throw new RangeError(`delta: ${trained.length} values, mask has ${mask.length}`);
  const indices = mask.keptIndices();
  const delta = new Float32Array(indices.length);
  for (let k = 0; k < indices.length; k++) delta[k] = trained[indices[k]] - received[indices[k]];
  return delta;
}

/**
 * The round's training config: the task's, parsed with the schema the
 * coordinator validated it with, laid over the algorithm's own and checked by
 * the algorithm. A field the algorithm cannot train with (Sub-FedAvg with
 * epochs 1 would never prune) refuses the task, naming the field: training it
 * anyway would silently give up every saving the user chose the algorithm for.
 */
function withOverrides(algorithm: FederatedAlgorithm, task: ReceivedTask): TrainingConfig {
  let overrides;
  try {
    overrides = parseTrainingOverrides(task.config, '(config)');
  } catch (err) {
    if (err instanceof TrainingConfigError) throw new TaskError(`round ${task.round}: task config: ${err.message}`);
    throw err;
  }
  try {
    return algorithm.withTraining(overrides);
  } catch (err) {
    if (err instanceof AlgorithmConfigError) {
      throw new TaskError(`round ${task.round}: task config does not suit ${algorithm.name}: ${err.problems.join('; ')}`);
    }
    throw err;
  }
}

/** The share of the training data held out as the validation split when the algorithm's gate does not set it. */
export const DEFAULT_VAL_FRACTION = 0.1;

/**
 * The splits the algorithm's own config asks for: a validation split held out of
 * the training data when its gate measures on 'val' or its training stops early;
 * the gate on that split, or on the test split ('test').
 */
function splitData(train: Dataset, test: Dataset, algorithm: ClientAlgorithm, seed: number): ClientData {
  const gate = algorithm.gate;
  const needsVal = gate?.gateOn === 'val' || algorithm.training.earlyStopping !== undefined;
  const split: { readonly train: Dataset; readonly val?: Dataset } = needsVal
    ? holdOutValidation(train, gate?.valFraction, seed)
    : { train };
  if (gate === undefined) return { ...split, test };
  const gated = gate.gateOn === 'test' ? test : split.val;
  return gated === undefined ? { ...split, test } : { ...split, test, gate: gated };
}

/** The seeded validation split (the gate's valFraction, else DEFAULT_VAL_FRACTION) and the rest to train on. */
function holdOutValidation(
  train: Dataset,
  valFraction: number | undefined,
  seed: number,
): { readonly train: Dataset; readonly val: Dataset } {
  const fraction = valFraction ?? DEFAULT_VAL_FRACTION;
  const valCount = Math.max(1, Math.round(train.count * fraction));
  if (train.count - valCount < 1) {
    throw new TaskError(
      `${train.name}: ${train.count} training examples are too few to hold out a validation split (valFraction ${fraction})`,
    );
  }
  const order = new SeededRandom(deriveSeed(seed, 0x7a11)).permutation(train.count);
  return {
    train: subset(train, order.subarray(valCount), `${train.name}[train]`),
    val: subset(train, order.subarray(0, valCount), `${train.name}[val]`),
  };
}
