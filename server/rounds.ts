import { createHash } from 'node:crypto';
import { SeededRandom } from '../proto/random.js';
import type { WireDirection } from '../proto/rpc.js';
import type { MaskMap } from './model.js';

/** Members to sample from N active clients: K = max(round(fraction * N), 1), never more than N. */
export function sampleSize(fraction: number, active: number): number {
  return Math.min(active, Math.max(Math.round(fraction * active), 1));
}

/** Reports needed to commit at the deadline: ceil(quorum * members), at least one. */
export function quorumCount(quorum: number, members: number): number {
  return Math.max(1, Math.ceil(quorum * members - 1e-9));
}

/**
 * Deterministic sample of round members. The same (seed, round, attempt) and
 * the same ordered client list give the same members, so a restarted
 * coordinator re-opens an interrupted round with the members it had.
 * Hashing the triple decorrelates neighbouring rounds.
 */
export function sampleMembers(
  clientIds: readonly string[],
  fraction: number,
  seed: number,
  round: number,
  attempt: number,
): string[] {
  const k = sampleSize(fraction, clientIds.length);
  if (clientIds.length === 0) return [];
  const digest = createHash('sha256').update(`subfed-sample:${seed}:${round}:${attempt}`).digest();
  const rand = new SeededRandom(digest.readUInt32LE(0));
  const pool = [...clientIds];
  // Partial Fisher-Yates: the first k slots end up a uniform sample.
  for (let i = 0; i < k; i++) {
    const j = i + rand.int(pool.length - i);
    [pool[i], pool[j]] = [pool[j], pool[i]];
  }
  return pool.slice(0, k);
}

/** What the coordinator keeps of an accepted upload, so that a retry of it is answered without folding it again. */
export interface UploadReceipt {
  /** The ack sent; a retry of the same upload gets it again. */
  readonly ack: { readonly accepted: true; readonly message: string; readonly maskVersion: number };
  /** uploadDigest of the accepted upload: a retry is acknowledged only when its digest is this one. */
  readonly digest: string;
}

/** What a reporter said about its round, kept in the round history. */
export interface ReportMetrics {
  numExamples: number;
  loss: number;
  localAccuracy: number;
  sparsity: number;
  receivedAccuracy: number;
  /** Channels kept per BatchNorm layer; absent for models without channel pruning (and in rounds stored before it was sent). */
  channelsKept?: number[];
}

/**
 * What a reporter's update did to its masks: nothing, or a change to `version`
 * with `masks`, its complete set of non-all-ones masks after the change.
 */
export type ReportedMasks =
  { readonly kind: 'unchanged' } | { readonly kind: 'changed'; readonly version: number; readonly masks: MaskMap };

/** A reporter's new masks: applied when its round commits, or when the attempt is abandoned (it moved on to them). */
export interface AdoptedMasks {
  readonly clientId: string;
  readonly version: number;
  /** The client's complete set of non-all-ones masks after the change. */
  readonly masks: MaskMap;
}

/**
 * One attempt at one round: who is in it, who has reported, and the traffic
 * it caused. Changed only through its methods; the coordinator reads it
 * through read-only views.
 */
export class Round {
  readonly id: number;
  readonly attempt: number;
  readonly members: ReadonlySet<string>;
  readonly openedAt: number;
  readonly deadlineAt: number;
  readonly #receipts = new Map<string, UploadReceipt>();
  readonly #metrics = new Map<string, ReportMetrics>();
  readonly #masks = new Map<string, AdoptedMasks>();
  /** Wire bytes per member, per direction. */
  readonly #traffic = new Map<string, { up: number; down: number }>();
  readonly #bytes = { up: 0, down: 0 };
  readonly #denseBytes = { up: 0, down: 0 };

  constructor(id: number, attempt: number, members: readonly string[], openedAt: number, deadlineMs: number) {
    this.id = id;
    this.attempt = attempt;
    this.members = new Set(members);
    this.openedAt = openedAt;
    this.deadlineAt = openedAt + deadlineMs;
  }

  /** Records a member's accepted update: its receipt (for retries), its metrics and what it did to its masks. */
  accept(clientId: string, receipt: UploadReceipt, metrics: ReportMetrics, masks: ReportedMasks): void {
    // The coordinator checks both before validating; reaching here otherwise is a bug, not a client's fault.
    if (!this.members.has(clientId)) throw new Error(`round ${this.id}: ${clientId} is not a member`);
    if (this.#receipts.has(clientId)) throw new Error(`round ${this.id}: ${clientId} reported already`);
    this.#receipts.set(clientId, receipt);
    this.#metrics.set(clientId, metrics);
    if (masks.kind === 'changed') this.#masks.set(clientId, { clientId, version: masks.version, masks: masks.masks });
  }

  addTraffic(clientId: string, direction: WireDirection, bytes: number): void {
    let t = this.#traffic.get(clientId);
    if (t === undefined) this.#traffic.set(clientId, (t = { up: 0, down: 0 }));
    t[direction] += bytes;
    this.#bytes[direction] += bytes;
  }

  /** What dense float32 FedAvg would have moved for one task (down) or one update (up). */
  countDense(direction: WireDirection, bytes: number): void {
    this.#denseBytes[direction] += bytes;
  }

  receiptOf(clientId: string): UploadReceipt | undefined {
    return this.#receipts.get(clientId);
  }

  hasReported(clientId: string): boolean {
    return this.#receipts.has(clientId);
  }

  get receipts(): ReadonlyMap<string, UploadReceipt> {
    return this.#receipts;
  }

  get metrics(): ReadonlyMap<string, ReportMetrics> {
    return this.#metrics;
  }

  get traffic(): ReadonlyMap<string, Readonly<{ up: number; down: number }>> {
    return this.#traffic;
  }

  get adoptedMasks(): readonly AdoptedMasks[] {
    return [...this.#masks.values()];
  }

  get bytesUp(): number {
    return this.#bytes.up;
  }

  get bytesDown(): number {
    return this.#bytes.down;
  }

  get denseBytesUp(): number {
    return this.#denseBytes.up;
  }

  get denseBytesDown(): number {
    return this.#denseBytes.down;
  }

  get reported(): number {
    return this.#receipts.size;
  }

  /** Members that have not reported and that the round still waits for (`awaits`: not left, not gone). */
  awaited(awaits: (clientId: string) => boolean): string[] {
    return [...this.members].filter((id) => !this.#receipts.has(id) && awaits(id));
  }
}
