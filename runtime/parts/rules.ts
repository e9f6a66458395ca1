import { ActuationGuard } from '../../rules/actuation.js';
import { Rules } from '../../rules/engine.js';
import { ConfigError, loadConfig } from '../config/load.js';
import type { SiteConfig } from '../config/schema.js';
import { errorMessage, HttpError, type Clock, type Component, type ComponentContext, type Db, type LocalOutput, type Logger, type Outbox } from '../contracts/index.js';
import { sendJson } from '../http/respond.js';
import { IngestPipeline } from '../ingest.js';
import type { PromMetrics } from '../metrics.js';
import type { PointRouter } from '../points.js';
import type { BootSequence } from '../sequence.js';
import type { Part } from './site.js';

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
export class ReloadRefused extends Error {
  override readonly name = 'ReloadRefused';
}

/** Where a local rule output goes, by route: registered, not switched on. */
type LocalRoute = (output: LocalOutput) => void;

export interface RulesDeps {
  readonly config: SiteConfig;
  readonly store: { readonly db: Db; readonly sequence: BootSequence };
  readonly outbox: Outbox;
  readonly clock: Clock;
  readonly metrics: PromMetrics;
  readonly points: PointRouter;
  /** Called after a commit put rows into the outbox. */
  readonly notify: () => void;
  /** Publishes a rule's output on the local broker. */
  readonly publish: (topic: string, payload: string, qos: 0 | 1, retain: boolean) => Promise<void>;
}

/**
 * The rule engine at the edge and the ingest path it runs in: drivers submit readings, the rules
 * run in the group-commit transaction, cloud outputs go to the outbox there, and local outputs
 * (a local topic, a point write) are handed to their route once committed. Writes go through the
 * write guard (rules/actuation.ts) to the drivers' write capability.
 */
export class RulesComponent implements Component {
  readonly name = 'rules';
  private running: SiteConfig;
  private pipe: IngestPipeline | undefined;
  private guard: ActuationGuard | undefined;
  private readonly routes = new Map<LocalOutput['route'], LocalRoute>();
  private log: Logger | undefined;
  private engine: Rules | undefined;

  constructor(private readonly deps: RulesDeps) {
    this.running = deps.config;
  }

  /** The ingest path: where drivers submit readings (ReadingSink) and flows append (OutboxWriter). */
  get pipeline(): IngestPipeline {
    if (!this.pipe) throw new Error('the rules are not started');
    return this.pipe;
  }

  /** The rules as last reloaded. */
  get rules(): SiteConfig['rules'] {
    return this.running.rules;
  }

  async start(ctx: ComponentContext): Promise<void> {
    const { clock, metrics, store, outbox, points } = this.deps;
    const log = (this.log = ctx.log);
    const guard = new ActuationGuard((device, point, value) => points.write(device, point, value, 'rules'), clock, log.child({ component: 'actuation' }), metrics);
    // Another path wrote the point: the guard must not take its last value for what the point holds now.
    points.onWrite((device, point, origin) => {
      if (origin !== 'rules') guard.forget(device, point);
    });
    this.guard = guard;
    this.routes.set('write', (o) => {
      if (o.route === 'write') guard.submit(o);
    });
    this.routes.set('mqtt', (o) => {
      if (o.route !== 'mqtt') return;
      this.deps.publish(o.topic, JSON.stringify(o.envelope), o.qos, o.retain).catch((err: unknown) => log.warn({ topic: o.topic, err: errorMessage(err) }, 'rule output not published'));
    });
    const engine = (this.engine = new Rules(this.running.rules, clock, store.sequence, metrics));
    this.pipe = new IngestPipeline(store.db, engine, outbox, clock, ctx.log.child({ component: 'ingest' }), metrics, this.deps.notify, (outputs) => {
      for (const o of outputs) this.routes.get(o.route)?.(o);
    });
    await Promise.resolve();
  }

  /** Serves the outputs of `route` from another part (calls: the device registry). */
  serve(route: LocalOutput['route'], fn: LocalRoute): void {
    this.routes.set(route, fn);
  }

  /** Writes stop first (drivers are stopping), then what is pending is committed. */
  async stop(): Promise<void> {
    this.guard?.stop();
    await this.pipe?.stop();
  }

  status(): Record<string, unknown> {
    return { readingsIn: this.pipe?.readingsIn ?? 0, ruleOutputs: this.pipe?.ruleOutputs ?? 0, rules: this.engine?.stats() ?? [] };
  }

  /**
   * Applies the rules of `next` without a restart and without dropping a reading. Rules whose
   * definition is unchanged keep their state. Streams and devices are not changed while running:
   * a config whose streams or devices differ is refused (restart to apply those).
   */
  reload(next: SiteConfig): RulesReloaded {
    const differs = (['streams', 'devices'] as const).filter((k) => JSON.stringify(next[k]) !== JSON.stringify(this.running[k]));
    if (differs.length > 0) throw new ReloadRefused(`${differs.join(' and ')} changed: restart the gateway to apply that; rules not reloaded`);
    return this.apply(next);
  }

  /**
   * A deployed config's rules (runtime/deploy): as reload, for a config whose other changes the
   * deployer applies itself (the drivers of changed devices).
   */
  apply(next: SiteConfig): RulesReloaded {
    const before = new Map(this.running.rules.map((r) => [r.id, JSON.stringify(r)]));
    const kept = next.rules.filter((r) => before.get(r.id) === JSON.stringify(r)).map((r) => r.id);
    const keptSet = new Set(kept);
    const engine = new Rules(next.rules, this.deps.clock, this.deps.store.sequence, this.deps.metrics);
    this.engine = engine;
    this.pipeline.replaceRules(engine, (key) => keptSet.has(key.slice(0, key.indexOf('\u0000'))));
    const nextIds = new Set(next.rules.map((r) => r.id));
    this.running = next;
    const result = {
      rules: next.rules.length,
      applied: next.rules.filter((r) => !keptSet.has(r.id)).map((r) => r.id),
      kept,
      removed: [...before.keys()].filter((id) => !nextIds.has(id)),
    };
    this.log?.info(result, 'rules reloaded');
    return result;
  }
}

export const rulesPart: Part = {
  name: 'rules',
  build(site) {
    const { config, clock, metrics, points, configFile, protocols } = site.opts;
    const broker = site.get('localBroker');
    const uplink = site.get('uplink');
    const rules = new RulesComponent({
      config,
      store: site.get('store'),
      outbox: site.get('outbox').outbox,
      clock,
      metrics,
      points,
      notify: () => uplink.notify(),
      publish: (topic, payload, qos, retain) => broker.publish(topic, payload, qos, retain),
    });
    site.provide('rules', rules);
    // POST /api/v1/rules/reload: the config file's rules again (SIGHUP does the same).
    const http = site.get('http');
    const r = http.router();
    r.post('/reload', (_req, res, next) => {
      if (!configFile) throw new HttpError(409, 'the gateway was started without a config file: nothing to reload');
      loadConfig(configFile, protocols).then(
        (cfg) => sendJson(res, 200, { ...rules.reload(cfg) }),
        (err: unknown) => {
          if (err instanceof ConfigError) next(new HttpError(400, `${configFile}: invalid config; running rules kept`, { problems: err.problems }));
          else next(err);
        },
      ).catch((err: unknown) => next(err instanceof ReloadRefused ? new HttpError(409, err.message) : err));
    });
    http.mount('/api/v1/rules', r);
    return rules;
  },
};
