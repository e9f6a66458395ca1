import { z } from 'zod';
import type { UsageStore } from '../../cloud-bridge/link-budget.js';
import { cloudUrls } from '../../cloud-bridge/config.js';
import { Uplink } from '../../cloud-bridge/uplink.js';
import { readClientTls } from '../config/client-tls.js';
import { HttpError, type Db, type Outbox } from '../contracts/index.js';
import type { HttpLayer } from '../http/http-layer.js';
import { sendJson } from '../http/respond.js';
import type { Part } from './site.js';

/** Uplink bytes per UTC day, in the runtime's counters table. */
function counterUsageStore(db: Db): UsageStore {
  const get = db.prepare('SELECT value FROM counters WHERE name = ?');
  const add = db.prepare('INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value');
  return {
    bytesOn: (day) => (get.get(`uplink-bytes:${day}`) as { value: number } | undefined)?.value ?? 0,
    add: (day, bytes) => {
      add.run(`uplink-bytes:${day}`, bytes);
    },
  };
}

const replayBody = z.strictObject({ ids: z.array(z.number().int().positive()).max(100_000).optional() });

/** `GET /api/v1/dead-letters?limit=N` and `POST /api/v1/dead-letters/replay {"ids"?: [...]}`. */
function deadLetterRoutes(http: HttpLayer, outbox: Outbox, uplink: Uplink, now: () => number): ReturnType<HttpLayer['router']> {
  const r = http.router();
  r.get('/', (req, res) => {
    const raw = req.query.limit;
    const limit = Number(typeof raw === 'string' ? raw : 100);
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new HttpError(400, 'limit: expected an integer from 1 to 10000');
    sendJson(res, 200, {
      count: outbox.deadLetterCount(),
      items: outbox.listDeadLetters(limit).map((d) => ({ id: d.id, stream: d.stream, reason: d.reason, failedAt: d.failedAt, reading: JSON.parse(d.body) as unknown })),
    });
  });
  r.post('/replay', http.jsonBody(replayBody), (req, res) => {
    const body = req.body as z.output<typeof replayBody>;
    const replayed = outbox.replayDeadLetters(now(), body.ids);
    uplink.notify();
    sendJson(res, 200, { replayed });
  });
  return r;
}

/** The cloud link: drains the outbox (and lends the link to downloads); dead letters are its business. */
export const uplinkPart: Part = {
  name: 'uplink',
  build(site) {
    const { config, clock, log, metrics } = site.opts;
    const c = config.cloud;
    const outbox = site.get('outbox').outbox;
    const uplink = new Uplink(
      {
        gatewayId: config.gateway.id,
        urls: cloudUrls(c),
        clientId: c.clientId ?? `outpost-${config.gateway.id}`,
        username: c.username,
        password: c.password,
        topicPrefix: c.topicPrefix,
        batchSize: c.batchSize,
        maxInFlight: c.maxInFlight,
        keepaliveS: c.keepaliveS,
        backoff: c.backoff,
        encoding: c.encoding,
        compression: c.compression,
        qos: c.qos,
        protocolVersion: c.protocolVersion,
        maxAttempts: c.maxAttempts,
        ackTimeoutMs: c.ackTimeoutMs,
        liveShare: c.liveShare,
        syncWindows: c.syncWindows,
        tls: c.tls && readClientTls(c.tls, 'cloud.tls'),
        lingerMs: c.lingerMs,
        maxBytesPerS: c.maxBytesPerS,
        dailyBytes: c.dailyBytes,
        netWatchMs: c.netWatchMs,
      },
      outbox,
      clock,
      log.child({ component: 'uplink' }),
      metrics,
      counterUsageStore(site.get('store').db),
    );
    site.provide('uplink', uplink);
    const http = site.get('http');
    http.mount('/api/v1/dead-letters', deadLetterRoutes(http, outbox, uplink, () => clock.now()));
    return uplink;
  },
};
