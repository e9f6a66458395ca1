import { builtinProtocols } from '../drivers/index.js';
import type { DeviceConfig, ProtocolEntry } from './contracts/index.js';

/**
 * Protocols by name: each gives the config schema of its device entries, a factory of drivers and
 * its capabilities. The site config's `devices` are validated against it, and the gateway builds
 * its drivers from it; nothing else in the runtime names a protocol.
 */
export class ProtocolRegistry {
  private readonly byName = new Map<string, ProtocolEntry>();

  constructor(entries: readonly ProtocolEntry[]) {
    for (const e of entries) this.register(e);
  }

  register(entry: ProtocolEntry): this {
    if (this.byName.has(entry.protocol)) throw new Error(`protocol "${entry.protocol}" is registered twice`);
    this.byName.set(entry.protocol, entry);
    return this;
  }

  get(protocol: string): ProtocolEntry | undefined {
    return this.byName.get(protocol);
  }

  /** Every protocol, in registration order. */
  entries(): readonly ProtocolEntry[] {
    return [...this.byName.values()];
  }

  /** The entry of a validated device (its protocol was checked against this registry). */
  of(device: DeviceConfig): ProtocolEntry {
    const e = this.byName.get(device.protocol);
    if (!e) throw new Error(`device "${device.id}": no protocol "${device.protocol}" registered`);
    return e;
  }
}

/** The protocols Outpost ships with. */
export const defaultProtocols = new ProtocolRegistry(builtinProtocols);
