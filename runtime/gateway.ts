import { outboxMigrations, SqliteOutbox } from '../cloud-bridge/outbox.js';
import type { UsageStore } from '../cloud-bridge/link-budget.js';
import { Uplink, type UplinkOptions } from '../cloud-bridge/uplink.js';
import { readFileSync } from 'node:fs';
import { ConfigError, loadConfig } from './config/load.js';
import { ChildIntake } from '../drivers/mqtt/child-intake.js';
import { modbusBuses, WriteRefused } from '../drivers/modbus/bus.js';
import { toModbusDevice } from './config/modbus.js';
import { dirname, join } from 'node:path';
import { ActuationGuard } from '../rules/actuation.js';
import { HostedNodeRed, makeNodeHost } from './node-red.js';
import { OtaService } from './ota/ota-service.js';
import { Rules } from '../rules/engine.js';
import type { SiteConfig } from './config/schema.js';
import { systemClock, type Clock, type Driver, type LocalOutput, type Logger, type OutboxStats } from './contracts/index.js';
import { EmbeddedBroker } from './broker/embedded-broker.js';
import { HttpApi } from './http/api.js';
import { IngestPipeline } from './ingest.js';
import { createLogger } from './logger.js';
import { PromMetrics } from './metrics.js';
import { BootSequence } from './sequence.js';
import { checkpoint, migrate, openDatabase, type Db } from './store/database.js';
import { runtimeMigrations } from './store/runtime-schema.js';

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

/** Reads the PEM files named in cloud.tls; a missing file is a config error naming the field. */
function readTls(tls: NonNullable<SiteConfig['cloud']['tls']>): NonNullable<UplinkOptions['tls']> {
  const read = (field: 'ca' | 'cert' | 'key'): Buffer | undefined => {
    const file = tls[field];
    if (file === undefined) return undefined;
    try {
      return readFileSync(file);
    } catch (err) {
      throw new ConfigError('config', [`cloud.tls.${field}: cannot read ${file}: ${(err as Error).message}`]);
    }
  };
  const ca = read('ca');
  const cert = read('cert');
  const key = read('key');
  return {
    rejectUnauthorized: tls.rejectUnauthorized,
    ...(ca ? { ca } : {}),
    ...(cert ? { cert } : {}),
    ...(key ? { key } : {}),
    ...(tls.servername ? { servername: tls.servername } : {}),
  };
}

export interface GatewayOptions {
  readonly log?: Logger;
  readonly clock?: Clock;
  /** The file the config came from: `POST /api/v1/rules/reload` and SIGHUP read its rules again. */
  readonly configFile?: string;
}

/** What a rule reload changed, by rule id. */
export interface RulesReloaded {
  readonly rules: number;
  /** New or changed: start with no state. */
  readonly applied: readonly string[];
  /** Unchanged: keep their open windows and operator memory. */
  readonly kept: readonly string[];
  readonly removed: readonly string[];
}

/** A reload that cannot be applied while running; the running rules stay. */
export class ReloadRefused extends Error {}

export interface GatewayStatus {
  readonly gateway: string;
  readonly boot: number;
  readonly uptimeS: number;
  readonly link: string;
  readonly uplink: { sentToday: number; dailyBytes?: number; maxBytesPerS?: number };
  readonly readingsIn: number;
  readonly ruleOutputs: number;
  readonly outbox: OutboxStats;
  readonly children: { connected: number };
  readonly drivers: Record<string, unknown>[];
  readonly ports: { broker: number; http: number; ota?: number };
  /** Releases, rollouts and the artifact cache, when OTA is configured. */
  readonly ota?: ReturnType<OtaService['status']>;
  /** Memory of the gateway process, MiB. */
  readonly memory: { rss: number; heapUsed: number; external: number };
}

/**
 * The one place that knows every part: opens the store, builds rules, outbox, uplink and drivers
 * from the validated config, and stops them in the order that loses nothing: intake first, then
 * in-flight work, then the store.
 */
export class Gateway {
  private readonly startedAt: number;
  private stopping: Promise<void> | undefined;
  /** Status at the moment the gateway stopped taking and delivering data. */
  private final: GatewayStatus | undefined;

  private constructor(
    private running: SiteConfig,
    private readonly db: Db,
    private readonly log: Logger,
    private readonly clock: Clock,
    readonly metrics: PromMetrics,
    private readonly sequence: BootSequence,
    private readonly outbox: SqliteOutbox,
    readonly uplink: Uplink,
    private readonly pipeline: IngestPipeline,
    private readonly broker: EmbeddedBroker,
    private readonly drivers: readonly Driver[],
    private readonly http: HttpApi,
    private readonly expiry: NodeJS.Timeout,
    private readonly actuation: ActuationGuard,
    private readonly nodeRed: HostedNodeRed | undefined,
    readonly ota: OtaService | undefined,
    readonly ports: { broker: number; http: number; ota?: number },
  ) {
    this.startedAt = clock.now();
  }

  static async start(config: SiteConfig, opts: GatewayOptions = {}): Promise<Gateway> {
    const log = opts.log ?? createLogger();
    const clock = opts.clock ?? systemClock;
    const db = openDatabase({ path: config.storage.path, synchronous: config.storage.synchronous, maxBytes: config.storage.maxDbBytes });
    try {
      migrate(db, 'runtime', runtimeMigrations);
      migrate(db, 'outbox', outboxMigrations);
      const metrics = new PromMetrics();
      const sequence = new BootSequence(db, config.gateway.id);
      const outbox = new SqliteOutbox(
        db,
        config.storage.quotaBytes,
        metrics,
        config.streams.map((st) => ({ ...st, quotaBytes: st.quotaBytes ?? config.storage.quotaBytes })),
      );
      const c = config.cloud;
      const uplink = new Uplink(
        {
          gatewayId: config.gateway.id,
          url: c.url,
          clientId: c.clientId ?? `outpost-${config.gateway.id}`,
          username: c.username,
          password: c.password,
          topicPrefix: c.topicPrefix,
          batchSize: c.batchSize,
          maxInFlight: c.maxInFlight,
          keepaliveS: c.keepaliveS,
          backoff: c.backoff,
          compression: c.compression,
          qos: c.qos,
          protocolVersion: c.protocolVersion,
          maxAttempts: c.maxAttempts,
          liveShare: c.liveShare,
          syncWindows: c.syncWindows,
          tls: c.tls && readTls(c.tls),
          lingerMs: c.lingerMs,
          maxBytesPerS: c.maxBytesPerS,
          dailyBytes: c.dailyBytes,
          netWatchMs: c.netWatchMs,
        },
        outbox,
        clock,
        log.child({ component: 'uplink' }),
        metrics,
        counterUsageStore(db),
      );
      const rules = new Rules(config.rules, clock, sequence, metrics);
      // Rule outputs for the local broker and for Modbus writes; bound once those exist.
      const local: { handle?: (outputs: LocalOutput[]) => void } = {};
      const pipeline = new IngestPipeline(
        db,
        rules,
        outbox,
        clock,
        log.child({ component: 'ingest' }),
        metrics,
        () => uplink.notify(),
        (outputs) => local.handle?.(outputs),
      );
      const broker = await EmbeddedBroker.create(log.child({ component: 'broker' }));
      const drivers: Driver[] = [
        new ChildIntake(broker, {
          devices: new Map(config.devices.flatMap((d) => (d.protocol === 'mqtt' ? [[d.id, { points: d.points, strict: d.strict }] as const] : []))),
          acceptUnknownDevices: config.broker.acceptUnknownDevices,
        }),
      ];
      const buses = modbusBuses(config.devices.flatMap((d) => (d.protocol === 'mqtt' ? [] : [toModbusDevice(d)])));
      drivers.push(...buses);
      const actuation = new ActuationGuard(
        (device, point, value) => {
          const bus = buses.find((b) => b.hasDevice(device));
          return bus ? bus.write(device, point, value) : Promise.reject(new Error(`no Modbus device "${device}"`));
        },
        clock,
        log.child({ component: 'actuation' }),
        metrics,
      );
      const ruleLog = log.child({ component: 'rules' });
      local.handle = (outputs) => {
        for (const o of outputs) {
          if (o.route === 'modbus') actuation.submit(o);
          else
            broker.publish(o.topic, JSON.stringify(o.envelope), o.qos, o.retain).catch((err: unknown) =>
              ruleLog.warn({ topic: o.topic, err: (err as Error).message }, 'rule output not published'),
            );
        }
      };
      const ctx = { sink: pipeline, sequence, clock, metrics };
      for (const d of drivers) await d.start({ ...ctx, log: log.child({ driver: d.name }) });
      const self: { gateway?: Gateway } = {};
      const http = new HttpApi(
        {
          status: () => ({ ...self.gateway?.status() }),
          metrics: () => metrics.text(),
          deadLetters: (limit) => ({
            count: outbox.deadLetterCount(),
            items: outbox.listDeadLetters(limit).map((d) => ({
              id: d.id,
              stream: d.stream,
              reason: d.reason,
              failedAt: d.failedAt,
              reading: JSON.parse(d.body) as unknown,
            })),
          }),
          replayDeadLetters: (ids) => {
            const n = outbox.replayDeadLetters(clock.now(), ids);
            uplink.notify();
            return n;
          },
          reloadRules: async () => {
            const file = opts.configFile;
            if (!file) return { status: 409, body: { error: 'the gateway was started without a config file: nothing to reload' } };
            try {
              return { status: 200, body: { ...self.gateway!.reloadRules(await loadConfig(file)) } };
            } catch (err) {
              if (err instanceof ConfigError) return { status: 400, body: { error: `${file}: invalid config; running rules kept`, problems: err.problems } };
              if (err instanceof ReloadRefused) return { status: 409, body: { error: err.message } };
              throw err;
            }
          },
          ...(config.ota ? { ota: () => ({ ...self.gateway?.ota?.status() }) } : {}),
          rolloutCommand: (release, action) => {
            const ota = self.gateway?.ota;
            if (!ota) return { status: 404, body: { error: 'OTA is not configured' } };
            const r = ota.rollouts.command(release, action);
            if (r.state === undefined) return { status: 404, body: { error: `no rollout of release "${release}"` } };
            if (!r.applied) return { status: 409, body: { error: `rollout of ${release} is ${r.state}: cannot ${action}`, state: r.state } };
            return { status: 200, body: { release, state: r.state } };
          },
          submitRelease: (body) => {
            const ota = self.gateway?.ota;
            if (!ota) return { status: 404, body: { error: 'OTA is not configured' } };
            const r = ota.receive(JSON.stringify(body));
            return r.accepted ? { status: 200, body: { release: r.release } } : { status: 400, body: { error: r.message, reason: r.reason } };
          },
          writePoint: async (device, point, value) => {
            const bus = buses.find((b) => b.hasDevice(device));
            if (!bus) return { status: 404, body: { error: `no Modbus device "${device}"` } };
            try {
              return { status: 200, body: { ...(await bus.write(device, point, value)) } };
            } catch (err) {
              if (err instanceof WriteRefused) return { status: err.status, body: { error: err.message } };
              // The device refused or did not answer: a gateway-to-device failure.
              return { status: 502, body: { error: (err as Error).message } };
            } finally {
              // The rule write guard must not take its last value for what the point holds now.
              actuation.forget(device, point);
            }
          },
        },
        log.child({ component: 'http' }),
      );
      const brokerPort = await broker.listen(config.broker.host, config.broker.port);
      const httpPort = await http.listen(config.http.host, config.http.port);
      let nodeRed: HostedNodeRed | undefined;
      if (config.nodeRed?.enabled && config.http.admin) {
        nodeRed = new HostedNodeRed({
          userDir: config.nodeRed.userDir ?? join(dirname(config.storage.path), 'node-red'),
          admin: config.http.admin,
          log: log.child({ component: 'node-red' }),
          host: makeNodeHost({
            gateway: config.gateway.id,
            streams: config.streams.map((s) => s.name),
            pipeline,
            sequence,
            metrics,
            log: log.child({ component: 'node-red' }),
            write: (device, point, value) => {
              const bus = buses.find((b) => b.hasDevice(device));
              if (!bus) return Promise.reject(new Error(`no Modbus device "${device}"`));
              return bus.write(device, point, value).finally(() => actuation.forget(device, point));
            },
          }),
        });
        await nodeRed.start(http.httpServer!, (prefix, handler) => http.mount(prefix, handler));
      }
      const ota = config.ota
        ? await OtaService.start({
            config,
            db,
            link: {
              subscribe: (filter, handler) => uplink.subscribe(filter, handler),
              onLinkUp: (fn) => uplink.onLinkUp(fn),
              delayMs: () => uplink.linkDelay(),
              closed: () => uplink.linkClosed(),
              spend: (bytes) => uplink.spend(bytes),
            },
            pipeline,
            sequence,
            clock,
            log: log.child({ component: 'ota' }),
            metrics,
          })
        : undefined;
      uplink.start();
      // Every 5 s: readings past their stream's TTL leave the outbox as `expired` (counted), and
      // the WAL is checkpointed and truncated so it stays small.
      const expiry = setInterval(() => {
        try {
          outbox.expire(clock.now());
          checkpoint(db);
        } catch (err) {
          log.error({ err: (err as Error).message }, 'store maintenance failed');
        }
      }, 5_000);
      expiry.unref();
      const gateway = new Gateway(config, db, log, clock, metrics, sequence, outbox, uplink, pipeline, broker, drivers, http, expiry, actuation, nodeRed, ota, {
        broker: brokerPort,
        http: httpPort,
        ...(ota ? { ota: ota.port } : {}),
      });
      self.gateway = gateway;
      log.info({ gateway: config.gateway.id, broker: brokerPort, http: httpPort, ota: ota?.port, boot: sequence.boot }, 'gateway started');
      return gateway;
    } catch (err) {
      db.close();
      throw err;
    }
  }

  /** The config the gateway runs with (its rules as last reloaded). */
  get config(): SiteConfig {
    return this.running;
  }

  /**
   * Applies the rules of `next` without a restart and without dropping a reading. Rules whose
   * definition is unchanged keep their state. Streams and devices are not changed while running:
   * a config whose streams or devices differ is refused (restart to apply those).
   */
  reloadRules(next: SiteConfig): RulesReloaded {
    const differs = (['streams', 'devices'] as const).filter((k) => JSON.stringify(next[k]) !== JSON.stringify(this.running[k]));
    if (differs.length > 0) throw new ReloadRefused(`${differs.join(' and ')} changed: restart the gateway to apply that; rules not reloaded`);
    const before = new Map(this.running.rules.map((r) => [r.id, JSON.stringify(r)]));
    const kept = next.rules.filter((r) => before.get(r.id) === JSON.stringify(r)).map((r) => r.id);
    const keptSet = new Set(kept);
    const engine = new Rules(next.rules, this.clock, this.sequence, this.metrics);
    this.pipeline.replaceRules(engine, (key) => keptSet.has(key.slice(0, key.indexOf('\u0000'))));
    const nextIds = new Set(next.rules.map((r) => r.id));
    this.running = { ...this.running, rules: next.rules };
    const result = {
      rules: next.rules.length,
      applied: next.rules.filter((r) => !keptSet.has(r.id)).map((r) => r.id),
      kept,
      removed: [...before.keys()].filter((id) => !nextIds.has(id)),
    };
    this.log.info(result, 'rules reloaded');
    return result;
  }

  status(): GatewayStatus {
    if (this.final) return this.final;
    return {
      gateway: this.config.gateway.id,
      boot: this.sequence.boot,
      uptimeS: Math.round((this.clock.now() - this.startedAt) / 1000),
      link: this.uplink.linkState,
      uplink: this.uplink.budgetStatus(),
      readingsIn: this.pipeline.readingsIn,
      ruleOutputs: this.pipeline.ruleOutputs,
      outbox: this.outbox.stats(),
      children: { connected: this.broker.connectedClients },
      drivers: this.drivers.map((d) => ({ name: d.name, ...d.status() })),
      ...(this.ota ? { ota: this.ota.status() } : {}),
      ports: this.ports,
      memory: memoryMiB(),
    };
  }

  /**
   * Graceful stop: stop intake, finish in-flight work, close the store. Idempotent. With `drainMs`,
   * the uplink first gets up to that long to deliver what the outbox holds (what it cannot deliver
   * stays queued on disk for the next start).
   */
  stop(opts: { drainMs?: number } = {}): Promise<void> {
    this.stopping ??= this.doStop(opts.drainMs ?? 0);
    return this.stopping;
  }

  private async doStop(drainMs: number): Promise<void> {
    clearInterval(this.expiry);
    await this.broker.stopIntake();
    this.actuation.stop();
    // Flows stop before the drivers and the store, so what they send is committed or refused.
    await this.nodeRed?.stop(this.http.httpServer);
    await this.ota?.stop();
    for (const d of this.drivers) await d.stop();
    await this.pipeline.stop();
    if (drainMs > 0) await this.uplink.drained(drainMs);
    this.final = this.status();
    await this.uplink.stop();
    await this.http.close();
    await this.broker.close();
    this.db.close();
    this.log.info({ gateway: this.config.gateway.id }, 'gateway stopped');
  }
}

function memoryMiB(): { rss: number; heapUsed: number; external: number } {
  const m = process.memoryUsage();
  const mib = (n: number): number => Math.round((n / 2 ** 20) * 10) / 10;
  return { rss: mib(m.rss), heapUsed: mib(m.heapUsed), external: mib(m.external) };
}
