/**
 * Join rate limiting: a token bucket per peer address. A peer holds up to
 * `burst` joins; each join takes one, and they come back at `perSecond`.
 * Pure apart from the map it keeps: the caller passes the clock.
 */
export interface JoinRate {
  readonly burst: number;
  readonly perSecond: number;
}

interface Bucket {
  tokens: number;
  /** When `tokens` was last brought up to date (epoch ms). */
  at: number;
}

/** Buckets kept before the full ones are swept out (a full bucket says nothing a new one would not). */
const MAX_PEERS = 100_000;

export class PeerRateLimiter {
  readonly #rate: JoinRate;
  readonly #buckets = new Map<string, Bucket>();

  constructor(rate: JoinRate) {
    this.#rate = rate;
  }

  /** Number of peers with a bucket. */
  get peers(): number {
    return this.#buckets.size;
  }

  /**
   * Takes a token for `peer` at `now`: 0 when taken, else the milliseconds
   * until the next token comes back (the caller refuses and says when to retry).
   */
  take(peer: string, now: number): number {
    const { burst, perSecond } = this.#rate;
    let b = this.#buckets.get(peer);
    if (b === undefined) {
      if (this.#buckets.size >= MAX_PEERS) this.#sweep(now);
      b = { tokens: burst, at: now };
      this.#buckets.set(peer, b);
    }
    // A clock that went back refills nothing.
    b.tokens = Math.min(burst, b.tokens + (Math.max(0, now - b.at) * perSecond) / 1000);
    b.at = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - b.tokens) * 1000) / perSecond);
  }

  /**
   * Drops the buckets that are full again. If every one is still in use (more
   * than MAX_PEERS addresses joining at once), drops them all: per-address
   * limits cannot hold against that many addresses anyway, and maxClients
   * still caps what they can register.
   */
  #sweep(now: number): void {
    const { burst, perSecond } = this.#rate;
    for (const [peer, b] of this.#buckets) {
      if (b.tokens + ((now - b.at) * perSecond) / 1000 >= burst) this.#buckets.delete(peer);
    }
    if (this.#buckets.size >= MAX_PEERS) this.#buckets.clear();
  }
}

/**
 * The address part of a grpc-js peer string: `127.0.0.1:50123`, `::1:50123`
 * (grpc-js appends the port to an IPv6 address without brackets),
 * `[::1]:50123`, optionally prefixed `ipv4:`/`ipv6:`. Joins from one host
 * share a bucket whatever their source port.
 */
export function peerAddress(peer: string): string {
  const p = peer.replace(/^ipv[46]:/, '');
  const bracketed = p.match(/^\[(.*)\](?::\d+)?$/);
  if (bracketed !== null) return bracketed[1];
  const colon = p.lastIndexOf(':');
  return colon > 0 && /^\d+$/.test(p.slice(colon + 1)) ? p.slice(0, colon) : p;
}
