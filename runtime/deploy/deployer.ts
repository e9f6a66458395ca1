import { readFileSync } from 'node:fs';
import type { SiteConfig } from '../config/schema.js';
import { parseConfigText } from '../config/load.js';
import { errorMessage, HttpError, type Clock, type Db, type Logger } from '../contracts/index.js';
import type { PromMetrics } from '../metrics.js';
import type { ProtocolRegistry } from '../protocols.js';
import { ConfigHistory, sha256, type ConfigSource, type ConfigVersion } from './history.js';
import { DeployRefused, planDeployment, type DeployPlan } from './plan.js';

/** What the deployer needs of the gateway it deploys to (runtime/gateway.ts). */
export interface DeployTarget {
  /** The config the gateway runs. */
  readonly config: SiteConfig;
  readonly protocols: ProtocolRegistry;
  /** The store's database (open while the gateway runs). */
  db(): Db;
  /** Swaps the rules and restarts the drivers of `devices` (plan `in-place`). */
  applyInPlace(next: SiteConfig, devices: readonly string[]): Promise<void>;
  /** Stops every part and starts them again on `next`; throws when a part could not start (nothing runs then). */
  restart(next: SiteConfig): Promise<void>;
  status(): object;
}

export interface DeployerOptions {
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: PromMetrics;
  /** The file the gateway was started from: its hash is kept with every deployed version. */
  readonly configFile?: string | undefined;
  /** Neither the new config nor the one before it could be started: the process should exit (its supervisor restarts it on the last good version). */
  readonly onFatal: (err: unknown) => void;
}

export interface DeployOutcome {
  readonly version: number;
  readonly status: 'active' | 'failed';
  readonly plan: DeployPlan;
  /** Why it failed (health checks or start), when it did. */
  readonly reason?: string;
  /** The version running after a failure. */
  readonly runningVersion?: number;
}

export interface Deployment {
  readonly version: number;
  readonly plan: DeployPlan;
  /** Settles when the version is active or rolled back. */
  readonly done: Promise<DeployOutcome>;
}

/** What the health checks look at, before and after applying. */
interface Probe {
  readonly link: string;
  readonly refused?: string;
  /** With an external site broker (broker.external): its link's state and a CONNACK refusal. */
  readonly site?: { readonly state: string; readonly refused?: string };
  /** Polled connections (Modbus buses) by name: connected, the devices on them, the last connect error. */
  readonly buses: readonly { name: string; connected: boolean; devices: string[]; error?: string }[];
}

function probe(s: object): Probe {
  const status = s as Record<string, unknown>;
  const uplink = status.uplink as { refused?: unknown } | undefined;
  const drivers = Array.isArray(status.drivers) ? (status.drivers as Record<string, unknown>[]) : [];
  const buses = drivers
    .filter((d) => typeof d.connected === 'boolean')
    .map((d) => ({
      name: String(d.name),
      connected: d.connected === true,
      devices: Array.isArray(d.devices) ? (d.devices as { device?: unknown }[]).map((x) => String(x.device)) : [],
      ...(typeof d.lastConnectError === 'string' ? { error: d.lastConnectError } : {}),
    }));
  const site = status.siteBroker as { state?: unknown; refused?: unknown } | undefined;
  return {
    link: String(status.link),
    ...(typeof uplink?.refused === 'string' ? { refused: uplink.refused } : {}),
    ...(site ? { site: { state: String(site.state), ...(typeof site.refused === 'string' ? { refused: site.refused } : {}) } } : {}),
    buses,
  };
}

/**
 * The site config as a deployment (docs/operations.md): a new config is validated first (an invalid
 * one changes nothing), planned (runtime/deploy/plan.ts: only what changed restarts), recorded as a
 * pending version with its hash, applied, and watched for `deploy.healthWindowMs`: the cloud link
 * must come back if it was up (and the broker must not refuse the new credentials), the Modbus
 * connections of changed devices (all that were connected, after a restart) must connect. A version
 * that fails is marked failed and the one before is applied again. One deployment at a time.
 */
export class ConfigDeployer {
  readonly history: ConfigHistory;
  private busy: Deployment | undefined;
  private target: DeployTarget | undefined;

  constructor(private readonly opts: DeployerOptions) {
    this.history = new ConfigHistory(() => this.gateway.db());
  }

  private get gateway(): DeployTarget {
    if (!this.target) throw new Error('config deployer used before the gateway started');
    return this.target;
  }

  attach(target: DeployTarget): void {
    this.target = target;
  }

  /** The deployment in progress, if any. */
  get inProgress(): Deployment | undefined {
    return this.busy;
  }

  /**
   * At start, once the store is open: the config to run. The file's, unless a version deployed
   * over this very file (same hash) is active: then that one (a deployed config survives restarts
   * until the file is edited). A version left pending by a gateway that died during its health
   * checks is marked failed.
   */
  startupConfig(fileText: string, fileConfig: SiteConfig): SiteConfig {
    const now = this.opts.clock.now();
    const interrupted = this.history.failInterrupted(now);
    if (interrupted.length > 0) this.opts.log.warn({ versions: interrupted }, 'config versions interrupted during their health checks marked failed');
    const fileSha = sha256(fileText);
    const active = this.history.active();
    if (active?.sha256 === fileSha) return fileConfig;
    if (active && active.source !== 'file' && active.baseFileSha256 === fileSha) {
      const text = this.history.text(active.version)!;
      try {
        const deployed = parseConfigText(text, `config version ${active.version}`, this.gateway.protocols);
        if (deployed.storage.path === fileConfig.storage.path && deployed.gateway.id === fileConfig.gateway.id) {
          this.opts.log.info({ version: active.version, source: active.source }, 'running the deployed config version (the config file is unchanged since it was deployed)');
          return deployed;
        }
      } catch (err) {
        this.opts.log.warn({ version: active.version, err: errorMessage(err) }, 'deployed config version no longer valid; running the config file');
      }
    }
    const version = this.history.add({ text: fileText, source: 'file', status: 'active', now });
    this.opts.log.info({ version, sha256: fileSha }, 'config file recorded as a new version');
    return fileConfig;
  }

  /** Validation and plan only: what deploying `text` would do. Throws ConfigError or DeployRefused. */
  check(text: string): DeployPlan {
    return planDeployment(this.gateway.config, parseConfigText(text, 'config', this.gateway.protocols), this.gateway.protocols);
  }

  /**
   * Starts deploying `text`: throws at once when it is invalid (ConfigError), cannot be applied
   * while running (DeployRefused) or another deployment is in progress (HttpError 409); else the
   * version is recorded pending and applied in the background (`done`).
   */
  deploy(text: string, source: ConfigSource, meta: { issuedAt?: number } = {}): Deployment {
    if (this.busy) throw new HttpError(409, `config version ${this.busy.version} is being deployed; try again when it is decided`);
    const gateway = this.gateway;
    const next = parseConfigText(text, 'config', gateway.protocols);
    const plan = planDeployment(gateway.config, next, gateway.protocols);
    const now = this.opts.clock.now();
    const active = this.history.active();
    if (plan.kind === 'unchanged' && active?.sha256 === sha256(text)) {
      return { version: active.version, plan, done: Promise.resolve({ version: active.version, status: 'active', plan }) };
    }
    const version = this.history.add({ text, source, status: 'pending', now, baseFileSha256: this.fileSha(), issuedAt: meta.issuedAt, plan });
    this.opts.log.info({ version, source, plan }, 'deploying config version');
    const previous = gateway.config;
    // Applied once the caller had its answer: a restart stops the HTTP server the request came in on.
    const done = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => this.apply(version, source, plan, next, previous, active?.version))
      .finally(() => {
        this.busy = undefined;
      });
    const deployment: Deployment = { version, plan, done };
    this.busy = deployment;
    return deployment;
  }

  /** Deploys the text of `version` again (default: the version active before the running one), as a new version. */
  rollback(version?: number): Deployment {
    const target = version ?? this.history.list(1000).find((v) => v.status === 'superseded')?.version;
    if (target === undefined) throw new HttpError(409, 'no earlier version to roll back to');
    const text = this.history.text(target);
    if (text === undefined) throw new HttpError(404, `no config version ${target}`);
    return this.deploy(text, 'rollback');
  }

  status(): { version?: number; sha256?: string; source?: ConfigSource; deploying?: number } {
    let active: ConfigVersion | undefined;
    try {
      active = this.history.active();
    } catch {
      active = undefined; // the store is closed (stopping, restarting)
    }
    return {
      ...(active ? { version: active.version, sha256: active.sha256, source: active.source } : {}),
      ...(this.busy ? { deploying: this.busy.version } : {}),
    };
  }

  private fileSha(): string | undefined {
    if (!this.opts.configFile) return undefined;
    try {
      return sha256(readFileSync(this.opts.configFile, 'utf8'));
    } catch {
      return undefined;
    }
  }

  private async apply(version: number, source: ConfigSource, plan: DeployPlan, next: SiteConfig, previous: SiteConfig, previousVersion: number | undefined): Promise<DeployOutcome> {
    const { clock, log, metrics } = this.opts;
    const count = metrics.counter('outpost_config_deployments_total', 'Config versions deployed, by source and outcome', ['source', 'outcome']);
    const gateway = this.gateway;
    const before = probe(gateway.status());
    let problem: string | undefined;
    try {
      await this.run(plan, next);
    } catch (err) {
      problem = `could not be applied: ${errorMessage(err)}`;
    }
    problem ??= await this.health(plan, before, next, previous);
    if (problem === undefined) {
      this.history.activate(version, clock.now());
      count.inc({ source, outcome: 'active' });
      log.info({ version, plan: plan.kind }, 'config version active');
      return { version, status: 'active', plan };
    }
    log.error({ version, reason: problem, rollbackTo: previousVersion }, 'config version failed; rolling back');
    try {
      await this.run(plan, previous);
    } catch (err) {
      // Neither runs: the supervisor restarts the process, which starts on the last active version.
      count.inc({ source, outcome: 'failed' });
      this.safeFail(version, problem);
      log.error({ version, err: errorMessage(err) }, 'the previous config could not be started again either');
      this.opts.onFatal(err);
      return { version, status: 'failed', plan, reason: problem };
    }
    this.history.fail(version, clock.now(), problem);
    count.inc({ source, outcome: 'failed' });
    return { version, status: 'failed', plan, reason: problem, ...(previousVersion !== undefined ? { runningVersion: previousVersion } : {}) };
  }

  private safeFail(version: number, reason: string): void {
    try {
      this.history.fail(version, this.opts.clock.now(), reason);
    } catch {
      // the store is closed: the next start marks the pending version failed
    }
  }

  private async run(plan: DeployPlan, config: SiteConfig): Promise<void> {
    if (plan.kind === 'in-place') await this.gateway.applyInPlace(config, plan.devices);
    else if (plan.kind === 'restart') await this.gateway.restart(config);
  }

  /** Undefined when healthy within the window; else what was wrong. */
  private async health(plan: DeployPlan, before: Probe, next: SiteConfig, previous: SiteConfig): Promise<string | undefined> {
    if (plan.kind === 'unchanged') return undefined;
    const { clock } = this.opts;
    const deadline = clock.now() + next.deploy.healthWindowMs;
    // Devices new or changed by this version: their connections must come up.
    const old = new Map(previous.devices.map((d) => [d.id, JSON.stringify(d)]));
    const changedDevices = new Set(next.devices.filter((d) => old.get(d.id) !== JSON.stringify(d)).map((d) => d.id));
    const wasConnected = new Set(before.buses.filter((b) => b.connected).flatMap((b) => b.devices));
    const needLink = before.link === 'up';
    for (;;) {
      const now = probe(this.gateway.status());
      if (now.refused !== undefined && (plan.kind === 'restart' || needLink)) return `the cloud broker refused the connection (${now.refused})`;
      const problems: string[] = [];
      if (now.site?.refused !== undefined && (plan.kind === 'restart' || before.site?.state === 'up')) return `the site broker refused the connection (${now.site.refused})`;
      if (needLink && now.link !== 'up') problems.push(`the cloud link was up and is ${now.link}`);
      if (before.site?.state === 'up' && now.site !== undefined && now.site.state !== 'up') problems.push(`the site broker link was up and is ${now.site.state}`);
      for (const bus of now.buses) {
        const required = bus.devices.some((d) => changedDevices.has(d) || (plan.kind === 'restart' && wasConnected.has(d)));
        if (required && !bus.connected) problems.push(`${bus.name} (${bus.devices.join(', ')}) is not connected${bus.error ? `: ${bus.error}` : ''}`);
      }
      if (problems.length === 0) return undefined;
      if (clock.now() >= deadline) return `not healthy within ${next.deploy.healthWindowMs} ms: ${problems.join('; ')}`;
      await new Promise<void>((resolve) => clock.setTimeout(resolve, 200));
    }
  }
}

export { DeployRefused };
