import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../runtime/config/load.js';
import { cloudTopics, decodeUplinkPayload } from '../../runtime/contracts/index.js';
import { Gateway } from '../../runtime/gateway.js';
import { createLogger } from '../../runtime/logger.js';
import { SimCloud } from '../../sim/cloud.js';
import { ArtifactOrigin } from '../../sim/ota/artifact-origin.js';
import { DdiDevice } from '../../sim/ota/ddi-device.js';
import { ReleaseSigner } from '../../sim/ota/release-signer.js';
import { SimSite } from '../../sim/site.js';
import { waitFor } from '../helpers/wait.js';
import { TEST_GROUP_SECRET, testIdentities } from '../helpers/broker-access.js';
import { gatewayApi, TEST_API_TOKENS, TEST_TOKENS } from '../helpers/api.js';

/**
 * A gateway whose config is full of marker secrets (every one contains MARKER), run in-process
 * with its log at trace level into a file: readings flow to a cloud, releases are fetched from an
 * origin whose URLs carry credentials (one works, one is refused), update-server devices poll with
 * a right and a wrong token. No marker may appear in the log, the status, the metrics, the HTTP
 * API's answers, or what the gateway sends the cloud.
 */
const MARKER = 'S3CR3T';
const GW = 'secrets-gw';
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

const cleanup: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

describe('secrets in the config', () => {
  it('never reach the log (trace included), the status, the metrics or the cloud', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-secrets-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const cloud = await SimCloud.start();
    cleanup.push(() => cloud.stop());
    const origin = await new ArtifactOrigin().start();
    cleanup.push(() => origin.stop());
    const site = await SimSite.start({ meters: 0, boilers: 0, children: 1, childIntervalMs: 50, pollIntervalMs: 1000 });
    cleanup.push(() => site.stop());
    const signer = ReleaseSigner.generate('cloud-key');

    // What the gateway sends the cloud (its telemetry, status and OTA events), decoded.
    const fromGateway: string[] = [];
    const watcher = await mqtt.connectAsync(cloud.url, { reconnectPeriod: 0 });
    cleanup.push(() => watcher.endAsync(true));
    watcher.on('message', (topic, payload) => {
      if (topic.includes('/releases/') || topic.includes('/rollouts/')) return; // the cloud's own downlinks
      let text: string;
      try {
        text = JSON.stringify(decodeUplinkPayload(payload));
      } catch {
        text = payload.toString('latin1');
      }
      fromGateway.push(`${topic} ${text}`);
    });
    await watcher.subscribeAsync('#', { qos: 1 });

    const logFile = join(dir, 'gateway.log');
    const log = createLogger({ level: 'trace', destination: logFile });
    const config = parseConfig({
      gateway: { id: GW },
      broker: { host: '127.0.0.1', port: 0, acceptUnknownDevices: true },
      identities: testIdentities,
      http: {
        host: '127.0.0.1',
        port: 0,
        tokens: TEST_API_TOKENS,
        admin: { username: 'admin', passwordHash: `$2b$10$${MARKER}adminhash`.padEnd(60, 'x') },
      },
      devices: site.devices(),
      rules: [{ id: 'all', type: 'filter', match: { device: '*', point: '*' } }],
      cloud: {
        url: `mqtt://${MARKER}-url-user:${MARKER}-url-pass@127.0.0.1:${cloud.port}`,
        username: 'gw-user',
        password: `${MARKER}-cloud-pass`,
        lingerMs: 0,
        batchSize: 50,
        backoff: { initialMs: 100, maxMs: 500 },
      },
      storage: { path: join(dir, 'state', 'outpost.db') },
      ota: {
        trustedKeys: { 'cloud-key': signer.publicKeyPem },
        cacheBytes: 16 * 1024 * 1024,
        server: {
          host: '127.0.0.1',
          port: 0,
          tenant: 'site-a',
          pollSeconds: 1,
          groupSecret: `${MARKER}-ota-group-secret-0123456789`,
          targetTokenHashes: { 'sensor-001': createHash('sha256').update(`${MARKER}-target-token`).digest('hex') },
        },
      },
    });
    const gateway = await Gateway.start(config, { log });
    cleanup.push(() => gateway.stop());
    site.startChildren(`mqtt://127.0.0.1:${gateway.ports.broker}`, TEST_GROUP_SECRET);

    // Releases whose artifact URLs carry credentials: user info and a presigned query (fetched),
    // and a token for a file the origin does not have (refused: the failure detail names the URL).
    const image = Buffer.alloc(64 * 1024, 7);
    const good = `${origin.put('/fw/2.0.0.swu', image).replace('http://', `http://${MARKER}-art-user:${MARKER}-art-pass@`)}?X-Amz-Signature=${MARKER}-art-sig&part=1`;
    const missing = `${origin.url}/fw/missing.swu?access_token=${MARKER}-art-token`;
    const release = (version: string, url: string, body = image): Record<string, unknown> => ({
      release: `fw-${version}`,
      product: 'fw',
      version,
      issuedAt: Date.now(),
      expiresAt: Date.now() + 86_400_000,
      target: { gateways: [GW], devices: ['sensor-*'] },
      artifact: { name: `fw-${version}.swu`, url, size: body.length, sha256: sha(body) },
      rollout: { phases: [{ share: 100 }], failureThreshold: 0.5, maxRetries: 1 },
    });
    for (const m of [release('2.0.0', good), release('3.0.0', missing, Buffer.alloc(1000, 3))]) {
      await watcher.publishAsync(cloudTopics.release('outpost', GW, String(m.release)), JSON.stringify(signer.sign(m)), { qos: 1, retain: true });
    }

    // Update-server devices: one with its target token, one with a wrong gateway token.
    const server = `http://127.0.0.1:${gateway.ports.ota}/site-a`;
    const devices = [
      new DdiDevice({ server, id: 'sensor-001', version: '1.0.0', authorization: `TargetToken ${MARKER}-target-token`, maxPollMs: 100 }),
      new DdiDevice({ server, id: 'sensor-002', version: '1.0.0', authorization: `GatewayToken ${MARKER}-wrong-token`, maxPollMs: 100 }),
    ];
    for (const d of devices) {
      d.start();
      cleanup.push(() => d.stop());
    }

    const releases = (): Array<{ release: string; state: string; detail?: string }> => gateway.status().ota?.releases ?? [];
    await waitFor('readings in the cloud', () => cloud.ledger.uniqueFrom(GW) > 20, 15_000);
    await waitFor('the release with credentials in its URL fetched', () => releases().some((r) => r.release === 'fw-2.0.0' && r.state !== 'fetching'), 15_000, 50, () => JSON.stringify(releases()));
    await waitFor('the release with a token for a missing file refused', () => releases().some((r) => r.release === 'fw-3.0.0' && r.state === 'failed'), 15_000, 50, () => JSON.stringify(releases()));
    await waitFor('the OTA failure reported to the cloud', () => fromGateway.some((m) => m.includes('fw-3.0.0')), 10_000);

    const status = JSON.stringify(gateway.status());
    const metrics = await gateway.metrics.text();
    // The HTTP API as a client meets it (it may answer 401 once it requires tokens; the body must hold no secret either way).
    const api = gatewayApi(gateway.ports.http, join(dir, 'state'), TEST_TOKENS.read);
    const http = await Promise.all(
      ['/api/v1/status', '/metrics', '/api/v1/ota'].map(async (p) => {
        const res = await api.fetch(`${api.base}${p}`);
        return `${p} ${res.status} ${await res.text()}`;
      }),
    );
    expect(releases().find((r) => r.release === 'fw-2.0.0')?.state).not.toBe('failed');
    expect(releases().find((r) => r.release === 'fw-3.0.0')?.detail).toContain('missing.swu');

    await site.stop();
    await gateway.stop();
    await new Promise<void>((resolve) => (log as unknown as { flush(cb: () => void): void }).flush(() => resolve()));
    await waitFor('the log file', () => existsSync(logFile) && readFileSync(logFile, 'utf8').includes('gateway stopped'), 5000);
    const logText = readFileSync(logFile, 'utf8');

    // The run was what it claims: the log holds trace-level and debug lines, the URLs are there, redacted.
    expect(logText).toContain('"level":20');
    expect(logText).toContain('cloud link up');
    expect(logText).toContain('mqtt://***@127.0.0.1');
    const leaks = [
      ...logText.split('\n').filter((l) => l.includes(MARKER)).map((l) => `log: ${l}`),
      ...(status.includes(MARKER) ? [`status: ${status}`] : []),
      ...metrics.split('\n').filter((l) => l.includes(MARKER)).map((l) => `metrics: ${l}`),
      ...http.filter((h) => h.includes(MARKER)).map((h) => `http: ${h}`),
      ...fromGateway.filter((m) => m.includes(MARKER)).map((m) => `cloud: ${m}`),
    ];
    expect(leaks).toEqual([]);

    // The files the gateway created hold the site's data: owner-only.
    expect(statSync(join(dir, 'state')).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, 'state', 'outpost.db')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'state', 'ota-cache')).mode & 0o777).toBe(0o700);
  }, 60_000);
});
