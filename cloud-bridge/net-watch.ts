import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import type { Clock, TimerHandle } from '../runtime/contracts/index.js';

export type InterfaceSource = () => NodeJS.Dict<NetworkInterfaceInfo[]>;

/** The external addresses this host has now, as one comparable string. */
export function addressFingerprint(source: InterfaceSource): string {
  const out: string[] = [];
  for (const [name, infos] of Object.entries(source())) {
    for (const i of infos ?? []) if (!i.internal) out.push(`${name} ${i.address}`);
  }
  return out.sort().join(',');
}

/**
 * Notices when the host's own network changes (a cellular modem or Wi-Fi comes back with an
 * address, a cable is plugged in) by reading the local interface table; it sends nothing on the
 * network. The uplink then reconnects at once instead of waiting out its backoff.
 */
export class NetWatch {
  private timer: TimerHandle | undefined;
  private last: string;

  constructor(
    private readonly clock: Clock,
    private readonly intervalMs: number,
    private readonly onChange: (addresses: string) => void,
    private readonly source: InterfaceSource = networkInterfaces,
  ) {
    this.last = addressFingerprint(source);
  }

  start(): void {
    if (this.timer || this.intervalMs <= 0) return;
    const tick = (): void => {
      const now = addressFingerprint(this.source);
      if (now !== this.last) {
        this.last = now;
        this.onChange(now);
      }
      this.timer = this.clock.setTimeout(tick, this.intervalMs);
    };
    this.timer = this.clock.setTimeout(tick, this.intervalMs);
  }

  stop(): void {
    if (this.timer) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }
}
