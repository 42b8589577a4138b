import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { MaskMap } from './model.js';
import { unauthenticated } from './errors.js';

export interface ClientRecord {
  readonly id: string;
  /** Join order; sampling walks clients in this order so it is reproducible. */
  readonly seq: number;
  readonly name: string;
  /** sha256 of the client token; the token itself is never stored. */
  readonly tokenHash: Buffer;
  numExamples: number;
  /** Version of `masks`; 0 = never uploaded a mask (all ones). */
  maskVersion: number;
  /** Only tensors whose mask is not all ones; absent = all kept. */
  masks: MaskMap;
  active: boolean;
}

export function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** Constant-time equality of two secrets of any length (compares their digests). */
export function secretsEqual(given: string, expectedHash: Buffer): boolean {
  return timingSafeEqual(sha256(given), expectedHash);
}

/**
 * Who may talk to the coordinator. Joining needs the enrollment token and
 * yields a client id plus a random per-client token; every later call
 * presents both.
 */
export class Registry {
  readonly #clients = new Map<string, ClientRecord>();
  readonly #enrollmentHash: Buffer;
  #nextSeq = 1;

  constructor(enrollmentToken: string) {
    this.#enrollmentHash = sha256(enrollmentToken);
  }

  get size(): number {
    return this.#clients.size;
  }

  /** Active clients in join order. */
  activeIds(): string[] {
    return [...this.#clients.values()]
      .filter((c) => c.active)
      .sort((a, b) => a.seq - b.seq)
      .map((c) => c.id);
  }

  activeCount(): number {
    let n = 0;
    for (const c of this.#clients.values()) if (c.active) n++;
    return n;
  }

  get(id: string): ClientRecord | undefined {
    return this.#clients.get(id);
  }

  all(): IterableIterator<ClientRecord> {
    return this.#clients.values();
  }

  /** Checks the enrollment token and creates a client; returns the record and its token (shown once). */
  enroll(enrollmentToken: string, name: string, numExamples: number): { record: ClientRecord; token: string } {
    if (!secretsEqual(enrollmentToken, this.#enrollmentHash)) {
      throw unauthenticated('bad_enrollment_token', 'enrollment token is not valid');
    }
    const seq = this.#nextSeq++;
    const token = randomBytes(32).toString('base64url');
    const record: ClientRecord = {
      id: `c${seq}`,
      seq,
      name,
      tokenHash: sha256(token),
      numExamples,
      maskVersion: 0,
      masks: new Map(),
      active: true,
    };
    this.#clients.set(record.id, record);
    return { record, token };
  }

  /** Restores a persisted client (on resume). */
  restore(record: ClientRecord): void {
    this.#clients.set(record.id, record);
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
}
