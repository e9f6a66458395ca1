import { z } from 'zod';
import { cloudSchema, streamSchema } from '../../cloud-bridge/config.js';
import { otaSchema } from '../../ota/config.js';
import { ruleSchema } from '../../rules/config.js';
import { compileTopicFilter, idSchema, type DeviceConfig } from '../contracts/index.js';
import { apiTokenSchema, isLoopback } from '../http/scopes.js';
import { defaultProtocols, type ProtocolRegistry } from '../protocols.js';
import { brokerSchema, SITE_BROKER_FILTERS } from '../broker/config.js';
import { identitiesSchema } from '../identity/config.js';
import { configurationSchema } from '../devices/configurations.js';
import { deviceInventoryFields } from '../devices/config.js';

/**
 * The site config, validated once at the edge into typed objects with defaults filled. Each room
 * owns the schema of its section (drivers/<protocol>/config.ts for device entries, rules/,
 * cloud-bridge/, ota/); this file owns the gateway's own sections (gateway, broker, http, nodeRed,
 * storage), composes the rest and checks what spans sections. Every field is documented in
 * docs/config.md; keep the two in step.
 */

/** A validated device entry: its protocol's schema decides the other fields. */
export type DeviceEntry = DeviceConfig & { readonly [field: string]: unknown };
/** A device entry as written in a config file. */
export type DeviceEntryInput = { id: string; protocol: string; [field: string]: unknown };

function build(registry: ProtocolRegistry) {
  // Every device entry, whatever its protocol, may say what it is and bind twin properties (docs/devices.md).
  const options = registry.entries().map((e) => e.schema.extend(deviceInventoryFields));
  const device = z.discriminatedUnion('protocol', options as unknown as [z.ZodObject, ...z.ZodObject[]]);
  const devices = z.array(device).default([]) as unknown as z.ZodDefault<z.ZodType<DeviceEntry[], DeviceEntryInput[]>>;
  return z
    .strictObject({
      gateway: z.strictObject({
        id: idSchema,
        /** V8's trade of memory for pause times (runtime/gc-profile.ts): `low-latency` for sites whose rules actuate. */
        gc: z.enum(['compact', 'low-latency']).default('compact'),
      }),
      broker: brokerSchema.default(brokerSchema.parse({})),
      identities: identitiesSchema.default(identitiesSchema.parse({})),
      http: z
        .strictObject({
          host: z.string().min(1).default('127.0.0.1'),
          port: z.number().int().min(0).max(65535).default(8080),
          /**
           * TLS for the API and the Node-RED editor: on by default with a self-signed certificate made
           * on first start in the state directory; `{certFile, keyFile}` for one of your own; `false`
           * only on a loopback address (checked below).
           */
          tls: z
            .union([
              z.literal(false),
              z.literal(true).transform((): { certFile?: string; keyFile?: string } => ({})),
              z.strictObject({ certFile: z.string().min(1).optional(), keyFile: z.string().min(1).optional() }).refine(
                (t) => (t.certFile === undefined) === (t.keyFile === undefined),
                'give both certFile and keyFile, or neither (a self-signed certificate is made)',
              ),
            ])
            .default({}),
          /** API tokens provisioned in the config (as SHA-256 hashes; `outpost hash-token`), beside those made by `outpost tokens create`. */
          tokens: z.array(apiTokenSchema).default([]),
          /** Host header values the API answers to besides its address, loopback names and the machine's name (DNS rebinding). */
          allowedHosts: z.array(z.string().min(1).max(253).regex(/^[A-Za-z0-9.-]+$/, 'expected a host name')).default([]),
          /** Admin credentials: the Node-RED editor at /red asks for them. */
          admin: z
            .strictObject({
              username: z.string().min(1).max(64),
              /** bcrypt hash of the password (`$2a$`/`$2b$`/`$2y$`), never the password itself. */
              passwordHash: z.string().regex(/^\$2[aby]\$\d{2}\$[./A-Za-z0-9]{53}$/, 'expected a bcrypt hash ($2b$10$…)'),
            })
            .optional(),
        })
        .superRefine((http, ctx) => {
          if (http.tls === false && !isLoopback(http.host)) {
            ctx.addIssue({ code: 'custom', path: ['tls'], message: `tls: false is allowed only on a loopback address, not on http.host "${http.host}" (tokens would cross the network in clear)` });
          }
          const names = new Set<string>();
          http.tokens.forEach((t, i) => {
            if (names.has(t.name)) ctx.addIssue({ code: 'custom', path: ['tokens', i, 'name'], message: `duplicate token name "${t.name}"` });
            names.add(t.name);
          });
        })
        .default({ host: '127.0.0.1', port: 8080, tls: {}, tokens: [], allowedHosts: [] }),
      /** Node-RED hosted by the gateway: editor at /red, flows kept in userDir. */
      nodeRed: z
        .strictObject({
          enabled: z.boolean().default(true),
          /** Where flows and the editor's sessions live; default: node-red/ beside the store. */
          userDir: z.string().min(1).optional(),
        })
        .optional(),
      ota: otaSchema.optional(),
      devices,
      rules: z.array(ruleSchema).default([]),
      /** Desired state for every current and future device a target condition selects (docs/devices.md). */
      configurations: z.array(configurationSchema).default([]),
      streams: z.array(streamSchema).min(1).default([{ name: 'telemetry', priority: 5, overflow: 'drop-oldest' }]),
      cloud: cloudSchema,
      storage: z.strictObject({
        path: z.string().min(1),
        /** Outbox byte quota; when full, the oldest queued readings are dropped and counted. */
        quotaBytes: z.number().int().min(65536).default(256 * 1024 * 1024),
        /**
         * Hard cap of the database file in bytes (optional). When the disk or this cap is full, no
         * reading is acknowledged; intake resumes by itself once the outbox drains.
         */
        maxDbBytes: z.number().int().min(1024 * 1024).optional(),
        /** NORMAL survives a process crash; FULL also survives power loss. */
        synchronous: z.enum(['normal', 'full']).default('normal'),
      }),
      /** Config deployments at run time (docs/operations.md, "Configuration as a deployment"). */
      deploy: z
        .strictObject({
          /** How long a new config has to prove healthy (cloud link back, changed Modbus connections up) before it is rolled back. */
          healthWindowMs: z.number().int().min(1000).max(600_000).default(30_000),
          /**
           * Keys that may sign a config sent by the cloud: id -> ed25519 public key (PEM or raw
           * base64), as ota.trustedKeys; default: ota.trustedKeys. Without either, cloud-sent
           * configs are refused.
           */
          trustedKeys: z.record(z.string().min(1).max(64), z.string().min(40).max(4096)).optional(),
        })
        .prefault({}),
    })
    .superRefine((cfg, ctx) => {
      const ids = new Set<string>();
      const byProtocol = new Map<string, { index: number; device: DeviceEntry }[]>();
      cfg.devices.forEach((d, i) => {
        if (ids.has(d.id)) ctx.addIssue({ code: 'custom', path: ['devices', i, 'id'], message: `duplicate device id "${d.id}"` });
        ids.add(d.id);
        const list = byProtocol.get(d.protocol) ?? [];
        list.push({ index: i, device: d });
        byProtocol.set(d.protocol, list);
      });
      for (const [protocol, list] of byProtocol) {
        registry.get(protocol)?.checkDevices?.(list, (index, path, message) => ctx.addIssue({ code: 'custom', path: ['devices', index, ...path], message }));
      }
      // A device read by its driver (Modbus) can never be an MQTT identity: no client may speak for it.
      const driven = new Map(cfg.devices.filter((d) => !registry.get(d.protocol)?.capabilities.brokerIdentity).map((d) => [d.id, d.protocol]));
      for (const kind of ['devices', 'clients'] as const) {
        cfg.identities[kind].forEach((a, i) => {
          const protocol = driven.get(a.id);
          if (protocol) ctx.addIssue({ code: 'custom', path: ['identities', kind, i, 'id'], message: `"${a.id}" is a ${protocol} device: its readings come from its driver, never from an MQTT client` });
        });
      }
      // Children authenticate at an external site broker, not at the gateway.
      if (cfg.broker.external) {
        // What the gateway publishes there comes back to it when it matches its own subscriptions.
        const taken = SITE_BROKER_FILTERS.map((f) => compileTopicFilter(f));
        cfg.rules.forEach((r, i) => {
          const topic = r.route === 'mqtt' ? r.mqtt?.topic.replace(/\{(device|point)\}/g, 'x') : undefined;
          if (topic !== undefined && taken.some((m) => m(topic))) {
            ctx.addIssue({ code: 'custom', path: ['rules', i, 'mqtt', 'topic'], message: `with broker.external the gateway subscribes to ${SITE_BROKER_FILTERS.join(', ')} on the site broker: a rule output published there would come back to it as a child's message; use another topic` });
          }
        });
        const { devices, clients, groups, revoked } = cfg.identities;
        if (devices.length + clients.length + groups.length + revoked.length > 0) {
          ctx.addIssue({
            code: 'custom',
            path: ['identities'],
            message: 'identities authenticate children on the embedded broker, which does not run with broker.external: give each child its account and ACL on the site broker (docs/operations.md, "External site broker") and remove identities',
          });
        }
      }
      const configurations = new Set<string>();
      cfg.configurations.forEach((c, i) => {
        if (configurations.has(c.id)) ctx.addIssue({ code: 'custom', path: ['configurations', i, 'id'], message: `duplicate configuration id "${c.id}"` });
        configurations.add(c.id);
      });
      // A bound twin property is written through the device's write capability: a writable point.
      cfg.devices.forEach((d, i) => {
        const twin = d.twin as Record<string, string> | undefined;
        if (!twin) return;
        const entry = registry.get(d.protocol);
        if (!entry?.capabilities.write) {
          ctx.addIssue({ code: 'custom', path: ['devices', i, 'twin'], message: `${d.protocol} devices cannot be written: bind twin properties of devices with writable points (children get desired state on their topics)` });
          return;
        }
        const points = entry.points(d);
        for (const [path, point] of Object.entries(twin)) {
          const p = points.find((x) => x.name === point);
          if (!p) ctx.addIssue({ code: 'custom', path: ['devices', i, 'twin', path], message: `device "${d.id}" has no point "${point}"` });
          else if (!p.writable) ctx.addIssue({ code: 'custom', path: ['devices', i, 'twin', path], message: `point "${point}" of "${d.id}" is not writable (set writable: true)` });
        }
      });
      const rules = new Set<string>();
      const streams = new Set<string>();
      cfg.streams.forEach((st, i) => {
        if (streams.has(st.name)) ctx.addIssue({ code: 'custom', path: ['streams', i, 'name'], message: `duplicate stream "${st.name}"` });
        streams.add(st.name);
      });
      if (cfg.nodeRed?.enabled && !cfg.http.admin) {
        ctx.addIssue({ code: 'custom', path: ['http', 'admin'], message: 'the Node-RED editor (nodeRed.enabled) needs admin credentials: http.admin { username, passwordHash }' });
      }
      cfg.rules.forEach((r, i) => {
        if (rules.has(r.id)) ctx.addIssue({ code: 'custom', path: ['rules', i, 'id'], message: `duplicate rule id "${r.id}"` });
        rules.add(r.id);
        if (!streams.has(r.stream)) {
          ctx.addIssue({ code: 'custom', path: ['rules', i, 'stream'], message: `no stream named "${r.stream}" under streams` });
        }
        if (r.type === 'filter' && r.route === 'call' && r.call) {
          const d = cfg.devices.find((x) => x.id === r.call!.device);
          if (d && !registry.get(d.protocol)?.capabilities.brokerIdentity) {
            ctx.addIssue({ code: 'custom', path: ['rules', i, 'call', 'device'], message: `"${d.id}" is a ${d.protocol} device: methods are called on MQTT children (write its points instead)` });
          }
        }
        if (r.type === 'filter' && r.route === 'write' && r.write) {
          const { device, point } = r.write;
          const d = cfg.devices.find((x) => x.id === device);
          const entry = d && registry.get(d.protocol);
          const p = d && entry?.capabilities.write ? entry.points(d).find((x) => x.name === point) : undefined;
          if (!d || !entry?.capabilities.write) ctx.addIssue({ code: 'custom', path: ['rules', i, 'write', 'device'], message: `no device "${device}" with writable points under devices` });
          else if (!p) ctx.addIssue({ code: 'custom', path: ['rules', i, 'write', 'point'], message: `device "${device}" has no point "${point}"` });
          else if (!p.writable) ctx.addIssue({ code: 'custom', path: ['rules', i, 'write', 'point'], message: `point "${point}" of "${device}" is not writable (set writable: true)` });
        }
      });
    });
}

const schemas = new WeakMap<ProtocolRegistry, ReturnType<typeof build>>();

/** The site config schema for the protocols of `registry`. */
export function siteConfigSchema(registry: ProtocolRegistry = defaultProtocols): ReturnType<typeof build> {
  let s = schemas.get(registry);
  if (!s) schemas.set(registry, (s = build(registry)));
  return s;
}

/** The site config schema with the protocols Outpost ships with. */
export const configSchema = siteConfigSchema(defaultProtocols);

export type SiteConfig = z.output<typeof configSchema>;
export type SiteConfigInput = z.input<typeof configSchema>;
export type { RuleConfig } from '../../rules/config.js';
export type { CloudConfig, StreamConfigEntry } from '../../cloud-bridge/config.js';
export type { OtaConfig } from '../../ota/config.js';
