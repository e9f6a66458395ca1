import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { outboxMigrations, SqliteOutbox } from '../../cloud-bridge/outbox.js';
import { Uplink } from '../../cloud-bridge/uplink.js';
import { makeEnvelope } from '../../runtime/contracts/index.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { migrate, openDatabase } from '../../runtime/store/database.js';
import { runtimeMigrations } from '../../runtime/store/runtime-schema.js';
import { uplinkOptions } from '../helpers/uplink-options.js';
import { ManualClock, silentLogger } from '../helpers/fakes.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { AedesCloud, Mqtt5Cloud } from './uplink-peers.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** The gateway's own outbox on a temp SQLite file, holding readings `ids`. */
function sqliteOutbox(ids: readonly string[], now: number): SqliteOutbox {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-uplink-'));
  cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
  const db = openDatabase({ path: join(dir, 'outbox.db'), synchronous: 'normal' });
  cleanup.push(() => Promise.resolve(db.close()));
  migrate(db, 'runtime', runtimeMigrations);
  migrate(db, 'outbox', outboxMigrations);
  const outbox = new SqliteOutbox(db, 64 * 2 ** 20, new PromMetrics());
  db.transaction(() =>
    outbox.append(
      ids.map((id, i) => ({ stream: 'telemetry', envelope: makeEnvelope({ id, device: 'd', point: 'p', value: i, quality: 'good', ts: now, seq: i }) })),
      now,
    ),
  )();
  outbox.committed();
  return outbox;
}

const ids = (n: number): string[] => Array.from({ length: n }, (_, i) => `r${i}`);

function uplink(url: string, outbox: SqliteOutbox, clock: ManualClock, protocolVersion: 4 | 5 = 4): Uplink {
  const u = new Uplink(
    uplinkOptions(url, { gatewayId: 'gw-sql', clientId: 'gw-sql', batchSize: 8, compression: 'deflate', protocolVersion, maxAttempts: 2, random: undefined }),
    outbox,
    clock,
    silentLogger,
    new PromMetrics(),
  );
  cleanup.push(() => u.stop());
  return u;
}

describe('uplink over the SQLite outbox', () => {
  it('deletes stored readings only after their PUBACK, and accounts them as delivered', async () => {
    const cloud = await AedesCloud.start();
    cleanup.push(() => cloud.close());
    const clock = new ManualClock();
    const outbox = sqliteOutbox(ids(20), clock.now());
    cloud.holdAcks();
    await uplink(cloud.url, outbox, clock).start();
    await waitFor('the first batch at the broker', () => cloud.heldAcks === 1);
    await sleep(80);
    expect(outbox.stats().depth).toBe(20);
    cloud.ackHeld();
    await waitFor('its rows deleted', () => outbox.stats().depth === 12);
    cloud.releaseAcks();
    await waitFor('an empty outbox', () => outbox.stats().depth === 0);
    expect(cloud.readings).toEqual(ids(20));
    const s = outbox.stats();
    expect(s.delivered).toBe(20);
    expect(s.appended).toBe(s.delivered + s.deadLettered + s.depth);
  });

  it('moves the reading an MQTT 5 broker keeps refusing to the dead-letter table, and delivers the rest', async () => {
    const cloud = await Mqtt5Cloud.start((batch) => (batch.readings.some((r) => r.id === 'r5') ? 0x99 : 0));
    cleanup.push(() => cloud.close());
    const clock = new ManualClock();
    const outbox = sqliteOutbox(ids(20), clock.now());
    await uplink(cloud.url, outbox, clock, 5).start();
    await waitFor('an empty outbox', () => outbox.stats().depth === 0, 5000);
    expect(outbox.deadLetterCount()).toBe(1);
    expect(outbox.listDeadLetters(10).map((d) => (JSON.parse(d.body) as { id: string }).id)).toEqual(['r5']);
    expect(new Set(cloud.readings)).toEqual(new Set(ids(20).filter((id) => id !== 'r5')));
    const s = outbox.stats();
    expect(s.appended).toBe(s.delivered + s.deadLettered + s.depth);
  });
});
