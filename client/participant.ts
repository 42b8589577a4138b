/**
 * One federated client, independent of any transport: the simulator's worker
 * threads and the real `subfed client` both drive it. It holds the client's
 * model (weights + personal BatchNorm statistics), its mask and mask version,
 * its data splits and its algorithm, and turns a received task into an update:
 *
 *   const result = await participant.localRound(task);   // task: ReceivedTask, or null for `local`
 *   if (result.update) push(result.update);
 *
 * Shapes:
 * - ReceivedTask: `dense` (first contact or mask version mismatch) carries every
 *   tensor whole; `sparse` carries per tensor the global values at the kept
 *   positions of the mask the coordinator holds for us, which is ours at
 *   `maskVersion`.
 * - LocalUpdate.tensors: per manifest tensor, `kept` = (w_trained - w_received) at
 *   the NEW mask's kept positions (index order), `mask` = the new mask, and
 *   `maskChanged` = whether the coordinator needs this mask (it changed this round,
 *   or the coordinator's mask version differs from ours). The encoder sends
 *   exactly these values: nothing is scattered back to dense on the way.
 * - baseMaskVersion = the coordinator's mask version the task was built on;
 *   maskChange = changed (with ours + 1) when any tensor's mask must be sent.
 */
import type { SparseValues } from '../proto/codec.js';
import type { Mask } from '../proto/mask.js';
import type { MaskChange } from '../proto/rpc.js';
import { parseTrainingOverrides, TrainingConfigError, type TrainingConfig } from '../proto/training-config.js';
import { AlgorithmConfigError, createAlgorithm, type AlgorithmName } from './algorithms/index.js';
import type { ClientAlgorithm, ClientData, EvalResult, MaskDecisionReport, RoundContext } from './algorithms/types.js';
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

export interface UpdateTensor extends SparseValues {
  /** The new mask. */
  readonly mask: Mask;
  /** Delta at the new mask's kept positions, index order. */
  readonly kept: Float32Array;
  /** Whether the coordinator needs this tensor's mask. */
  readonly maskChanged: boolean;
}

export interface LocalUpdate {
  readonly round: number;
  readonly tensors: ReadonlyMap<string, UpdateTensor>;
  readonly numExamples: number;
  readonly baseMaskVersion: number;
  /** Changed (to our new version) when any tensor's mask must be sent. */
  readonly maskChange: MaskChange;
}

export interface RoundMetrics {
  /** Mean training loss over the local epochs. */
  readonly loss: number;
  /** Personalized accuracy on the client's test data after this round (fedavg-ft: after fine-tuning). */
  readonly accuracy: number;
  /** Test accuracy of the model as received, before local training (local: before this round's training). */
  readonly receivedAccuracy: number;
  /** Training accuracy of the last local epoch. */
  readonly trainAccuracy: number;
  /** Pruned share of all manifest elements, in [0, 1]. */
  readonly sparsity: number;
  readonly channelsKept?: number[];
  readonly decisions: readonly MaskDecisionReport[];
}

export interface RoundResult {
  /** Absent for algorithms that never communicate (`local`). */
  readonly update?: LocalUpdate;
  readonly metrics: RoundMetrics;
}

/** What a client keeps between processes (see client/state.ts for the file). */
export interface PersonalState {
  readonly weights: TensorMap;
  readonly masks: MaskMap;
  readonly personal: TensorMap;
  readonly maskVersion: number;
  readonly round: number;
}

export interface ParticipantOptions {
  readonly model: Model;
  readonly algorithm: AlgorithmName;
  /** The algorithm's config (validated; reference defaults for missing fields). */
  readonly config?: unknown;
  /** The client's training data; a validation split for the pruning gate is held out of it (gateOn 'val'). */
  readonly train: Dataset;
  readonly test: Dataset;
  /** Drives the validation split and each round's shuffling. */
  readonly seed: number;
  /** Resume from a saved state instead of the model's initial weights. */
  readonly restore?: PersonalState;
  readonly log?: (line: string) => void;
}

/** A task that does not fit this client (names, lengths, values). */
export class TaskError extends Error {
  override readonly name = 'TaskError';
}

export class Participant {
  readonly model: Model;
  readonly algorithm: ClientAlgorithm;
  readonly data: ClientData;
  readonly #seed: number;
  readonly #log: ((line: string) => void) | undefined;
  #masks: MaskMap;
  #maskVersion = 0;
  #round = 0;
  /** The last global model received (dense, as sent), for fedavg-ft's fine-tuning. */
  #received: TensorMap | undefined;

  constructor(opts: ParticipantOptions) {
    this.model = opts.model;
    this.algorithm = createAlgorithm(opts.algorithm, opts.config);
    this.algorithm.checkModel(opts.model);
    this.#seed = opts.seed;
    this.#log = opts.log;
    this.data = splitData(opts.train, opts.test, this.algorithm, opts.seed);
    this.#masks = fullMasks(this.model.manifest);
    if (opts.restore !== undefined) this.#restore(opts.restore);
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

  /** One round: receive (unless `local`), train, decide the mask, build the update. */
  async localRound(task: ReceivedTask | null): Promise<RoundResult> {
    const algo = this.algorithm;
    if (algo.communicates && task === null) throw new TaskError(`${algo.name} needs a task from the coordinator`);
    if (!algo.communicates && task !== null) throw new TaskError(`${algo.name} never communicates; it takes no task`);
    const round = task?.round ?? this.#round + 1;
    const ctx: RoundContext = {
      model: this.model,
      masks: this.#masks,
      data: this.data,
      training: task === null ? algo.training : withOverrides(algo, task),
      seed: deriveSeed(this.#seed, round),
      ...(this.#log !== undefined ? { log: this.#log } : {}),
    };
    let baseline: TensorMap | undefined;
    if (task !== null) {
      const global = this.#globalFrom(task);
      algo.prepare(this.model, this.#masks, global);
      this.#received = global;
      baseline = this.model.getWeights();
    }
    const receivedAccuracy = evaluate(this.model, this.data.test).accuracy;
    const outcome = await algo.train(ctx);
    let update: LocalUpdate | undefined;
    if (task !== null && baseline !== undefined) {
      update = this.#buildUpdate(task, baseline, outcome.masks);
    }
    this.#masks = outcome.masks;
    this.#round = round;
    const personalized = await algo.evaluate({ ...ctx, masks: this.#masks }, this.data.test, this.#received);
    return {
      ...(update !== undefined ? { update } : {}),
      metrics: {
        loss: outcome.loss,
        accuracy: personalized.accuracy,
        receivedAccuracy,
        trainAccuracy: outcome.trainAccuracy,
        sparsity: this.sparsity,
        ...(outcome.channelsKept !== undefined ? { channelsKept: outcome.channelsKept } : {}),
        decisions: outcome.decisions,
      },
    };
  }

  /** Personalized accuracy and loss on the client's own test data. */
  async evaluate(): Promise<EvalResult> {
    const ctx: RoundContext = {
      model: this.model,
      masks: this.#masks,
      data: this.data,
      training: this.algorithm.training,
      seed: deriveSeed(this.#seed, this.#round, 0xe7a1),
    };
    return this.algorithm.evaluate(ctx, this.data.test, this.#received);
  }

  /** Everything needed to resume this client in another process. */
  exportState(): PersonalState {
    return {
      weights: this.model.getWeights(),
      masks: this.#masks,
      personal: this.model.getPersonal(),
      maskVersion: this.#maskVersion,
      round: this.#round,
    };
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
    this.#masks = new Map(state.masks);
    this.#maskVersion = state.maskVersion;
    this.#round = state.round;
  }

  /** Dense global values from the task, validated whole before anything is used. */
  #globalFrom(task: ReceivedTask): TensorMap {
    if (task.kind === 'sparse' && task.maskVersion !== this.#maskVersion) {
      throw new TaskError(
        `round ${task.round}: sparse task is laid out on mask version ${task.maskVersion}, this client holds ${this.#maskVersion}`,
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

  #buildUpdate(task: ReceivedTask, baseline: TensorMap, newMasks: MaskMap): LocalUpdate {
    const trained = this.model.getWeights();
    const resendAll = task.maskVersion !== this.#maskVersion;
    const tensors = new Map<string, UpdateTensor>();
    let anyChanged = false;
    for (const spec of this.model.manifest) {
      const oldMask = this.#masks.get(spec.name) as Mask;
      const mask = newMasks.get(spec.name);
      if (mask === undefined) throw new Error(`${this.algorithm.name} returned no mask for '${spec.name}'`);
      const maskChanged = resendAll || !oldMask.equals(mask);
      anyChanged ||= maskChanged;
      tensors.set(spec.name, { mask, maskChanged, kept: updateDelta(trained.get(spec.name)!, baseline.get(spec.name)!, mask) });
    }
    if (anyChanged) this.#maskVersion += 1;
    return {
      round: task.round,
      tensors,
      numExamples: this.numExamples,
      baseMaskVersion: task.maskVersion,
      maskChange: anyChanged ? { kind: 'changed', version: this.#maskVersion } : { kind: 'unchanged' },
    };
  }
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
function withOverrides(algorithm: ClientAlgorithm, task: ReceivedTask): TrainingConfig {
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

/** Hold out the gate's validation split (gateOn 'val'), or gate on the test split ('test'). */
function splitData(train: Dataset, test: Dataset, algorithm: ClientAlgorithm, seed: number): ClientData {
  const gate = algorithm.gate;
  if (gate === undefined) return { train, test };
  if (gate.gateOn === 'test') return { train, test, gate: test };
  const valCount = Math.max(1, Math.round(train.count * gate.valFraction));
  if (train.count - valCount < 1) {
    throw new TaskError(
      `${train.name}: ${train.count} training examples are too few to hold out a validation split (valFraction ${gate.valFraction})`,
    );
  }
  const order = new SeededRandom(deriveSeed(seed, 0x7a11)).permutation(train.count);
  return {
    train: subset(train, order.subarray(valCount), `${train.name}[train]`),
    gate: subset(train, order.subarray(0, valCount), `${train.name}[val]`),
    test,
  };
}
