import { dirname } from 'node:path';
import { otaNotConfiguredRoutes } from '../../ota/api.js';
import { defaultCacheDir, OtaService } from '../../ota/ota-service.js';
import type { Part } from './site.js';

/** Releases from the cloud, cached once and rolled out to child devices (docs/ota.md); none without an `ota` section. */
export const otaPart: Part = {
  name: 'ota',
  build(site) {
    const { config } = site;
    const http = site.get('http');
    if (!config.ota) {
      http.mount('/api/v1/ota', otaNotConfiguredRoutes(http));
      return undefined;
    }
    const store = site.get('store');
    const ota = new OtaService({
      config: config.ota,
      gatewayId: config.gateway.id,
      topicPrefix: config.cloud.topicPrefix,
      stream: config.streams.some((s) => s.name === 'ota') ? 'ota' : config.streams[0]!.name,
      defaultCacheDir: defaultCacheDir(dirname(config.storage.path)),
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
