/**
 * What a `subfed client` run reports, in order, as it goes: the CLI writes one
 * log line per event, tests assert on the sequence, and an embedding (a UI, a
 * device agent) can react to it without parsing text. Each event carries what
 * a reader needs without asking the session.
 */
import type { UpdateAck, ValueEncodingName } from '../proto/messages.js';
import type { AlgorithmName } from './algorithms/registry.js';
import type { BackendName } from './backend.js';
import type { ExampleShape } from './data/dataset.js';
import type { DataFolderLayout, DataFormat } from './data/folder.js';
import type { ModelName } from './model-names.js';
import type { RoundMetrics } from './participant.js';

/** A call that waits for the coordinator to come back. */
export type CoordinatorCall = 'join' | 'pull' | 'push';

/**
 * Bytes of serialized messages moved so far by this process, per direction:
 * `bytesUp`/`bytesDown` in calls that succeeded (each counted once however
 * often it was retried), `failedBytes*` in attempts that failed (retried
 * during an outage, or refused).
 */
export interface Traffic {
  readonly bytesUp: number;
  readonly bytesDown: number;
  readonly failedBytesUp: number;
  readonly failedBytesDown: number;
}

export type ClientEvent =
  /** Something to fix that does not stop the run (a token file others can read). */
  | { readonly kind: 'warning'; readonly text: string }
  | { readonly kind: 'backend-ready'; readonly backend: BackendName }
  | {
      readonly kind: 'data-loaded';
      readonly folder: string;
      readonly layout: DataFolderLayout['kind'];
      readonly format: DataFormat;
      readonly trainExamples: number;
      readonly testExamples: number;
      /** One example: an image's height, width and channels, or a number of features. */
      readonly shape: ExampleShape;
    }
  /** The images' channels were converted to the model's (grey <-> RGB). */
  | { readonly kind: 'data-converted'; readonly model: ModelName; readonly fromChannels: number; readonly toChannels: number }
  /** A fresh identity from the coordinator (no saved one, or the saved one belongs to another model). */
  | {
      readonly kind: 'joined';
      readonly server: string;
      readonly clientId: string;
      readonly algorithm: AlgorithmName;
      readonly values: ValueEncodingName;
    }
  /** The saved identity, used without joining: the coordinator still holds this client's mask. */
  | {
      readonly kind: 'resumed';
      readonly server: string;
      readonly clientId: string;
      readonly algorithm: AlgorithmName;
      readonly values: ValueEncodingName;
    }
  /** An algorithm that never communicates: no coordinator at all. */
  | { readonly kind: 'training-locally'; readonly model: ModelName; readonly algorithm: AlgorithmName }
  /** The personal state (weights, masks, BatchNorm statistics) saved by an earlier run. */
  | { readonly kind: 'state-restored'; readonly stateDir: string; readonly round: number; readonly maskVersion: number }
  /** The coordinator is unreachable; `call` is tried again after `delayMs`. */
  | { readonly kind: 'reconnecting'; readonly call: CoordinatorCall; readonly reason: string; readonly delayMs: number }
  /** The coordinator no longer knew this client (`reason`); it joined again, personal state kept. */
  | {
      readonly kind: 'rejoined';
      readonly server: string;
      readonly clientId: string;
      readonly previousClientId: string;
      readonly reason: string;
    }
  /** A heartbeat failed after working (or at first); said once until one works again. It never stops a round. */
  | { readonly kind: 'heartbeat-failed'; readonly reason: string }
  /** Heartbeats work again after `failed` failures in a row. */
  | { readonly kind: 'heartbeat-restored'; readonly failed: number }
  /** No task for this client yet; `consecutive` counts the pulls in a row that found none. */
  | { readonly kind: 'waiting'; readonly retryAfterMs: number; readonly consecutive: number }
  /** A round begins: a task arrived (the global model, dense or at this client's kept positions), or a local round. */
  | { readonly kind: 'round-started'; readonly round: number; readonly received: 'dense' | 'sparse' | 'nothing' }
  /** A line the algorithm wrote while training (its pruning decisions). */
  | { readonly kind: 'note'; readonly round: number; readonly text: string }
  | { readonly kind: 'trained'; readonly round: number; readonly metrics: RoundMetrics }
  /** The coordinator accepted the update; the personal state is saved. */
  | ({ readonly kind: 'pushed'; readonly round: number; readonly ack: UpdateAck } & Traffic)
  /** The coordinator refused the update (the round closed, or its view of our mask went stale); the next pull re-synchronises. */
  | { readonly kind: 'refused'; readonly round: number; readonly reason: string }
  | { readonly kind: 'left'; readonly server: string }
  /** Leaving failed; the identity is forgotten all the same (the next start joins afresh). */
  | { readonly kind: 'leave-failed'; readonly server: string; readonly reason: string }
  /** The coordinator has committed its configured rounds; the state is saved. The last event of such a run. */
  | ({
      readonly kind: 'finished';
      readonly lastRound: number;
      readonly roundsTrained: number;
      readonly stateDir: string;
    } & Traffic)
  /** Stopped by a signal or the round limit. The last event of such a run. */
  | ({
      readonly kind: 'stopped';
      readonly reason: 'signal' | 'round-limit';
      readonly roundsTrained: number;
      /** Where the state was saved; undefined when it stopped before a session began (nothing to save). */
      readonly stateDir: string | undefined;
    } & Traffic);

export type ClientEventKind = ClientEvent['kind'];
