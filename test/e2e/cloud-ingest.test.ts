import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../../sim/free-port.js';
import { Mosquitto } from '../../sim/mosquitto.js';
import { IngestProcess } from '../helpers/ingest-process.js';
import { ingestAcrossFaults } from '../helpers/ingest-scenario.js';
import { Postgres } from '../helpers/postgres.js';
import { waitFor } from '../helpers/wait.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** Debian's Mosquitto (persistent sessions kept across its restarts) and a fresh PostgreSQL cluster; both fail, never skip, when missing. */
async function peers(name: string, withDatabase = true): Promise<{ dir: string; broker: Mosquitto; pg: Postgres }> {
  const dir = mkdtempSync(join(tmpdir(), `outpost-ingest-${name}-`));
  cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
  const broker = await Mosquitto.start({ dir: join(dir, 'mosquitto'), persistence: true });
  cleanup.push(() => broker.stop());
  if (!withDatabase) return { dir, broker, pg: undefined as never };
  const pg = await Postgres.start();
  cleanup.push(() => pg.stop());
  return { dir, broker, pg };
}

describe('outpost cloud-ingest (Debian Mosquitto, PostgreSQL)', () => {
  it('holds each acknowledged reading exactly once across a gateway kill -9 and a consumer kill -9 mid-stream', { timeout: 240_000 }, async () => {
    const { dir, broker, pg } = await peers('faults');
    const figures = await ingestAcrossFaults({
      brokerUrls: [broker.url],
      witnessUrl: broker.url,
      pg,
      dir,
      cleanup,
      faults: [
        async (ctx) => {
          await ctx.restartGateway(0);
          await ctx.moreRows(500);
        },
        async (ctx) => {
          // Readings keep flowing to the broker while the consumer is dead: its session holds them.
          await ctx.restartConsumer(1_500);
          await ctx.moreRows(500);
        },
        async (ctx) => {
          await ctx.restartGateway(1);
          await ctx.restartConsumer(300);
          await ctx.moreRows(500);
        },
        async (ctx) => {
          // A backlog builds up while it is away; it is killed again while working through it.
          await ctx.restartConsumer(3_000);
          await new Promise((r) => setTimeout(r, 150));
          await ctx.restartConsumer(200);
          await ctx.moreRows(500);
        },
      ],
    });
    // A killed run's last figures line is up to a second old; the last run's (after SIGTERM) is exact.
    const runs = figures.consumerRuns
      .map((r, i) => `run ${i + 1}: ${r.figures ? `${r.figures.readings} readings, ${r.figures.rows} new rows, ${r.figures.duplicates} already stored` : 'killed before its first figures line'}`)
      .join('; ');
    console.log(
      `cloud-ingest across faults: ${figures.acked} readings acknowledged to children, ${figures.rows} rows (each id once, none missing); ` +
        `witness received ${figures.witnessReceived} (${figures.witnessDuplicates} duplicates on the wire); consumer ${runs}; ${figures.ms} ms`,
    );
    expect(figures.consumerRuns).toHaveLength(5);
    expect(figures.acked).toBeGreaterThan(1000);
  });

  it('splits the load between two consumers of one share group, with no double rows', { timeout: 180_000 }, async () => {
    const { dir, broker, pg } = await peers('share');
    const figures = await ingestAcrossFaults({
      brokerUrls: [broker.url],
      witnessUrl: broker.url,
      pg,
      dir,
      cleanup,
      consumers: [
        { clientId: 'ingest-a', shareGroup: 'ingest' },
        // Two sessions in the one process (ingest-b-1, ingest-b-2): batches written two at a time.
        { clientId: 'ingest-b', shareGroup: 'ingest', concurrency: 2 },
      ],
      faults: [(ctx) => ctx.moreRows(2_000)],
    });
    const [a, b] = figures.consumerRuns.map((r) => r.figures);
    console.log(`share group: ${figures.rows} rows; consumer a stored ${a?.rows} (${a?.batches} batches), b ${b?.rows} (${b?.batches}); duplicates seen ${(a?.duplicates ?? 0) + (b?.duplicates ?? 0)}; ${figures.ms} ms`);
    // Each took a real share, and between them they wrote every row once.
    expect(a!.rows).toBeGreaterThan(figures.rows / 5);
    expect(b!.rows).toBeGreaterThan(figures.rows / 5);
    expect(a!.rows + b!.rows).toBe(figures.rows);
  });

  it('stores a redelivered batch once, and acknowledges what it refuses so the queue moves on', { timeout: 60_000 }, async () => {
    const { broker, pg } = await peers('refuse');
    // The first of two broker URLs is dead (a cluster node down): the consumer goes on to the next.
    const dead = `mqtt://127.0.0.1:${await freePort()}`;
    const consumer = await IngestProcess.start({ brokers: [dead, broker.url], database: pg.url, clientId: 'ingest-refuse' });
    cleanup.push(() => consumer.kill9());
    await consumer.subscribed();
    // On the second URL, as its figures say.
    expect(consumer.last?.brokers).toEqual([broker.url]);
    const pub = await mqtt.connectAsync(broker.url, { clientId: 'test-gateway', clean: true });
    cleanup.push(() => pub.endAsync(true));
    const topic = 'outpost/v1/gw/gw-x/telemetry';
    const reading = (id: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({ id, device: 'm1', point: 'p', value: 1, quality: 'good', ts: 1764000000000, seq: 1, ...extra });
    const batch = (readings: unknown[], gateway = 'gw-x'): Buffer => deflateSync(JSON.stringify({ v: 1, gateway, sentAt: 1, readings }));
    const good = batch([reading('gw-x:1'), reading('gw-x:2', { value: 'text', unit: 'u' }), reading('gw-x:3', { value: null, quality: 'bad' }), reading('gw-x:4', { point: '$inventory', value: '{}' })]);
    await pub.publishAsync(topic, Buffer.from('garbage'), { qos: 1 });
    await pub.publishAsync(topic, good, { qos: 1 });
    await pub.publishAsync(topic, batch([reading('gw-x:5', { quality: 'great' })]), { qos: 1 });
    await pub.publishAsync(topic, batch([reading('gw-x:6')], 'gw-other'), { qos: 1 });
    // The same batch again, as a gateway resends it when its PUBACK was lost; then NUL in text,
    // which PostgreSQL cannot store (refused by the database, not retried for ever).
    await pub.publishAsync(topic, good, { qos: 1 });
    await pub.publishAsync(topic, batch([reading('gw-x:7', { value: 'a\u0000b' })]), { qos: 1 });
    await pub.publishAsync(topic, batch([reading('gw-x:8')]), { qos: 1 });
    await waitFor('the last batch stored', async () => (await pg.query('SELECT 1 FROM outpost_readings WHERE id = $1', ['gw-x:8'])).length === 1, 15_000, 100, () => consumer.stderr);

    const rows = await pg.query<{ id: string; gateway: string; value: unknown; quality: string; unit: string | null; ts: Date; seq: string }>(
      'SELECT id, gateway, value, quality, unit, ts, seq FROM outpost_readings ORDER BY id',
    );
    expect(rows.map((r) => [r.id, r.gateway, r.value, r.quality, r.unit])).toEqual([
      ['gw-x:1', 'gw-x', 1, 'good', null],
      ['gw-x:2', 'gw-x', 'text', 'good', 'u'],
      ['gw-x:3', 'gw-x', null, 'bad', null],
      ['gw-x:8', 'gw-x', 1, 'good', null],
    ]);
    expect(rows[0]!.ts.getTime()).toBe(1764000000000);
    expect(rows[0]!.seq).toBe('1');
    expect(await consumer.terminate()).toBe(0);
    expect(consumer.last).toMatchObject({
      final: true,
      batches: 7,
      readings: 7,
      rows: 4,
      duplicates: 3,
      records: 2,
      refused: { 'not-decodable': 1, schema: 1, 'gateway-mismatch': 1, database: 1, topic: 0 },
    });
    // Each refusal is logged with its reason (the problem named), none crashed the consumer.
    expect(consumer.stderr).toContain('readings.0.quality');
    expect(consumer.stderr).toContain('gateway-mismatch');
    expect(consumer.stderr).toContain(`"url":"${dead}","retryInMs"`);
    expect(consumer.stderr).toContain('could not connect; trying the next broker');

    // Nothing was left unacknowledged: a new run of the same session gets nothing again.
    const again = await IngestProcess.start({ brokers: [broker.url], database: pg.url, clientId: 'ingest-refuse' });
    cleanup.push(() => again.kill9());
    await waitFor('a figures line', () => again.last !== undefined, 5_000);
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await again.terminate()).toBe(0);
    expect(again.last).toMatchObject({ final: true, batches: 0 });
  });

  it('keeps batches unacknowledged while the database is away, and stores them once when it is back (also across a SIGTERM)', { timeout: 120_000 }, async () => {
    const { broker, pg } = await peers('dbdown');
    const start = async (): Promise<IngestProcess> => {
      const c = await IngestProcess.start({ brokers: [broker.url], database: pg.url, clientId: 'ingest-dbdown' });
      cleanup.push(() => c.kill9());
      return c;
    };
    let consumer = await start();
    await consumer.subscribed();
    const pub = await mqtt.connectAsync(broker.url, { clientId: 'test-gateway-db', clean: true });
    cleanup.push(() => pub.endAsync(true));
    let sent = 0;
    const send = async (batches: number): Promise<void> => {
      for (let b = 0; b < batches; b++) {
        const readings = Array.from({ length: 10 }, () => ({ id: `gw-db:${++sent}`, device: 'm1', point: 'p', value: sent, quality: 'good', ts: 1764000000000 + sent, seq: sent }));
        await pub.publishAsync('outpost/v1/gw/gw-db/telemetry', deflateSync(JSON.stringify({ v: 1, gateway: 'gw-db', sentAt: Date.now(), readings })), { qos: 1 });
      }
    };
    const rows = async (): Promise<number> => Number((await pg.query<{ n: string }>('SELECT count(*) AS n FROM outpost_readings'))[0]?.n);
    await send(20);
    await waitFor('the first 200 rows', async () => (await rows()) === 200, 15_000, 100);

    // The database goes away while batches keep coming: they wait at the broker, unacknowledged.
    await pg.pause();
    await send(20);
    await waitFor('a failed write being retried', () => (consumer.last?.retries ?? 0) > 0, 15_000, 100, () => consumer.stderr);
    expect(consumer.stderr).toContain('database write failed; the batch waits unacknowledged');
    // SIGTERM now: it drains what it can (nothing: the database is away) and exits without acknowledging.
    const t = Date.now();
    expect(await consumer.terminate()).toBe(0);
    const drainMs = Date.now() - t;
    expect(drainMs).toBeLessThan(10_000);
    expect(consumer.last?.final).toBe(true);

    await pg.resume();
    consumer = await start();
    await waitFor('all 400 rows after the restart', async () => (await rows()) === 400, 30_000, 100, () => consumer.stderr);

    // Away again while this run keeps going: it retries with backoff and catches up by itself.
    await pg.pause();
    await send(20);
    await new Promise((r) => setTimeout(r, 2_000));
    await pg.resume();
    await waitFor('all 600 rows after the second outage', async () => (await rows()) === 600, 30_000, 100, () => consumer.stderr);
    const [counts] = await pg.query<{ n: string; ids: string; lo: number; hi: number }>('SELECT count(*) AS n, count(DISTINCT id) AS ids, min(value::int) AS lo, max(value::int) AS hi FROM outpost_readings');
    expect(counts).toEqual({ n: '600', ids: '600', lo: 1, hi: 600 });
    expect(await consumer.terminate()).toBe(0);
    console.log(`database outages: 600 readings sent, 600 rows; SIGTERM while the database was away took ${drainMs} ms; last run: ${JSON.stringify(consumer.last)}`);
  });

  it('connects over TLS with the CA and credentials it is given, and names a refusal', { timeout: 90_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-ingest-tls-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const f = (name: string): string => join(dir, name);
    const openssl = (...args: string[]): void => void execFileSync('openssl', args, { stdio: 'pipe' });
    for (const ca of ['ca', 'rogue-ca']) openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${ca}`, '-keyout', f(`${ca}.key`), '-out', f(`${ca}.pem`));
    writeFileSync(f('server.ext'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=server', '-keyout', f('server.key'), '-out', f('server.csr'));
    openssl('x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', f('server.ext'), '-out', f('server.pem'));
    execFileSync('mosquitto_passwd', ['-b', '-c', f('passwd'), 'ingest', 'right-password'], { stdio: 'pipe' });
    writeFileSync(f('right'), 'right-password\n');
    writeFileSync(f('wrong'), 'wrong-password\n');
    const tlsPort = await freePort();
    const broker = await Mosquitto.start({
      dir: f('mosquitto'),
      persistence: true,
      extra: [`password_file ${f('passwd')}`, `listener ${tlsPort} 127.0.0.1`, `cafile ${f('ca.pem')}`, `certfile ${f('server.pem')}`, `keyfile ${f('server.key')}`, 'tls_version tlsv1.2'],
    });
    cleanup.push(() => broker.stop());
    const pg = await Postgres.start();
    cleanup.push(() => pg.stop());
    const tlsUrl = `mqtts://127.0.0.1:${tlsPort}`;
    const start = async (clientId: string, ca: string, password: string): Promise<IngestProcess> => {
      const c = await IngestProcess.start({ brokers: [tlsUrl], database: pg.url, clientId, extraArgs: ['--ca', f(ca), '--username', 'ingest', '--password-file', f(password)] });
      cleanup.push(() => c.kill9());
      return c;
    };
    const rogue = await start('ingest-rogue', 'rogue-ca.pem', 'right');
    const wrong = await start('ingest-wrong', 'ca.pem', 'wrong');
    const right = await start('ingest-right', 'ca.pem', 'right');
    await right.subscribed();

    const pub = await mqtt.connectAsync(tlsUrl, { clientId: 'test-gateway-tls', username: 'ingest', password: 'right-password', ca: readFileSync(f('ca.pem')) });
    cleanup.push(() => pub.endAsync(true));
    const readings = [{ id: 'gw-tls:1', device: 'm1', point: 'p', value: 1, quality: 'good', ts: 1764000000000, seq: 1 }];
    await pub.publishAsync('outpost/v1/gw/gw-tls/telemetry', JSON.stringify({ v: 1, gateway: 'gw-tls', sentAt: 1, readings }), { qos: 1 });
    await waitFor('the reading stored', async () => (await pg.query('SELECT 1 FROM outpost_readings')).length === 1, 10_000, 100, () => right.stderr);
    // Each refusal says what to do.
    await waitFor(
      'the refused ones to have tried',
      () => wrong.stderr.includes('the broker refused the credentials: check --username and --password-file') && rogue.stderr.includes("the broker's certificate is not trusted: give the CA that signed it with --ca"),
      10_000,
      100,
      () => `${wrong.stderr}\n${rogue.stderr}`,
    );
    expect(wrong.last?.connected ?? 0).toBe(0);
    expect(rogue.last?.connected ?? 0).toBe(0);
    // The password is never logged.
    expect(`${wrong.stderr}${rogue.stderr}${right.stderr}`).not.toContain('password\n');
    expect(`${wrong.stderr}${rogue.stderr}${right.stderr}`).not.toMatch(/right-password|wrong-password/);
    for (const c of [rogue, wrong, right]) expect(await c.terminate()).toBe(0);
    expect(right.last).toMatchObject({ final: true, rows: 1 });
  });

  it('refuses to start without a database it can reach, naming it and what to check', async () => {
    const { broker } = await peers('nodb', false);
    await expect(IngestProcess.start({ brokers: [broker.url], database: 'postgres://nobody:secret@127.0.0.1:1/x', clientId: 'ingest-nodb' })).rejects.toThrow(
      /exited with 1 before it started: outpost cloud-ingest: cannot create or open table outpost_readings in postgres:\/\/\*+@127\.0\.0\.1:1\/x.*is PostgreSQL running/s,
    );
  });
});
