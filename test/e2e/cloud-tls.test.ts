import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CloudConsumer } from '../../sim/cloud.js';
import { freePort } from '../../sim/free-port.js';
import { Mosquitto } from '../../sim/mosquitto.js';
import { startSiteAndGateway } from '../helpers/site-gateway.js';
import { sleep, waitFor } from '../helpers/wait.js';

const dir = mkdtempSync(join(tmpdir(), 'outpost-tls-'));
const f = (name: string): string => join(dir, name);
const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { stdio: 'pipe' });
}

/** A CA, a broker certificate for 127.0.0.1, a client certificate, and a CA nobody trusts. */
beforeAll(() => {
  for (const ca of ['ca', 'rogue-ca']) {
    openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${ca}`, '-keyout', f(`${ca}.key`), '-out', f(`${ca}.pem`));
  }
  writeFileSync(f('server.ext'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  writeFileSync(f('client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const [name, ext] of [
    ['server', 'server.ext'],
    ['client', 'client.ext'],
  ] as const) {
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`));
    openssl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', f(ext), '-out', f(`${name}.pem`));
  }
  return () => rmSync(dir, { recursive: true, force: true });
});

/** Mosquitto with a plain listener (for the consumer) and a mutual-TLS listener for gateways. */
async function tlsBroker(): Promise<{ broker: Mosquitto; tlsUrl: string }> {
  const tlsPort = await freePort();
  const broker = await Mosquitto.start({
    dir: join(dir, `mosq-${tlsPort}`),
    extra: [
      `listener ${tlsPort} 127.0.0.1`,
      `cafile ${f('ca.pem')}`,
      `certfile ${f('server.pem')}`,
      `keyfile ${f('server.key')}`,
      'require_certificate true',
      'tls_version tlsv1.2',
    ],
  });
  cleanup.push(() => broker.stop());
  return { broker, tlsUrl: `mqtts://127.0.0.1:${tlsPort}` };
}

describe('TLS to the cloud broker', () => {
  it('delivers over mutual TLS with the site CA and a client certificate', async () => {
    const { broker, tlsUrl } = await tlsBroker();
    const consumer = new CloudConsumer(broker.url, 'outpost', 'tls-consumer');
    await consumer.start();
    cleanup.push(() => consumer.stop());
    const sg = await startSiteAndGateway(tlsUrl, { meters: 0, boilers: 0, children: 2, childIntervalMs: 50, pollIntervalMs: 1000 }, undefined, {
      tls: { ca: f('ca.pem'), cert: f('client.pem'), key: f('client.key') },
    });
    cleanup.push(() => sg.close());
    await waitFor('readings over TLS', () => consumer.ledger.uniqueFrom('e2e-gw') > 50);
    expect(sg.gateway.status().link).toBe('up');
  });

  it.each([
    ['without a client certificate', { ca: 'ca.pem' }],
    ['when the broker certificate is not signed by the configured CA', { ca: 'rogue-ca.pem', cert: 'client.pem', key: 'client.key' }],
  ])('refuses to deliver %s', async (_what, files: { ca: string; cert?: string; key?: string }) => {
    const { broker, tlsUrl } = await tlsBroker();
    const consumer = new CloudConsumer(broker.url, 'outpost', 'tls-consumer-neg');
    await consumer.start();
    cleanup.push(() => consumer.stop());
    const tls = { ca: f(files.ca), ...(files.cert ? { cert: f(files.cert), key: f(files.key!) } : {}) };
    const sg = await startSiteAndGateway(tlsUrl, { meters: 0, boilers: 0, children: 1, childIntervalMs: 50, pollIntervalMs: 1000 }, undefined, { tls });
    cleanup.push(() => sg.close());
    await sleep(2000);
    expect(sg.gateway.status().link).not.toBe('up');
    expect(consumer.ledger.unique).toBe(0);
    // Nothing is lost meanwhile: it waits in the outbox.
    expect(sg.gateway.status().outbox.depth).toBeGreaterThan(0);
  });
});
