import { deriveDeviceKey } from '../runtime/contracts/index.js';
import { SimChildDevice } from './child-device.js';
import { profiles, SimModbusSlave, type SimPoint } from './modbus-slave.js';
import type { SignalSpec } from './signals.js';

export interface SiteSpec {
  /** Energy meters (Modbus TCP slaves). */
  readonly meters: number;
  /** Boiler controllers (Modbus TCP slaves). */
  readonly boilers: number;
  /** MQTT child devices (pumps). */
  readonly children: number;
  readonly childIntervalMs: number;
  readonly pollIntervalMs: number;
}

/** A Modbus device entry of the site config (docs/config.md), as the sim describes its slaves. */
export interface ModbusDeviceEntry {
  readonly id: string;
  readonly protocol: 'modbus-tcp';
  readonly host: string;
  readonly port: number;
  readonly unitId: number;
  readonly pollIntervalMs: number;
  readonly timeoutMs: number;
  readonly points: ModbusPointEntry[];
}

export interface ModbusPointEntry {
  name: string;
  table: SimPoint['table'];
  address: number;
  type: SimPoint['type'];
  order?: SimPoint['order'];
  scale?: number;
  unit?: string;
  writable?: boolean;
}

/** The config entries of a sim slave's points, as an integrator would write them from its register map. */
export function pointEntries(points: readonly SimPoint[]): ModbusPointEntry[] {
  return points.map(({ name, table, address, type, order, scale, unit, writable }) => ({
    name,
    table,
    address,
    type,
    ...(order !== undefined ? { order } : {}),
    ...(scale !== undefined ? { scale } : {}),
    ...(unit !== undefined ? { unit } : {}),
    ...(writable ? { writable } : {}),
  }));
}

export const pumpPoints: Record<string, SignalSpec> = {
  flow: { kind: 'walk', start: 12, step: 0.4, min: 0, max: 30 },
  pressure: { kind: 'sine', amplitude: 0.5, periodMs: 12_000, offset: 3.2 },
  running: { kind: 'constant', value: 1 },
};

/**
 * A simulated site: Modbus slaves with device profiles and MQTT child devices. It knows only the
 * gateway's public contracts: the device entries it describes are site-config entries, and its
 * children speak the documented telemetry topic.
 */
export class SimSite {
  readonly slaves = new Map<string, SimModbusSlave>();
  readonly children: SimChildDevice[] = [];

  private constructor(private readonly spec: SiteSpec) {}

  static async start(spec: SiteSpec): Promise<SimSite> {
    const site = new SimSite(spec);
    for (let i = 1; i <= spec.meters; i++) site.slaves.set(`meter-${i}`, await SimModbusSlave.start({ points: profiles.energyMeter() }));
    for (let i = 1; i <= spec.boilers; i++) site.slaves.set(`boiler-${i}`, await SimModbusSlave.start({ points: profiles.boiler() }));
    return site;
  }

  /** The `devices` section of a site config for this site. */
  devices(): Array<ModbusDeviceEntry | { id: string; protocol: 'mqtt' }> {
    const out: Array<ModbusDeviceEntry | { id: string; protocol: 'mqtt' }> = [];
    for (const [id, slave] of this.slaves) {
      out.push({
        id,
        protocol: 'modbus-tcp',
        host: slave.host,
        port: slave.port,
        unitId: 1,
        pollIntervalMs: this.spec.pollIntervalMs,
        timeoutMs: 500,
        points: pointEntries(slave.points),
      });
    }
    for (let i = 1; i <= this.spec.children; i++) out.push({ id: `pump-${i}`, protocol: 'mqtt' });
    return out;
  }

  /**
   * Child devices connect to the gateway's broker and start publishing, each authenticated with
   * the key derived from `groupSecret` (an enrollment group of the site config, docs/security.md).
   */
  startChildren(brokerUrl: string, groupSecret: string): void {
    for (let i = 1; i <= this.spec.children; i++) {
      const deviceId = `pump-${i}`;
      const child = new SimChildDevice({ url: brokerUrl, deviceId, intervalMs: this.spec.childIntervalMs, points: pumpPoints, password: deriveDeviceKey(groupSecret, deviceId) });
      child.start();
      this.children.push(child);
    }
  }

  /** Reading ids that the gateway acknowledged to the children. */
  childAcked(): string[] {
    return this.children.flatMap((c) => c.acked);
  }

  get childrenConnected(): number {
    return this.children.filter((c) => c.connected).length;
  }

  /** Children stop publishing and wait for their last acknowledgements. */
  async stopChildren(): Promise<void> {
    await Promise.all(this.children.map((c) => c.stop()));
  }

  async stop(): Promise<void> {
    await this.stopChildren();
    for (const s of this.slaves.values()) await s.stop();
  }
}
