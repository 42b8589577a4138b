import { createHash } from 'node:crypto';
import { SeededRandom } from '../proto/random.js';

/** Members to sample from N active clients: K = max(round(frac * N), 1), never more than N. */
export function sampleSize(frac: number, active: number): number {
  return Math.min(active, Math.max(Math.round(frac * active), 1));
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
  frac: number,
  seed: number,
  round: number,
  attempt: number,
): string[] {
  const k = sampleSize(frac, clientIds.length);
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

export interface UploadReceipt {
  readonly accepted: true;
  readonly message: string;
  readonly maskVersion: number;
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

/** One attempt at one round: who is in it, who has reported, and the traffic it caused. */
export class Round {
  readonly id: number;
  readonly attempt: number;
  readonly members: ReadonlySet<string>;
  readonly openedAt: number;
  readonly deadlineAt: number;
  readonly receipts = new Map<string, UploadReceipt>();
  readonly metrics = new Map<string, ReportMetrics>();
  bytesUp = 0;
  bytesDown = 0;
  /** Wire bytes per member, per direction. */
  readonly traffic = new Map<string, { up: number; down: number }>();
  denseBytesUp = 0;
  denseBytesDown = 0;

  constructor(id: number, attempt: number, members: readonly string[], openedAt: number, deadlineMs: number) {
    this.id = id;
    this.attempt = attempt;
    this.members = new Set(members);
    this.openedAt = openedAt;
    this.deadlineAt = openedAt + deadlineMs;
  }

  addTraffic(clientId: string, direction: 'up' | 'down', bytes: number): void {
    let t = this.traffic.get(clientId);
    if (t === undefined) this.traffic.set(clientId, (t = { up: 0, down: 0 }));
    t[direction] += bytes;
    if (direction === 'up') this.bytesUp += bytes;
    else this.bytesDown += bytes;
  }

  get reported(): number {
    return this.receipts.size;
  }

  get complete(): boolean {
    return this.receipts.size === this.members.size;
  }
}
