import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy on loopback between the gateway and its cloud, to take the link away and give it
 * back: `down()` drops every connection and refuses new ones (as a dead cellular link would),
 * `up()` restores it. Counts connections so tests can see reconnect behaviour.
 */
export class LinkProxy {
  private server: Server | undefined;
  private readonly pairs = new Set<[Socket, Socket]>();
  private isUp = true;
  connections = 0;
  refused = 0;
  outages = 0;

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

  down(): void {
    if (this.isUp) this.outages++;
    this.cut();
  }

  private cut(): void {
    this.isUp = false;
    for (const [a, b] of this.pairs) {
      a.destroy();
      b.destroy();
    }
    this.pairs.clear();
  }

  restore(): void {
    this.isUp = true;
  }

  async close(): Promise<void> {
    this.cut();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private async listen(port: number): Promise<void> {
    const server = createServer((client) => {
      if (!this.isUp) {
        this.refused++;
        client.destroy();
        return;
      }
      this.connections++;
      const upstream = connect(this.target.port, this.target.host);
      const pair: [Socket, Socket] = [client, upstream];
      this.pairs.add(pair);
      const close = (): void => {
        this.pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on('error', close);
      upstream.on('error', close);
      client.on('close', close);
      upstream.on('close', close);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
  }
}
