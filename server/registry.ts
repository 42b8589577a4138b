import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { livenessAfter, type ClientState, type Liveness, type LivenessPolicy } from './liveness.js';
import type { MaskMap } from './model.js';
import type { RoundSummary } from './store.js';
import { exhausted, unauthenticated } from './errors.js';

/** What is persisted of a client, and what the coordinator reads; only the Registry's methods change it. */
export interface ClientRecord {
  readonly id: string;
  /** Join order; sampling walks clients in this order so it is reproducible. */
  readonly seq: number;
  readonly name: string;
  /** sha256 of the client token; the token itself is never stored. */
  readonly tokenHash: Buffer;
  readonly numExamples: number;
  /** Version of `masks`; 0 = never uploaded a mask (all ones). */
  readonly maskVersion: number;
  /** Only tensors whose mask is not all ones; absent = all kept. */
  readonly masks: MaskMap;
  /** false once the client said Leave. */
  readonly active: boolean;
}

/** What the committed rounds say about one client (rebuilt from the round history on resume). */
export interface ClientHistory {
  /** Committed rounds it reported in. */
  readonly roundsTaken: number;
  readonly lastRound: number | null;
  /** From its latest report in a committed round. */
  readonly sparsity: number | null;
  readonly localAccuracy: number | null;
  /** Wire bytes it moved as a member of committed rounds. */
  readonly bytesUp: number;
  readonly bytesDown: number;
}

/** One client as the API lists it. */
export interface ClientView {
  readonly id: string;
  readonly name: string;
  readonly state: ClientState;
  /** Its last authenticated call to this coordinator process; null = none since start (see Registry). */
  readonly lastSeenAt: number | null;
  readonly numExamples: number;
  readonly history: ClientHistory;
}

export function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** Constant-time equality of two secrets of any length (compares their digests). */
export function secretsEqual(given: string, expectedHash: Buffer): boolean {
  return timingSafeEqual(sha256(given), expectedHash);
}

interface MutableHistory {
  roundsTaken: number;
  lastRound: number | null;
  sparsity: number | null;
  localAccuracy: number | null;
  bytesUp: number;
  bytesDown: number;
}

/** The registry's own copy of a client: the fields it changes, behind the read-only ClientRecord it hands out. */
interface Entry {
  readonly id: string;
  readonly seq: number;
  readonly name: string;
  readonly tokenHash: Buffer;
  numExamples: number;
  maskVersion: number;
  masks: MaskMap;
  active: boolean;
  lastSeenAt: number | null;
  readonly history: MutableHistory;
}

function emptyHistory(): MutableHistory {
  return { roundsTaken: 0, lastRound: null, sparsity: null, localAccuracy: null, bytesUp: 0, bytesDown: 0 };
}

/**
 * Who may talk to the coordinator, and who is alive. Joining needs the
 * enrollment token and yields a client id plus a random per-client token;
 * every later call presents both.
 *
 * Last-seen times live in memory only: writing one per heartbeat would cost a
 * disk write per call for a value that says nothing after a restart anyway
 * (the clients were cut off while the coordinator was down). A restored
 * client therefore counts as seen when this registry was created: every
 * enrolled client is alive after a restart until its own timeout, so an
 * interrupted round re-opens with the members it had, and a client that died
 * while the coordinator was down drops out after staleAfterMs like any other.
 */
export class Registry {
  readonly #clients = new Map<string, Entry>();
  readonly #enrollmentHash: Buffer;
  readonly #liveness: LivenessPolicy;
  readonly #startedAt: number;
  #nextSeq = 1;

  constructor(enrollmentToken: string, liveness: LivenessPolicy, startedAt: number) {
    this.#enrollmentHash = sha256(enrollmentToken);
    this.#liveness = liveness;
    this.#startedAt = startedAt;
  }

  get size(): number {
    return this.#clients.size;
  }

  #inJoinOrder(): Entry[] {
    return [...this.#clients.values()].sort((a, b) => a.seq - b.seq);
  }

  #livenessOf(c: Entry, now: number): Liveness {
    return livenessAfter(now - (c.lastSeenAt ?? this.#startedAt), this.#liveness);
  }

  #state(c: Entry, now: number): ClientState {
    return c.active ? this.#livenessOf(c, now) : 'left';
  }

  /** Clients a round may sample: enrolled and alive, in join order. */
  sampleable(now: number): string[] {
    return this.#inJoinOrder()
      .filter((c) => c.active && this.#livenessOf(c, now) === 'alive')
      .map((c) => c.id);
  }

  /** Whether an open round still waits for this member: it has not left and is not gone. */
  awaits(id: string, now: number): boolean {
    const c = this.#clients.get(id);
    if (c === undefined) return false;
    const state = this.#state(c, now);
    return state === 'alive' || state === 'stale';
  }

  /** When the client turns `gone` if it stays silent; Infinity when liveness is off. */
  goneAt(id: string): number {
    const c = this.#entry(id);
    return this.#liveness === 'off' ? Infinity : (c.lastSeenAt ?? this.#startedAt) + this.#liveness.goneAfterMs;
  }

  activeCount(): number {
    let n = 0;
    for (const c of this.#clients.values()) if (c.active) n++;
    return n;
  }

  countByState(now: number): Record<ClientState, number> {
    const counts: Record<ClientState, number> = { alive: 0, stale: 0, gone: 0, left: 0 };
    for (const c of this.#clients.values()) counts[this.#state(c, now)]++;
    return counts;
  }

  get(id: string): ClientRecord | undefined {
    return this.#clients.get(id);
  }

  all(): IterableIterator<ClientRecord> {
    return this.#clients.values();
  }

  /** Every client in join order, as the API lists it. */
  views(now: number): ClientView[] {
    return this.#inJoinOrder().map((c) => ({
      id: c.id,
      name: c.name,
      state: this.#state(c, now),
      lastSeenAt: c.lastSeenAt,
      numExamples: c.numExamples,
      history: { ...c.history },
    }));
  }

  /**
   * Checks the enrollment token and creates a client; returns the record and
   * its token (shown once). Refused once `maxClients` clients are enrolled and
   * have not left.
   */
  enroll(
    enrollmentToken: string,
    name: string,
    numExamples: number,
    now: number,
    maxClients: number = Infinity,
  ): { record: ClientRecord; token: string } {
    if (!secretsEqual(enrollmentToken, this.#enrollmentHash)) {
      throw unauthenticated('bad_enrollment_token', 'enrollment token is not valid');
    }
    if (this.activeCount() >= maxClients) {
      throw exhausted('max_clients', `the coordinator has ${maxClients} clients enrolled, its limit (joins.maxClients)`);
    }
    const seq = this.#nextSeq++;
    const token = randomBytes(32).toString('base64url');
    const entry: Entry = {
      id: `c${seq}`,
      seq,
      name,
      tokenHash: sha256(token),
      numExamples,
      maskVersion: 0,
      masks: new Map(),
      active: true,
      lastSeenAt: now,
      history: emptyHistory(),
    };
    this.#clients.set(entry.id, entry);
    return { record: entry, token };
  }

  /** Restores a persisted client (on resume); it counts as seen at start (see the class comment). */
  restore(record: ClientRecord): void {
    this.#clients.set(record.id, {
      id: record.id,
      seq: record.seq,
      name: record.name,
      tokenHash: record.tokenHash,
      numExamples: record.numExamples,
      maskVersion: record.maskVersion,
      masks: record.masks,
      active: record.active,
      lastSeenAt: null,
      history: emptyHistory(),
    });
    this.#nextSeq = Math.max(this.#nextSeq, record.seq + 1);
  }

  /**
   * Identifies the caller or throws UNAUTHENTICATED. Client ids are sequential
   * and not secret, so saying which half was wrong leaks nothing; the token is
   * compared in constant time.
   */
  authenticate(clientId: string, token: string): ClientRecord {
    if (clientId === '') throw unauthenticated('missing_client_id', 'client_id is missing');
    if (token === '') throw unauthenticated('missing_token', 'client_token is missing');
    const record = this.#clients.get(clientId);
    if (record === undefined) throw unauthenticated('unknown_client', `unknown client "${clientId}"`);
    if (!secretsEqual(token, record.tokenHash)) {
      throw unauthenticated('wrong_token', `wrong client_token for client "${clientId}"`);
    }
    if (!record.active) throw unauthenticated('client_left', `client "${clientId}" has left`);
    return record;
  }

  /** Records a call from the client at `now`; returns its liveness just before, so the caller can tell a comeback. */
  touch(id: string, now: number): Liveness {
    const c = this.#entry(id);
    const before = this.#livenessOf(c, now);
    c.lastSeenAt = Math.max(now, c.lastSeenAt ?? now);
    return before;
  }

  /** The client said Leave: never sampled or authenticated again. */
  leave(id: string): ClientRecord {
    const c = this.#entry(id);
    c.active = false;
    return c;
  }

  /** The masks the client moved on to (committed or abandoned round it reported in). */
  adoptMasks(id: string, version: number, masks: MaskMap): void {
    const c = this.#entry(id);
    c.maskVersion = version;
    c.masks = masks;
  }

  /**
   * Adds a committed round to each client's history. Rounds may come newest
   * first (resume pages the history backwards): totals add up either way, and
   * the latest report wins by round number.
   */
  recordCommitted(summary: Pick<RoundSummary, 'round' | 'reporters' | 'metrics' | 'traffic'>): void {
    for (const [id, t] of Object.entries(summary.traffic)) {
      const c = this.#clients.get(id);
      if (c === undefined) continue;
      c.history.bytesUp += t.up;
      c.history.bytesDown += t.down;
    }
    for (const id of summary.reporters) {
      const c = this.#clients.get(id);
      if (c === undefined) continue;
      const h = c.history;
      h.roundsTaken++;
      const m = summary.metrics[id];
      if (h.lastRound === null || summary.round > h.lastRound) {
        h.lastRound = summary.round;
        h.sparsity = m?.sparsity ?? null;
        h.localAccuracy = m?.localAccuracy ?? null;
      }
    }
  }

  #entry(id: string): Entry {
    const c = this.#clients.get(id);
    if (c === undefined) throw new Error(`registry: unknown client "${id}"`);
    return c;
  }
}
