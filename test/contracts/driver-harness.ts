import {
  isBatch,
  systemClock,
  type Driver,
  type DriverContext,
  type DriverEnvironment,
  type Envelope,
  type LocalBroker,
  type ProtocolEntry,
  type Readings,
  type ReadingSink,
  type SequenceSource,
  type Value,
  type WriteValue,
} from '../../runtime/contracts/index.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { CountingSequence } from '../../runtime/sequence.js';
import { silentLogger } from '../helpers/fakes.js';
import { OwnedResources } from './owned-resources.js';

/**
 * One device of a protocol under test and the peer behind it (a Modbus server, a child on the
 * local broker, a register file), for one test of the driver contract.
 */
export interface DeviceUnderTest {
  /** The protocol's registry entry: the suite builds drivers through its `create()` only. */
  readonly protocol: ProtocolEntry;
  /** Device entries as a site config gives them; the suite validates them with the protocol's schema. */
  readonly devices: readonly Record<string, unknown>[];
  readonly env: DriverEnvironment;
  /** The id of the device the suite takes away and brings back. */
  readonly device: string;
  /** Makes the device reachable: listening and answering, or connected and publishing. */
  reachable(): Promise<void>;
  /** Takes it away while the driver runs: a slave that stops answering, a child gone with its will. */
  unreachable(): Promise<void>;
  /** What point `point` holds in the device itself (protocols with the write capability). */
  held?(point: string): Value;
  /** Releases the peer; called after the drivers stopped. */
  close(): Promise<void>;
}

/** A protocol implementation as the driver contract runs it. */
export interface DriverImplementation {
  /**
   * Sets up the peer. Not reachable: nothing listening, or a child that never connects (the
   * device stays so until `reachable()`).
   */
  setup(opts: { readonly reachable: boolean }): Promise<DeviceUnderTest>;
  /**
   * What the driver reports of a device it never reached: bad or stale readings of its points
   * (`reported`), or nothing, when the protocol learns a device's points from the device itself
   * (`unknown`, MQTT children).
   */
  readonly neverReached: 'reported' | 'unknown';
  /** For protocols with the write capability: a writable point, a value and what reads back, a read-only point. */
  readonly write?: { readonly point: string; readonly value: WriteValue; readonly readBack: Value; readonly readOnlyPoint: string };
}

/** The broker for protocols that use none: any use of it is a fault of the driver. */
export const noBroker: LocalBroker = {
  intercept: () => {
    throw new Error('this protocol does not use the local broker');
  },
  observe: () => {
    throw new Error('this protocol does not use the local broker');
  },
};

/** What drivers handed over, reading by reading; `hold()` keeps submissions pending until `release()`. */
export class RecordingSink implements ReadingSink {
  readonly submissions: Readings[] = [];
  readonly readings: Envelope[] = [];
  /** Submissions not yet resolved. */
  pending = 0;
  private gate: Promise<void> | undefined;
  private open: (() => void) | undefined;

  submit(readings: Readings): Promise<void> {
    this.submissions.push(readings);
    for (const r of readings) this.readings.push(r);
    if (!this.gate) return Promise.resolve();
    this.pending++;
    return this.gate.then(() => {
      this.pending--;
    });
  }

  hold(): void {
    this.gate ??= new Promise((resolve) => (this.open = resolve));
  }

  release(): void {
    this.open?.();
    this.gate = undefined;
  }
}

export const ID_PREFIX = 'contract:';

/** A sequence that remembers what it issued, so that a reading's id and seq can be traced to it. */
export class RecordingSequence implements SequenceSource {
  private readonly inner = new CountingSequence(ID_PREFIX);
  private readonly runs: Array<{ seq0: number; n: number }> = [];

  next(): { seq: number; id: string } {
    const r = this.inner.next();
    this.runs.push({ seq0: r.seq, n: 1 });
    return r;
  }

  reserve(n: number): { seq0: number; idPrefix: string } {
    const r = this.inner.reserve(n);
    this.runs.push({ seq0: r.seq0, n });
    return r;
  }

  issued(seq: number): boolean {
    return this.runs.some((r) => seq >= r.seq0 && seq < r.seq0 + r.n);
  }
}

/** The drivers of one device under test, built through the protocol's registry entry. */
export class DriversUnderTest {
  readonly sink = new RecordingSink();
  readonly sequence = new RecordingSequence();
  /** Timers and sockets the drivers open. */
  readonly owned = new OwnedResources();
  readonly drivers: readonly Driver[];
  private readonly ctx: DriverContext;

  constructor(readonly t: DeviceUnderTest) {
    const devices = t.devices.map((raw) => t.protocol.schema.parse(raw));
    this.drivers = this.owned.run(() => t.protocol.create(devices, t.env));
    this.ctx = { sink: this.sink, sequence: this.sequence, clock: systemClock, log: silentLogger, metrics: new PromMetrics() };
  }

  async start(): Promise<void> {
    for (const d of this.drivers) await this.owned.run(() => d.start(this.ctx));
  }

  /** Stops the drivers in reverse order, as the gateway does. */
  async stop(): Promise<void> {
    for (const d of [...this.drivers].reverse()) await this.owned.run(() => d.stop());
  }

  /** Readings of the device under test. */
  readings(from = 0): Envelope[] {
    return this.sink.readings.slice(from).filter((r) => r.device === this.t.device);
  }

  good(from = 0): Envelope[] {
    return this.readings(from).filter((r) => r.quality === 'good');
  }

  /** The driver that writes the device under test. */
  writer(): Driver & Required<Pick<Driver, 'write'>> {
    const d = this.drivers.find((x) => x.devices?.includes(this.t.device));
    if (!d?.write) throw new Error(`no driver with the write capability serves "${this.t.device}"`);
    return d as Driver & Required<Pick<Driver, 'write'>>;
  }

  /** What the submissions were: an array of Envelopes, or a ReadingBatch. */
  shapes(): Array<'envelopes' | 'batch' | 'other'> {
    return this.sink.submissions.map((s) => (isBatch(s) ? 'batch' : Array.isArray(s) ? 'envelopes' : 'other'));
  }
}
