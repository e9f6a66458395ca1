import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import {
  callTimeoutMsSchema,
  cloudCallSchema,
  cloudConfigurationSchema,
  cloudDesiredSchema,
  cloudTwinTopics,
  errorMessage,
  HttpError,
  nameSchema,
  parseDeviceTopic,
  parseStatusTopic,
  type Component,
  type ComponentContext,
  type NextFunction,
  type Request,
  type Response,
} from '../contracts/index.js';
import { CallError, Calls, DEFAULT_CALL_LIMITS, type CallFailure } from '../devices/calls.js';
import { configurationSchema } from '../devices/configurations.js';
import { DeviceStore } from '../devices/device-store.js';
import { DeviceRegistry, RegistryError, type ConfiguredDevice } from '../devices/registry.js';
import { checkDoc } from '../devices/twin-doc.js';
import { sendJson } from '../http/respond.js';
import type { Part } from './site.js';

/** The gateway's own version (package.json), for its twin. */
const VERSION = ['../../package.json', '../../../package.json']
  .map((p) => fileURLToPath(new URL(p, import.meta.url)))
  .filter((f) => existsSync(f))
  .map((f) => (JSON.parse(readFileSync(f, 'utf8')) as { version?: string }).version)
  .find((v) => typeof v === 'string') ?? '0.0.0';

/** The registry as a part: started after the ingest path, stopped before it. */
export class DevicesComponent implements Component {
  readonly name = 'devices';
  constructor(
    readonly registry: DeviceRegistry,
    readonly calls: Calls,
  ) {}

  start(_ctx: ComponentContext): Promise<void> {
    this.registry.start();
    return Promise.resolve();
  }

  async stop(): Promise<void> {
    this.calls.stop();
    await this.registry.flushOutgoing();
    this.registry.stop();
  }

  status(): Record<string, unknown> {
    return { devices: { ...this.registry.status(), callsInFlight: this.calls.inFlight } };
  }
}

const CALL_STATUS: Record<CallFailure, number> = { 'unknown-device': 404, 'not-callable': 400, offline: 409, timeout: 504, busy: 429, 'too-large': 413, stopping: 503 };
const REGISTRY_STATUS: Record<RegistryError['kind'], number> = { 'unknown-device': 404, invalid: 400, conflict: 409 };

function httpError(err: unknown): unknown {
  if (err instanceof CallError) return new HttpError(CALL_STATUS[err.kind], err.message, { kind: err.kind });
  if (err instanceof RegistryError) return new HttpError(REGISTRY_STATUS[err.kind], err.message);
  return err;
}

const callBody = z.strictObject({
  method: nameSchema,
  payload: z.unknown().optional(),
  timeoutMs: callTimeoutMsSchema.default(10_000),
  wait: z.boolean().default(false),
});
const tagsBody = z.strictObject({ tags: z.record(z.string().regex(/^[A-Za-z0-9_-]{1,64}$/), z.union([z.string().max(256), z.number().finite(), z.boolean()])) });
const configurationBody = configurationSchema.omit({ id: true });

/**
 * Device management (docs/devices.md): inventory, twins, configurations, calls. Children's
 * `reported` and `response` messages are taken before their PUBACK; births and wills are observed;
 * committed readings feed last-seen and bound properties; the cloud's desired documents,
 * configurations and calls arrive on the cloud link, and the records for the cloud go through the
 * outbox stream `twins` (give it a priority in `streams`; otherwise it is drained last).
 */
export const devicesPart: Part = {
  name: 'devices',
  build(site) {
    const { config, clock, log, metrics, points, protocols } = site.opts;
    const store = site.get('store');
    const broker = site.get('localBroker');
    const pipeline = site.get('rules').pipeline;
    const outbox = site.get('outbox').outbox;
    const uplink = site.get('uplink');
    const stream = 'twins';
    const childProtocol = protocols.entries().find((e) => e.capabilities.brokerIdentity)?.protocol ?? 'mqtt';
    const devices: ConfiguredDevice[] = config.devices.map((d) => ({
      id: d.id,
      protocol: d.protocol,
      model: d.model as string | undefined,
      firmware: d.firmware as string | undefined,
      labels: d.labels as Record<string, string> | undefined,
      twin: d.twin as Record<string, string> | undefined,
    }));
    const registry = new DeviceRegistry({
      gatewayId: config.gateway.id,
      gatewayVersion: VERSION,
      store: new DeviceStore(store),
      clock,
      log: log.child({ component: 'devices' }),
      metrics,
      devices,
      configurations: config.configurations.map((c) => ({ id: c.id, target: c.target, desired: c.desired, priority: c.priority, labels: c.labels })),
      childProtocol,
      acceptUnknownDevices: config.broker.acceptUnknownDevices,
      publishLocal: (topic, payload, qos, retain) => broker.publish(topic, payload, qos, retain),
      write: (device, point, value) => points.write(device, point, value, 'twin'),
      outbox: pipeline,
      stream,
      streamDepth: () => outbox.stats().streams.find((s) => s.stream === stream)?.depth ?? 0,
      sequence: store.sequence,
    });
    const calls = new Calls({
      clock,
      metrics,
      limits: DEFAULT_CALL_LIMITS,
      check: (device) => {
        const protocol = registry.protocolOf(device);
        if (protocol === undefined) throw new CallError('unknown-device', `no device "${device}" in the inventory`);
        if (protocol !== childProtocol) throw new CallError('not-callable', `"${device}" is a ${protocol} device: methods are called on MQTT children`);
      },
      online: (device) => registry.online(device),
      publish: (topic, payload) => broker.publish(topic, payload, 1, false),
    });
    registry.onDeviceOnline((d) => calls.deviceOnline(d));
    const mRefused = metrics.counter('outpost_twin_refused_total', 'Twin messages and edits refused, by reason', ['reason']);

    // Children: births and wills; reported patches and call answers, committed before the PUBACK.
    broker.observe((msg) => {
      const device = parseStatusTopic(msg.topic);
      if (device !== undefined) registry.onStatus(device, msg.payload);
    });
    broker.intercept((msg) => {
      const at = parseDeviceTopic(msg.topic);
      if (!at || (at.rest !== 'reported' && !at.rest.startsWith('response/'))) return Promise.resolve();
      // The broker lets a device publish under its own subtree only; checked again here when the
      // broker says who published (an external site broker does not: its ACLs answer for it).
      if (msg.clientId !== undefined && msg.clientId !== at.device) return Promise.resolve();
      try {
        if (at.rest === 'reported') registry.onReported(at.device, msg.payload);
        else {
          const answer = registry.parseResponse(msg.payload);
          if (!calls.answer(at.device, at.rest.slice('response/'.length), answer.status, answer.payload)) mRefused.inc({ reason: 'response-unexpected' });
        }
      } catch (err) {
        // Refused for good (acknowledged all the same: resending cannot make it valid), counted and logged.
        if (!(err instanceof RegistryError)) mRefused.inc({ reason: 'response-invalid' });
        log.warn({ device: at.device, topic: msg.topic, err: errorMessage(err) }, 'twin message refused');
      }
      return Promise.resolve();
    });
    pipeline.addTap((readings) => registry.onReadings(readings));

    // The cloud: direct desired edits per device, configurations, calls.
    const { topicPrefix: prefix } = config.cloud;
    const gw = config.gateway.id;
    uplink.subscribe(cloudTwinTopics.desiredFilter(prefix, gw), (topic, payload) => {
      const device = topic.split('/').at(-2)!;
      if (payload.length === 0) return;
      const parsed = cloudDesiredSchema.safeParse(safeJson(payload));
      if (!parsed.success || !nameSchema.safeParse(device).success) {
        mRefused.inc({ reason: 'cloud-desired-invalid' });
        log.warn({ topic, err: parsed.success ? 'bad device id' : parsed.error.message }, 'desired document from the cloud refused');
        return;
      }
      registry.onCloudDesired(device, parsed.data);
    });
    uplink.subscribe(cloudTwinTopics.configurationsFilter(prefix, gw), (topic, payload) => {
      const id = topic.split('/').at(-1)!;
      let why: string | undefined;
      if (!nameSchema.safeParse(id).success) why = 'bad configuration id';
      else if (payload.length === 0) why = registry.onCloudConfiguration(id, undefined);
      else {
        const parsed = cloudConfigurationSchema.safeParse(safeJson(payload));
        if (!parsed.success) why = parsed.error.issues.map((i) => `${i.path.join('.') || '(payload)'}: ${i.message}`).join('; ');
        else {
          try {
            const desired = checkDoc(parsed.data.desired, 'desired');
            why = registry.onCloudConfiguration(id, { version: parsed.data.version, target: parsed.data.target, desired, priority: parsed.data.priority, labels: parsed.data.labels });
          } catch (err) {
            why = errorMessage(err);
          }
        }
      }
      if (why !== undefined) {
        mRefused.inc({ reason: 'cloud-configuration-refused' });
        log.warn({ configuration: id, err: why }, 'configuration from the cloud refused');
      }
    });
    uplink.subscribe(cloudTwinTopics.calls(prefix, gw), (_topic, payload) => {
      const parsed = cloudCallSchema.safeParse(safeJson(payload));
      if (!parsed.success) {
        mRefused.inc({ reason: 'cloud-call-invalid' });
        log.warn({ err: parsed.error.message }, 'call from the cloud refused');
        return;
      }
      const c = parsed.data;
      calls.call({ device: c.device, method: c.method, payload: c.payload, timeoutMs: c.timeoutMs, wait: c.wait, id: c.id }).then(
        (a) => registry.queueCallAnswer(c.device, c.id, { method: c.method, status: a.status, payload: a.payload, ms: a.ms }),
        (err: unknown) => registry.queueCallAnswer(c.device, c.id, { method: c.method, error: err instanceof CallError ? err.kind : 'error', message: errorMessage(err) }),
      );
    });

    // Rules that call a method: the reading is the payload, the answer goes to the cloud.
    site.get('rules').serve('call', (o) => {
      if (o.route !== 'call') return;
      const id = `${o.rule}-${o.envelope.seq}`;
      const { device, point, value, quality, ts } = o.envelope;
      calls.call({ id, device: o.device, method: o.method, payload: { reading: { id: o.envelope.id, device, point, value, quality, ts } }, timeoutMs: o.timeoutMs, wait: false }).then(
        (a) => registry.queueCallAnswer(o.device, id, { rule: o.rule, method: o.method, status: a.status, payload: a.payload, ms: a.ms }),
        (err: unknown) => {
          log.warn({ rule: o.rule, device: o.device, method: o.method, err: errorMessage(err) }, 'rule call failed');
          registry.queueCallAnswer(o.device, id, { rule: o.rule, method: o.method, error: err instanceof CallError ? err.kind : 'error', message: errorMessage(err) });
        },
      );
    });

    // The API.
    const http = site.get('http');
    const r = http.router();
    const handle = (fn: (req: Request) => unknown) => (req: Request, res: Response, next: NextFunction) => {
      try {
        sendJson(res, 200, fn(req));
      } catch (err) {
        next(httpError(err));
      }
    };
    r.get('/', handle(() => ({ devices: registry.list() })));
    r.get('/:id', handle((req) => registry.show(String(req.params.id))));
    r.get('/:id/explain', handle((req) => ({ device: req.params.id, properties: registry.explain(String(req.params.id)) })));
    r.patch('/:id/desired', http.jsonBody(z.record(z.string(), z.unknown())), handle((req) => {
      const s = registry.editDesired(String(req.params.id), req.body);
      return { version: s.version, desired: s.doc };
    }));
    r.delete('/:id', handle((req) => {
      registry.remove(String(req.params.id));
      return { removed: req.params.id };
    }));
    r.put('/:id/tags', http.jsonBody(tagsBody), handle((req) => {
      registry.setTags(String(req.params.id), (req.body as z.output<typeof tagsBody>).tags);
      return registry.show(String(req.params.id));
    }));
    r.post('/:id/calls', http.jsonBody(callBody), (req, res, next) => {
      const b = req.body as z.output<typeof callBody>;
      calls.call({ device: String(req.params.id), method: b.method, payload: b.payload, timeoutMs: b.timeoutMs, wait: b.wait }).then(
        (a) => sendJson(res, 200, a),
        (err: unknown) => next(httpError(err)),
      );
    });
    http.mount('/api/v1/devices', r);
    const rc = http.router();
    rc.get('/', (_req, res) => sendJson(res, 200, { configurations: registry.configurationStatus() }));
    // A configuration checked as the gateway would take it (from the site config or the cloud), without applying it.
    rc.post('/check', http.jsonBody(configurationBody), (req, res) => {
      const c = req.body as z.output<typeof configurationBody>;
      sendJson(res, 200, { targeted: registry.targeted(c.target) });
    });
    http.mount('/api/v1/configurations', rc);

    const component = new DevicesComponent(registry, calls);
    site.provide('devices', component);
    return component;
  },
};

function safeJson(payload: Buffer): unknown {
  try {
    return JSON.parse(payload.toString('utf8'));
  } catch {
    return undefined;
  }
}
