import { z } from 'zod';
import { errorMessage, HttpError, WriteRefused, type Component, type ComponentContext, type Driver, type DriverContext, type Logger } from '../contracts/index.js';
import { sendJson } from '../http/respond.js';
import type { PointRouter } from '../points.js';
import type { Part } from './site.js';
import { drivenDevices } from './broker.js';

/**
 * Every southbound driver the site config asks for, built through the protocol registry: started
 * in config order once the ingest path runs, stopped in reverse. Their write capability is routed
 * by device (PointRouter).
 */
class DriversComponent implements Component {
  readonly name = 'drivers';
  private started: Driver[] = [];
  private log: Logger | undefined;

  constructor(
    private readonly drivers: readonly Driver[],
    private readonly points: PointRouter,
    private readonly context: Omit<DriverContext, keyof ComponentContext>,
  ) {}

  async start(ctx: ComponentContext): Promise<void> {
    this.log = ctx.log;
    for (const d of this.drivers) {
      await d.start({ ...ctx, ...this.context, log: ctx.log.child({ driver: d.name }) });
      this.started.push(d);
      this.points.add(d);
    }
  }

  async stop(): Promise<void> {
    const started = this.started;
    this.started = [];
    this.points.clear();
    for (const d of [...started].reverse()) {
      try {
        await d.stop();
      } catch (err) {
        // One driver that fails to stop must not keep the others running.
        this.log?.error({ driver: d.name, err: errorMessage(err) }, 'driver did not stop cleanly');
      }
    }
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
    const env = { localBroker: site.get('localBroker'), acceptUnknownDevices: config.broker.acceptUnknownDevices, otherDevices: new Set(drivenDevices(config, site.opts.protocols).keys()) };
    const drivers = protocols.entries().flatMap((entry) => entry.create(config.devices.filter((d) => d.protocol === entry.protocol), env));
    points.setRanges(config.devices.flatMap((d) => protocols.of(d).points(d).flatMap((p) => (p.range ? [[d.id, p.name, p.range] as [string, string, { min: number; max: number }]] : []))));
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
    return new DriversComponent(drivers, points, { sink: site.get('rules').pipeline, sequence: store.sequence });
  },
};
