// The coordinator's SQLite file: held exclusively while open, stamped with a
// schema version, and refused with a clear error when it is not one this
// coordinator can use.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { CoordinatorStore, SCHEMA_VERSION } from '../../server/store.js';
import { toyModel } from './harness.js';

const dir = mkdtempSync(join(tmpdir(), 'subfed-store-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let files = 0;
const fresh = () => join(dir, `db-${++files}.sqlite`);
const { manifest, initial } = toyModel();

/** Opens a raw connection, runs `fn`, closes. */
function raw(file: string, fn: (db: Database.Database) => void): void {
  const db = new Database(file, { timeout: 0 });
  try {
    fn(db);
  } finally {
    db.close();
  }
}

describe('CoordinatorStore file handling', () => {
  it('stamps a new file with the schema version and reopens it', () => {
    const file = fresh();
    const store = new CoordinatorStore(file, manifest);
    store.loadOrInit(initial);
    store.close();
    raw(file, (db) => {
      expect(db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
      expect(db.pragma('application_id', { simple: true })).toBe(0x53464544);
    });
    const again = new CoordinatorStore(file, manifest);
    expect(again.loadOrInit(initial).lastRound).toBe(0);
    again.close();
  });

  it('holds the file: a second store on it fails with a clear error, and opens once the first is closed', () => {
    const file = fresh();
    const first = new CoordinatorStore(file, manifest);
    first.loadOrInit(initial);
    expect(() => new CoordinatorStore(file, manifest)).toThrow(
      `sqlite: ${file} is in use by another coordinator (it holds the file's lock); stop that one, or configure another sqlite file`,
    );
    // Not even a plain reader gets in while the coordinator runs.
    expect(() => raw(file, (db) => db.prepare('SELECT * FROM meta').all())).toThrow(/locked/);
    first.close();
    const second = new CoordinatorStore(file, manifest);
    second.close();
  });

  it('adopts a file written before schema versions were recorded (version 0, same tables)', () => {
    const file = fresh();
    const store = new CoordinatorStore(file, manifest);
    store.loadOrInit(initial);
    store.close();
    raw(file, (db) => {
      db.pragma('user_version = 0');
      db.pragma('application_id = 0');
    });
    const adopted = new CoordinatorStore(file, manifest);
    expect(adopted.loadOrInit(initial).global.get('dense/bias')).toEqual(initial.get('dense/bias'));
    adopted.close();
    raw(file, (db) => expect(db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION));
  });

  it('refuses a file from a newer subfed, naming both versions', () => {
    const file = fresh();
    new CoordinatorStore(file, manifest).close();
    raw(file, (db) => db.pragma(`user_version = ${SCHEMA_VERSION + 1}`));
    expect(() => new CoordinatorStore(file, manifest)).toThrow(
      `sqlite: ${file} has schema version ${SCHEMA_VERSION + 1}, written by a newer subfed; this one reads version ${SCHEMA_VERSION}`,
    );
  });

  it("refuses another program's SQLite file and a file that is not SQLite at all", () => {
    const foreign = fresh();
    raw(foreign, (db) => db.exec('CREATE TABLE invoices (id INTEGER PRIMARY KEY)'));
    expect(() => new CoordinatorStore(foreign, manifest)).toThrow(
      `sqlite: ${foreign} is not a subfed coordinator database (tables: invoices)`,
    );
    const stamped = fresh();
    raw(stamped, (db) => db.pragma('application_id = 42'));
    expect(() => new CoordinatorStore(stamped, manifest)).toThrow(/is not a subfed coordinator database/);
    const text = fresh();
    writeFileSync(text, 'these are not the pages you are looking for, '.repeat(100));
    expect(() => new CoordinatorStore(text, manifest)).toThrow(`sqlite: ${text} is not a SQLite database`);
  });
});
