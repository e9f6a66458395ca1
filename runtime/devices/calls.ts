import { randomBytes } from 'node:crypto';
import { twinTopics, type ChildCall, type Clock, type Counter, type Metrics } from '../contracts/index.js';

/** Why a call did not get an answer from the device. */
export type CallFailure = 'unknown-device' | 'not-callable' | 'offline' | 'timeout' | 'busy' | 'too-large' | 'stopping';

export class CallError extends Error {
  override readonly name = 'CallError';
  constructor(
    readonly kind: CallFailure,
    message: string,
  ) {
    super(message);
  }
}

export interface CallRequest {
  readonly device: string;
  readonly method: string;
  readonly payload?: unknown;
  readonly timeoutMs: number;
  /** Wait for an offline device until the deadline instead of failing at once. */
  readonly wait: boolean;
  /** The caller's correlation id; one is made when not given. */
  readonly id?: string | undefined;
}

export interface CallAnswer {
  readonly id: string;
  readonly status: number;
  readonly payload?: unknown;
  readonly ms: number;
}

export interface CallLimits {
  readonly perDevice: number;
  readonly perSite: number;
  readonly payloadBytes: number;
}

export const DEFAULT_CALL_LIMITS: CallLimits = { perDevice: 4, perSite: 256, payloadBytes: 8 * 1024 };

interface Pending {
  readonly device: string;
  readonly started: number;
  readonly resolve: (a: CallAnswer) => void;
  readonly reject: (e: Error) => void;
  timer: ReturnType<Clock['setTimeout']> | undefined;
  waiting: boolean;
  readonly topic: string;
  readonly body: string;
}

/**
 * Direct method calls to child devices (docs/devices.md, "Calls"): the call is published on the
 * device's `cmd/{method}` topic with a correlation id and a deadline; the device's answer on
 * `response/{id}` settles it. A call to an offline device fails at once unless it asks to wait
 * (then it is sent when the device comes online, if before the deadline). Bounded per device and
 * per site; a payload over the limit is refused before anything is sent.
 */
export class Calls {
  private readonly pending = new Map<string, Pending>();
  private readonly perDevice = new Map<string, number>();
  private stopped = false;
  private readonly mCalls: Counter;

  constructor(
    private readonly deps: {
      readonly clock: Clock;
      readonly metrics: Metrics;
      readonly limits: CallLimits;
      /** Whether the device exists and can be called (an MQTT child); throws CallError otherwise. */
      readonly check: (device: string) => void;
      readonly online: (device: string) => boolean;
      readonly publish: (topic: string, payload: string) => Promise<void>;
    },
  ) {
    this.mCalls = deps.metrics.counter('outpost_device_calls_total', 'Method calls to child devices by outcome', ['outcome']);
  }

  get inFlight(): number {
    return this.pending.size;
  }

  call(req: CallRequest): Promise<CallAnswer> {
    const { clock, limits } = this.deps;
    if (this.stopped) return Promise.reject(new CallError('stopping', 'the gateway is stopping'));
    try {
      this.deps.check(req.device);
    } catch (err) {
      this.mCalls.inc({ outcome: err instanceof CallError ? err.kind : 'error' });
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    const id = req.id ?? randomBytes(8).toString('hex');
    const deadline = clock.now() + req.timeoutMs;
    const call: ChildCall = { id, deadline, ...(req.payload === undefined ? {} : { payload: req.payload }) };
    const body = JSON.stringify(call);
    const fail = (kind: CallFailure, message: string): Promise<never> => {
      this.mCalls.inc({ outcome: kind });
      return Promise.reject(new CallError(kind, message));
    };
    if (Buffer.byteLength(body) > limits.payloadBytes) return fail('too-large', `payload: over ${limits.payloadBytes} bytes`);
    if (this.pending.has(id)) return fail('busy', `a call with id "${id}" is in flight`);
    if ((this.perDevice.get(req.device) ?? 0) >= limits.perDevice) return fail('busy', `"${req.device}" has ${limits.perDevice} calls in flight (the limit per device)`);
    if (this.pending.size >= limits.perSite) return fail('busy', `${limits.perSite} calls in flight on the site (the limit)`);
    const online = this.deps.online(req.device);
    if (!online && !req.wait) return fail('offline', `"${req.device}" is offline (ask to wait until the deadline to queue the call)`);
    return new Promise<CallAnswer>((resolve, reject) => {
      const p: Pending = { device: req.device, started: clock.now(), resolve, reject, timer: undefined, waiting: !online, topic: twinTopics.call(req.device, req.method), body };
      this.pending.set(id, p);
      this.perDevice.set(req.device, (this.perDevice.get(req.device) ?? 0) + 1);
      p.timer = clock.setTimeout(() => this.settle(id, new CallError('timeout', `no answer from "${req.device}" within ${req.timeoutMs} ms${p.waiting ? ' (it stayed offline)' : ''}`)), req.timeoutMs);
      if (online) this.send(id, p);
    });
  }

  /** The device came online: send the calls that wait for it. */
  deviceOnline(device: string): void {
    for (const [id, p] of this.pending) {
      if (p.device !== device || !p.waiting) continue;
      p.waiting = false;
      this.send(id, p);
    }
  }

  /** A device's answer; false when no call with that id from that device is in flight. */
  answer(device: string, id: string, status: number, payload: unknown): boolean {
    const p = this.pending.get(id);
    if (!p || p.device !== device) return false;
    this.settle(id, { id, status, ms: this.deps.clock.now() - p.started, ...(payload === undefined ? {} : { payload }) });
    return true;
  }

  stop(): void {
    this.stopped = true;
    for (const id of [...this.pending.keys()]) this.settle(id, new CallError('stopping', 'the gateway is stopping'));
  }

  private send(id: string, p: Pending): void {
    this.deps.publish(p.topic, p.body).catch((err: unknown) => this.settle(id, err instanceof Error ? err : new Error(String(err))));
  }

  private settle(id: string, outcome: CallAnswer | Error): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    const n = (this.perDevice.get(p.device) ?? 1) - 1;
    if (n <= 0) this.perDevice.delete(p.device);
    else this.perDevice.set(p.device, n);
    if (p.timer !== undefined) this.deps.clock.clearTimeout(p.timer);
    if (outcome instanceof Error) {
      this.mCalls.inc({ outcome: outcome instanceof CallError ? outcome.kind : 'error' });
      p.reject(outcome);
    } else {
      this.mCalls.inc({ outcome: 'answered' });
      p.resolve(outcome);
    }
  }
}
