import {
  childTelemetrySchema,
  makeEnvelope,
  parseTelemetryTopic,
  type Counter,
  type Driver,
  type DriverContext,
  type Envelope,
  type InboundPublish,
  type LocalBroker,
} from '../../runtime/contracts/index.js';

export interface ChildIntakeOptions {
  /** Device ids declared in the site config. */
  readonly knownDevices: ReadonlySet<string>;
  readonly acceptUnknownDevices: boolean;
}

/** Reading id for a point of a child message that carries its own id (docs/topics.md). */
export function childReadingId(device: string, messageId: string | number, point: string): string {
  return `${device}:${messageId}:${point}`;
}

/**
 * Takes child telemetry from the local broker. Each valid message becomes one reading per point,
 * committed before the broker sends the PUBACK. An invalid message is refused with a named reason,
 * counted and logged, and acknowledged all the same: a device must not resend a message that can
 * never be accepted.
 */
export class ChildIntake implements Driver {
  readonly name = 'mqtt:children';
  private ctx: DriverContext | undefined;
  private stopped = false;
  private accepted = 0;
  private rejected = 0;
  private readonly inFlight = new Set<Promise<void>>();
  private mAccepted!: Counter;
  private mRejected!: Counter;

  constructor(
    private readonly broker: LocalBroker,
    private readonly opts: ChildIntakeOptions,
  ) {}

  async start(ctx: DriverContext): Promise<void> {
    this.ctx = ctx;
    this.mAccepted = ctx.metrics.counter('outpost_child_messages_total', 'Child telemetry messages accepted');
    this.mRejected = ctx.metrics.counter('outpost_child_rejected_total', 'Child telemetry messages refused', ['reason']);
    this.broker.intercept((msg) => this.onPublish(msg));
    await Promise.resolve();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.allSettled([...this.inFlight]);
  }

  status(): Record<string, unknown> {
    return { accepted: this.accepted, rejected: this.rejected };
  }

  private async onPublish(msg: InboundPublish): Promise<void> {
    const device = parseTelemetryTopic(msg.topic);
    if (device === undefined) return;
    if (this.stopped) throw new Error('gateway is stopping');
    const readings = this.decode(device, msg);
    if (!readings) return;
    const p = this.ctx!.sink.submit(readings);
    this.inFlight.add(p);
    try {
      await p;
      this.accepted++;
      this.mAccepted.inc();
    } finally {
      this.inFlight.delete(p);
    }
  }

  private decode(device: string, msg: InboundPublish): Envelope[] | undefined {
    const ctx = this.ctx!;
    if (!this.opts.acceptUnknownDevices && !this.opts.knownDevices.has(device)) {
      return this.refuse(device, 'unknown-device', `device "${device}" is not in the site config`);
    }
    let json: unknown;
    try {
      json = JSON.parse(msg.payload.toString('utf8'));
    } catch (err) {
      return this.refuse(device, 'not-json', `payload is not JSON: ${(err as Error).message}`);
    }
    const parsed = childTelemetrySchema.safeParse(json);
    if (!parsed.success) {
      const why = parsed.error.issues.map((i) => `${i.path.join('.') || '(payload)'}: ${i.message}`).join('; ');
      return this.refuse(device, 'schema', why);
    }
    const { id: messageId, ts = ctx.clock.now(), points } = parsed.data;
    const readings: Envelope[] = [];
    for (const [point, v] of Object.entries(points)) {
      const { value, quality } = v !== null && typeof v === 'object' ? v : { value: v, quality: 'good' as const };
      const next = ctx.sequence.next();
      const id = messageId === undefined ? next.id : childReadingId(device, messageId, point);
      readings.push(makeEnvelope({ id, device, point, value, quality, ts, seq: next.seq }));
    }
    return readings;
  }

  private refuse(device: string, reason: string, detail: string): undefined {
    this.rejected++;
    this.mRejected.inc({ reason });
    this.ctx!.log.warn({ device, reason, detail }, 'child telemetry refused');
    return undefined;
  }
}
