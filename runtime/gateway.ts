// First: the MQTT libraries must find the quiet `debug` when they load (runtime/quiet-debug.ts).
import './quiet-debug.js';
import { applyGcProfile } from './gc-profile.js';
import type { OtaStatus } from '../ota/ota-service.js';
import type { SiteConfig } from './config/schema.js';
import { errorMessage, systemClock, type Clock, type Component, type Db, type Logger, type OutboxStats } from './contracts/index.js';
import { ConfigDeployer, type DeployTarget } from './deploy/deployer.js';
import { createLogger } from './logger.js';
import { ProblemLog } from './problems.js';
import { PromMetrics } from './metrics.js';
import { PARTS } from './parts/index.js';
import type { RulesReloaded } from './parts/rules.js';
import { Site, type Part } from './parts/site.js';
import { PointRouter } from './points.js';
import { defaultProtocols, type ProtocolRegistry } from './protocols.js';

export { ReloadRefused, type RulesReloaded } from './parts/rules.js';

export interface GatewayOptions {
  readonly log?: Logger;
  readonly clock?: Clock;
  /** The file the config came from: `POST /api/v1/rules/reload` and SIGHUP read its rules again. */
  readonly configFile?: string;
  /**
   * The config file's text as read at start: with it, config versions are kept in the store and a
   * version deployed over this very file runs instead of it (runtime/deploy).
   */
  readonly configText?: string;
  /** The protocols the config's devices may use (default: the ones Outpost ships with). */
  readonly protocols?: ProtocolRegistry;
  /** The parts to run, in start order (default: runtime/parts/index.ts). */
  readonly parts?: readonly Part[];
  /** Where the logger keeps its recent warnings and errors (the status page); default: a logger made here keeps them. */
  readonly problems?: ProblemLog;
  /** Neither a deployed config nor the one before it could be started (default: logged; the CLI exits). */
  readonly onFatal?: (err: unknown) => void;
}

export interface GatewayStatus {
  readonly gateway: string;
  readonly boot: number;
  readonly uptimeS: number;
  readonly link: string;
  readonly uplink: { sentToday: number; dailyBytes?: number; maxBytesPerS?: number; refused?: string };
  readonly readingsIn: number;
  readonly ruleOutputs: number;
  readonly outbox: OutboxStats;
  /** Children connected to the embedded broker (absent with an external site broker: see siteBroker). */
  readonly children?: { connected: number };
  /** With broker.external: the link to the site broker (runtime/broker/external-broker.ts). */
  readonly siteBroker?: { url: string; clientId: string; state: string; since: number; sessionPresent?: boolean; connects: number; acknowledged: number; notAcknowledged: number; refused?: string; lastError?: string };
  readonly drivers: Record<string, unknown>[];
  readonly ports: { broker: number; http: number; ota?: number; brokerTls?: number };
  /** The API's scheme and, with TLS, its certificate's SHA-256 fingerprint (what clients pin). */
  readonly api: { scheme: 'http' | 'https'; certificateSha256?: string };
  /** Releases, rollouts and the artifact cache, when OTA is configured. */
  readonly ota?: OtaStatus;
  /** The device registry: devices in the inventory, online, configurations, records waiting to go up, calls in flight. */
  readonly devices: { count: number; online: number; configurations: number; waitingRecords: number; evaluating: number; callsInFlight: number };
  /** The config version running (and the one being deployed). */
  readonly config: ReturnType<ConfigDeployer['status']>;
  /** Memory of the gateway process, MiB. */
  readonly memory: { rss: number; heapUsed: number; external: number };
}

/**
 * The composition root: builds the gateway's parts (runtime/parts/index.ts) from the validated
 * config, starts them in order and stops them in reverse. It knows no part by name but the rules
 * and the drivers (a deployed config changes them in place); the status is the sections the parts
 * report, merged. A deployed config that needs more is applied by stopping every part and starting
 * them again on it, in this process, on the same ports (runtime/deploy).
 */
export class Gateway implements DeployTarget {
  private readonly startedAt: number;
  private stopping: Promise<void> | undefined;
  private final: GatewayStatus | undefined;
  private site!: Site;
  private components: Component[] = [];
  /** The config as declared (ports as written, 0 included): what deployments are planned against. */
  private declared: SiteConfig;
  private restarting: Promise<void> | undefined;
  readonly deployer: ConfigDeployer;

  private constructor(
    config: SiteConfig,
    private readonly opts: GatewayOptions,
    private readonly log: Logger,
    private readonly clock: Clock,
    readonly metrics: PromMetrics,
  ) {
    this.startedAt = clock.now();
    this.declared = config;
    this.deployer = new ConfigDeployer({
      clock,
      log: log.child({ component: 'deploy' }),
      metrics,
      configFile: opts.configFile,
      onFatal: opts.onFatal ?? ((err: unknown) => log.error({ err: errorMessage(err) }, 'gateway parts not running')),
    });
    this.deployer.attach(this);
  }

  static async start(config: SiteConfig, opts: GatewayOptions = {}): Promise<Gateway> {
    if (!opts.log && !opts.problems) opts = { ...opts, problems: new ProblemLog() };
    const log = opts.log ?? createLogger({ ...(opts.problems ? { problems: opts.problems } : {}) });
    const clock = opts.clock ?? systemClock;
    const gateway = new Gateway(config, opts, log, clock, new PromMetrics());
    await gateway.startParts(config, opts.configText);
    const s = gateway.status();
    log.info({ gateway: config.gateway.id, ...s.ports, boot: s.boot, config: s.config.version, parts: gateway.components.map((c) => c.name) }, 'gateway started');
    return gateway;
  }

  get protocols(): ProtocolRegistry {
    return this.opts.protocols ?? defaultProtocols;
  }

  /** Builds and starts every part on `config`; with the file's text, the store's config versions may choose another one. */
  private async startParts(config: SiteConfig, fileText?: string): Promise<void> {
    const { clock, log, metrics } = this;
    // Before any part runs: the hot path's allocation sites are judged from its first messages.
    applyGcProfile(config.gateway.gc);
    const site = new Site({
      config,
      clock,
      log,
      metrics,
      protocols: this.protocols,
      points: new PointRouter(),
      configFile: this.opts.configFile,
      status: () => ({ ...this.status() }),
      deployer: this.deployer,
      problems: this.opts.problems,
    });
    this.site = site;
    const started: Component[] = (this.components = []);
    try {
      for (const part of this.opts.parts ?? PARTS) {
        const component = await part.build(site);
        if (!component) continue;
        await component.start({ clock, metrics, log: log.child({ component: component.name }) });
        started.push(component);
        if (component.name === 'store' && fileText !== undefined) {
          this.declared = this.deployer.startupConfig(fileText, config);
          site.setConfig(this.declared);
        }
      }
    } catch (err) {
      // What started is stopped again, in reverse, so a failed start leaves nothing open.
      await stopAll(started, log, {});
      this.components = [];
      throw err;
    }
  }

  /** The config the gateway runs with (its rules as last reloaded). */
  get config(): SiteConfig {
    const rules = this.site.find('rules');
    return rules ? { ...this.declared, rules: rules.rules } : this.declared;
  }

  db(): Db {
    return this.site.get('store').db;
  }

  /** A deployed config that changes rules and polled devices' settings only (runtime/deploy/plan.ts). */
  async applyInPlace(next: SiteConfig, devices: readonly string[]): Promise<void> {
    this.site.get('rules').apply(next);
    if (devices.length > 0) await this.site.get('drivers').replace(next, devices);
    this.declared = next;
    this.site.setConfig(next);
  }

  /**
   * Every part stopped in order (what is in flight is handed over, as at a stop) and started again
   * on `next`; listeners asked for port 0 keep the port they had. Throws when a part cannot start:
   * nothing runs then, and the deployer starts the config before it again.
   */
  async restart(next: SiteConfig): Promise<void> {
    if (this.stopping) throw new Error('the gateway is stopping');
    const run = async (): Promise<void> => {
      const ports = this.status().ports;
      await stopAll(this.components, this.log, {});
      this.components = [];
      this.declared = next;
      await this.startParts(pinPorts(next, ports));
      this.log.info({ parts: this.components.map((c) => c.name) }, 'gateway parts restarted on the deployed config');
    };
    this.restarting = run();
    try {
      await this.restarting;
    } finally {
      this.restarting = undefined;
    }
  }

  /** The ports the listeners are bound to (asked for port 0: the ones the OS chose). */
  get ports(): GatewayStatus['ports'] {
    return this.status().ports;
  }

  /**
   * Applies the rules of `next` without a restart and without dropping a reading. Rules whose
   * definition is unchanged keep their state; a config whose streams or devices differ is refused.
   */
  reloadRules(next: SiteConfig): RulesReloaded {
    return this.site.get('rules').reload(next);
  }

  status(): GatewayStatus {
    if (this.final) return this.final;
    // Each part reports a section; `ports` sections are merged.
    const merged: Record<string, unknown> = {};
    let ports: Record<string, unknown> = {};
    for (const c of this.components) {
      const { ports: p, ...rest } = c.status();
      Object.assign(merged, rest);
      if (p !== undefined) ports = { ...ports, ...(p as Record<string, unknown>) };
    }
    return {
      gateway: this.declared.gateway.id,
      uptimeS: Math.round((this.clock.now() - this.startedAt) / 1000),
      ...merged,
      ports,
      config: this.deployer.status(),
      memory: memoryMiB(),
    } as unknown as GatewayStatus;
  }

  /**
   * Graceful stop: the parts in reverse start order (runtime/parts/index.ts says why that loses
   * nothing). Idempotent. With `drainMs`, the uplink first gets up to that long to deliver what the
   * outbox holds (what it cannot deliver stays queued on disk for the next start).
   */
  stop(opts: { drainMs?: number } = {}): Promise<void> {
    this.stopping ??= (async () => {
      // A deployment restarting the parts finishes first (its rollback included).
      await this.restarting?.catch(() => undefined);
      await this.deployer.inProgress?.done.catch(() => undefined);
      await stopAll(this.components, this.log, opts);
      this.final = this.status();
      this.log.info({ gateway: this.declared.gateway.id }, 'gateway stopped');
    })();
    return this.stopping;
  }
}

/** Stops `components` in reverse; one that fails is logged and the others still stop. */
async function stopAll(components: readonly Component[], log: Logger, opts: { drainMs?: number }): Promise<void> {
  for (const c of [...components].reverse()) {
    try {
      await c.stop(opts);
    } catch (err) {
      log.error({ component: c.name, err: errorMessage(err) }, 'component did not stop cleanly');
    }
  }
}

/** `next` with the ports of listeners asked for port 0 set to the ones they are bound to now. */
function pinPorts(next: SiteConfig, ports: GatewayStatus['ports']): SiteConfig {
  const pinned = { ...next };
  if (next.http.port === 0 && ports.http) pinned.http = { ...next.http, port: ports.http };
  if (next.broker.port === 0 && ports.broker) pinned.broker = { ...pinned.broker, port: ports.broker };
  if (next.broker.tls?.port === 0 && ports.brokerTls) pinned.broker = { ...pinned.broker, tls: { ...next.broker.tls, port: ports.brokerTls } };
  if (next.ota?.server.port === 0 && ports.ota) pinned.ota = { ...next.ota, server: { ...next.ota.server, port: ports.ota } };
  return pinned;
}

function memoryMiB(): { rss: number; heapUsed: number; external: number } {
  const m = process.memoryUsage();
  const mib = (n: number): number => Math.round((n / 2 ** 20) * 10) / 10;
  return { rss: mib(m.rss), heapUsed: mib(m.heapUsed), external: mib(m.external) };
}
