/**
 * The messages between the simulation driver (main thread) and the client
 * workers (client-worker.ts). Plain structured-clone data only.
 */
import type { BackendName } from '../client/backend.js';
import type { EvalResult } from '../client/algorithms/types.js';
import type { Dataset } from '../client/data/dataset.js';
import type { ModelName } from '../client/model-names.js';
import type { InitialModel } from '../server/config.js';
import type { AlgorithmName, SimConfig } from './presets.js';

/** Given to every worker once at start; the datasets' arrays live in SharedArrayBuffers. */
export interface WorkerSetup {
  readonly config: SimConfig;
  readonly train: Dataset;
  /** The dataset the clients' test indices point into (the test split, or train for own-data test sets). */
  readonly test: Dataset;
}

export type WorkerRequest =
  /** The tfjs backend this worker started (SimConfig.backend resolved: never 'auto'). */
  | { readonly kind: 'backend' }
  /** Build a model with the run's seed; the driver hands it to the coordinator as its initial global model. */
  | { readonly kind: 'initial-model'; readonly model: ModelName; readonly seed: number }
  /** Create a client's Participant on this worker (its data are indices into the shared datasets). */
  | {
      readonly kind: 'host';
      readonly client: number;
      readonly algorithm: AlgorithmName;
      readonly train: Int32Array;
      readonly test: Int32Array;
    }
  /** Connect and join the coordinator (one client at a time, so ids follow client order). */
  | { readonly kind: 'join'; readonly client: number; readonly address: string; readonly enrollmentToken: string }
  /** One local round: pull the task over gRPC, train, push. Local-only trains without the network. */
  | { readonly kind: 'train'; readonly client: number; readonly round: number }
  /** Personalized accuracy and loss of these clients on their own test data and on their own training data. */
  /** `withTrain`: the clients also measured on their training data (those sampled so far). */
  | { readonly kind: 'evaluate'; readonly clients: readonly number[]; readonly withTrain: readonly number[] }
  /** A given (global) model on these clients' test data. */
  | { readonly kind: 'evaluate-model'; readonly clients: readonly number[]; readonly weights: Map<string, Float32Array> }
  /**
   * Write each client's compact model (and its state) under `dir`/client-<id>/
   * (subfed sim --export), and measure it on the client's test data.
   */
  | { readonly kind: 'export'; readonly clients: readonly number[]; readonly dir: string }
  /** Dispose every hosted client and close its channel (end of an algorithm's run). */
  | { readonly kind: 'release' };

/** One member's round, as rounds.jsonl records it. */
export interface MemberResult {
  readonly client: number;
  /** The model received this round, before local training, on the client's test data; null for local-only. */
  readonly received: EvalResult | null;
  /** The personalized model after local training, on the client's test data. */
  readonly personalized: EvalResult;
  /** Pruned share of all model parameters after this round, in [0, 1]. */
  readonly sparsity: number;
  /** The same, of the mask held when the task arrived: what the download was cut to. */
  readonly receivedSparsity: number;
  readonly channelsKept: number[] | null;
}

/** One client's compact model, as `subfed sim --export` wrote it. */
export interface ClientExport {
  readonly client: number;
  /** The export folder (model.json + weights.bin); its state folder is the one above. */
  readonly dir: string;
  /** Bytes of the compact f32 LayersModel files. */
  readonly bytes: number;
  /** Bytes of the same files for the full-size (masked) model. */
  readonly maskedBytes: number;
  readonly parameters: number;
  /** Parameters the client's mask keeps. */
  readonly keptParameters: number;
  /** Per layer: name and width after compaction (conv channels, dense units). */
  readonly widths: readonly { readonly name: string; readonly width: number }[];
  /** The compact model on the client's test data. */
  readonly accuracy: number;
}

/** A client's personalized model at an evaluation round. */
export interface ClientEvaluation {
  readonly client: number;
  /** On the client's own test data. */
  readonly test: EvalResult;
  /**
   * On the client's own training data (without a held-out validation split): test and train give the
   * overfitting gap. null when the request did not ask for it (a client never sampled).
   */
  readonly train: EvalResult | null;
}

/** A given (global) model on one client's test data. */
export interface ModelEvaluation {
  readonly client: number;
  readonly test: EvalResult;
}

/** What each request resolves to. */
export interface WorkerResponses {
  backend: BackendName;
  'initial-model': InitialModel;
  host: null;
  join: { clientId: string };
  train: MemberResult;
  evaluate: ClientEvaluation[];
  'evaluate-model': ModelEvaluation[];
  export: ClientExport[];
  release: null;
}

export type WorkerResponse = WorkerResponses[keyof WorkerResponses];
