import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { stringify } from 'yaml';
import { SimChildDevice } from '../../sim/child-device.js';
import { CloudConsumer } from '../../sim/cloud.js';
import { freePort } from '../../sim/free-port.js';
import { deviceCredentials, testIdentities } from './broker-access.js';
import { GatewayProcess } from './gateway-process.js';
import { IngestProcess, type IngestFiguresLine } from './ingest-process.js';
import type { Postgres } from './postgres.js';
import { sleep, waitFor } from './wait.js';

/** What a fault can do to the running scenario. */
export interface IngestScenarioContext {
  readonly gateways: readonly GatewayProcess[];
  /** kill -9 gateway `i` and start it again on its store (its children reconnect by themselves). */
  restartGateway(i: number): Promise<void>;
  /** kill -9 consumer `i` (default 0), leave it dead for `downMs`, start it again with the same client id. */
  restartConsumer(downMs: number, i?: number): Promise<void>;
  /** Rows in the table now. */
  rows(): Promise<number>;
  /** The broker(s) consumer `i` (default 0) is connected to, as of its last figures line: the node to kill in a cluster. */
  consumerBrokers(i?: number): readonly string[];
  /** Waits until the table has grown by `n` rows from now. */
  moreRows(n: number, timeoutMs?: number): Promise<void>;
}

export interface IngestScenarioOptions {
  /** The cloud broker: one URL, or the nodes of a cluster (the consumer tries them in turn). */
  readonly brokerUrls: readonly string[];
  readonly pg: Postgres;
  readonly dir: string;
  readonly cleanup: Array<() => Promise<unknown>>;
  /** The gateways' `cloud` section for these brokers (default `{url: brokerUrls[0]}`). */
  readonly gatewayCloud?: (urls: readonly string[]) => Record<string, unknown>;
  /**
   * An independent witness: a persistent sim/cloud consumer on this URL whose ledger sees every
   * reading the gateways published. The table must then hold exactly its readings.
   */
  readonly witnessUrl?: string;
  readonly gateways?: number;
  /** The consumers (default one, client id `ingest-e2e`); give them one share group to split the load. */
  readonly consumers?: ReadonlyArray<{ readonly clientId: string; readonly shareGroup?: string; readonly concurrency?: number }>;
  readonly childrenPerGateway?: number;
  /** Run one after another while the readings flow. */
  readonly faults: ReadonlyArray<(ctx: IngestScenarioContext) => Promise<void>>;
}

export interface IngestScenarioFigures {
  /** Readings whose MQTT message a gateway acknowledged to its child. */
  acked: number;
  rows: number;
  /** Readings the witness received, and how many of them were repeats. */
  witnessReceived: number | undefined;
  witnessDuplicates: number | undefined;
  /**
   * Each consumer run in start order, with its last figures line: a killed run's is up to a second
   * old, and one killed within its first second has none.
   */
  consumerRuns: Array<{ clientId: string; figures: IngestFiguresLine | undefined }>;
  ms: number;
}

/**
 * Gateways (the compiled CLI) with simulated children, publishing to the cloud broker(s); one
 * `outpost cloud-ingest` writing to PostgreSQL; the faults run while readings flow. At the end
 * every reading a gateway acknowledged is in the table exactly once, and (with a witness) the table
 * holds exactly the readings published. A cluster variant passes its node URLs and faults that
 * kill nodes, e.g. with a RabbitMQ cluster helper `cluster` (no share group there):
 *
 *   brokerUrls: cluster.urls, gatewayCloud: (urls) => ({ urls }),
 *   faults: [async (ctx) => { await cluster.kill(cluster.urls.indexOf(ctx.consumerBrokers()[0]!)); await ctx.moreRows(500); }]
 */
export async function ingestAcrossFaults(opts: IngestScenarioOptions): Promise<IngestScenarioFigures> {
  const started = Date.now();
  const { pg, dir, cleanup } = opts;
  const witness = opts.witnessUrl !== undefined ? new CloudConsumer(opts.witnessUrl, 'outpost', `ingest-witness-${process.pid}`) : undefined;
  if (witness) {
    await witness.start();
    cleanup.push(() => witness.stop());
  }

  const runs: Array<{ clientId: string; run: IngestProcess }> = [];
  const startConsumer = async (spec: { clientId: string; shareGroup?: string; concurrency?: number }): Promise<IngestProcess> => {
    const c = await IngestProcess.start({ brokers: opts.brokerUrls, database: pg.url, ...spec });
    cleanup.push(() => c.kill9());
    runs.push({ clientId: spec.clientId, run: c });
    return c;
  };
  const specs = opts.consumers ?? [{ clientId: 'ingest-e2e' }];
  const consumers: IngestProcess[] = [];
  for (const spec of specs) consumers.push(await startConsumer(spec));
  // A first start: the broker keeps readings for the consumers' sessions only once they subscribed.
  for (const [i, c] of consumers.entries()) await c.subscribed(specs[i]!.concurrency ?? 1);

  const gateways: GatewayProcess[] = [];
  const configs: string[] = [];
  const children: SimChildDevice[] = [];
  for (let g = 0; g < (opts.gateways ?? 2); g++) {
    const configFile = join(dir, `gw-${g}.yaml`);
    const brokerPort = await freePort();
    writeFileSync(
      configFile,
      stringify({
        gateway: { id: `ingest-gw-${g}` },
        // A fixed port: the children find the gateway again after it restarts.
        broker: { host: '127.0.0.1', port: brokerPort, acceptUnknownDevices: true },
        identities: testIdentities,
        http: { host: '127.0.0.1', port: 0 },
        rules: [{ id: 'all', type: 'filter', match: { device: '*', point: '*' } }],
        cloud: { ...(opts.gatewayCloud ?? ((urls) => ({ url: urls[0] })))(opts.brokerUrls), backoff: { initialMs: 100, maxMs: 1000 }, batchSize: 100 },
        storage: { path: join(dir, `gw-${g}.db`) },
      }),
    );
    configs.push(configFile);
    const gw = await GatewayProcess.start(configFile);
    cleanup.push(() => gw.kill9());
    gateways.push(gw);
    for (let k = 0; k < (opts.childrenPerGateway ?? 3); k++) {
      const id = `g${g}-dev-${k}`;
      const child = new SimChildDevice({ url: gw.brokerUrl, deviceId: id, password: deviceCredentials(id).password, intervalMs: 20, points: { a: { kind: 'counter' }, b: { kind: 'sine', amplitude: 5, periodMs: 2000 } }, maxInFlight: 20 });
      child.start();
      cleanup.push(() => child.kill());
      children.push(child);
    }
  }

  const rows = async (): Promise<number> => Number((await pg.query<{ n: string }>('SELECT count(*) AS n FROM outpost_readings'))[0]?.n ?? 0);
  const ctx: IngestScenarioContext = {
    gateways,
    rows,
    consumerBrokers: (i = 0) => consumers[i]?.last?.brokers ?? [],
    async restartGateway(i) {
      await gateways[i]!.kill9();
      const gw = await GatewayProcess.start(configs[i]!);
      cleanup.push(() => gw.kill9());
      gateways[i] = gw;
    },
    async restartConsumer(downMs, i = 0) {
      await consumers[i]!.kill9();
      await sleep(downMs);
      consumers[i] = await startConsumer(specs[i]!);
    },
    async moreRows(n, timeoutMs = 30_000) {
      const from = await rows();
      await waitFor(`${n} more rows in the table`, async () => (await rows()) >= from + n, timeoutMs, 100);
    },
  };

  await ctx.moreRows(300);
  for (const fault of opts.faults) await fault(ctx);
  await ctx.moreRows(300);

  for (const c of children) await c.stop();
  const acked = children.flatMap((c) => c.acked);
  const missing = async (): Promise<number> => {
    const found = await pg.query<{ n: string }>('SELECT count(*) AS n FROM outpost_readings WHERE id = ANY($1::text[])', [acked]);
    return acked.length - Number(found[0]?.n ?? 0);
  };
  await waitFor('every acknowledged reading in the table', async () => (await missing()) === 0, 60_000, 250, () => consumers.map((c) => `consumer: ${JSON.stringify(c.last)} ${c.stderr}`).join('\n'));
  // Then the gateways stop (what a child's departure made, a stale reading, still goes up first).
  for (const gw of gateways) expect(await gw.terminate()).toBe(0);
  if (witness) {
    const published = (): number => witness.ledger.unique - witness.ledger.records;
    await waitFor('the table to hold every reading the witness saw', async () => (await rows()) === published(), 30_000, 250, () => `witness ${published()}`);
  }
  // Nothing more arrives late.
  await sleep(1_000);

  const [counts] = await pg.query<{ n: string; ids: string }>('SELECT count(*) AS n, count(DISTINCT id) AS ids FROM outpost_readings');
  const total = Number(counts?.n);
  expect(Number(counts?.ids)).toBe(total);
  expect(await missing()).toBe(0);
  if (witness) {
    expect(total).toBe(witness.ledger.unique - witness.ledger.records);
    const ids = (await pg.query<{ id: string }>('SELECT id FROM outpost_readings')).map((r) => r.id);
    expect(witness.ledger.missing(ids)).toEqual([]);
  }
  for (const c of consumers) {
    expect(await c.terminate()).toBe(0);
    expect(c.last?.final).toBe(true);
  }
  return {
    acked: acked.length,
    rows: total,
    witnessReceived: witness?.ledger.received,
    witnessDuplicates: witness?.ledger.duplicates,
    consumerRuns: runs.map((r) => ({ clientId: r.clientId, figures: r.run.last })),
    ms: Date.now() - started,
  };
}
