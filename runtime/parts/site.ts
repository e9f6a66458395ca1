import type { ConfigDeployer } from '../deploy/deployer.js';
import type { ProblemLog } from '../problems.js';
import type { Clock, Component, Logger } from '../contracts/index.js';
import type { PromMetrics } from '../metrics.js';
import type { PointRouter } from '../points.js';
import type { ProtocolRegistry } from '../protocols.js';
import type { SiteConfig } from '../config/schema.js';
import type { EmbeddedBroker } from '../broker/embedded-broker.js';
import type { SiteBroker } from '../broker/site-broker.js';
import type { HttpLayer } from '../http/http-layer.js';
import type { Uplink } from '../../cloud-bridge/uplink.js';
import type { OutboxComponent } from './outbox.js';
import type { RulesComponent } from './rules.js';
import type { StoreComponent } from './store.js';
import type { DevicesComponent } from './devices.js';
import type { DriversComponent } from './drivers.js';

/**
 * What a part provides to the parts after it, by name. A part's service is usable once the part
 * has started, and parts are built one after the other, each after the ones before it started.
 */
export interface Services {
  store: StoreComponent;
  outbox: OutboxComponent;
  /** The broker children talk to: the embedded one, or the external site broker (broker.external). */
  localBroker: SiteBroker;
  /** The embedded broker, when it runs (its identities and connections). */
  embeddedBroker: EmbeddedBroker;
  http: HttpLayer;
  uplink: Uplink;
  rules: RulesComponent;
  devices: DevicesComponent;
  drivers: DriversComponent;
}

export interface SiteOptions {
  readonly config: SiteConfig;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: PromMetrics;
  readonly protocols: ProtocolRegistry;
  /** The write capability of every driver, routed by device. */
  readonly points: PointRouter;
  /** The file the config came from (rule reloads read it again). */
  readonly configFile?: string | undefined;
  /** The gateway's status, for the API. */
  readonly status: () => Record<string, unknown>;
  /** Config deployments (runtime/deploy): one deployer for the gateway's life, across restarts of its parts. */
  readonly deployer?: ConfigDeployer | undefined;
  /** The recent warnings and errors the logger wrote (the status page), when the logger keeps them. */
  readonly problems?: ProblemLog | undefined;
}

/** What parts are built from: the validated config, the gateway-wide services, and what earlier parts provide. */
export class Site {
  private readonly services = new Map<keyof Services, Services[keyof Services]>();

  constructor(readonly opts: SiteOptions) {}

  get config(): SiteConfig {
    return this.opts.config;
  }

  /** The parts built from here on get `next` (the deployed config chosen at start: runtime/deploy). */
  setConfig(next: SiteConfig): void {
    (this.opts as { config: SiteConfig }).config = next;
  }

  provide<K extends keyof Services>(name: K, service: Services[K]): void {
    this.services.set(name, service);
  }

  /** A service of an earlier part; a part that needs one from a later part is a bug in the part order. */
  get<K extends keyof Services>(name: K): Services[K] {
    const s = this.services.get(name);
    if (s === undefined) throw new Error(`service "${name}" is not provided by any part before this one (runtime/parts/index.ts)`);
    return s as Services[K];
  }

  /** A service if some earlier part provided it. */
  find<K extends keyof Services>(name: K): Services[K] | undefined {
    return this.services.get(name) as Services[K] | undefined;
  }
}

/**
 * One entry of the gateway's part list: builds its component(s) from the site, or none when not
 * configured. A part whose code is large and often not configured (OTA) loads it in `build`, so a
 * gateway without it never does.
 */
export interface Part {
  readonly name: string;
  build(site: Site): Component | undefined | Promise<Component | undefined>;
}
