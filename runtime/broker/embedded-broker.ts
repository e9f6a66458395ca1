import { Aedes } from 'aedes';
import { createServer, type Server, type Socket } from 'node:net';
import type { InboundPublish, LocalBroker, Logger } from '../contracts/index.js';
import { listenOn } from '../listen.js';

/**
 * The gateway's own MQTT broker for child devices (aedes on plain TCP). Interceptors registered by
 * drivers run inside `authorizePublish`, before aedes writes the PUBACK.
 */
export class EmbeddedBroker implements LocalBroker {
  private readonly aedes: Aedes;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly handlers: Array<(msg: InboundPublish) => Promise<void>> = [];

  static async create(log: Logger): Promise<EmbeddedBroker> {
    // createBroker awaits aedes' listen(), which readies persistence and the message bus.
    return new EmbeddedBroker(log, await Aedes.createBroker({ drainTimeout: 30_000 }));
  }

  private constructor(
    private readonly log: Logger,
    aedes: Aedes,
  ) {
    this.aedes = aedes;
    this.aedes.authorizePublish = (client, packet, callback) => {
      if (packet.topic.startsWith('$SYS')) {
        callback(new Error('$SYS topics are reserved'));
        return;
      }
      if (this.handlers.length === 0 || !client) {
        callback(null);
        return;
      }
      const msg: InboundPublish = {
        clientId: client.id,
        topic: packet.topic,
        payload: Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload),
        qos: packet.qos,
      };
      Promise.all(this.handlers.map((h) => h(msg))).then(
        () => callback(null),
        (err: unknown) => {
          // Not stored: no PUBACK. aedes closes the connection and the device resends.
          this.log.warn({ client: client.id, topic: packet.topic, err: (err as Error).message }, 'publish not accepted');
          callback(err as Error);
        },
      );
    };
    this.aedes.on('clientError', (client, err) => this.log.debug({ client: client.id, err: err.message }, 'client error'));
  }

  intercept(handler: (msg: InboundPublish) => Promise<void>): void {
    this.handlers.push(handler);
  }

  observe(handler: (msg: { readonly topic: string; readonly payload: Buffer; readonly retain: boolean }) => void): void {
    this.aedes.on('publish', (packet) => {
      if (packet.topic.startsWith('$SYS')) return;
      const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
      handler({ topic: packet.topic, payload, retain: packet.retain });
    });
  }

  /** Publishes from the gateway itself (rule outputs): delivered to subscribers like any message. */
  publish(topic: string, payload: string, qos: 0 | 1, retain: boolean): Promise<void> {
    return new Promise((resolve, reject) =>
      this.aedes.publish({ cmd: 'publish', topic, payload: Buffer.from(payload), qos, retain, dup: false }, (err) => (err ? reject(err) : resolve())),
    );
  }

  get connectedClients(): number {
    return this.aedes.connectedClients;
  }

  async listen(host: string, port: number): Promise<number> {
    const server = createServer((socket) => {
      socket.setNoDelay(true);
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      this.aedes.handle(socket);
    });
    this.server = server;
    return listenOn(server, host, port);
  }

  /** Stop accepting connections and PUBLISHes; in-flight interceptors are awaited by their owners. */
  async stopIntake(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    // close() only stops new connections and waits for the open ones to end: end them first, or a
    // connected child would hold the stop until its keepalive ran out.
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  async close(): Promise<void> {
    await this.stopIntake();
    await new Promise<void>((resolve) => this.aedes.close(() => resolve()));
  }
}
