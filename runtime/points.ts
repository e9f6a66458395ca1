import { WriteRefused, type Driver, type PointWriter, type WriteResult, type WriteValue } from './contracts/index.js';

/** Who asked for a write: the rules' write guard, or another path (the API, a flow, a bound twin property). */
export type WriteOrigin = 'rules' | 'api' | 'flow' | 'twin';

/**
 * The write capability of the site's drivers as one PointWriter: a write goes to the driver that
 * serves the device. The API, the rules and Node-RED write through this, whatever the protocol.
 */
export class PointRouter implements PointWriter {
  private readonly owners = new Map<string, Driver & Required<Pick<Driver, 'write'>>>();
  private readonly listeners: Array<(device: string, point: string, origin: WriteOrigin) => void> = [];
  /** `device\u0000point` -> the configured range writes are clamped to. */
  private readonly ranges = new Map<string, { readonly min: number; readonly max: number }>();

  /** The ranges of the configured points (from each protocol's point list). */
  setRanges(ranges: Iterable<[device: string, point: string, range: { readonly min: number; readonly max: number }]>): void {
    this.ranges.clear();
    for (const [device, point, range] of ranges) this.ranges.set(`${device}\u0000${point}`, range);
  }

  /** Routes writes for the devices of `driver` to it (drivers with the write capability only). */
  add(driver: Driver): void {
    if (!driver.write || !driver.devices) return;
    for (const device of driver.devices) this.owners.set(device, driver as Driver & Required<Pick<Driver, 'write'>>);
  }

  /** Forgets the devices of `driver` (it stopped), unless another driver took them over. */
  remove(driver: Driver): void {
    for (const device of driver.devices ?? []) if (this.owners.get(device) === driver) this.owners.delete(device);
  }

  /** Forgets every driver (they stopped). */
  clear(): void {
    this.owners.clear();
  }

  /** Called after each write attempt through the router, whatever its outcome. */
  onWrite(fn: (device: string, point: string, origin: WriteOrigin) => void): void {
    this.listeners.push(fn);
  }

  write(device: string, point: string, value: WriteValue, origin: WriteOrigin = 'api'): Promise<WriteResult> {
    const driver = this.owners.get(device);
    if (!driver) return Promise.reject(new WriteRefused('unknown-device', `no device "${device}" with writable points`));
    // Whoever writes (API, rule, flow), a number outside the point's configured range is clamped
    // to it: a bad rule or a forged reading cannot drive a setpoint past what the plant allows.
    const range = typeof value === 'number' ? this.ranges.get(`${device}\u0000${point}`) : undefined;
    const clamped = range && typeof value === 'number' ? Math.min(range.max, Math.max(range.min, value)) : value;
    return driver
      .write(device, point, clamped)
      .then((r) => (clamped !== value && typeof value === 'number' ? { ...r, clampedFrom: value } : r))
      .finally(() => {
        for (const l of this.listeners) l(device, point, origin);
      });
  }
}
