import { mkdirSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { CodecError } from '../proto/codec.js';
import { Mask } from '../proto/mask.js';
import type { TensorMap, TensorSpec } from './model.js';
import { elementCount } from '../proto/shape.js';
import type { ClientRecord } from './registry.js';
import type { AdoptedMasks, ReportMetrics } from './rounds.js';

/** What the history keeps of one committed round. */
export interface RoundSummary {
  round: number;
  attempts: number;
  committedAt: number;
  members: string[];
  reporters: string[];
  /** Per reporter. */
  metrics: Record<string, ReportMetrics>;
  bytesUp: number;
  bytesDown: number;
  /** Wire bytes per member and direction. */
  traffic: Record<string, { up: number; down: number }>;
  denseBytesUp: number;
  denseBytesDown: number;
  aggregationSeconds: number;
}

export interface PersistedState {
  global: TensorMap;
  lastRound: number;
  clients: ClientRecord[];
}

function tensorBytes(t: Float32Array): Buffer {
  return Buffer.from(t.buffer, t.byteOffset, t.byteLength);
}

function bytesTensor(b: Buffer): Float32Array {
  // Copy: SQLite's buffer may not be 4-byte aligned.
  const copy = new Uint8Array(b.length);
  copy.set(b);
  return new Float32Array(copy.buffer);
}

/** A mask row read back; a row that does not fit the manifest is a corrupt database, named as such. */
function storedMask(bits: Uint8Array, length: number | undefined, clientId: string, name: string): Mask {
  if (length === undefined)
    throw new Error(`sqlite: client ${clientId} has a mask for tensor "${name}", which is not in the manifest`);
  try {
    return Mask.unpack(bits, length);
  } catch (err) {
    if (err instanceof CodecError) throw new Error(`sqlite: mask of client ${clientId} for tensor "${name}": ${err.message}`);
    throw err;
  }
}

function manifestKey(manifest: readonly TensorSpec[]): string {
  return JSON.stringify(manifest.map((t) => [t.name, [...t.shape], t.prunable]));
}

/** Written into the file header (PRAGMA application_id): 'SFED'. A SQLite file with another id is not ours. */
const APPLICATION_ID = 0x53464544;

/**
 * The schema, one step per version: MIGRATIONS[v] turns version v into v + 1,
 * and the file's PRAGMA user_version says which version it holds. Version 0 is
 * an empty file or one written before versions were recorded (the same tables
 * as version 1, hence IF NOT EXISTS). A new version appends a step here.
 */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
   CREATE TABLE IF NOT EXISTS clients (
     id TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, name TEXT NOT NULL, token_hash BLOB NOT NULL,
     num_examples INTEGER NOT NULL, mask_version INTEGER NOT NULL, active INTEGER NOT NULL);
   CREATE TABLE IF NOT EXISTS masks (
     client_id TEXT NOT NULL, name TEXT NOT NULL, bits BLOB NOT NULL, PRIMARY KEY (client_id, name));
   CREATE TABLE IF NOT EXISTS global (name TEXT PRIMARY KEY, data BLOB NOT NULL);
   CREATE TABLE IF NOT EXISTS rounds (
     id INTEGER PRIMARY KEY, attempts INTEGER NOT NULL, committed_at INTEGER NOT NULL,
     members TEXT NOT NULL, reporters TEXT NOT NULL, metrics TEXT NOT NULL,
     bytes_up INTEGER NOT NULL, bytes_down INTEGER NOT NULL, traffic TEXT NOT NULL,
     dense_bytes_up INTEGER NOT NULL, dense_bytes_down INTEGER NOT NULL, aggregation_seconds REAL NOT NULL);`,
];

/** The schema version this code reads and writes. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/** The tables of the version-0 layout; a file without versions holding anything else is not ours. */
const V0_TABLES = new Set(['meta', 'clients', 'masks', 'global', 'rounds']);

/**
 * Opens (or creates) the coordinator's database and holds it: in EXCLUSIVE
 * locking mode the file lock taken here is kept until close (or the process
 * dies), so a second coordinator on the same file fails at start instead of
 * interleaving rounds with this one. Then checks the file is ours and brings
 * its schema to SCHEMA_VERSION; a newer schema is refused.
 */
function openDatabase(path: string | undefined): Database.Database {
  const file = path ?? ':memory:';
  const inMemory = file === ':memory:';
  let db: Database.Database;
  try {
    if (!inMemory) mkdirSync(dirname(file), { recursive: true });
    // A short busy wait covers a predecessor still closing (a quick restart); a live one keeps the lock.
    db = new Database(file, { timeout: 1000 });
  } catch (err) {
    const message = (err as Error).message;
    const hint = /bindings file/.test(message)
      ? ": better-sqlite3's native module is not built (npm skips install scripts unless allowed: npm rebuild better-sqlite3)"
      : '';
    throw new Error(`sqlite: cannot open ${file} (${message})${hint}`);
  }
  try {
    if (!inMemory) {
      db.pragma('locking_mode = EXCLUSIVE');
      // The first write takes the exclusive lock, and EXCLUSIVE mode keeps it.
      db.exec('BEGIN EXCLUSIVE; COMMIT');
      db.pragma('journal_mode = WAL');
    }
    // Durable commits: a round the log says is committed survives power loss.
    db.pragma('synchronous = FULL');
    migrate(db, file);
    return db;
  } catch (err) {
    db.close();
    const code = (err as { code?: unknown }).code;
    if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') {
      throw new Error(
        `sqlite: ${file} is in use by another coordinator (it holds the file's lock); stop that one, or configure another sqlite file`,
      );
    }
    if (code === 'SQLITE_NOTADB') throw new Error(`sqlite: ${file} is not a SQLite database`);
    throw err;
  }
}

function migrate(db: Database.Database, file: string): void {
  const applicationId = db.pragma('application_id', { simple: true }) as number;
  const version = db.pragma('user_version', { simple: true }) as number;
  if (applicationId !== APPLICATION_ID) {
    const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map(
      (t) => t.name,
    );
    const foreign = tables.filter((t) => !V0_TABLES.has(t));
    if (applicationId !== 0 || version !== 0 || foreign.length > 0 || (tables.length > 0 && !tables.includes('meta'))) {
      throw new Error(
        `sqlite: ${file} is not a subfed coordinator database (tables: ${tables.join(', ') || 'none'}); configure another sqlite file`,
      );
    }
  }
  if (version > SCHEMA_VERSION) {
    throw new Error(
      `sqlite: ${file} has schema version ${version}, written by a newer subfed; this one reads version ${SCHEMA_VERSION} ` +
        '(upgrade subfed, or configure another sqlite file)',
    );
  }
  if (version === SCHEMA_VERSION) return;
  db.transaction(() => {
    for (let v = version; v < SCHEMA_VERSION; v++) db.exec(MIGRATIONS[v]);
    db.pragma(`application_id = ${APPLICATION_ID}`);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  })();
}

/**
 * Test hook of the fault tests (test/faults/coordinator-kill.test.ts), which
 * SIGKILL the coordinator in the middle of commits: with the environment
 * variable SUBFED_TEST_COMMIT_DELAY_MS=n (n > 0), commitRound stops for n ms
 * at each of its steps inside the transaction (begin, global, masks, history;
 * then COMMIT), announcing each step on stderr first as one line
 * `subfed-test-commit <round> <step>`, and `... committed` once COMMIT
 * returned. A test that kills the process then knows how far the transaction
 * got. Unset, as everywhere else, the hook does nothing.
 */
const TEST_COMMIT_DELAY_MS = testCommitDelay(process.env.SUBFED_TEST_COMMIT_DELAY_MS);

function testCommitDelay(value: string | undefined): number {
  if (value === undefined || value === '') return 0;
  const ms = Number(value);
  if (!Number.isInteger(ms) || ms < 0) {
    throw new Error(`SUBFED_TEST_COMMIT_DELAY_MS: expected a whole number of milliseconds, got '${value}'`);
  }
  return ms;
}

type CommitStep = 'begin' | 'global' | 'masks' | 'history' | 'committed';

function commitStep(round: number, step: CommitStep): void {
  if (TEST_COMMIT_DELAY_MS === 0) return;
  writeSync(2, `subfed-test-commit ${round} ${step}\n`);
  // Sleeps the thread: the transaction stays open, exactly as a slow disk would keep it.
  if (step !== 'committed') Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, TEST_COMMIT_DELAY_MS);
}

/**
 * Everything the coordinator must not lose: registry, masks, global model and
 * round history. One transaction per committed round, so a kill -9 leaves
 * either the previous round or the new one, never a mix.
 */
export class CoordinatorStore {
  readonly #db: Database.Database;
  readonly #manifest: readonly TensorSpec[];

  constructor(path: string | undefined, manifest: readonly TensorSpec[]) {
    this.#db = openDatabase(path);
    this.#manifest = manifest;
  }

  /** Loads the persisted state, or writes `initial` as round 0 on a fresh database. */
  loadOrInit(initial: TensorMap): PersistedState {
    const db = this.#db;
    const stored = db.prepare('SELECT value FROM meta WHERE key = ?').get('manifest') as { value: string } | undefined;
    const key = manifestKey(this.#manifest);
    if (stored === undefined) {
      db.transaction(() => {
        db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('manifest', key);
        db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('last_round', '0');
        const put = db.prepare('INSERT INTO global (name, data) VALUES (?, ?)');
        for (const spec of this.#manifest) put.run(spec.name, tensorBytes(initial.get(spec.name) as Float32Array));
      })();
    } else if (stored.value !== key) {
      throw new Error(`sqlite: the database holds a different model manifest than the one configured`);
    }
    const global: TensorMap = new Map();
    const rows = db.prepare('SELECT name, data FROM global').all() as { name: string; data: Buffer }[];
    for (const row of rows) global.set(row.name, bytesTensor(row.data));
    const lastRound = Number((db.prepare('SELECT value FROM meta WHERE key = ?').get('last_round') as { value: string }).value);
    const sizes = new Map(this.#manifest.map((t) => [t.name, elementCount(t.shape)]));
    const clients: ClientRecord[] = [];
    const maskRows = db.prepare('SELECT name, bits FROM masks WHERE client_id = ?');
    for (const row of db.prepare('SELECT * FROM clients ORDER BY seq').all() as {
      id: string;
      seq: number;
      name: string;
      token_hash: Buffer;
      num_examples: number;
      mask_version: number;
      active: number;
    }[]) {
      const masks = new Map<string, Mask>();
      for (const m of maskRows.all(row.id) as { name: string; bits: Buffer }[]) {
        masks.set(m.name, storedMask(m.bits, sizes.get(m.name), row.id, m.name));
      }
      clients.push({
        id: row.id,
        seq: row.seq,
        name: row.name,
        tokenHash: row.token_hash,
        numExamples: row.num_examples,
        maskVersion: row.mask_version,
        masks,
        active: row.active === 1,
      });
    }
    return { global, lastRound, clients };
  }

  saveClient(c: ClientRecord): void {
    this.#db
      .prepare(
        `INSERT INTO clients (id, seq, name, token_hash, num_examples, mask_version, active) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(id) DO UPDATE SET num_examples = excluded.num_examples, active = excluded.active`,
      )
      .run(c.id, c.seq, c.name, c.tokenHash, c.numExamples, c.maskVersion, c.active ? 1 : 0);
  }

  #writeMasks(changes: readonly AdoptedMasks[]): void {
    const del = this.#db.prepare('DELETE FROM masks WHERE client_id = ?');
    const put = this.#db.prepare('INSERT INTO masks (client_id, name, bits) VALUES (?, ?, ?)');
    const ver = this.#db.prepare('UPDATE clients SET mask_version = ? WHERE id = ?');
    for (const change of changes) {
      del.run(change.clientId);
      // 1 bit per element: a stored mask costs n/8 bytes.
      for (const [name, mask] of change.masks) put.run(change.clientId, name, Buffer.from(mask.pack().buffer));
      ver.run(change.version, change.clientId);
    }
  }

  /** The round's whole outcome in one transaction. */
  commitRound(summary: RoundSummary, global: TensorMap, maskChanges: readonly AdoptedMasks[]): void {
    const db = this.#db;
    db.transaction(() => {
      commitStep(summary.round, 'begin');
      const put = db.prepare('UPDATE global SET data = ? WHERE name = ?');
      for (const [name, values] of global) put.run(tensorBytes(values), name);
      commitStep(summary.round, 'global');
      this.#writeMasks(maskChanges);
      commitStep(summary.round, 'masks');
      db.prepare(
        `INSERT INTO rounds (id, attempts, committed_at, members, reporters, metrics, bytes_up, bytes_down, traffic,
           dense_bytes_up, dense_bytes_down, aggregation_seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(
        summary.round,
        summary.attempts,
        summary.committedAt,
        JSON.stringify(summary.members),
        JSON.stringify(summary.reporters),
        JSON.stringify(summary.metrics),
        summary.bytesUp,
        summary.bytesDown,
        JSON.stringify(summary.traffic),
        summary.denseBytesUp,
        summary.denseBytesDown,
        summary.aggregationSeconds,
      );
      db.prepare('UPDATE meta SET value = ? WHERE key = ?').run(String(summary.round), 'last_round');
      commitStep(summary.round, 'history');
    })();
    commitStep(summary.round, 'committed');
  }

  /** Masks of an abandoned attempt's reporters: the clients did move on to them. */
  saveMasks(maskChanges: readonly AdoptedMasks[]): void {
    this.#db.transaction(() => this.#writeMasks(maskChanges))();
  }

  /** Newest first. */
  listRounds(limit: number, before?: number): RoundSummary[] {
    const rows = (
      before === undefined
        ? this.#db.prepare('SELECT * FROM rounds ORDER BY id DESC LIMIT ?').all(limit)
        : this.#db.prepare('SELECT * FROM rounds WHERE id < ? ORDER BY id DESC LIMIT ?').all(before, limit)
    ) as Record<string, unknown>[];
    return rows.map((r) => ({
      round: r.id as number,
      attempts: r.attempts as number,
      committedAt: r.committed_at as number,
      members: JSON.parse(r.members as string) as string[],
      reporters: JSON.parse(r.reporters as string) as string[],
      metrics: JSON.parse(r.metrics as string) as Record<string, ReportMetrics>,
      bytesUp: r.bytes_up as number,
      bytesDown: r.bytes_down as number,
      traffic: JSON.parse(r.traffic as string) as Record<string, { up: number; down: number }>,
      denseBytesUp: r.dense_bytes_up as number,
      denseBytesDown: r.dense_bytes_down as number,
      aggregationSeconds: r.aggregation_seconds as number,
    }));
  }

  close(): void {
    if (this.#db.open) this.#db.close();
  }
}
