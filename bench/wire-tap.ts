import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

/**
 * A plain TCP relay on loopback that counts the bytes each way: what the gateway's uplink really
 * put on the wire (every MQTT packet: CONNECT, PUBLISH, PINGREQ, …), as a cross-check of the
 * per-PUBLISH accounting. No faults, no delays (sim/link-proxy.ts is the one that degrades links).
 */
export class WireTap {
  /** Bytes from the client (the gateway) toward the target (the cloud broker). */
  up = 0;
  /** Bytes from the target back to the client (CONNACK, PUBACK, …). */
  down = 0;
  connections = 0;
  private readonly sockets = new Set<Socket>();

  private constructor(private readonly server: Server) {}

  static async start(targetPort: number, targetHost = '127.0.0.1'): Promise<WireTap> {
    const server = createServer();
    const tap = new WireTap(server);
    server.on('connection', (client) => tap.relay(client, targetPort, targetHost));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    return tap;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private relay(client: Socket, port: number, host: string): void {
    this.connections++;
    const upstream = connect(port, host);
    for (const s of [client, upstream]) {
      s.setNoDelay(true);
      this.sockets.add(s);
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
      s.on('close', () => {
        this.sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    // Counted where they are read, before pipe() forwards them.
    client.on('data', (d: Buffer) => (this.up += d.length));
    upstream.on('data', (d: Buffer) => (this.down += d.length));
    client.pipe(upstream);
    upstream.pipe(client);
  }
}
