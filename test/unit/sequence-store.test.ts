import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BootSequence } from '../../runtime/sequence.js';
import { migrate, openDatabase, type Db, type Migration } from '../../runtime/store/database.js';
import { runtimeMigrations } from '../../runtime/store/runtime-schema.js';

let dir: string;
const opened: Db[] = [];

/** Opens the same database file each time, as a restarted gateway would. */
function open(): Db {
  const db = openDatabase({ path: join(dir, 'state', 'outpost.db'), synchronous: 'normal' });
  opened.push(db);
  return db;
}

function tables(db: Db): string[] {
  return (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as { name: string }[]).map((r) => r.name);
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'outpost-seq-'));
});
afterEach(() => {
  for (const db of opened.splice(0)) if (db.open) db.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('migrate()', () => {
  const widgets: Migration[] = [
    { version: 1, sql: 'CREATE TABLE widgets (id INTEGER PRIMARY KEY)' },
    { version: 2, sql: 'ALTER TABLE widgets ADD COLUMN name TEXT' },
    { version: 3, sql: "INSERT INTO widgets (name) VALUES ('first')" },
  ];

  it('applies migrations in version order whatever order they are listed in', () => {
    const db = open();
    // Version 2 alters the table version 1 creates: it only succeeds after 1.
    expect(migrate(db, 'widgets', [widgets[2]!, widgets[0]!, widgets[1]!])).toBe(3);
    expect(db.prepare('SELECT name FROM widgets').all()).toEqual([{ name: 'first' }]);
    const recorded = db.prepare("SELECT version FROM schema_migrations WHERE component = 'widgets' ORDER BY rowid").all();
    expect(recorded).toEqual([{ version: 1 }, { version: 2 }, { version: 3 }]);
  });

  it('is idempotent: a second run, and a run after reopening, apply nothing', () => {
    const db = open();
    expect(migrate(db, 'widgets', widgets)).toBe(3);
    expect(migrate(db, 'widgets', widgets)).toBe(0);
    db.close();
    const again = open();
    expect(migrate(again, 'widgets', widgets)).toBe(0);
    expect(again.prepare('SELECT count(*) AS n FROM widgets').get()).toEqual({ n: 1 });
  });

  it('applies only the migrations a newer gateway adds', () => {
    const db = open();
    expect(migrate(db, 'widgets', widgets.slice(0, 1))).toBe(1);
    db.close();
    const upgraded = open();
    expect(migrate(upgraded, 'widgets', widgets)).toBe(2);
    expect(upgraded.prepare('SELECT name FROM widgets').all()).toEqual([{ name: 'first' }]);
  });

  it('keeps the versions of different components apart', () => {
    const db = open();
    expect(migrate(db, 'widgets', widgets)).toBe(3);
    expect(migrate(db, 'gadgets', [{ version: 1, sql: 'CREATE TABLE gadgets (id INTEGER)' }])).toBe(1);
    expect(tables(db)).toEqual(expect.arrayContaining(['widgets', 'gadgets']));
  });

  it('refuses a database whose schema is newer than this gateway knows, naming both versions', () => {
    const db = open();
    migrate(db, 'widgets', widgets);
    db.close();
    const older = open();
    expect(() => migrate(older, 'widgets', widgets.slice(0, 2))).toThrow(
      /"widgets" is version 3, newer than this gateway knows \(2\)/,
    );
    expect(() => migrate(older, 'widgets', [])).toThrow(/version 3, newer than this gateway knows \(0\)/);
  });

  it('rolls back a failing migration entirely and records nothing for it', () => {
    const db = open();
    const broken: Migration[] = [
      widgets[0]!,
      { version: 2, sql: "INSERT INTO widgets (id) VALUES (7); INSERT INTO no_such_table VALUES (1)" },
    ];
    expect(() => migrate(db, 'widgets', broken)).toThrow(/no_such_table/);
    expect(db.prepare('SELECT count(*) AS n FROM widgets').get()).toEqual({ n: 0 });
    expect(db.prepare("SELECT version FROM schema_migrations WHERE component = 'widgets'").all()).toEqual([{ version: 1 }]);
  });

  it('creates the runtime tables', () => {
    const db = open();
    expect(migrate(db, 'runtime', runtimeMigrations)).toBe(runtimeMigrations.length);
    expect(tables(db)).toEqual(expect.arrayContaining(['boots', 'rule_state', 'counters', 'schema_migrations']));
  });
});

describe('BootSequence', () => {
  function start(): BootSequence {
    const db = open();
    migrate(db, 'runtime', runtimeMigrations);
    return new BootSequence(db, 'gw1');
  }

  it('issues strictly increasing seqs with ids "{gateway}:{seq}" within one boot', () => {
    const s = start();
    const issued = Array.from({ length: 1000 }, () => s.next());
    for (let i = 1; i < issued.length; i++) expect(issued[i]!.seq).toBeGreaterThan(issued[i - 1]!.seq);
    for (const { seq, id } of issued) expect(id).toBe(`gw1:${seq}`);
    expect(new Set(issued.map((x) => x.id)).size).toBe(issued.length);
  });

  it('keeps seq unique and increasing across restarts on the same database file', () => {
    const all: { seq: number; id: string }[] = [];
    const boots: number[] = [];
    for (let restart = 0; restart < 4; restart++) {
      const s = start();
      boots.push(s.boot);
      // Fewer readings after each restart: a later boot must still sort after an earlier, busier one.
      for (let i = 0; i < 500 - restart * 100; i++) all.push(s.next());
      for (const db of opened.splice(0)) db.close();
    }
    for (let i = 1; i < boots.length; i++) expect(boots[i]).toBeGreaterThan(boots[i - 1]!);
    for (let i = 1; i < all.length; i++) expect(all[i]!.seq).toBeGreaterThan(all[i - 1]!.seq);
    expect(new Set(all.map((x) => x.id)).size).toBe(all.length);
    expect(all.every((x) => Number.isSafeInteger(x.seq))).toBe(true);
  });

  it('starts a fresh database at boot 1 and places the boot in the high bits of seq', () => {
    const s = start();
    expect(s.boot).toBe(1);
    expect(s.next().seq).toBe(2 ** 32 + 1);
  });
});
