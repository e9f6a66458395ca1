import type { z } from 'zod';
import type { Component, ComponentContext } from './component.js';
import type { Value } from './envelope.js';
import type { ReadingSink, SequenceSource } from './ingest.js';
import type { LocalBroker } from './local-broker.js';

export interface DriverContext extends ComponentContext {
  readonly sink: ReadingSink;
  readonly sequence: SequenceSource;
}

/** A value a point can be written with. */
export type WriteValue = number | boolean | string;

/** What a verified write did: the value asked for and the value the device holds now. */
export interface WriteResult {
  readonly device: string;
  readonly point: string;
  readonly value: Value;
  /** Read back from the device after the write; equal to `value` as the point decodes it. */
  readonly readBack: Value;
  /** The value asked for, when it was outside the point's range and `value` is it clamped. */
  readonly clampedFrom?: number;
}

/**
 * The write capability of a driver: a verified write. It resolves only after the value was sent,
 * read back from the device and found equal; it rejects with WriteRefused when nothing was sent
 * (see `kind`), and with another error when the device refused, did not answer or holds another
 * value afterwards.
 */
export interface PointWriter {
  write(device: string, point: string, value: WriteValue): Promise<WriteResult>;
}

/** Why a write was refused before anything was sent to the device. */
export type WriteRefusal = 'unknown-device' | 'unknown-point' | 'not-writable' | 'invalid-value' | 'busy';

export class WriteRefused extends Error {
  override readonly name = 'WriteRefused';
  constructor(
    readonly kind: WriteRefusal,
    message: string,
  ) {
    super(message);
  }
}

/**
 * A southbound driver: a Component whose `start` takes the ingest sink and the sequence. Lifecycle
 * (see Component): construct with validated config -> `start(ctx)` (connect, begin polling or
 * subscribing; must not throw for an unreachable device, which is retried with backoff and
 * reported with quality `bad` or `stale`) -> `stop()` (stop intake, wait for in-flight readings to
 * be submitted, release connections and timers).
 *
 * Optional capabilities, declared by the protocol's registry entry:
 * - `write`: `devices` names the devices it serves and `write` writes one of their points.
 */
export interface Driver extends Component {
  start(ctx: DriverContext): Promise<void>;
  /** The devices this driver serves (for routing writes to it). */
  readonly devices?: readonly string[];
  write?(device: string, point: string, value: WriteValue): Promise<WriteResult>;
}

/** One device entry of the site config, as every protocol's schema shapes it. */
export interface DeviceConfig {
  readonly id: string;
  readonly protocol: string;
}

/** What the site gives a protocol's drivers besides their devices. */
export interface DriverEnvironment {
  /** The gateway's MQTT broker for child devices. */
  readonly localBroker: LocalBroker;
  /** Take data from devices the site config does not list (protocols where devices announce themselves). */
  readonly acceptUnknownDevices: boolean;
  /**
   * Devices of other protocols (read by their own drivers): their readings never come from
   * another source, whatever `acceptUnknownDevices` says.
   */
  readonly otherDevices?: ReadonlySet<string> | undefined;
  /**
   * How many children may be connected at once (`broker.limits.maxConnections`): per-device state
   * that is bounded for memory is sized for at least this many devices.
   */
  readonly maxChildren?: number | undefined;
}

/** A config problem found across the devices of one protocol: device index and field path. */
export type DeviceIssue = (index: number, path: readonly (string | number)[], message: string) => void;

/**
 * A protocol as the gateway knows it: registered once by name (`protocol` in a device entry of the
 * site config). Adding a protocol is one entry in the registry (drivers/index.ts) and the files of
 * its folder; nothing else names it.
 */
export interface ProtocolEntry<C extends DeviceConfig = DeviceConfig> {
  readonly protocol: string;
  /** The device entry of the site config, with `protocol: z.literal(<protocol>)`; defaults filled. */
  readonly schema: z.ZodObject & z.ZodType<C>;
  readonly capabilities: {
    readonly write: boolean;
    /**
     * Its devices connect to the gateway's MQTT broker under their own identity. A device of a
     * protocol without it (a Modbus PLC) can never be an MQTT identity: its readings come from its
     * driver only, so no MQTT client can speak for it.
     */
    readonly brokerIdentity?: boolean;
  };
  /**
   * A device's points, as the config checks need them (a rule that writes needs a writable point),
   * with the range every write to the point is clamped to, when the config gives one.
   */
  points(device: C): readonly { readonly name: string; readonly writable: boolean; readonly range?: { readonly min: number; readonly max: number } }[];
  /** Checks that span devices of this protocol (devices on one serial line share its settings). */
  checkDevices?(devices: readonly { readonly index: number; readonly device: C }[], issue: DeviceIssue): void;
  /**
   * The drivers for the configured devices of this protocol (all of them, in config order), or none.
   * Called also with no device configured: a protocol whose devices announce themselves (MQTT
   * children) still has a driver then.
   */
  create(devices: readonly C[], env: DriverEnvironment): readonly Driver[];
}
