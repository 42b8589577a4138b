/**
 * Heartbeats, so that the coordinator can tell a live client from a dead one:
 * one every `intervalMs` while the session is open (waiting for a task,
 * training, uploading). They travel on a channel of their own, without
 * retries and with a deadline, so a slow or failed heartbeat never delays a
 * pull or a push, and the next tick is the retry. A failure is
 * reported once, with its reason, until a heartbeat works again; it never
 * stops a round.
 *
 * Training is CPU-bound on the event loop; the training loop yields between
 * batches (client/event-loop.ts), which is what lets these timers fire.
 */
import type { ClientEvent } from './events.js';
import { CoordinatorClient, type ClientIdentity, type ConnectOptions } from './remote.js';

export interface HeartbeatOptions {
  readonly server: string;
  readonly intervalMs: number;
  readonly connect: Pick<ConnectOptions, 'tls' | 'maxMessageBytes'>;
  /** Who we are now (a re-join changes it); undefined skips the tick. */
  readonly identity: () => ClientIdentity | undefined;
  /** Told `heartbeat-failed` and `heartbeat-restored`. */
  readonly report: (event: ClientEvent) => void;
}

/**
 * How long a heartbeat may take: a few intervals, and never under 2 s, because
 * its answer is read only when training next yields the event loop (and on a
 * small board a batch can take a while). Meanwhile ticks are skipped, so there
 * is never more than one heartbeat out.
 */
export function heartbeatDeadlineMs(intervalMs: number): number {
  return Math.max(3 * intervalMs, 2000);
}

export class Heartbeats {
  readonly #client: CoordinatorClient;
  readonly #options: HeartbeatOptions;
  #timer: NodeJS.Timeout | undefined;
  #inFlight = false;
  #failures = 0;
  #sent = 0;
  #as: string | undefined;

  constructor(options: HeartbeatOptions) {
    this.#options = options;
    this.#client = CoordinatorClient.connect(options.server, {
      ...options.connect,
      retry: { maxAttempts: 1 },
      callTimeoutMs: heartbeatDeadlineMs(options.intervalMs),
    });
  }

  /** Heartbeats sent so far (answered or not). */
  get sent(): number {
    return this.#sent;
  }

  /** Bytes of heartbeat messages, per direction. */
  get bytesUp(): number {
    return this.#client.bytesUp;
  }

  get bytesDown(): number {
    return this.#client.bytesDown;
  }

  /** Bytes of heartbeats that failed. */
  get failedBytes(): { readonly up: number; readonly down: number } {
    return this.#client.failedBytes;
  }

  start(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => this.#beat(), this.#options.intervalMs);
    // A heartbeat alone never keeps the process alive.
    this.#timer.unref();
  }

  /** Stops the timer; a heartbeat in flight is left to finish. */
  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  close(): void {
    this.stop();
    this.#client.close();
  }

  #beat(): void {
    // The previous one is still out (until its deadline at most): this tick is skipped.
    if (this.#inFlight) return;
    const identity = this.#options.identity();
    if (identity === undefined) return;
    const as = `${identity.clientId}\n${identity.clientToken}`;
    if (as !== this.#as) {
      this.#client.resume(identity);
      this.#as = as;
    }
    this.#inFlight = true;
    this.#sent++;
    this.#client.heartbeat().then(
      () => {
        this.#inFlight = false;
        if (this.#failures > 0) this.#options.report({ kind: 'heartbeat-restored', failed: this.#failures });
        this.#failures = 0;
      },
      (err: unknown) => {
        this.#inFlight = false;
        if (this.#failures++ === 0) {
          this.#options.report({ kind: 'heartbeat-failed', reason: err instanceof Error ? err.message : String(err) });
        }
      },
    );
  }
}
