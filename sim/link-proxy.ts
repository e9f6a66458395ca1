import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** Conditions of a degraded link, applied to every connection until changed. */
export interface LinkConditions {
  /** Added before each chunk is forwarded, in both directions. */
  readonly latencyMs?: number;
  /** Throughput cap per direction of each connection. */
  readonly bytesPerS?: number;
  /** Each connection is reset after this many bytes toward the target (mid-packet, usually). */
  readonly dropAfterBytes?: number;
}

/** Bytes a direction may hold before it stops reading its source (backpressure). */
const HIGH_WATER = 1 << 20;

interface Pair {
  readonly client: Socket;
  readonly upstream: Socket;
  /** Bytes forwarded toward the target on this connection. */
  sentUp: number;
}

/**
 * A fault-injecting TCP proxy on loopback between the gateway and its cloud. It takes the link
 * away (`down`/`restore`), resets live connections (`reset`), freezes them (`stall`), and degrades
 * them (`setConditions`: latency, throughput cap, reset after N bytes). Counts connections and
 * faults so tests can check reconnect behaviour.
 */
export class LinkProxy {
  private server: Server | undefined;
  private readonly pairs = new Set<Pair>();
  private isUp = true;
  private stalledUntil = 0;
  private conditions: LinkConditions = {};
  connections = 0;
  refused = 0;
  outages = 0;
  faults = 0;

  private constructor(private readonly target: { host: string; port: number }) {}

  static async start(target: { host?: string; port: number }, listenPort = 0): Promise<LinkProxy> {
    const proxy = new LinkProxy({ host: target.host ?? '127.0.0.1', port: target.port });
    await proxy.listen(listenPort);
    return proxy;
  }

  get port(): number {
    return (this.server?.address() as AddressInfo | null)?.port ?? 0;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  get up(): boolean {
    return this.isUp;
  }

  /** Connections open right now. */
  get open(): number {
    return this.pairs.size;
  }

  /** The link goes away: live connections drop and new ones are refused until `restore()`. */
  down(): void {
    if (this.isUp) {
      this.outages++;
      this.faults++;
    }
    this.isUp = false;
    this.cut();
  }

  restore(): void {
    this.isUp = true;
  }

  /** Every live connection is reset at once; the link stays up for the next one. */
  reset(): void {
    this.faults++;
    this.cut();
  }

  /** Nothing moves in either direction for `ms`; connections stay open. */
  stall(ms: number): void {
    this.faults++;
    this.stalledUntil = Math.max(this.stalledUntil, Date.now() + ms);
  }

  setConditions(conditions: LinkConditions): void {
    if (Object.keys(conditions).length > 0) this.faults++;
    this.conditions = { ...conditions };
  }

  /** A clean link again: no stall, no degradation (an outage stays until `restore`). */
  clear(): void {
    this.conditions = {};
    this.stalledUntil = 0;
  }

  async close(): Promise<void> {
    this.isUp = false;
    this.cut();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private cut(): void {
    for (const p of this.pairs) {
      p.client.destroy();
      p.upstream.destroy();
    }
    this.pairs.clear();
  }

  private async listen(port: number): Promise<void> {
    const server = createServer((client) => this.accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
  }

  private accept(client: Socket): void {
    if (!this.isUp) {
      this.refused++;
      client.destroy();
      return;
    }
    this.connections++;
    client.setNoDelay(true);
    const upstream = connect(this.target.port, this.target.host);
    upstream.setNoDelay(true);
    const pair: Pair = { client, upstream, sentUp: 0 };
    this.pairs.add(pair);
    const close = (): void => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('error', close);
      s.on('close', close);
    }
    this.forward(pair, client, upstream, true);
    this.forward(pair, upstream, client, false);
  }

  /** One direction: chunks in order, through stall, latency, throughput cap and reset-after-N. */
  private forward(pair: Pair, src: Socket, dst: Socket, towardTarget: boolean): void {
    const queue: Buffer[] = [];
    let queued = 0;
    let busy = false;
    const run = async (): Promise<void> => {
      busy = true;
      while (queue.length > 0 && !dst.destroyed) {
        const wait = this.stalledUntil - Date.now();
        if (wait > 0) await sleep(wait);
        const { latencyMs, bytesPerS, dropAfterBytes } = this.conditions;
        let chunk = queue.shift()!;
        queued -= chunk.length;
        if (latencyMs) await sleep(latencyMs);
        if (bytesPerS) await sleep((chunk.length / bytesPerS) * 1000);
        if (towardTarget && dropAfterBytes !== undefined && pair.sentUp + chunk.length > dropAfterBytes) {
          chunk = chunk.subarray(0, Math.max(0, dropAfterBytes - pair.sentUp));
          if (chunk.length > 0) dst.write(chunk);
          this.faults++;
          src.destroy();
          dst.destroy();
          break;
        }
        if (towardTarget) pair.sentUp += chunk.length;
        if (!dst.destroyed) dst.write(chunk);
        if (queued < HIGH_WATER && src.isPaused()) src.resume();
      }
      busy = false;
    };
    src.on('data', (chunk: Buffer) => {
      queue.push(chunk);
      queued += chunk.length;
      if (queued >= HIGH_WATER) src.pause();
      if (!busy) void run().catch(() => dst.destroy());
    });
  }
}
