/**
 * Admission and memory accounting for the coordinator's open streams
 * (PullTask and PushUpdate). A stream that is opened and then left hanging
 * (an upload that stops sending, a download that stops reading) holds
 * memory until something closes it, so:
 *
 * - at most `total` streams are open at once, and at most `perClient` of one
 *   client (counted once the client is known: a task request, an update header);
 * - the bytes they buffer (an upload's tensor pieces until the update is
 *   folded, a download's prepared task until it is sent) stay within
 *   `maxBufferedBytes` together;
 * - the gRPC layer closes a stream that makes no progress for `idleMs`.
 *
 * Every refusal here is RESOURCE_EXHAUSTED with a retry time: it passes once
 * other streams end. The counters are the server's own, so tests and the
 * `subfed_stream_buffered_bytes` gauge measure what it holds, not the RSS.
 */
import { exhausted } from './errors.js';

export interface StreamLimits {
  readonly perClient: number;
  readonly total: number;
  readonly idleMs: number;
  readonly maxBufferedBytes: number;
}

export type StreamKind = 'upload' | 'download';

export interface StreamStats {
  /** Streams open now. */
  readonly open: number;
  /** Most streams open at once so far. */
  readonly peakOpen: number;
  /** Most streams one client held at once so far; never above perClient. */
  readonly peakPerClient: number;
  /** Bytes the open streams hold now. */
  readonly buffered: number;
  /** Most bytes held at once so far; never above maxBufferedBytes. */
  readonly peakBuffered: number;
}

/** One open stream's place: claims its client's slot and holds bytes; release() gives everything back (once). */
export interface StreamTicket {
  readonly kind: StreamKind;
  /** Counts the stream against its client's `perClient` (at most once per ticket). */
  claim(clientId: string): void;
  /** Adds `bytes` to what this stream holds; refused beyond the budget (nothing is added then). */
  hold(bytes: number): void;
  /** What this stream holds now. */
  readonly held: number;
  release(): void;
}

/** How long a refused client waits before trying again: streams end within idleMs, usually far sooner. */
const RETRY_MS = 1000;

export class StreamGuard {
  readonly limits: StreamLimits;
  readonly #observe: (stats: StreamStats) => void;
  readonly #byClient = new Map<string, number>();
  #open = 0;
  #peakOpen = 0;
  #peakPerClient = 0;
  #buffered = 0;
  #peakBuffered = 0;

  constructor(limits: StreamLimits, observe: (stats: StreamStats) => void = () => {}) {
    this.limits = limits;
    this.#observe = observe;
  }

  stats(): StreamStats {
    return {
      open: this.#open,
      peakOpen: this.#peakOpen,
      peakPerClient: this.#peakPerClient,
      buffered: this.#buffered,
      peakBuffered: this.#peakBuffered,
    };
  }

  /** Streams of `clientId` open now. */
  openBy(clientId: string): number {
    return this.#byClient.get(clientId) ?? 0;
  }

  /** Admits a new stream, or throws RESOURCE_EXHAUSTED streams_total. */
  open(kind: StreamKind): StreamTicket {
    const { total, perClient, maxBufferedBytes } = this.limits;
    if (this.#open >= total) {
      throw exhausted('streams_total', `${total} streams are open, the coordinator's limit (streams.total)`, RETRY_MS);
    }
    this.#open++;
    this.#peakOpen = Math.max(this.#peakOpen, this.#open);
    let client: string | undefined;
    let held = 0;
    let released = false;
    const changed = () => this.#observe(this.stats());
    changed();
    return {
      kind,
      get held() {
        return held;
      },
      claim: (clientId: string) => {
        if (released || client !== undefined) return;
        const n = this.openBy(clientId);
        if (n >= perClient) {
          throw exhausted(
            'streams_per_client',
            `client ${clientId} has ${n} streams open, the limit per client (streams.perClient)`,
            RETRY_MS,
          );
        }
        client = clientId;
        this.#byClient.set(clientId, n + 1);
        this.#peakPerClient = Math.max(this.#peakPerClient, n + 1);
      },
      hold: (bytes: number) => {
        if (released) return;
        if (this.#buffered + bytes > maxBufferedBytes) {
          throw exhausted(
            'memory_budget',
            `the coordinator buffers ${this.#buffered} bytes for open streams; ${bytes} more would pass its budget of ` +
              `${maxBufferedBytes} (streams.maxBufferedBytes)`,
            RETRY_MS,
          );
        }
        held += bytes;
        this.#buffered += bytes;
        this.#peakBuffered = Math.max(this.#peakBuffered, this.#buffered);
        changed();
      },
      release: () => {
        if (released) return;
        released = true;
        this.#open--;
        this.#buffered -= held;
        held = 0;
        if (client !== undefined) {
          const n = (this.#byClient.get(client) ?? 1) - 1;
          if (n === 0) this.#byClient.delete(client);
          else this.#byClient.set(client, n);
        }
        changed();
      },
    };
  }
}
