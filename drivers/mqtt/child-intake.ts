import { z } from 'zod';
import {
  childStatusSchema,
  childTelemetrySchema,
  fastChildTelemetry,
  errorMessage,
  makeEnvelope,
  parseStatusTopic,
  parseTelemetryTopic,
  type Counter,
  type Driver,
  type DriverContext,
  type Envelope,
  type InboundPublish,
  type LocalBroker,
  type Quality,
  type Value,
} from '../../runtime/contracts/index.js';

/** What one declared point may carry (the site config's `devices[].points` of an mqtt device). */
export interface ChildPointSpec {
  readonly type: 'number' | 'boolean' | 'string';
  readonly min?: number | undefined;
  readonly max?: number | undefined;
  readonly enum?: readonly string[] | undefined;
  readonly unit?: string | undefined;
}

export interface ChildDeviceSpec {
  readonly points?: Readonly<Record<string, ChildPointSpec>> | undefined;
  /** Refuse messages with points not declared in `points`. */
  readonly strict: boolean;
}

export interface ChildIntakeOptions {
  /** Devices declared in the site config, with their payload schemas. */
  readonly devices: ReadonlyMap<string, ChildDeviceSpec>;
  readonly acceptUnknownDevices: boolean;
  /** Devices of other protocols (Modbus): never taken from MQTT. */
  readonly otherDevices?: ReadonlySet<string> | undefined;
  /** Devices whose online state and last values are tracked, at most (default DEFAULT_MAX_TRACKED). */
  readonly maxTracked?: number | undefined;
}

type PointCheck = z.ZodType<{ value: Value; quality: Quality }>;

/** The zod schema of one declared point: its value type and range; null only with quality bad or stale. */
function pointCheck(spec: ChildPointSpec): PointCheck {
  let value: z.ZodType<Value>;
  if (spec.type === 'number') {
    let n = z.number().finite();
    if (spec.min !== undefined) n = n.min(spec.min);
    if (spec.max !== undefined) n = n.max(spec.max);
    value = n;
  } else if (spec.type === 'boolean') value = z.boolean();
  else value = spec.enum ? z.enum(spec.enum as [string, ...string[]]) : z.string().max(1024);
  return z
    .strictObject({ value: value.nullable(), quality: z.enum(['good', 'bad', 'stale']) })
    .refine((p) => p.value !== null || p.quality !== 'good', { message: 'null needs quality bad or stale', path: ['value'] });
}

/** A part of a reading id: `%` and `:` escaped, so that parts containing `:` cannot collide. */
const idPart = (x: string | number): string => {
  const s = String(x);
  return s.includes('%') || s.includes(':') ? s.replace(/%/g, '%25').replace(/:/g, '%3A') : s;
};

/**
 * Reading id for a point of a child message that carries its own id (docs/topics.md):
 * `{device}:{msgId}:{point}`, each part with `%` and `:` percent-escaped (parts without them are
 * unchanged), so message "a:b" with point "c" and message "a" with point "b:c" differ.
 */
export function childReadingId(device: string, messageId: string | number, point: string): string {
  return `${idPart(device)}:${idPart(messageId)}:${idPart(point)}`;
}

/**
 * Bounds of the online/last-value tracking (memory stays bounded whatever devices send). The
 * device bound is raised to the site's `broker.limits.maxConnections` (drivers/mqtt/protocol.ts):
 * a site sized for 10,000 children and a probe once lost the will of the last one.
 */
export const DEFAULT_MAX_TRACKED = 10_000;
const MAX_TRACKED_POINTS = 1_000;

/**
 * Takes child telemetry from the local broker. Each valid message becomes one reading per point,
 * committed before the broker sends the PUBACK. An invalid message is refused with a named reason,
 * counted and logged, and acknowledged all the same: a device must not resend a message that can
 * never be accepted.
 */
export class ChildIntake implements Driver {
  readonly name = 'mqtt:children';
  private trackingFull = false;
  private ctx: DriverContext | undefined;
  private stopped = false;
  private accepted = 0;
  private rejected = 0;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly checks = new Map<string, Map<string, PointCheck>>();
  /** Per device: online or not, since when, and the last value of each point (for stale readings). */
  private readonly tracked = new Map<string, { online: boolean; since: number; last: Map<string, { value: Value; unit?: string | undefined }> }>();
  private mAccepted!: Counter;
  private mRejected!: Counter;
  private mStatus!: Counter;

  constructor(
    private readonly broker: LocalBroker,
    private readonly opts: ChildIntakeOptions,
  ) {
    for (const [id, spec] of opts.devices) {
      if (!spec.points) continue;
      this.checks.set(id, new Map(Object.entries(spec.points).map(([name, p]) => [name, pointCheck(p)])));
    }
  }

  async start(ctx: DriverContext): Promise<void> {
    this.ctx = ctx;
    this.mAccepted = ctx.metrics.counter('outpost_child_messages_total', 'Child telemetry messages accepted');
    this.mRejected = ctx.metrics.counter('outpost_child_rejected_total', 'Child telemetry messages refused', ['reason']);
    this.mStatus = ctx.metrics.counter('outpost_child_status_total', 'Child birth (online) and last-will/goodbye (offline) messages', ['state']);
    this.broker.intercept((msg) => this.onPublish(msg));
    this.broker.observe((msg) => this.onStatus(msg.topic, msg.payload));
    await Promise.resolve();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.allSettled([...this.inFlight]);
  }

  status(): Record<string, unknown> {
    const online = [...this.tracked].filter(([, d]) => d.online).map(([id]) => id);
    const offline = [...this.tracked].filter(([, d]) => !d.online).map(([id]) => id);
    return { accepted: this.accepted, rejected: this.rejected, online, offline };
  }

  /**
   * Birth and last will. `offline` (the device's will, or its own goodbye) turns every point it
   * reported into a `stale` reading that carries the last value; `online` is noted. Readings of
   * a device that comes back are good again with its next telemetry.
   */
  private onStatus(topic: string, payload: Buffer): void {
    const device = parseStatusTopic(topic);
    if (device === undefined || this.stopped || !this.ctx) return;
    if (this.opts.otherDevices?.has(device)) {
      this.refuse(device, 'driven-device', `device "${device}" is read by its own driver, not over MQTT`);
      return;
    }
    if (!this.opts.acceptUnknownDevices && !this.opts.devices.has(device)) {
      this.refuse(device, 'unknown-device', `device "${device}" is not in the site config`);
      return;
    }
    let parsed: z.ZodSafeParseResult<z.output<typeof childStatusSchema>>;
    try {
      parsed = childStatusSchema.safeParse(JSON.parse(payload.toString('utf8')));
    } catch (err) {
      this.refuse(device, 'status-not-json', `status payload is not JSON: ${errorMessage(err)}`);
      return;
    }
    if (!parsed.success) {
      this.refuse(device, 'status-schema', parsed.error.issues.map((i) => `${i.path.join('.') || '(payload)'}: ${i.message}`).join('; '));
      return;
    }
    const ctx = this.ctx;
    const state = this.deviceState(device);
    const online = parsed.data.state === 'online';
    this.mStatus.inc({ state: parsed.data.state });
    const was = state.online;
    state.online = online;
    state.since = parsed.data.ts ?? ctx.clock.now();
    ctx.log.info({ device, state: parsed.data.state }, 'child device status');
    if (online || !was) return;
    const ts = ctx.clock.now();
    const readings: Envelope[] = [];
    for (const [point, last] of state.last) {
      const { seq, id } = ctx.sequence.next();
      readings.push(makeEnvelope({ id, device, point, value: last.value, quality: 'stale', ts, seq, ...(last.unit ? { unit: last.unit } : {}) }));
    }
    if (readings.length === 0) return;
    const p = ctx.sink.submit(readings).catch((err: unknown) => ctx.log.error({ device, err: errorMessage(err) }, 'stale readings not stored'));
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  /**
   * Per-device state, bounded: beyond `maxTracked` devices (unknown devices may be accepted) a new
   * one is not tracked; its readings are still taken, its will makes nothing stale.
   */
  private deviceState(device: string): { online: boolean; since: number; last: Map<string, { value: Value; unit?: string | undefined }> } {
    let d = this.tracked.get(device);
    if (d) return d;
    d = { online: false, since: 0, last: new Map() };
    const max = this.opts.maxTracked ?? DEFAULT_MAX_TRACKED;
    if (this.tracked.size < max) this.tracked.set(device, d);
    else if (!this.trackingFull) {
      this.trackingFull = true;
      this.ctx?.log.warn({ device, max }, 'too many child devices to track online state (broker.limits.maxConnections); further ones are not tracked');
    }
    return d;
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
    // Defence in depth behind the broker's permissions: a device's telemetry comes from that device.
    // An external site broker does not say who published (clientId undefined): its ACLs answer for it.
    if (msg.clientId !== undefined && msg.clientId !== device) return this.refuse(device, 'not-own-topic', `client "${(msg.clientId ?? '').slice(0, 80)}" published on device "${device}"'s telemetry topic`);
    if (this.opts.otherDevices?.has(device)) return this.refuse(device, 'driven-device', `device "${device}" is read by its own driver, not over MQTT`);
    if (!this.opts.acceptUnknownDevices && !this.opts.devices.has(device)) {
      return this.refuse(device, 'unknown-device', `device "${device}" is not in the site config`);
    }
    let json: unknown;
    try {
      json = JSON.parse(msg.payload.toString('utf8'));
    } catch (err) {
      return this.refuse(device, 'not-json', `payload is not JSON: ${errorMessage(err)}`);
    }
    // The common shapes without zod; anything else (and every refusal) through the schema.
    let message = fastChildTelemetry(json);
    if (!message) {
      const parsed = childTelemetrySchema.safeParse(json);
      if (!parsed.success) {
        const why = parsed.error.issues.map((i) => `${i.path.join('.') || '(payload)'}: ${i.message}`).join('; ');
        return this.refuse(device, 'schema', why);
      }
      const { id, ts, points } = parsed.data;
      message = {
        ...(id !== undefined ? { id } : {}),
        ...(ts !== undefined ? { ts } : {}),
        points: Object.entries(points).map(([point, v]) => (v !== null && typeof v === 'object' ? { point, value: v.value, quality: v.quality } : { point, value: v, quality: 'good' as const })),
      };
    }
    const { id: messageId, ts = ctx.clock.now(), points: normalized } = message;
    // The device's own schema from the site config, when it declares one.
    const checks = this.checks.get(device);
    const spec = this.opts.devices.get(device);
    if (checks) {
      const problems: string[] = [];
      for (const r of normalized) {
        const check = checks.get(r.point);
        if (!check) {
          if (spec?.strict) problems.push(`points.${r.point}: not a point of device "${device}" (declared: ${[...checks.keys()].join(', ')})`);
          continue;
        }
        const res = check.safeParse({ value: r.value, quality: r.quality });
        if (!res.success) problems.push(...res.error.issues.map((i) => `points.${r.point}${i.path.length > 0 && i.path[0] !== 'value' ? `.${i.path.join('.')}` : ''}: ${i.message}`));
      }
      if (problems.length > 0) return this.refuse(device, 'device-schema', problems.join('; '));
    }
    const state = this.deviceState(device);
    // Telemetry is proof of life: a device that never sent a birth message is online too, so its
    // last will turns its points stale.
    state.online = true;
    const readings: Envelope[] = [];
    for (const { point, value, quality } of normalized) {
      const next = ctx.sequence.next();
      const id = messageId === undefined ? next.id : childReadingId(device, messageId, point);
      const unit = spec?.points?.[point]?.unit;
      readings.push(makeEnvelope({ id, device, point, value, quality, ts, seq: next.seq, ...(unit ? { unit } : {}) }));
      // At most MAX_TRACKED_POINTS point names per device are remembered for stale readings.
      if (state.last.has(point) || state.last.size < MAX_TRACKED_POINTS) state.last.set(point, { value: quality === 'bad' ? null : value, unit });
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
