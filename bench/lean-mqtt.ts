/**
 * Just enough MQTT 3.1.1 for a load generator that holds thousands of device connections in one
 * process: CONNECT (with a will), PUBLISH at QoS 1, PINGREQ and DISCONNECT out; CONNACK, PUBACK and
 * PINGRESP in. An mqtt.js client carries a store, timers and streams per connection, which at
 * 10,000 connections costs the load generator more CPU than the broker under test spends; this
 * costs a few buffers per connection. Not a general client: no subscriptions, no QoS 2.
 */

/** Remaining Length [MQTT-2.2.3]: 7 bits per byte, high bit = more, at most 4 bytes. */
function remainingLength(n: number): Buffer {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}

function str(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  const len = Buffer.alloc(2);
  len.writeUInt16BE(b.length);
  return Buffer.concat([len, b]);
}

function packet(first: number, parts: readonly Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([first]), remainingLength(body.length), body]);
}

export interface ConnectOptions {
  readonly clientId: string;
  readonly username?: string;
  readonly password?: string;
  readonly keepaliveS: number;
  readonly will?: { readonly topic: string; readonly payload: string; readonly qos: 0 | 1; readonly retain: boolean };
}

/** CONNECT, clean session [MQTT-3.1]. */
export function connectPacket(o: ConnectOptions): Buffer {
  let flags = 0x02;
  if (o.will) flags |= 0x04 | (o.will.qos << 3) | (o.will.retain ? 0x20 : 0);
  if (o.username !== undefined) flags |= 0x80;
  if (o.password !== undefined) flags |= 0x40;
  const keepalive = Buffer.alloc(2);
  keepalive.writeUInt16BE(o.keepaliveS);
  return packet(0x10, [
    str('MQTT'),
    Buffer.from([4, flags]),
    keepalive,
    str(o.clientId),
    ...(o.will ? [str(o.will.topic), str(o.will.payload)] : []),
    ...(o.username !== undefined ? [str(o.username)] : []),
    ...(o.password !== undefined ? [str(o.password)] : []),
  ]);
}

/** PUBLISH at QoS 1 with packet id `id`; `dup` on a resend [MQTT-3.3.1-1]. */
export function publishPacket(topic: string, payload: string, id: number, opts: { retain?: boolean; dup?: boolean } = {}): Buffer {
  const pid = Buffer.alloc(2);
  pid.writeUInt16BE(id);
  return packet(0x30 | (opts.dup ? 0x08 : 0) | (1 << 1) | (opts.retain ? 0x01 : 0), [str(topic), pid, Buffer.from(payload, 'utf8')]);
}

/** The same PUBLISH with its DUP flag set, for a resend after a reconnect. */
export function asDup(publish: Buffer): Buffer {
  const copy = Buffer.from(publish);
  copy[0] = copy[0]! | 0x08;
  return copy;
}

export const PINGREQ = Buffer.from([0xc0, 0x00]);
export const DISCONNECT = Buffer.from([0xe0, 0x00]);

export type Inbound = { readonly type: 'connack'; readonly returnCode: number } | { readonly type: 'puback'; readonly id: number } | { readonly type: 'other'; readonly code: number };

/**
 * Splits a byte stream into packets and decodes the few a publishing client receives. Feed it
 * what the socket reads; it keeps a partial packet until the rest arrives.
 */
export class PacketReader {
  private pending: Buffer | undefined;

  /** Packets complete in what has arrived so far; throws on a malformed length. */
  feed(chunk: Buffer): Inbound[] {
    let buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = undefined;
    const out: Inbound[] = [];
    for (;;) {
      if (buf.length < 2) break;
      let len = 0;
      let mult = 1;
      let i = 1;
      let complete = false;
      for (; i < Math.min(buf.length, 5); i++) {
        const b = buf[i]!;
        len += (b & 0x7f) * mult;
        mult *= 128;
        if ((b & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      if (!complete) {
        if (i >= 5) throw new Error('malformed remaining length from the broker');
        break;
      }
      const start = i + 1;
      if (buf.length < start + len) break;
      const type = buf[0]! >> 4;
      if (type === 2) out.push({ type: 'connack', returnCode: buf[start + 1] ?? 255 });
      else if (type === 4) out.push({ type: 'puback', id: buf.readUInt16BE(start) });
      else out.push({ type: 'other', code: type });
      buf = buf.subarray(start + len);
    }
    if (buf.length > 0) this.pending = Buffer.from(buf);
    return out;
  }
}
