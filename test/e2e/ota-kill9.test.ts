import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SimCloud } from '../../sim/cloud.js';
import { ArtifactOrigin } from '../../sim/ota/artifact-origin.js';
import { ReleaseSigner } from '../../sim/ota/release-signer.js';
import { GatewayProcess } from '../helpers/gateway-process.js';
import { waitFor } from '../helpers/wait.js';
import { gatewayApi, TEST_API_TOKENS, TEST_TOKENS } from '../helpers/api.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('OTA: kill -9 in the middle of an artifact download', () => {
  it('leaves nothing servable, and the next start resumes from the bytes on disk and verifies', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-ota-kill9-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const cloud = await SimCloud.start();
    cleanup.push(() => cloud.stop());
    const origin = await new ArtifactOrigin().start();
    cleanup.push(() => origin.stop());
    const signer = ReleaseSigner.generate('k1');
    const image = randomBytes(3_000_000);
    const file = join(dir, 'site.json');
    writeFileSync(
      file,
      JSON.stringify({
        gateway: { id: 'kill9-ota' },
        broker: { host: '127.0.0.1', port: 0 },
        http: { host: '127.0.0.1', port: 0, tokens: TEST_API_TOKENS },
        cloud: { url: cloud.url, backoff: { initialMs: 100, maxMs: 500 } },
        storage: { path: join(dir, 'outpost.db') },
        ota: { trustedKeys: { k1: signer.publicKeyPem }, server: { host: '127.0.0.1', port: 0, closedNetwork: true } },
      }),
    );
    const manifest = {
      release: 'fw-2.0.0',
      product: 'fw',
      version: '2.0.0',
      issuedAt: Date.now(),
      expiresAt: Date.now() + 86_400_000,
      target: { gateways: ['kill9-ota'], devices: ['*'] },
      artifact: { name: 'fw-2.0.0.swu', url: origin.put('/fw.swu', image), size: image.length, sha256: sha(image) },
      rollout: { phases: [{ share: 100 }] },
    };
    // The first transfer hangs after 1.2 MB: the gateway is killed while it waits for more.
    origin.stallNext(1, 1_200_000);
    const first = await GatewayProcess.start(file);
    cleanup.push(() => first.kill9());
    await cloud.publishRetained('outpost/v1/gw/kill9-ota/releases/fw-2.0.0', JSON.stringify(signer.sign(manifest)));
    const partial = join(dir, 'ota-cache', 'partial', sha(image));
    await waitFor('1.2 MB on disk', () => {
      try {
        return statSync(partial).size === 1_200_000;
      } catch {
        return false;
      }
    });
    await first.kill9();
    // Nothing that could be served: no verified blob, the partial file only.
    expect(readdirSync(join(dir, 'ota-cache', 'blobs'))).toEqual([]);

    const second = await GatewayProcess.start(file);
    cleanup.push(() => second.terminate());
    const client = gatewayApi(second.httpPort, dir, TEST_TOKENS.read);
    await waitFor('release ready after the restart', async () => {
      const s = (await (await client.fetch(`${client.base}/api/v1/ota`)).json()) as { releases?: Array<{ state: string }> };
      return s.releases?.[0]?.state === 'ready' || s.releases?.[0]?.state === 'done';
    }, 15_000);
    // Resumed, not started again: the origin sent each byte once (plus the stalled prefix, once).
    expect(origin.requests.map((r) => r.range)).toEqual([undefined, 'bytes=1200000-']);
    expect(origin.bytesSent).toBe(image.length);
    expect(sha(readFileSync(join(dir, 'ota-cache', 'blobs', sha(image))))).toBe(sha(image));
  });
});
