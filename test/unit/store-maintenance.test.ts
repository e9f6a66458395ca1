import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checkpoint, openDatabase } from '../../runtime/store/database.js';

const dir = mkdtempSync(join(tmpdir(), 'outpost-maint-'));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('store maintenance', () => {
  it('checkpoint() moves the WAL into the database and truncates it', () => {
    const path = join(dir, 'm.db');
    const db = openDatabase({ path, synchronous: 'normal' });
    db.exec('CREATE TABLE t (x TEXT)');
    const ins = db.prepare('INSERT INTO t (x) VALUES (?)');
    db.transaction(() => {
      for (let i = 0; i < 20_000; i++) ins.run('x'.repeat(100));
    })();
    expect(statSync(`${path}-wal`).size).toBeGreaterThan(1024 * 1024);
    expect(checkpoint(db)).toBe(0);
    expect(statSync(`${path}-wal`).size).toBe(0);
    expect((db.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n).toBe(20_000);
    db.close();
  });

  it('maxBytes caps the database file: writes beyond it fail as on a full disk', () => {
    const db = openDatabase({ path: join(dir, 'cap.db'), synchronous: 'normal', maxBytes: 1024 * 1024 });
    db.exec('CREATE TABLE t (x TEXT)');
    const ins = db.prepare('INSERT INTO t (x) VALUES (?)');
    expect(() => {
      for (let i = 0; i < 100_000; i++) ins.run('y'.repeat(200));
    }).toThrow(/full/);
    db.exec('DELETE FROM t');
    expect(() => ins.run('fits again')).not.toThrow();
    db.close();
  });
});
