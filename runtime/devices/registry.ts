import {
  childReportedSchema,
  childResponseSchema,
  childStatusSchema,
  errorMessage,
  resolveLeaf,
  twinTopics,
  TWIN_POINTS,
  type ChildDesired,
  type ChildDesiredPatch,
  type CloudDesired,
  type Clock,
  type Counter,
  type EdgeDesired,
  type Envelope,
  type Logger,
  type Metrics,
  type OutboxWriter,
  type Readings,
  type SequenceSource,
  type VersionedLeaf,
  type WriteResult,
  type WriteValue,
  isBatch,
} from '../contracts/index.js';
import { byPrecedence, compileConfiguration, compileTarget, effectiveDesired, type CompiledConfiguration, type Configuration, type DeviceFacts, type Effective } from './configurations.js';
import type { DeviceRow, DeviceStore, OutgoingRecord, TwinState } from './device-store.js';
import { applyPatch, checkDoc, diffDocs, flatten, pathsOverlap, sortKeys, TwinDocError, type Scalar, type TwinDoc } from './twin-doc.js';

/** A device entry of the site config as the registry needs it. */
export interface ConfiguredDevice {
  readonly id: string;
  readonly protocol: string;
  readonly model?: string | undefined;
  readonly firmware?: string | undefined;
  readonly labels?: Readonly<Record<string, string>> | undefined;
  /** Desired property path -> writable point of the device (a bound property). */
  readonly twin?: Readonly<Record<string, string>> | undefined;
}

export interface RegistryDeps {
  readonly gatewayId: string;
  readonly gatewayVersion: string;
  readonly store: DeviceStore;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly devices: readonly ConfiguredDevice[];
  readonly configurations: readonly Omit<Configuration, 'origin' | 'version'>[];
  /** Protocols whose devices speak MQTT to the gateway (they get desired state on their topics). */
  readonly childProtocol: string;
  readonly acceptUnknownDevices: boolean;
  readonly publishLocal: (topic: string, payload: string, qos: 0 | 1, retain: boolean) => Promise<void>;
  readonly write: (device: string, point: string, value: WriteValue) => Promise<WriteResult>;
  readonly outbox: OutboxWriter;
  /** The outbox stream of twin records, and how many of its records wait there. */
  readonly stream: string;
  readonly streamDepth: () => number;
  readonly sequence: SequenceSource;
}

/** A request that cannot be done: 404 for an unknown device, 400 for a bad document. */
export class RegistryError extends Error {
  override readonly name = 'RegistryError';
  constructor(
    readonly kind: 'unknown-device' | 'invalid' | 'conflict',
    message: string,
  ) {
    super(message);
  }
}

export interface ConfigurationStatus {
  readonly id: string;
  readonly origin: 'site' | 'cloud';
  readonly version: number;
  readonly priority: number;
  readonly target: string;
  readonly targeted: number;
  readonly applied: number;
  readonly pending: number;
  readonly failed: number;
}

const EVAL_CHUNK = 250;
const FLUSH_MS = 250;
const STATUS_MS = 1000;
const OUTGOING_PER_FLUSH = 1000;

/** Merges two waiting reported patches (RFC 7396 composition: the later one wins leaf by leaf). */
function mergePatches(a: string, b: string): string {
  const merge = (x: TwinDoc, y: TwinDoc): TwinDoc => {
    const out: TwinDoc = { ...x };
    for (const [k, v] of Object.entries(y)) {
      const old = out[k];
      out[k] = v !== null && typeof v === 'object' && old !== null && typeof old === 'object' ? merge(old, v) : v;
    }
    return out;
  };
  return JSON.stringify(merge(JSON.parse(a) as TwinDoc, JSON.parse(b) as TwinDoc));
}
const mergeVersioned = (a: string, b: string): string => JSON.stringify({ ...(JSON.parse(a) as EdgeDesired), ...(JSON.parse(b) as EdgeDesired) });

/**
 * The site's devices as one (docs/devices.md): the inventory (config entries, births, first
 * telemetry), a twin per device (direct desired edits with versions, reported state, the effective
 * desired document with its version), configurations evaluated continuously, and the records that
 * keep the cloud in step (coalesced while they wait). Desired state goes to MQTT children on their
 * topics (retained full document, then versioned patches) and to bound points of other devices as
 * verified writes.
 */
export class DeviceRegistry {
  private configurations: CompiledConfiguration[] = [];
  private readonly rows = new Map<string, DeviceRow>();
  private readonly states = new Map<string, TwinState>();
  private readonly bindings = new Map<string, ReadonlyMap<string, string>>();
  /** device -> point -> bound property path (readings of the point are its reported value). */
  private readonly boundPoints = new Map<string, Map<string, string>>();
  private readonly dirty = new Set<string>();
  private evaluating = false;
  private readonly lastSeen = new Map<string, number>();
  private readonly writing = new Set<string>();
  private timers: ReturnType<typeof setInterval>[] = [];
  private statusDirty = true;
  private readonly sentStatus = new Map<string, string>();
  private stopped = false;
  private flushing = false;
  private readonly onlineListeners: ((device: string) => void)[] = [];
  private readonly mRefused: Counter;
  private readonly mPublished: Counter;
  private readonly mWrites: Counter;

  constructor(private readonly deps: RegistryDeps) {
    this.mRefused = deps.metrics.counter('outpost_twin_refused_total', 'Twin messages and edits refused, by reason', ['reason']);
    this.mPublished = deps.metrics.counter('outpost_twin_desired_published_total', 'Desired documents and patches sent to child devices', ['kind']);
    this.mWrites = deps.metrics.counter('outpost_twin_bound_writes_total', 'Writes of bound desired properties, by outcome', ['outcome']);
  }

  // ---- lifecycle ----------------------------------------------------------------------------

  start(): void {
    const { store, clock, devices, gatewayId } = this.deps;
    const now = clock.now();
    for (const r of store.devices()) this.rows.set(r.id, r);
    for (const [id, s] of store.states()) this.states.set(id, s);
    store.transaction(() => {
      // The gateway itself, then every configured device, as the site config says now.
      this.upsert({ id: gatewayId, protocol: 'gateway', source: 'config', attributes: { model: 'outpost', firmware: this.deps.gatewayVersion }, labels: {} }, now, true);
      for (const d of devices) {
        const attributes: Record<string, string> = {};
        if (d.model) attributes.model = d.model;
        if (d.firmware) attributes.firmware = d.firmware;
        this.upsert({ id: d.id, protocol: d.protocol, source: 'config', attributes, labels: d.labels ?? {} }, now, false);
        if (d.twin) {
          this.bindings.set(d.id, new Map(Object.entries(d.twin)));
          this.boundPoints.set(d.id, new Map(Object.entries(d.twin).map(([path, point]) => [point, path])));
        }
      }
      // Configurations of the site config replace those it had at the last start.
      const site = new Map(this.deps.configurations.map((c) => [c.id, c]));
      for (const c of store.configurations()) if (c.origin === 'site' && !site.has(c.id)) store.deleteConfiguration(c.id);
      for (const c of site.values()) {
        const held = store.configurations().find((x) => x.id === c.id);
        store.putConfiguration({ ...c, origin: 'site', version: held?.origin === 'site' ? held.version + (JSON.stringify(held.desired) === JSON.stringify(c.desired) && held.target === c.target && held.priority === c.priority ? 0 : 1) : 1 });
      }
      this.queueReported(gatewayId, { outpost: { version: this.deps.gatewayVersion } }, now);
    });
    this.loadConfigurations();
    // The embedded broker's retained messages do not outlive the process: publish every child's
    // document again (same version: a device that holds it changes nothing).
    for (const [id, s] of this.states) if (this.isChild(id)) this.publishFull(id, s);
    for (const id of this.rows.keys()) this.dirty.add(id);
    this.schedule();
    const every = (ms: number, fn: () => void): void => {
      const t = setInterval(() => {
        try {
          fn();
        } catch (err) {
          this.deps.log.error({ err: errorMessage(err) }, 'device registry task failed');
        }
      }, ms);
      t.unref();
      this.timers.push(t);
    };
    every(FLUSH_MS, () => void this.flushOutgoing());
    every(STATUS_MS, () => this.reportStatus());
    every(5000, () => this.saveLastSeen());
    every(30_000, () => this.retryFailedWrites());
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    try {
      this.saveLastSeen();
    } catch (err) {
      this.deps.log.warn({ err: errorMessage(err) }, 'last-seen times not saved');
    }
  }

  onDeviceOnline(fn: (device: string) => void): void {
    this.onlineListeners.push(fn);
  }

  // ---- inventory ----------------------------------------------------------------------------

  private upsert(d: Pick<DeviceRow, 'id' | 'protocol' | 'source' | 'attributes' | 'labels'>, now: number, online: boolean): DeviceRow {
    const held = this.rows.get(d.id);
    const row: DeviceRow = {
      id: d.id,
      protocol: d.protocol,
      // The site config's word on a device wins; otherwise it keeps how it first came in.
      source: d.source === 'config' ? 'config' : (held?.source ?? d.source),
      attributes: { ...held?.attributes, ...d.attributes },
      labels: d.labels,
      tags: held?.tags ?? {},
      firstSeen: held?.firstSeen ?? now,
      lastSeen: held ? Math.max(held.lastSeen, online ? now : 0) : online ? now : 0,
      // An existing device's online state changes in setOnline only (it tells the waiting calls).
      online: held ? held.online : online,
    };
    if (held && JSON.stringify(held) === JSON.stringify(row)) return held;
    this.rows.set(row.id, row);
    this.deps.store.putDevice(row);
    if (!held || JSON.stringify({ ...held, lastSeen: 0 }) !== JSON.stringify({ ...row, lastSeen: 0 })) {
      this.queueInventory(row, now);
      this.dirty.add(row.id);
      this.statusDirty = true;
    }
    return row;
  }

  private setOnline(id: string, online: boolean, now: number): void {
    const row = this.rows.get(id);
    if (!row || row.online === online) return;
    const next = { ...row, online, lastSeen: online ? now : row.lastSeen };
    this.rows.set(id, next);
    this.deps.store.putDevice(next);
    this.queueInventory(next, now);
    this.dirty.add(id);
    this.schedule();
    if (online) for (const fn of this.onlineListeners) fn(id);
  }

  private isChild(id: string): boolean {
    return this.rows.get(id)?.protocol === this.deps.childProtocol;
  }

  online(id: string): boolean {
    return this.rows.get(id)?.online ?? false;
  }

  has(id: string): boolean {
    return this.rows.has(id);
  }

  protocolOf(id: string): string | undefined {
    return this.rows.get(id)?.protocol;
  }

  /** A child's birth or last will (its retained status topic). */
  onStatus(device: string, payload: Buffer): void {
    if (this.stopped) return;
    let status;
    try {
      status = childStatusSchema.parse(JSON.parse(payload.toString('utf8')));
    } catch {
      return; // the child intake refuses and counts it
    }
    const known = this.rows.get(device);
    if (!known && !this.deps.acceptUnknownDevices) return;
    if (known && known.protocol !== this.deps.childProtocol) return;
    const now = this.deps.clock.now();
    this.deps.store.transaction(() => {
      if (status.state === 'online') this.upsert({ id: device, protocol: this.deps.childProtocol, source: known?.source ?? 'birth', attributes: status.attributes ?? {}, labels: known?.labels ?? {} }, now, true);
      this.setOnline(device, status.state === 'online', now);
    });
    this.schedule();
  }

  /** Committed readings: last seen, online state of polled devices, and reported values of bound points. */
  onReadings(all: readonly Readings[]): void {
    if (this.stopped) return;
    const now = this.deps.clock.now();
    for (const readings of all) {
      if (isBatch(readings)) {
        this.seen(readings.device, now, readings.length > 0 && readings.at(0).quality === 'good');
        const bound = this.boundPoints.get(readings.device);
        if (bound) for (let k = 0; k < readings.length; k++) this.boundReading(readings.at(k), bound, now);
      } else {
        for (const r of readings) {
          this.seen(r.device, now, r.quality === 'good');
          const bound = this.boundPoints.get(r.device);
          if (bound) this.boundReading(r, bound, now);
        }
      }
    }
  }

  private seen(device: string, now: number, good: boolean): void {
    const row = this.rows.get(device);
    if (!row) {
      // A child that sends telemetry without a birth (only accepted unknown devices reach here:
      // readings of flows and OTA events go to the outbox directly, not through this tap).
      this.deps.store.transaction(() => this.upsert({ id: device, protocol: this.deps.childProtocol, source: 'telemetry', attributes: {}, labels: {} }, now, true));
      this.schedule();
      return;
    }
    this.lastSeen.set(device, now);
    if (row.protocol !== this.deps.childProtocol && row.online !== good) this.setOnline(device, good, now);
    else if (row.protocol === this.deps.childProtocol && !row.online && good) this.setOnline(device, true, now);
  }

  /** `device\u0000path` -> the value last reported for a bound property (its point is polled often). */
  private readonly boundValues = new Map<string, Scalar>();

  private boundReading(r: Envelope, bound: ReadonlyMap<string, string>, now: number): void {
    const path = bound.get(r.point);
    if (path === undefined || r.quality !== 'good') return;
    const key = `${r.device}\u0000${path}`;
    if (!this.boundValues.has(key)) {
      const held = this.deps.store.reported(r.device).get(path);
      if (held) this.boundValues.set(key, held.value);
    }
    if (this.boundValues.get(key) === r.value) return;
    this.boundValues.set(key, r.value);
    this.deps.store.putReported(r.device, new Map([[path, r.value]]), now);
    this.queueReported(r.device, this.leafPatch(path, r.value), now);
    this.statusDirty = true;
  }

  private saveLastSeen(): void {
    if (this.lastSeen.size === 0) return;
    const seen = [...this.lastSeen];
    this.lastSeen.clear();
    this.deps.store.transaction(() => {
      for (const [id, at] of seen) {
        this.deps.store.touch(id, at);
        const row = this.rows.get(id);
        if (row && row.lastSeen < at) this.rows.set(id, { ...row, lastSeen: at });
      }
    });
  }

  // ---- twins ------------------------------------------------------------------------------

  private leafPatch(path: string, value: Scalar): TwinDoc {
    const keys = path.split('.');
    let doc: TwinDoc = { [keys.at(-1)!]: value };
    for (let i = keys.length - 2; i >= 0; i--) doc = { [keys[i]!]: doc };
    return doc;
  }

  /**
   * A child's reported patch (intercepted before its PUBACK: committed here, synchronously).
   * Throws with a reason the caller counts and logs when the message is refused.
   */
  onReported(device: string, payload: Buffer): void {
    if (!this.rows.has(device)) throw new RegistryError('unknown-device', `device "${device}" is not in the inventory`);
    let msg;
    try {
      msg = childReportedSchema.parse(JSON.parse(payload.toString('utf8')));
    } catch (err) {
      this.mRefused.inc({ reason: 'reported-invalid' });
      throw new RegistryError('invalid', `reported: ${errorMessage(err)}`);
    }
    let patch: TwinDoc;
    try {
      patch = checkDoc(msg.reported, 'reported');
    } catch (err) {
      this.mRefused.inc({ reason: 'reported-invalid' });
      throw new RegistryError('invalid', errorMessage(err));
    }
    const now = this.deps.clock.now();
    this.deps.store.transaction(() => {
      this.deps.store.putReported(device, flatten(patch), now);
      const s = this.states.get(device);
      if (s && (msg.version !== undefined || msg.rejected !== undefined)) {
        const next: TwinState = { ...s, appliedVersion: msg.version ?? s.appliedVersion, rejected: msg.rejected ?? (msg.version !== undefined ? {} : s.rejected) };
        this.states.set(device, next);
        this.deps.store.putState(device, next);
      }
      if (Object.keys(patch).length > 0) this.queueReported(device, patch, now);
    });
    this.statusDirty = true;
  }

  /** A child's answer to a call; the caller settles the call. */
  parseResponse(payload: Buffer): { status: number; payload?: unknown } {
    return childResponseSchema.parse(JSON.parse(payload.toString('utf8')));
  }

  /** Direct desired edits made at the edge (API, CLI, a flow): a merge patch; null leaves remove a direct value. */
  editDesired(device: string, patchIn: unknown): TwinState {
    if (!this.rows.has(device)) throw new RegistryError('unknown-device', `no device "${device}" in the inventory`);
    let patch: TwinDoc;
    try {
      patch = checkDoc(patchIn, 'desired');
    } catch (err) {
      this.mRefused.inc({ reason: 'desired-invalid' });
      throw new RegistryError('invalid', err instanceof TwinDocError ? err.message : errorMessage(err));
    }
    const now = this.deps.clock.now();
    this.deps.store.transaction(() => {
      const direct = this.deps.store.direct(device);
      const up: EdgeDesired = {};
      for (const [path, value] of flatten(patch)) {
        // A leaf set replaces the direct leaves on its path; each change is a new version of its leaf.
        for (const [p, leaf] of direct) {
          if (p !== path && pathsOverlap(p, path) && leaf.value !== null) {
            const cleared = { value: null, version: leaf.version + 1 };
            this.deps.store.putDirect(device, p, cleared);
            up[p] = cleared;
          }
        }
        const leaf: VersionedLeaf = { value, version: (direct.get(path)?.version ?? 0) + 1 };
        this.deps.store.putDirect(device, path, leaf);
        up[path] = leaf;
      }
      if (Object.keys(up).length > 0) this.deps.store.queue(`${device}\u0000desired`, device, TWIN_POINTS.desired, JSON.stringify(up), now, mergeVersioned);
    });
    this.dirty.add(device);
    this.evaluateNow(device);
    return this.states.get(device)!;
  }

  /**
   * The cloud's copy of a device's direct edits (retained, sent again on every connection): merged
   * leaf by leaf with the edge's by the one conflict rule (resolveLeaf). Leaves the edge wins are
   * sent up again, so the cloud ends with the same document.
   */
  onCloudDesired(device: string, doc: CloudDesired): void {
    const now = this.deps.clock.now();
    const known = this.rows.get(device);
    this.deps.store.transaction(() => {
      if (!known) this.upsert({ id: device, protocol: this.deps.childProtocol, source: 'cloud', attributes: {}, labels: {} }, now, false);
      const direct = this.deps.store.direct(device);
      const up: EdgeDesired = {};
      for (const path of new Set([...direct.keys(), ...Object.keys(doc.props)])) {
        const edge = direct.get(path);
        const cloud = doc.props[path];
        const won = resolveLeaf(edge, cloud);
        if (!won) continue;
        if (won.from === 'cloud' && (edge?.value !== cloud!.value || edge.version !== cloud!.version)) this.deps.store.putDirect(device, path, won.leaf);
        else if (won.from === 'edge' && (cloud?.value !== edge!.value || cloud.version !== edge!.version)) up[path] = edge!;
      }
      if (Object.keys(up).length > 0) this.deps.store.queue(`${device}\u0000desired`, device, TWIN_POINTS.desired, JSON.stringify(up), now, mergeVersioned);
      if (doc.tags !== undefined) {
        const row = this.rows.get(device)!;
        if (JSON.stringify(row.tags) !== JSON.stringify(doc.tags)) {
          const next = { ...row, tags: doc.tags };
          this.rows.set(device, next);
          this.deps.store.putDevice(next);
          this.queueInventory(next, now);
        }
      }
    });
    this.dirty.add(device);
    this.schedule();
  }

  /**
   * Removes a device that left the site: its inventory entry and twin, its retained desired
   * document on the broker; the cloud gets an `$inventory` record `{"removed": true}`. A device of
   * the site config (or the gateway) is refused: remove it from the config. A device that comes back
   * joins again as new.
   */
  remove(id: string): void {
    const row = this.rows.get(id);
    if (!row) throw new RegistryError('unknown-device', `no device "${id}" in the inventory`);
    if (row.source === 'config') throw new RegistryError('conflict', `"${id}" is ${id === this.deps.gatewayId ? 'the gateway itself' : 'in the site config'}: remove it there`);
    const now = this.deps.clock.now();
    this.deps.store.transaction(() => {
      this.deps.store.removeDevice(id);
      this.deps.store.queue(`${id}\u0000inventory`, id, TWIN_POINTS.inventory, JSON.stringify({ removed: true }), now);
    });
    const child = this.isChild(id);
    this.rows.delete(id);
    this.states.delete(id);
    this.lastSeen.delete(id);
    this.dirty.delete(id);
    this.statusDirty = true;
    // An empty retained message clears the retained document [MQTT-3.3.1-10].
    if (child) this.deps.publishLocal(twinTopics.desired(id), '', 1, true).catch((err: unknown) => this.deps.log.warn({ device: id, err: errorMessage(err) }, 'retained desired document not cleared'));
  }

  /** Tags set by an operator (replacing the device's tags). */
  setTags(device: string, tags: Record<string, string | number | boolean>): void {
    const row = this.rows.get(device);
    if (!row) throw new RegistryError('unknown-device', `no device "${device}" in the inventory`);
    const next = { ...row, tags };
    const now = this.deps.clock.now();
    this.deps.store.transaction(() => {
      this.rows.set(device, next);
      this.deps.store.putDevice(next);
      this.queueInventory(next, now);
    });
    this.dirty.add(device);
    this.schedule();
  }

  // ---- configurations -----------------------------------------------------------------------

  private loadConfigurations(): void {
    const compiled: CompiledConfiguration[] = [];
    for (const c of this.deps.store.configurations()) {
      try {
        compiled.push(compileConfiguration(c));
      } catch (err) {
        this.deps.log.error({ configuration: c.id, err: errorMessage(err) }, 'stored configuration cannot be compiled; ignored');
      }
    }
    this.configurations = compiled.sort(byPrecedence);
    this.statusDirty = true;
  }

  /** A configuration from the cloud (retained); undefined removes it. Returns why it was refused, if it was. */
  onCloudConfiguration(id: string, c: Omit<Configuration, 'id' | 'origin'> | undefined): string | undefined {
    const held = this.deps.store.configurations().find((x) => x.id === id);
    if (held?.origin === 'site') return `configuration "${id}" is defined in the site config`;
    if (c === undefined) {
      if (!held) return undefined;
      this.deps.store.deleteConfiguration(id);
    } else {
      if (held && held.version > c.version) return `version ${c.version} is older than the one held (${held.version})`;
      if (held && held.version === c.version && JSON.stringify({ ...held, origin: 'cloud' }) === JSON.stringify({ ...c, id, origin: 'cloud' })) return undefined;
      try {
        compileConfiguration({ ...c, id, origin: 'cloud' });
      } catch (err) {
        return `target: ${errorMessage(err)}`;
      }
      this.deps.store.putConfiguration({ id, origin: 'cloud', version: c.version, target: c.target, desired: c.desired, priority: c.priority, labels: c.labels });
    }
    this.loadConfigurations();
    for (const d of this.rows.keys()) this.dirty.add(d);
    this.sentStatus.delete(id);
    this.schedule();
    return undefined;
  }

  configurationStatus(): ConfigurationStatus[] {
    const counts = new Map(this.configurations.map((c) => [c.id, { targeted: 0, applied: 0, pending: 0, failed: 0 }]));
    for (const row of this.rows.values()) {
      const s = this.states.get(row.id);
      const facts = this.facts(row);
      let reported: Map<string, { value: Scalar }> | undefined;
      for (const c of this.configurations) {
        if (!c.matches(facts)) continue;
        const n = counts.get(c.id)!;
        n.targeted++;
        const mine = s ? Object.entries(s.sources).filter(([, src]) => src === `configuration:${c.id}`).map(([p]) => p) : [...c.leaves.keys()];
        if (s && mine.some((p) => s.rejected[p] !== undefined)) n.failed++;
        else if (s && (s.appliedVersion >= s.version || mine.every((p) => (reported ??= this.deps.store.reported(row.id)).get(p)?.value === c.leaves.get(p)))) n.applied++;
        else n.pending++;
      }
    }
    return this.configurations.map((c) => ({ id: c.id, origin: c.origin, version: c.version, priority: c.priority, target: c.target, ...counts.get(c.id)! }));
  }

  private reportStatus(): void {
    if (!this.statusDirty || this.stopped) return;
    this.statusDirty = false;
    const now = this.deps.clock.now();
    const list = this.configurationStatus();
    this.deps.store.transaction(() => {
      for (const s of list) {
        const text = JSON.stringify({ version: s.version, targeted: s.targeted, applied: s.applied, pending: s.pending, failed: s.failed });
        if (this.sentStatus.get(s.id) === text) continue;
        this.sentStatus.set(s.id, text);
        this.deps.store.queue(`${this.deps.gatewayId}\u0000configuration\u0000${s.id}`, this.deps.gatewayId, TWIN_POINTS.configuration(s.id), text, now);
      }
    });
  }

  // ---- evaluation ---------------------------------------------------------------------------

  /** The devices target condition `target` selects now (throws ExpressionError for a bad condition). */
  targeted(target: string): string[] {
    const matches = compileTarget(target);
    return [...this.rows.values()].filter((r) => matches(this.facts(r))).map((r) => r.id).sort();
  }

  facts(row: DeviceRow): DeviceFacts {
    return { id: row.id, protocol: row.protocol, online: row.online, attributes: row.attributes, labels: row.labels, tags: row.tags };
  }

  private schedule(): void {
    if (this.evaluating || this.dirty.size === 0 || this.stopped) return;
    this.evaluating = true;
    setImmediate(() => {
      this.evaluating = false;
      const batch = [...this.dirty].slice(0, EVAL_CHUNK);
      try {
        this.deps.store.transaction(() => {
          for (const id of batch) this.evaluate(id);
        });
      } catch (err) {
        this.deps.log.error({ err: errorMessage(err) }, 'twin evaluation failed');
      }
      this.schedule();
    });
  }

  private evaluateNow(id: string): void {
    this.deps.store.transaction(() => this.evaluate(id));
  }

  effective(id: string): Effective | undefined {
    const row = this.rows.get(id);
    return row && effectiveDesired(this.facts(row), this.deps.store.direct(id), this.configurations);
  }

  /** Recomputes a device's effective desired document; a change gets the next version, is stored, then sent. */
  private evaluate(id: string): void {
    this.dirty.delete(id);
    const eff = this.effective(id);
    if (!eff) return;
    const held = this.states.get(id);
    const doc = sortKeys(eff.doc);
    const sources = Object.fromEntries([...eff.sources].sort(([a], [b]) => (a < b ? -1 : 1)));
    if (held && JSON.stringify(held.doc) === JSON.stringify(doc)) {
      if (JSON.stringify(held.sources) !== JSON.stringify(sources)) {
        const next = { ...held, sources };
        this.states.set(id, next);
        this.deps.store.putState(id, next);
        this.statusDirty = true;
      }
      return;
    }
    if (!held && Object.keys(doc).length === 0) return;
    const from = held?.version ?? 0;
    const next: TwinState = { version: from + 1, doc, sources, appliedVersion: held?.appliedVersion ?? 0, rejected: {} };
    this.states.set(id, next);
    this.deps.store.putState(id, next);
    this.statusDirty = true;
    // Sent once stored: after a crash the stored version is sent again, never a new one for the same content.
    if (this.isChild(id)) {
      const patch = diffDocs(held?.doc ?? {}, doc) ?? {};
      const p: ChildDesiredPatch = { version: next.version, from, patch };
      this.deps
        .publishLocal(twinTopics.desiredPatch(id), JSON.stringify(p), 1, false)
        .then(() => this.mPublished.inc({ kind: 'patch' }))
        .catch((err: unknown) => this.deps.log.warn({ device: id, err: errorMessage(err) }, 'desired patch not published'));
      this.publishFull(id, next);
    }
    const bound = this.bindings.get(id);
    if (bound) this.writeBound(id, bound, next);
  }

  private publishFull(id: string, s: TwinState): void {
    const full: ChildDesired = { version: s.version, desired: s.doc };
    this.deps
      .publishLocal(twinTopics.desired(id), JSON.stringify(full), 1, true)
      .then(() => this.mPublished.inc({ kind: 'full' }))
      .catch((err: unknown) => this.deps.log.warn({ device: id, err: errorMessage(err) }, 'desired document not published'));
  }

  /** Bound properties whose desired value differs from what the point reads: verified writes, one at a time per device. */
  private writeBound(id: string, bound: ReadonlyMap<string, string>, s: TwinState): void {
    if (this.writing.has(id) || this.stopped) return;
    const desired = flatten(s.doc);
    const reported = this.deps.store.reported(id);
    const todo = [...bound].filter(([path]) => desired.has(path) && desired.get(path) !== null && reported.get(path)?.value !== desired.get(path));
    if (todo.length === 0) return;
    this.writing.add(id);
    const run = async (): Promise<void> => {
      const rejected: Record<string, string> = {};
      for (const [path, point] of todo) {
        const value = desired.get(path) as WriteValue;
        try {
          const r = await this.deps.write(id, point, value);
          this.mWrites.inc({ outcome: 'written' });
          const now = this.deps.clock.now();
          this.boundValues.set(`${id}\u0000${path}`, r.readBack);
          this.deps.store.putReported(id, new Map([[path, r.readBack]]), now);
          this.queueReported(id, this.leafPatch(path, r.readBack), now);
          if (r.clampedFrom !== undefined) rejected[path] = `clamped to ${String(r.value)} (the point's range)`;
        } catch (err) {
          this.mWrites.inc({ outcome: 'failed' });
          rejected[path] = errorMessage(err);
          this.deps.log.warn({ device: id, point, path, err: rejected[path] }, 'bound desired property not written');
        }
      }
      const now = this.states.get(id);
      if (now && now.version === s.version) {
        const next = { ...now, rejected, appliedVersion: Object.keys(rejected).length === 0 ? s.version : now.appliedVersion };
        this.states.set(id, next);
        this.deps.store.putState(id, next);
      }
      this.statusDirty = true;
    };
    run()
      .catch((err: unknown) => this.deps.log.error({ device: id, err: errorMessage(err) }, 'bound writes failed'))
      .finally(() => {
        this.writing.delete(id);
        // The document changed while writing: write what it says now.
        const latest = this.states.get(id);
        if (latest && latest.version !== s.version && !this.stopped) this.writeBound(id, bound, latest);
      });
  }

  private retryFailedWrites(): void {
    for (const [id, bound] of this.bindings) {
      const s = this.states.get(id);
      if (s && Object.keys(s.rejected).length > 0) this.writeBound(id, bound, s);
    }
  }

  // ---- records for the cloud ----------------------------------------------------------------

  private queueReported(device: string, patch: TwinDoc, now: number): void {
    this.deps.store.queue(`${device}\u0000reported`, device, TWIN_POINTS.reported, JSON.stringify(patch), now, mergePatches);
  }

  private queueInventory(row: DeviceRow, now: number): void {
    const entry = { protocol: row.protocol, source: row.source, attributes: row.attributes, labels: row.labels, tags: row.tags, online: row.online, firstSeen: row.firstSeen };
    this.deps.store.queue(`${row.id}\u0000inventory`, row.id, TWIN_POINTS.inventory, JSON.stringify(entry), now);
  }

  /** A call's answer for the cloud. */
  queueCallAnswer(device: string, id: string, answer: Record<string, unknown>): void {
    this.deps.store.queue(`${device}\u0000call\u0000${id}`, device, TWIN_POINTS.call(id), JSON.stringify(answer), this.deps.clock.now());
  }

  /**
   * Hands waiting records to the outbox once the stream holds none of the last ones: while the
   * link is down, a property that keeps changing waits here as its latest value only.
   */
  async flushOutgoing(): Promise<void> {
    if (this.flushing || this.stopped) return;
    this.waiting = this.deps.store.outgoingCount();
    if (this.deps.streamDepth() > 0) return;
    const records = this.deps.store.outgoing(OUTGOING_PER_FLUSH);
    if (records.length === 0) return;
    this.flushing = true;
    try {
      await this.deps.outbox.append(records.map((r) => ({ stream: this.deps.stream, envelope: this.envelope(r) })));
      this.deps.store.taken(records);
      this.waiting = this.deps.store.outgoingCount();
    } catch (err) {
      this.deps.log.warn({ err: errorMessage(err) }, 'twin records not handed to the outbox; kept for the next try');
    } finally {
      this.flushing = false;
    }
  }

  private envelope(r: OutgoingRecord): Envelope {
    const { seq, id } = this.deps.sequence.next();
    return Object.freeze({ id, device: r.device, point: r.point, value: r.value, quality: 'good' as const, ts: r.at, seq });
  }

  /** Records waiting to go up, as of the last flush (status is answered also after stop). */
  private waiting = 0;

  // ---- views --------------------------------------------------------------------------------

  list(): Array<DeviceRow & { desiredVersion: number; appliedVersion: number; configurations: readonly string[] }> {
    return [...this.rows.values()]
      .sort((a, b) => (a.id < b.id ? -1 : 1))
      .map((r) => {
        const s = this.states.get(r.id);
        const facts = this.facts(r);
        return { ...r, lastSeen: this.lastSeen.get(r.id) ?? r.lastSeen, desiredVersion: s?.version ?? 0, appliedVersion: s?.appliedVersion ?? 0, configurations: this.configurations.filter((c) => c.matches(facts)).map((c) => c.id) };
      });
  }

  show(id: string): Record<string, unknown> {
    const row = this.rows.get(id);
    if (!row) throw new RegistryError('unknown-device', `no device "${id}" in the inventory`);
    const s = this.states.get(id);
    const rep = this.deps.store.reported(id);
    const direct = this.deps.store.direct(id);
    const nested = (leaves: Iterable<readonly [string, Scalar]>): TwinDoc => {
      let doc: TwinDoc = {};
      for (const [p, v] of leaves) doc = applyPatch(doc, this.leafPatch(p, v));
      return doc;
    };
    return {
      ...row,
      lastSeen: this.lastSeen.get(id) ?? row.lastSeen,
      desired: { version: s?.version ?? 0, document: s?.doc ?? {} },
      applied: { version: s?.appliedVersion ?? 0, rejected: s?.rejected ?? {} },
      direct: Object.fromEntries([...direct].filter(([, l]) => l.value !== null)),
      reported: nested([...rep].map(([p, r]) => [p, r.value] as const)),
      bindings: Object.fromEntries(this.bindings.get(id) ?? []),
      configurations: this.configurations.filter((c) => c.matches(this.facts(row))).map((c) => c.id),
    };
  }

  /** Each effective property, what set it, what it overrode, and what the device reports for it. */
  explain(id: string): Array<{ path: string; value: Scalar; source: string; overrides: readonly { source: string; value: Scalar }[]; reported: Scalar | undefined; inSync: boolean; rejected?: string }> {
    const eff = this.effective(id);
    if (!eff) throw new RegistryError('unknown-device', `no device "${id}" in the inventory`);
    const rep = this.deps.store.reported(id);
    const s = this.states.get(id);
    return [...flatten(eff.doc)].map(([path, value]) => {
      const reported = rep.get(path)?.value;
      const rejected = s?.rejected[path];
      return { path, value, source: eff.sources.get(path)!, overrides: eff.shadowed.get(path) ?? [], reported, inSync: reported === value, ...(rejected ? { rejected } : {}) };
    });
  }

  status(): Record<string, unknown> {
    const rows = [...this.rows.values()];
    return {
      count: rows.length,
      online: rows.filter((r) => r.online).length,
      configurations: this.configurations.length,
      waitingRecords: this.waiting,
      evaluating: this.dirty.size,
    };
  }
}
