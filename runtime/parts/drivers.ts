import { z } from 'zod';
import { errorMessage, HttpError, WriteRefused, type Component, type ComponentContext, type Driver, type DriverContext, type Logger } from '../contracts/index.js';
import { sendJson } from '../http/respond.js';
import type { SiteConfig } from '../config/schema.js';
import type { PointRouter } from '../points.js';
import type { Part } from './site.js';
import { drivenDevices } from './broker.js';

/**
 * Every southbound driver the site config asks for, built through the protocol registry: started
 * in config order once the ingest path runs, stopped in reverse. Their write capability is routed
 * by device (PointRouter).
 */
export class DriversComponent implements Component {
  readonly name = 'drivers';
  private started: Driver[] = [];
  private drivers: Driver[];
  private ctx: ComponentContext | undefined;
  private log: Logger | undefined;

  constructor(
    private readonly build: (config: SiteConfig) => Driver[],
    config: SiteConfig,
    private readonly points: PointRouter,
    private readonly context: Omit<DriverContext, keyof ComponentContext>,
  ) {
    this.drivers = build(config);
  }

  async start(ctx: ComponentContext): Promise<void> {
    this.ctx = ctx;
    this.log = ctx.log;
    for (const d of this.drivers) await this.startOne(d);
  }

  private async startOne(d: Driver): Promise<void> {
    const ctx = this.ctx!;
    await d.start({ ...ctx, ...this.context, log: ctx.log.child({ driver: d.name }) });
    this.started.push(d);
    this.points.add(d);
  }

  /**
   * A deployed config whose only device changes are settings of `changed` (runtime/deploy/plan.ts):
   * the drivers serving them stop (handing over what they have in flight) and new ones start on
   * `next`; every other driver runs on untouched. A device that moves to another connection takes
   * the drivers of both along.
   */
  async replace(next: SiteConfig, changed: readonly string[]): Promise<string[]> {
    const fresh = this.build(next);
    const impacted = new Set(changed);
    const touches = (d: Driver): boolean => (d.devices ?? []).some((id) => impacted.has(id));
    for (let grew = true; grew; ) {
      grew = false;
      for (const d of [...this.drivers, ...fresh]) {
        if (!touches(d)) continue;
        for (const id of d.devices ?? []) {
          if (impacted.has(id)) continue;
          impacted.add(id);
          grew = true;
        }
      }
    }
    const leaving = this.drivers.filter(touches);
    const coming = fresh.filter(touches);
    for (const d of [...leaving].reverse()) {
      this.points.remove(d);
      this.started = this.started.filter((s) => s !== d);
      await this.stopOne(d);
    }
    this.drivers = [...this.drivers.filter((d) => !touches(d)), ...coming];
    for (const d of coming) await this.startOne(d);
    this.log?.info({ stopped: leaving.map((d) => d.name), started: coming.map((d) => d.name) }, 'drivers of changed devices restarted');
    return coming.map((d) => d.name);
  }

  private async stopOne(d: Driver): Promise<void> {
    try {
      await d.stop();
    } catch (err) {
      // One driver that fails to stop must not keep the others running.
      this.log?.error({ driver: d.name, err: errorMessage(err) }, 'driver did not stop cleanly');
    }
  }

  async stop(): Promise<void> {
    const started = this.started;
    this.started = [];
    this.points.clear();
    for (const d of [...started].reverse()) await this.stopOne(d);
  }

  status(): Record<string, unknown> {
    return { drivers: this.drivers.map((d) => ({ name: d.name, ...d.status() })) };
  }
}

const writeBody = z.strictObject({ value: z.union([z.number().finite(), z.boolean(), z.string().max(250)]) });

export const driversPart: Part = {
  name: 'drivers',
  build(site) {
    const { config, protocols, points } = site.opts;
    const env = { localBroker: site.get('localBroker'), acceptUnknownDevices: config.broker.acceptUnknownDevices, otherDevices: new Set(drivenDevices(config, site.opts.protocols).keys()), maxChildren: config.broker.limits.maxConnections };
    const build = (cfg: SiteConfig): Driver[] => {
      points.setRanges(cfg.devices.flatMap((d) => protocols.of(d).points(d).flatMap((p) => (p.range ? [[d.id, p.name, p.range] as [string, string, { min: number; max: number }]] : []))));
      return protocols.entries().flatMap((entry) => entry.create(cfg.devices.filter((d) => d.protocol === entry.protocol), env));
    };
    const store = site.get('store');
    // POST /api/v1/devices/{device}/points/{point}/write {"value": …}: a verified write, answered
    // with the value read back; refusals and device failures are mapped to statuses by the HTTP layer.
    const http = site.get('http');
    const r = http.router();
    r.post('/:device/points/:point/write', http.jsonBody(writeBody), (req, res, next) => {
      const { value } = req.body as z.output<typeof writeBody>;
      points.write(req.params.device!, req.params.point!, value, 'api').then(
        (result) => sendJson(res, 200, { ...result }),
        // Refused before sending: the HTTP layer's status; the device refused or did not answer: 502.
        (err: unknown) => next(err instanceof WriteRefused ? err : new HttpError(502, errorMessage(err))),
      );
    });
    http.mount('/api/v1/devices', r);
    const drivers = new DriversComponent(build, config, points, { sink: site.get('rules').pipeline, sequence: store.sequence });
    site.provide('drivers', drivers);
    return drivers;
  },
};
