import { Aedes, type Client } from 'aedes';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { UplinkOutbox } from '../../cloud-bridge/uplink.js';
export { uplinkOptions } from '../helpers/uplink-options.js';
import { makeEnvelope, type OutboxRow, type OutboxStats } from '../../runtime/contracts/index.js';
import { uplinkBatchSchema, type UplinkBatch } from '../../runtime/contracts/topics.js';
import { decodeUplinkPayload } from '../../runtime/contracts/uplink-payload.js';

/**
 * The outbox as the uplink sees it, in memory: rows per stream with increasing ids, deleted only
 * by `ack` or `deadLetter`. Keeps the tests of the uplink apart from the store's own tests.
 */
export class MemoryOutbox implements UplinkOutbox {
  private rowid = 0;
  private readonly streams = new Map<string, { priority: number; rows: OutboxRow[]; delivered: number; deadLettered: number; produced: number }>();
  readonly deadLetters: Array<{ stream: string; rowid: number; id: string; reason: string }> = [];

  constructor(streams: ReadonlyArray<{ name: string; priority: number }> = [{ name: 'telemetry', priority: 5 }]) {
    for (const s of streams) this.streams.set(s.name, { priority: s.priority, rows: [], delivered: 0, deadLettered: 0, produced: 0 });
  }

  /** Stores readings `ids` in `stream` at `now`; a reading's body is its envelope's JSON. */
  add(stream: string, ids: readonly string[], now: number, value: (id: string) => string | number = () => 1): OutboxRow[] {
    const s = this.stream(stream);
    const rows = ids.map((id) => {
      const body = JSON.stringify(makeEnvelope({ id, device: 'd', point: 'p', value: value(id), quality: 'good', ts: now, seq: this.rowid + 1 }));
      return { rowid: ++this.rowid, stream, body, bytes: body.length, createdAt: now };
    });
    s.rows.push(...rows);
    s.produced += rows.length;
    return rows;
  }

  /** Ids of the readings still held, oldest first. */
  held(stream = 'telemetry'): string[] {
    return this.stream(stream).rows.map((r) => (JSON.parse(r.body) as { id: string }).id);
  }

  drainOrder(): ReadonlyArray<{ name: string; priority: number }> {
    return [...this.streams].map(([name, s]) => ({ name, priority: s.priority })).sort((a, b) => a.priority - b.priority);
  }

  peek(stream: string, afterRowid: number, limit: number, upToRowid?: number): OutboxRow[] {
    return this.stream(stream)
      .rows.filter((r) => r.rowid > afterRowid && (upToRowid === undefined || r.rowid <= upToRowid))
      .slice(0, limit);
  }

  newestRowid(): number {
    return this.rowid;
  }

  ack(stream: string, first: number, last: number): number {
    const s = this.stream(stream);
    const before = s.rows.length;
    s.rows = s.rows.filter((r) => r.rowid < first || r.rowid > last);
    s.delivered += before - s.rows.length;
    return before - s.rows.length;
  }

  deadLetter(stream: string, rowids: readonly number[], reason: string): number {
    const s = this.stream(stream);
    const moved = s.rows.filter((r) => rowids.includes(r.rowid));
    s.rows = s.rows.filter((r) => !rowids.includes(r.rowid));
    s.deadLettered += moved.length;
    for (const r of moved) this.deadLetters.push({ stream, rowid: r.rowid, id: (JSON.parse(r.body) as { id: string }).id, reason });
    return moved.length;
  }

  stats(): OutboxStats {
    const streams = [...this.streams].map(([stream, s]) => ({
      stream,
      priority: s.priority,
      depth: s.rows.length,
      bytes: s.rows.reduce((n, r) => n + r.bytes, 0),
      produced: s.produced,
      delivered: s.delivered,
      expired: 0,
      dropped: 0,
      deadLettered: s.deadLettered,
      replayed: 0,
    }));
    const sum = (k: 'depth' | 'bytes' | 'produced' | 'delivered' | 'deadLettered'): number => streams.reduce((n, s) => n + s[k], 0);
    return {
      depth: sum('depth'),
      bytes: sum('bytes'),
      appended: sum('produced'),
      delivered: sum('delivered'),
      expired: 0,
      dropped: 0,
      deadLettered: sum('deadLettered'),
      replayed: 0,
      streams,
    };
  }

  private stream(name: string): { priority: number; rows: OutboxRow[]; delivered: number; deadLettered: number; produced: number } {
    const s = this.streams.get(name);
    if (!s) throw new Error(`no stream ${name}`);
    return s;
  }
}

/** A batch as the cloud broker received it, and the size of its payload. */
export interface ReceivedBatch {
  readonly batch: UplinkBatch;
  readonly bytes: number;
}

function decode(payload: Buffer): UplinkBatch {
  return uplinkBatchSchema.parse(decodeUplinkPayload(payload));
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

/**
 * A cloud broker in-process (aedes, MQTT 3.1.1) on 127.0.0.1 and a port of its own. It records each
 * uplink batch before it acknowledges it, can hold the PUBACKs, refuse connections and drop the
 * ones it has.
 */
export class AedesCloud {
  /** Batches received on the telemetry topic, in order, before their PUBACK. */
  readonly received: ReceivedBatch[] = [];
  /** TCP connections accepted (also those refused at once). */
  connections = 0;
  /** Accept TCP connections but close them at once (the path to the cloud is broken). */
  refuseConnections = false;
  /** Return an error from authorizeSubscribe (aedes then closes the connection without SUBACK). */
  refuseSubscriptions = false;
  /** Return an error from authorizePublish for a batch (aedes then closes the connection without PUBACK). */
  refuse: ((batch: UplinkBatch) => boolean) | undefined;
  private holding = false;
  private readonly held: Array<() => void> = [];
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly aedes: Aedes,
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(): Promise<AedesCloud> {
    const aedes = await Aedes.createBroker();
    const server = createServer();
    const port = await listen(server);
    const cloud = new AedesCloud(aedes, server, port);
    server.on('connection', (socket) => cloud.accept(socket));
    aedes.authorizeSubscribe = (_client, sub, callback) => {
      if (cloud.refuseSubscriptions) callback(new Error('refused'), null);
      else callback(null, sub);
    };
    aedes.authorizePublish = (client: Client | null, packet, callback) => {
      if (!packet.topic.endsWith('/telemetry')) {
        callback(null);
        return;
      }
      const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
      const batch = decode(payload);
      if (cloud.refuse?.(batch)) {
        callback(new Error('refused'));
        return;
      }
      cloud.received.push({ batch, bytes: payload.length });
      if (cloud.holding) cloud.held.push(() => callback(null));
      else callback(null);
    };
    return cloud;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  /** Reading ids received, in order (duplicates included). */
  get readings(): string[] {
    return this.received.flatMap((r) => r.batch.readings.map((x) => x.id));
  }

  get clients(): number {
    return this.aedes.connectedClients;
  }

  /** Batches received from now on wait for `releaseAcks` before their PUBACK. */
  holdAcks(): void {
    this.holding = true;
  }

  /** Acknowledges the batches held so far; later ones are held too until `releaseAcks`. */
  ackHeld(): void {
    for (const ack of this.held.splice(0)) ack();
  }

  /** Acknowledges what is held and stops holding. */
  releaseAcks(): void {
    this.holding = false;
    this.ackHeld();
  }

  get heldAcks(): number {
    return this.held.length;
  }

  /** A message from the cloud side (QoS 1), to the gateway's downlink subscriptions. */
  publish(topic: string, payload: string): Promise<void> {
    return new Promise((resolve, reject) =>
      this.aedes.publish({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, retain: false, dup: false }, (err) => (err ? reject(err) : resolve())),
    );
  }

  /** Ends every connection (the link dropped); PUBACKs held are lost with them. */
  dropConnections(): void {
    this.held.length = 0;
    for (const s of this.sockets) s.destroy();
  }

  async close(): Promise<void> {
    this.dropConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await new Promise<void>((resolve) => this.aedes.close(() => resolve()));
  }

  private accept(socket: Socket): void {
    this.connections++;
    if (this.refuseConnections) {
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    this.aedes.handle(socket);
  }
}

/**
 * What the scripted broker does with a batch: a PUBACK reason code (0: accepted; 0x80 and above:
 * refused [MQTT-3.4.2.1]), or one of the ways brokers are seen to refuse otherwise: a PUBACK with a
 * reason code MQTT 5 does not allow there (Mosquitto answers 0x95 to a message over its
 * message_size_limit), a DISCONNECT with a reason code, the connection closed, or no answer at all.
 */
export type Verdict = number | { invalidPuback: number } | { disconnect: number } | 'close' | 'silent';

/**
 * A scripted MQTT 5 cloud broker (aedes speaks 3.1.1 only), enough for the uplink: CONNACK, the
 * `verdict` on each batch, SUBACK, PINGRESP. Nothing is delivered to anyone.
 */
export class Mqtt5Cloud {
  readonly received: ReceivedBatch[] = [];
  readonly refused: Array<{ batch: UplinkBatch; reasonCode: number; verdict: Verdict }> = [];
  /** TCP connections accepted. */
  connections = 0;
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
    public verdict: (batch: UplinkBatch) => Verdict,
  ) {}

  static async start(verdict: (batch: UplinkBatch) => Verdict): Promise<Mqtt5Cloud> {
    const server = createServer();
    const port = await listen(server);
    const cloud = new Mqtt5Cloud(server, port, verdict);
    server.on('connection', (socket) => cloud.serve(socket));
    return cloud;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  get readings(): string[] {
    return this.received.flatMap((r) => r.batch.readings.map((x) => x.id));
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private serve(socket: Socket): void {
    this.connections++;
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => undefined);
    const parser = mqttPacket.parser();
    const send = (packet: Packet): void => {
      socket.write(mqttPacket.generate(packet, { protocolVersion: 5 }));
    };
    parser.on('packet', (packet: Packet) => {
      switch (packet.cmd) {
        case 'connect':
          send({ cmd: 'connack', sessionPresent: false, reasonCode: 0 });
          break;
        case 'publish': {
          if (!packet.topic.endsWith('/telemetry')) {
            if (packet.qos > 0) send({ cmd: 'puback', messageId: packet.messageId, reasonCode: 0 });
            break;
          }
          const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
          const batch = decode(payload);
          const verdict = this.verdict(batch);
          const messageId = packet.messageId ?? 0;
          if (typeof verdict === 'number') {
            if (verdict >= 0x80) this.refused.push({ batch, reasonCode: verdict, verdict });
            else this.received.push({ batch, bytes: payload.length });
            send({ cmd: 'puback', messageId, reasonCode: verdict });
          } else if (verdict === 'close') {
            this.refused.push({ batch, reasonCode: 0, verdict });
            socket.destroy();
          } else if (verdict === 'silent') {
            this.refused.push({ batch, reasonCode: 0, verdict });
          } else if ('invalidPuback' in verdict) {
            this.refused.push({ batch, reasonCode: verdict.invalidPuback, verdict });
            // PUBACK, remaining length 3: packet id, reason code (mqtt-packet will not generate it).
            socket.write(Buffer.from([0x40, 3, messageId >> 8, messageId & 0xff, verdict.invalidPuback]));
          } else {
            this.refused.push({ batch, reasonCode: verdict.disconnect, verdict });
            send({ cmd: 'disconnect', reasonCode: verdict.disconnect });
            socket.end();
          }
          break;
        }
        case 'subscribe':
          send({ cmd: 'suback', messageId: packet.messageId, granted: packet.subscriptions.map(() => 1) });
          break;
        case 'pingreq':
          send({ cmd: 'pingresp' });
          break;
        case 'disconnect':
          socket.end();
          break;
        default:
          break;
      }
    });
    parser.on('error', () => socket.destroy());
    socket.on('data', (chunk: Buffer) => parser.parse(chunk));
  }
}
