import type { OtaStatus } from '../ota/ota-service.js';
import type { SiteConfig } from './config/schema.js';
import { errorMessage, systemClock, type Clock, type Component, type Logger, type OutboxStats } from './contracts/index.js';
import { createLogger } from './logger.js';
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
  /** The protocols the config's devices may use (default: the ones Outpost ships with). */
  readonly protocols?: ProtocolRegistry;
  /** The parts to run, in start order (default: runtime/parts/index.ts). */
  readonly parts?: readonly Part[];
}

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
  readonly ports: { broker: number; http: number; ota?: number; brokerTls?: number };
  /** The API's scheme and, with TLS, its certificate's SHA-256 fingerprint (what clients pin). */
  readonly api: { scheme: 'http' | 'https'; certificateSha256?: string };
  /** Releases, rollouts and the artifact cache, when OTA is configured. */
  readonly ota?: OtaStatus;
  /** The device registry: devices in the inventory, online, configurations, records waiting to go up, calls in flight. */
  readonly devices: { count: number; online: number; configurations: number; waitingRecords: number; evaluating: number; callsInFlight: number };
  /** Memory of the gateway process, MiB. */
  readonly memory: { rss: number; heapUsed: number; external: number };
}

/**
 * The composition root: builds the gateway's parts (runtime/parts/index.ts) from the validated
 * config, starts them in order and stops them in reverse. It knows no part by name but the rules
 * (for a reload); the status is the sections the parts report, merged.
 */
export class Gateway {
  private readonly startedAt: number;
  private stopping: Promise<void> | undefined;
  private final: GatewayStatus | undefined;

  private constructor(
    private readonly site: Site,
    private readonly components: readonly Component[],
    private readonly log: Logger,
    private readonly clock: Clock,
    readonly metrics: PromMetrics,
  ) {
    this.startedAt = clock.now();
  }

  static async start(config: SiteConfig, opts: GatewayOptions = {}): Promise<Gateway> {
    const log = opts.log ?? createLogger();
    const clock = opts.clock ?? systemClock;
    const metrics = new PromMetrics();
    const self: { gateway?: Gateway } = {};
    const site = new Site({
      config,
      clock,
      log,
      metrics,
      protocols: opts.protocols ?? defaultProtocols,
      points: new PointRouter(),
      configFile: opts.configFile,
      status: () => ({ ...self.gateway?.status() }),
    });
    const started: Component[] = [];
    try {
      for (const part of opts.parts ?? PARTS) {
        const component = part.build(site);
        if (!component) continue;
        await component.start({ clock, metrics, log: log.child({ component: component.name }) });
        started.push(component);
      }
    } catch (err) {
      // What started is stopped again, in reverse, so a failed start leaves nothing open.
      await stopAll(started, log, {});
      throw err;
    }
    const gateway = new Gateway(site, started, log, clock, metrics);
    self.gateway = gateway;
    const s = gateway.status();
    log.info({ gateway: config.gateway.id, ...s.ports, boot: s.boot, parts: started.map((c) => c.name) }, 'gateway started');
    return gateway;
  }

  /** The config the gateway runs with (its rules as last reloaded). */
  get config(): SiteConfig {
    const rules = this.site.find('rules');
    return rules ? { ...this.site.config, rules: rules.rules } : this.site.config;
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
      gateway: this.site.config.gateway.id,
      uptimeS: Math.round((this.clock.now() - this.startedAt) / 1000),
      ...merged,
      ports,
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
      await stopAll(this.components, this.log, opts);
      this.final = this.status();
      this.log.info({ gateway: this.site.config.gateway.id }, 'gateway stopped');
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

function memoryMiB(): { rss: number; heapUsed: number; external: number } {
  const m = process.memoryUsage();
  const mib = (n: number): number => Math.round((n / 2 ** 20) * 10) / 10;
  return { rss: mib(m.rss), heapUsed: mib(m.heapUsed), external: mib(m.external) };
}
