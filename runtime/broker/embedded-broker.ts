import { Aedes, type AuthenticateError, type Client } from 'aedes';
import { X509Certificate } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type TLSSocket, type TlsOptions } from 'node:tls';
import mqttPacket from 'mqtt-packet';
import { getHeapStatistics } from 'node:v8';
import { errorMessage, type Component, type ComponentContext, type InboundPublish, type LocalBroker, type Logger } from '../contracts/index.js';
import type { IdentityRegistry, PeerCertificate } from '../identity/registry.js';
import { listenOn } from '../listen.js';
import type { AccessPolicy, Identity } from './acl.js';
import type { BrokerLimits } from './config.js';
import { Refusals, TokenBucket } from './limits.js';
import { PacketGuard } from './packet-guard.js';

/** Who may connect and what they may do: the broker enforces it on every connection. */
export interface BrokerAccess {
  /** Made when the broker starts (it may read the store). */
  readonly registry: () => IdentityRegistry;
  readonly policy: AccessPolicy;
  readonly limits: BrokerLimits;
  /** Share of the V8 heap limit in use, 0 to 1 (default: V8's own figures; a test gives its own). */
  readonly heapInUse?: () => number;
}

/**
 * Past this share of its heap limit the broker takes no new connection. Each one holds 10–15 KiB
 * of heap (socket, streams, MQTT parser, session, will, retained birth; docs/benchmarks.md,
 * "scale"): with the launch flags' 128 MiB heap, the default `maxConnections` of 10,000 would
 * exhaust it, and V8 ends the process on an exhausted heap, which disconnects every child at once.
 * A refused device retries, as after any refused connection.
 */
const MAX_HEAP_SHARE = 0.85;

function v8HeapInUse(): number {
  const h = getHeapStatistics();
  return h.used_heap_size / h.heap_size_limit;
}

/** What the broker knows of a connection before MQTT starts. */
interface Connection {
  readonly listener: string;
  readonly remoteAddress: string;
  readonly certificate?: PeerCertificate | undefined;
  readonly publishes: TokenBucket;
  identity?: Identity;
  subscriptions: number;
}

type Observed = { readonly topic: string; readonly payload: Buffer; readonly retain: boolean };

/** An error that makes aedes answer CONNACK with `returnCode` (3.1.1 §3.2.2.3). */
function connackError(returnCode: 2 | 3 | 4 | 5, message: string): AuthenticateError {
  return Object.assign(new Error(message), { returnCode });
}

/**
 * The gateway's own MQTT broker for child devices (aedes, MQTT 3.1.1), on plain TCP and TLS.
 * Every connection authenticates (runtime/identity) and is held to its identity's permissions
 * (./acl.ts) and to the listener limits (broker.limits): packet size before the body is read,
 * connections per listener and per address, a connect rate, publishes per second, topic size,
 * retained size and count, subscriptions per client, a keepalive range. Interceptors registered
 * by drivers run inside `authorizePublish`, after the permission check and before aedes writes the
 * PUBACK. As a component it is the broker's core (started early, closed late); its listeners are
 * opened with `listen`/`listenTls` and closed first with `stopIntake` (runtime/parts/broker.ts).
 */
export class EmbeddedBroker implements LocalBroker, Component {
  readonly name = 'mqtt-broker';
  private core: Aedes | undefined;
  private readonly servers: Server[] = [];
  private readonly ports: Record<string, number> = {};
  private readonly sockets = new Set<Socket>();
  private readonly perAddress = new Map<string, number>();
  private readonly connections = new WeakMap<object, Connection>();
  private readonly retained = new Set<string>();
  private readonly handlers: Array<(msg: InboundPublish) => Promise<void>> = [];
  private readonly observers: Array<(msg: Observed) => void> = [];
  private log: Logger | undefined;
  private refusals: Refusals | undefined;
  private connectBucket: TokenBucket | undefined;
  private now: () => number = Date.now;
  private registry: IdentityRegistry | undefined;

  constructor(private readonly access: BrokerAccess) {
    // mqtt-packet (aedes' and mqtt.js' encoder) otherwise builds a Buffer for each of the 65,536
    // two-byte numbers on its first packet: 8 MiB of heap for the life of the process, to save a
    // two-byte slice of the pool per packet id. It is one switch for the whole process.
    mqttPacket.writeToStream.cacheNumbers = false;
  }

  private get aedes(): Aedes {
    if (!this.core) throw new Error('the MQTT broker is not started');
    return this.core;
  }

  /** Who may connect (valid once started). */
  get identities(): IdentityRegistry {
    if (!this.registry) throw new Error('the MQTT broker is not started');
    return this.registry;
  }

  private refuse(cause: string, detail: Readonly<Record<string, unknown>>, message: string): void {
    this.refusals?.note(cause, detail, message);
  }

  async start(ctx: ComponentContext): Promise<void> {
    this.log = ctx.log;
    this.now = () => ctx.clock.now();
    this.refusals = new Refusals(ctx.metrics.counter('outpost_broker_refused_total', 'What the MQTT broker refused, by cause', ['cause']), ctx.log, this.now);
    const limits = this.access.limits;
    this.registry = this.access.registry();
    this.connectBucket = new TokenBucket(limits.connectRate.perSecond, limits.connectRate.burst, this.now);
    // createBroker awaits aedes' listen(), which readies persistence and the message bus.
    const aedes = await Aedes.createBroker({
      drainTimeout: 30_000,
      // A connection that sends no CONNECT within this is closed (a slow-loris holds nothing long).
      connectTimeout: 10_000,
      maxTopicLevels: limits.maxTopicLevels,
      maxClientsIdLength: limits.maxClientIdBytes,
      queueLimit: 42,
    });
    this.core = aedes;
    aedes.preConnect = (client, packet, callback) => {
      // The server's keepalive stays in range whatever the device asks: 0 ("never") or more than the
      // ceiling would let a dead connection hold its slot for ever, less than the floor makes a
      // device ping too often. aedes reads packet.keepalive after this hook.
      const { minKeepaliveS, maxKeepaliveS } = this.access.limits;
      const asked = packet.keepalive ?? 0;
      if (asked === 0 || asked > maxKeepaliveS) packet.keepalive = maxKeepaliveS;
      else if (asked < minKeepaliveS) packet.keepalive = minKeepaliveS;
      const conn = this.connections.get(client.conn);
      if (conn) this.pendingWill.set(client, packet.will ? { topic: packet.will.topic, retain: packet.will.retain === true, bytes: packet.will.payload.length } : undefined);
      callback(null, true);
    };
    aedes.authenticate = (client, username, password, callback) => {
      this.authenticate(client, username, password).then(
        (err) => callback(err, err === null),
        (err: unknown) => {
          this.log?.error({ err: errorMessage(err) }, 'authentication failed unexpectedly');
          callback(connackError(3, 'server unavailable'), false);
        },
      );
    };
    aedes.authorizeSubscribe = (client, sub, callback) => {
      const conn = client ? this.connections.get(client.conn) : undefined;
      const who = conn?.identity;
      if (!conn || !who) {
        callback(null, null);
        return;
      }
      const topic = sub.topic;
      if (Buffer.byteLength(topic) > limits.maxTopicBytes) {
        this.refuse('topic-too-long', { client: who.id }, 'subscription refused: topic filter too long');
        callback(null, null);
        return;
      }
      if (!this.access.policy.canSubscribe(who, topic)) {
        this.refuse('subscribe-denied', { client: who.id, topic: topic.slice(0, 200) }, 'subscription refused: not permitted for this identity');
        // SUBACK 0x80 for this filter [MQTT-3.9.3-2]; the connection stays.
        callback(null, null);
        return;
      }
      if (conn.subscriptions >= limits.maxSubscriptionsPerClient) {
        this.refuse('too-many-subscriptions', { client: who.id }, 'subscription refused: too many subscriptions');
        callback(null, null);
        return;
      }
      conn.subscriptions++;
      callback(null, sub);
    };
    aedes.authorizeForward = (client, packet) => {
      // Checked again at delivery: a retained message or a subscription made before a grant changed.
      const who = client ? this.connections.get(client.conn)?.identity : undefined;
      if (!who || !this.access.policy.canReceive(who, packet.topic)) return null;
      return packet;
    };
    aedes.authorizePublish = (client, packet, callback) => {
      if (!client) {
        callback(null);
        return;
      }
      const conn = this.connections.get(client.conn);
      const who = conn?.identity;
      const topic = packet.topic;
      // No closure per publish on the accepted path: this runs for every message a child sends.
      if (!conn || !who) return this.refusePublish(client, topic, 'not-authenticated', 'publish refused: not authenticated', callback);
      if (Buffer.byteLength(topic) > limits.maxTopicBytes) return this.refusePublish(client, topic, 'topic-too-long', 'publish refused: topic too long', callback);
      if (!this.access.policy.canPublish(who, topic)) return this.refusePublish(client, topic, client.closed ? 'will-denied' : 'publish-denied', 'publish refused: not permitted for this identity', callback);
      if (packet.retain) {
        const problem = this.retainProblem(topic, packet.payload.length);
        if (problem) return this.refusePublish(client, topic, problem.cause, problem.message, callback);
      }
      // aedes authorizes a last will too, as the connection closes (client.closed): no device waits
      // for its PUBACK, and an interceptor refusing it would make aedes drop it unseen. Wills go to
      // the observers only (LocalBroker contract).
      if (client.closed) {
        callback(null);
        return;
      }
      const wait = conn.publishes.owe();
      if (wait === 0) this.intercept_(client, packet, callback);
      else {
        // Over its publish rate: the PUBACK waits (aedes reads nothing more from this device
        // meanwhile), so the device slows down without losing a message.
        this.refuse('publish-rate', { client: client.id }, 'publishes delayed: over the identity\'s publish rate');
        setTimeout(() => this.intercept_(client, packet, callback), Math.min(wait, 5000)).unref();
      }
    };
    aedes.on('clientError', (client, err) => this.log?.debug({ client: client.id, err: errorMessage(err) }, 'client error'));
    aedes.on('clientDisconnect', (client) => this.pendingWill.delete(client));
    aedes.on('publish', (packet) => {
      if (packet.topic.startsWith('$SYS')) return;
      if (packet.retain) {
        if (packet.payload.length === 0) this.retained.delete(packet.topic);
        else this.retained.add(packet.topic);
      }
      if (this.observers.length === 0) return;
      const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
      for (const o of this.observers) o({ topic: packet.topic, payload, retain: packet.retain });
    });
  }

  private readonly pendingWill = new WeakMap<Client, { topic: string; retain: boolean; bytes: number } | undefined>();

  private retainProblem(topic: string, bytes: number): { cause: string; message: string } | undefined {
    const limits = this.access.limits;
    if (bytes > limits.maxRetainedBytes) return { cause: 'retained-too-large', message: `retained message refused: over ${limits.maxRetainedBytes} bytes` };
    if (bytes > 0 && !this.retained.has(topic) && this.retained.size >= limits.maxRetained) return { cause: 'too-many-retained', message: `retained message refused: the broker holds ${limits.maxRetained} retained topics` };
    return undefined;
  }

  private intercept_(client: Client, packet: { topic: string; payload: Buffer | string; qos: 0 | 1 | 2 }, callback: (err?: Error | null) => void): void {
    if (this.handlers.length === 0) {
      callback(null);
      return;
    }
    const msg: InboundPublish = {
      clientId: client.id,
      topic: packet.topic,
      payload: Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload),
      qos: packet.qos,
    };
    const bytes = msg.payload.length;
    // A message becomes many readings while it is validated and committed (a 60 KiB message of
    // 1,000 points, several hundred KiB): bounding the payload bytes in that stage bounds the
    // gateway's memory whatever the number of connections. The others wait with their PUBACK.
    if (this.intakeBytes > 0 && this.intakeBytes + bytes > this.access.limits.maxIntakeBytes) this.intakeWaiting.push({ bytes, run: () => this.runHandlers(client.id, msg, bytes, callback) });
    else this.runHandlers(client.id, msg, bytes, callback);
  }

  /** The interceptors on one message; the PUBACK (callback) once all of them have settled. */
  private runHandlers(clientId: string, msg: InboundPublish, bytes: number, callback: (err?: Error | null) => void): void {
    this.intakeBytes += bytes;
    const handlers = this.handlers;
    // One interceptor (the usual case): its promise as it is, without an array and Promise.all.
    const done = handlers.length === 1 ? handlers[0]!(msg) : Promise.all(handlers.map((h) => h(msg)));
    done.then(
      () => {
        this.intakeSettled(bytes);
        callback(null);
      },
      (err: unknown) => {
        // Not stored: no PUBACK. aedes closes the connection and the device resends.
        this.log?.warn({ client: clientId, topic: msg.topic, err: errorMessage(err) }, 'publish not accepted');
        this.intakeSettled(bytes);
        callback(err as Error);
      },
    );
  }

  private intakeSettled(bytes: number): void {
    this.intakeBytes -= bytes;
    this.admitWaiting();
  }

  private refusePublish(client: Client, topic: string, cause: string, message: string, callback: (err?: Error | null) => void): void {
    this.refuse(cause, { client: client.id, topic: topic.slice(0, 200) }, message);
    callback(new Error(message));
  }

  private intakeBytes = 0;
  private readonly intakeWaiting: Array<{ bytes: number; run: () => void }> = [];

  private admitWaiting(): void {
    const budget = this.access.limits.maxIntakeBytes;
    while (this.intakeWaiting.length > 0) {
      const next = this.intakeWaiting[0]!;
      if (this.intakeBytes > 0 && this.intakeBytes + next.bytes > budget) return;
      this.intakeWaiting.shift();
      next.run();
    }
  }

  /** null when `client` may connect, else the CONNACK refusal. */
  private async authenticate(client: Client, username: string | undefined, password: Buffer | undefined): Promise<AuthenticateError | null> {
    const conn = this.connections.get(client.conn);
    if (!conn) return connackError(3, 'server unavailable');
    if (!(this.connectBucket?.take() ?? true)) {
      // First contact after a power cut: the fleet reconnects at once. A clear refusal ("server
      // unavailable"), which devices retry with their backoff, spreads the storm over time.
      this.refuse('connect-rate', { address: conn.remoteAddress }, 'connection refused: over the connect rate (server unavailable, retry later)');
      return connackError(3, 'server unavailable: too many connections at once, retry later');
    }
    const outcome = await this.identities.authenticate({ clientId: client.id, username, password, remoteAddress: conn.remoteAddress, certificate: conn.certificate });
    if (!outcome.ok) {
      this.refuse(outcome.cause, { client: client.id.slice(0, 80), address: conn.remoteAddress }, `connection refused: ${outcome.message}`);
      return connackError(outcome.code, outcome.message);
    }
    const will = this.pendingWill.get(client);
    if (will) {
      // A will is a publish made later in the device's name: authorised now, as the publish it will be.
      const ok = this.access.policy.canPublish(outcome.identity, will.topic) && Buffer.byteLength(will.topic) <= this.access.limits.maxTopicBytes;
      const problem = ok && will.retain ? this.retainProblem(will.topic, will.bytes) : undefined;
      if (!ok || problem) {
        this.refuse(problem?.cause ?? 'will-denied', { client: client.id, topic: will.topic.slice(0, 200) }, `connection refused: ${problem?.message ?? 'last will topic not permitted for this identity'}`);
        return connackError(5, 'not authorized: last will');
      }
    }
    conn.identity = outcome.identity;
    if (outcome.enrolled) this.log?.info({ device: outcome.identity.id, method: outcome.identity.method }, 'device enrolled');
    return null;
  }

  status(): Record<string, unknown> {
    return { children: { connected: this.core?.connectedClients ?? 0 } };
  }

  /** The plain listener's port (0 before listen). */
  get listeningPort(): number {
    return this.ports.tcp ?? 0;
  }

  /** The TLS listener's port (0 without one). */
  get tlsPort(): number {
    return this.ports.tls ?? 0;
  }

  intercept(handler: (msg: InboundPublish) => Promise<void>): void {
    this.handlers.push(handler);
  }

  observe(handler: (msg: Observed) => void): void {
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

  /** Closes the live connection of `id` (a revoked identity); true when there was one. */
  disconnect(id: string): boolean {
    // aedes keeps connected clients by id (not in its typings).
    const client = (this.core as unknown as { clients?: Record<string, Client | undefined> } | undefined)?.clients?.[id];
    if (!client) return false;
    client.close();
    return true;
  }

  /**
   * The listen backlog: a site's children reconnect at once (after a power cut, a gateway restart).
   * With Node's default of 511, a storm of thousands overflows the kernel's accept queue while the
   * gateway is busy authenticating the first ones; a dropped SYN is retried by the device's kernel
   * after 1, 3, 7, 15 s, which made the last of 10,000 children wait tens of seconds with the
   * gateway idle. The kernel caps this at net.core.somaxconn.
   */
  private get backlog(): number {
    return Math.max(511, Math.min(this.access.limits.maxConnections, 65535));
  }

  /** Plain MQTT on host:port. */
  async listen(host: string, port: number): Promise<number> {
    const server = createServer((socket) => this.accept(socket, 'tcp'));
    this.servers.push(server);
    this.ports.tcp = await listenOn(server, host, port, this.backlog);
    return this.ports.tcp;
  }

  /** MQTT over TLS on host:port; client certificates are asked for and checked by the identity registry. */
  async listenTls(host: string, port: number, tls: TlsOptions, opts: { requireCertificate: boolean; verifiesChains: boolean }): Promise<number> {
    // Certificates are checked by the identity registry (a pinned fingerprint needs no CA), so TLS
    // asks for one and lets the handshake finish; without client CAs no chain counts as verified.
    const server = createTlsServer({ minVersion: 'TLSv1.2', ...tls, requestCert: true, rejectUnauthorized: false }, (socket) => this.accept(socket, 'tls', opts));
    server.on('tlsClientError', (err) => this.refuse('tls-handshake', { err: errorMessage(err) }, 'TLS handshake failed'));
    this.servers.push(server);
    this.ports.tls = await listenOn(server, host, port, this.backlog);
    return this.ports.tls;
  }

  private accept(socket: Socket, listener: 'tcp' | 'tls', tls?: { requireCertificate: boolean; verifiesChains: boolean }): void {
    const limits = this.access.limits;
    const address = socket.remoteAddress ?? '';
    if (!this.core || this.sockets.size >= limits.maxConnections) {
      this.refuse('too-many-connections', { listener }, `connection refused: the listener holds ${limits.maxConnections} connections`);
      socket.destroy();
      return;
    }
    const heap = (this.access.heapInUse ?? v8HeapInUse)();
    if (heap > MAX_HEAP_SHARE) {
      this.refuse(
        'memory',
        { listener, connections: this.sockets.size, heapPercent: Math.round(heap * 100) },
        `connection refused: the heap is ${Math.round(heap * 100)} % full with ${this.sockets.size} connections (raise node's --max-old-space-size for this many children, docs/operations.md)`,
      );
      socket.destroy();
      return;
    }
    const fromHere = this.perAddress.get(address) ?? 0;
    if (fromHere >= limits.maxConnectionsPerAddress) {
      this.refuse('too-many-from-address', { address }, `connection refused: ${limits.maxConnectionsPerAddress} connections from this address`);
      socket.destroy();
      return;
    }
    let certificate: PeerCertificate | undefined;
    if (listener === 'tls') {
      const tlsSocket = socket as TLSSocket;
      const raw = tlsSocket.getPeerX509Certificate?.();
      if (raw) certificate = { cert: new X509Certificate(raw.raw), chainVerified: (tls?.verifiesChains ?? false) && tlsSocket.authorized };
      if (!certificate && tls?.requireCertificate) {
        this.refuse('no-certificate', { address }, 'connection refused: this listener requires a client certificate');
        socket.destroy();
        return;
      }
    }
    this.sockets.add(socket);
    this.perAddress.set(address, fromHere + 1);
    socket.setNoDelay(true);
    socket.once('close', () => {
      this.sockets.delete(socket);
      const n = (this.perAddress.get(address) ?? 1) - 1;
      if (n <= 0) this.perAddress.delete(address);
      else this.perAddress.set(address, n);
    });
    socket.on('error', () => undefined);
    const guard = new PacketGuard(
      socket,
      limits.maxPacketBytes,
      (announced) => this.refuse('packet-too-large', { address, announced }, `connection closed: a packet of ${announced} bytes (limit ${limits.maxPacketBytes})`),
      () => this.refuse('malformed-packet', { address }, 'connection closed: malformed packet length'),
    );
    this.connections.set(guard, {
      listener,
      remoteAddress: address,
      certificate,
      publishes: new TokenBucket(limits.publishRate.perSecond, limits.publishRate.burst, this.now),
      subscriptions: 0,
    });
    this.aedes.handle(guard);
  }

  /** Stop accepting connections and PUBLISHes; in-flight interceptors are awaited by their owners. */
  async stopIntake(): Promise<void> {
    const servers = this.servers.splice(0);
    // close() only stops new connections and waits for the open ones to end: end them first, or a
    // connected child would hold the stop until its keepalive ran out.
    const closed = Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
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
