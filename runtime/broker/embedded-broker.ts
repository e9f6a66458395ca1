import { Aedes } from 'aedes';
import { createServer, type Server, type Socket } from 'node:net';
import { errorMessage, type Component, type ComponentContext, type InboundPublish, type LocalBroker, type Logger } from '../contracts/index.js';
import { listenOn } from '../listen.js';

/**
 * The gateway's own MQTT broker for child devices (aedes on plain TCP). Interceptors registered by
 * drivers run inside `authorizePublish`, before aedes writes the PUBACK. As a component it is the
 * broker's core (started early, closed late); its TCP listener is opened with `listen` and closed
 * first with `stopIntake` (runtime/parts/broker.ts).
 */
export class EmbeddedBroker implements LocalBroker, Component {
  readonly name = 'mqtt-broker';
  private core: Aedes | undefined;
  private server: Server | undefined;
  private port = 0;
  private readonly sockets = new Set<Socket>();
  private readonly handlers: Array<(msg: InboundPublish) => Promise<void>> = [];
  private readonly observers: Array<(msg: { readonly topic: string; readonly payload: Buffer; readonly retain: boolean }) => void> = [];
  private log: Logger | undefined;

  private get aedes(): Aedes {
    if (!this.core) throw new Error('the MQTT broker is not started');
    return this.core;
  }

  async start(ctx: ComponentContext): Promise<void> {
    this.log = ctx.log;
    // createBroker awaits aedes' listen(), which readies persistence and the message bus.
    const aedes = await Aedes.createBroker({ drainTimeout: 30_000 });
    this.core = aedes;
    aedes.authorizePublish = (client, packet, callback) => {
      if (packet.topic.startsWith('$SYS')) {
        callback(new Error('$SYS topics are reserved'));
        return;
      }
      // aedes authorizes a last will too, as the connection closes (client.closed): no device waits
      // for its PUBACK, and an interceptor refusing it would make aedes drop it unseen. Wills go to
      // the observers only (LocalBroker contract).
      if (this.handlers.length === 0 || !client || client.closed) {
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
          this.log?.warn({ client: client.id, topic: packet.topic, err: errorMessage(err) }, 'publish not accepted');
          callback(err as Error);
        },
      );
    };
    aedes.on('clientError', (client, err) => this.log?.debug({ client: client.id, err: errorMessage(err) }, 'client error'));
    aedes.on('publish', (packet) => {
      if (packet.topic.startsWith('$SYS') || this.observers.length === 0) return;
      const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
      for (const o of this.observers) o({ topic: packet.topic, payload, retain: packet.retain });
    });
  }

  status(): Record<string, unknown> {
    return { children: { connected: this.core?.connectedClients ?? 0 } };
  }

  /** The port the listener is bound to (0 before listen). */
  get listeningPort(): number {
    return this.port;
  }

  intercept(handler: (msg: InboundPublish) => Promise<void>): void {
    this.handlers.push(handler);
  }

  observe(handler: (msg: { readonly topic: string; readonly payload: Buffer; readonly retain: boolean }) => void): void {
    this.observers.push(handler);
  }

  /** Publishes from the gateway itself (rule outputs): delivered to subscribers like any message. */
  publish(topic: string, payload: string, qos: 0 | 1, retain: boolean): Promise<void> {
    return new Promise((resolve, reject) =>
      this.aedes.publish({ cmd: 'publish', topic, payload: Buffer.from(payload), qos, retain, dup: false }, (err) => (err ? reject(err) : resolve())),
    );
  }

  get connectedClients(): number {
    return this.core?.connectedClients ?? 0;
  }

  async listen(host: string, port: number): Promise<number> {
    const server = createServer((socket) => {
      socket.setNoDelay(true);
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      this.aedes.handle(socket);
    });
    this.server = server;
    this.port = await listenOn(server, host, port);
    return this.port;
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
    const core = this.core;
    this.core = undefined;
    if (core) await new Promise<void>((resolve) => core.close(() => resolve()));
  }

  async stop(): Promise<void> {
    await this.close();
  }
}
