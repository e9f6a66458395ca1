import { WriteRefused, type Driver, type PointWriter, type WriteResult, type WriteValue } from './contracts/index.js';

/** Who asked for a write: the rules' write guard, or another path (the API, a flow). */
export type WriteOrigin = 'rules' | 'api' | 'flow';

/**
 * The write capability of the site's drivers as one PointWriter: a write goes to the driver that
 * serves the device. The API, the rules and Node-RED write through this, whatever the protocol.
 */
export class PointRouter implements PointWriter {
  private readonly owners = new Map<string, Driver & Required<Pick<Driver, 'write'>>>();
  private readonly listeners: Array<(device: string, point: string, origin: WriteOrigin) => void> = [];

  /** Routes writes for the devices of `driver` to it (drivers with the write capability only). */
  add(driver: Driver): void {
    if (!driver.write || !driver.devices) return;
    for (const device of driver.devices) this.owners.set(device, driver as Driver & Required<Pick<Driver, 'write'>>);
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
    return driver.write(device, point, value).finally(() => {
      for (const l of this.listeners) l(device, point, origin);
    });
  }
}
