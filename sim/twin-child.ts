import mqtt, { type MqttClient } from 'mqtt';
import { applyMergePatch, twinTopics, type ChildCall, type ChildDesired, type ChildDesiredPatch } from '../runtime/contracts/index.js';

export interface SimTwinChildOptions {
  /** The gateway's local broker. */
  readonly url: string;
  readonly deviceId: string;
  readonly password?: string;
  /** What its birth says it is (model, firmware…). */
  readonly attributes?: Readonly<Record<string, string>>;
  /** Answers calls with `{status: 200, payload: {method, echo}}` (default), or not at all. */
  readonly answerCalls?: boolean;
  /** Called each time it applies a desired version (benchmarks time it). */
  readonly onApply?: (version: number, desired: Readonly<Record<string, unknown>>) => void;
}

type Doc = Record<string, unknown>;


/**
 * A child device that follows the twin contract (docs/devices.md): a persistent session, a birth
 * with its attributes, the retained desired document and its versioned patches applied in order
 * (a patch only onto the version it was made from, a document only when newer), every applied
 * version reported back with the document as its reported state, and reported again on every
 * connection.
 */
export class SimTwinChild {
  private client: MqttClient | undefined;
  version = 0;
  desired: Doc = {};
  /** Every version it applied, in order, and how (a version never appears twice). */
  readonly applied: Array<{ version: number; via: 'document' | 'patch' }> = [];
  /** Messages it ignored because it held that version or a newer one already. */
  ignored = 0;
  readonly calls: ChildCall[] = [];

  constructor(private readonly opts: SimTwinChildOptions) {}

  get id(): string {
    return this.opts.deviceId;
  }

  get connected(): boolean {
    return this.client?.connected ?? false;
  }

  /** Connects (resuming its session) and announces itself. */
  async start(url = this.opts.url): Promise<void> {
    const id = this.opts.deviceId;
    const client = mqtt.connect(url, {
      clientId: id,
      ...(this.opts.password !== undefined ? { username: id, password: this.opts.password } : {}),
      clean: false,
      reconnectPeriod: 500,
      reconnectOnConnackError: true,
      connectTimeout: 10_000,
      keepalive: 30,
      will: { topic: `outpost/v1/dev/${id}/status`, payload: Buffer.from('{"state":"offline"}'), qos: 1, retain: true },
    });
    this.client = client;
    client.on('error', () => undefined);
    client.on('message', (topic, payload) => this.onMessage(topic, payload));
    client.on('connect', (ack) => {
      // A kept session keeps its subscriptions; a new one subscribes. The birth goes out every time.
      const subscribed = ack.sessionPresent ? Promise.resolve() : client.subscribeAsync([`outpost/v1/dev/${id}/desired/#`, `outpost/v1/dev/${id}/cmd/#`], { qos: 1 }).then(() => undefined);
      // After the birth, what it runs: a report sent before a connection broke may never have arrived.
      subscribed
        .then(() => client.publishAsync(`outpost/v1/dev/${id}/status`, JSON.stringify({ state: 'online', attributes: this.opts.attributes ?? {} }), { qos: 1, retain: true }))
        .then(() => (this.version > 0 ? client.publishAsync(twinTopics.reported(id), JSON.stringify({ version: this.version, reported: this.desired }), { qos: 1 }) : undefined))
        .catch(() => undefined);
    });
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
  }

  private onMessage(topic: string, payload: Buffer): void {
    const id = this.opts.deviceId;
    let body: unknown;
    try {
      body = JSON.parse(payload.toString('utf8'));
    } catch {
      return;
    }
    if (topic === twinTopics.desired(id)) {
      const d = body as ChildDesired;
      if (d.version <= this.version) this.ignored++;
      else this.apply(d.version, d.desired, 'document');
    } else if (topic === twinTopics.desiredPatch(id)) {
      const p = body as ChildDesiredPatch;
      // Only onto the version it was made from; a gap is closed by the retained document.
      if (p.from !== this.version) this.ignored++;
      else this.apply(p.version, applyMergePatch(this.desired, p.patch), 'patch');
    } else if (topic.startsWith(`outpost/v1/dev/${id}/cmd/`)) {
      const call = body as ChildCall;
      this.calls.push(call);
      if (this.opts.answerCalls !== false) {
        const answer = { status: 200, payload: { method: topic.slice(topic.lastIndexOf('/') + 1), echo: call.payload ?? null } };
        this.client?.publish(twinTopics.response(id, call.id), JSON.stringify(answer), { qos: 1 });
      }
    }
  }

  private apply(version: number, doc: Doc, via: 'document' | 'patch'): void {
    this.version = version;
    this.desired = doc;
    this.applied.push({ version, via });
    this.opts.onApply?.(version, doc);
    // Reported: the whole document (a merge patch that also removes what was dropped is not
    // needed here: the simulated device reports what it runs).
    this.client?.publish(twinTopics.reported(this.opts.deviceId), JSON.stringify({ version, reported: doc }), { qos: 1 });
  }

  /** One telemetry message (QoS 1), as any child sends readings. */
  async telemetry(points: Record<string, number | boolean | string>): Promise<void> {
    await this.client?.publishAsync(`outpost/v1/dev/${this.opts.deviceId}/telemetry`, JSON.stringify({ points }), { qos: 1 });
  }

  /** Reports a change of its own (a measured property), as a merge patch. */
  async report(patch: Doc): Promise<void> {
    await this.client?.publishAsync(twinTopics.reported(this.opts.deviceId), JSON.stringify({ reported: patch }), { qos: 1 });
  }

  /** Goes away without a goodbye (its will says offline); its session stays on the broker. */
  async kill(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client) await new Promise<void>((resolve) => client.end(true, {}, () => resolve()));
  }
}
