import { describe, expect, it } from 'vitest';
import { ConfigHistory, KEEP, sha256 } from '../../runtime/deploy/history.js';
import { migrate, openDatabase } from '../../runtime/store/database.js';
import { runtimeMigrations } from '../../runtime/store/runtime-schema.js';

describe('config history', () => {
  it('keeps versions with their hash, one active at a time, the interrupted ones failed, and no more than KEEP of them', () => {
    const db = openDatabase({ path: ':memory:', synchronous: 'normal' });
    migrate(db, 'runtime', runtimeMigrations);
    const h = new ConfigHistory(() => db);
    const v1 = h.add({ text: 'a', source: 'file', status: 'active', now: 1 });
    const v2 = h.add({ text: 'b', source: 'api', status: 'pending', now: 2 });
    expect(h.active()).toMatchObject({ version: v1, sha256: sha256('a') });
    h.activate(v2, 3);
    expect(h.get(v1)?.status).toBe('superseded');
    expect(h.active()?.version).toBe(v2);
    const v3 = h.add({ text: 'c', source: 'cloud', status: 'pending', now: 4, issuedAt: 99 });
    expect(h.failInterrupted(5)).toEqual([v3]);
    expect(h.get(v3)).toMatchObject({ status: 'failed', reason: expect.stringContaining('stopped before') as unknown });
    expect(h.lastIssuedAt()).toBe(99);
    for (let i = 0; i < KEEP + 20; i++) h.add({ text: `t${i}`, source: 'api', status: 'pending', now: 10 + i });
    const count = (db.prepare('SELECT COUNT(*) AS n FROM config_versions').get() as { n: number }).n;
    expect(count).toBe(KEEP + 1); // the newest KEEP, and the active one older than them
    expect(h.active()?.version).toBe(v2);
    db.close();
  });
});
