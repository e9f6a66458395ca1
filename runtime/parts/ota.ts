import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { otaNotConfiguredRoutes } from '../../ota/api.js';
import { restrictToOwner } from '../security/secret-files.js';
import type { Part } from './site.js';

/**
 * The artifact cache holds firmware for the site's devices before it is rolled out: owner-only,
 * so another local user can neither read nor swap an image between its verification and its
 * rollout. Created 0700 (the cache creates its subdirectories inside); the default directory, ours
 * beside the store, is made 0700 if an older gateway created it open; a configured existing
 * directory is the operator's choice.
 */
function prepareCacheDir(dir: string, isDefault: boolean): void {
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  else if (isDefault) restrictToOwner(dir);
}

/**
 * Releases from the cloud, cached once and rolled out to child devices (docs/ota.md); none without
 * an `ota` section, and then its code (the release verifier, the rollout engine, the update
 * server) is not loaded either.
 */
export const otaPart: Part = {
  name: 'ota',
  async build(site) {
    const { config } = site;
    const http = site.get('http');
    if (!config.ota) {
      http.mount('/api/v1/ota', otaNotConfiguredRoutes(http));
      return undefined;
    }
    const { defaultCacheDir, OtaService } = await import('../../ota/ota-service.js');
    const store = site.get('store');
    const cacheDir = defaultCacheDir(dirname(config.storage.path));
    prepareCacheDir(config.ota.cacheDir ?? cacheDir, config.ota.cacheDir === undefined);
    const ota = new OtaService({
      config: config.ota,
      gatewayId: config.gateway.id,
      topicPrefix: config.cloud.topicPrefix,
      stream: config.streams.some((s) => s.name === 'ota') ? 'ota' : config.streams[0]!.name,
      defaultCacheDir: cacheDir,
      store,
      link: site.get('uplink').cloudLink,
      outbox: site.get('rules').pipeline,
      sequence: store.sequence,
      http,
    });
    http.mount('/api/v1/ota', ota.routes());
    return ota;
  },
};
