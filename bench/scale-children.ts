import { connect as netConnect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { deriveDeviceKey } from '../runtime/contracts/index.js';
import { asDup, connectPacket, DISCONNECT, PacketReader, PINGREQ, publishPacket } from './lean-mqtt.js';

/**
 * One worker process of the scale benchmark's load (bench/scale.ts forks several): a share of the
 * site's child devices, each on its own connection, speaking the child contract of docs/topics.md
 * with lean MQTT (./lean-mqtt.ts). Each child connects with its enrollment-group key and a last
 * will, publishes its birth (`status`, QoS 1, retained) and one reading (QoS 1), and later one
 * reading a second. A reading counts as acknowledged only when its PUBACK arrived; a child that
 * loses its connection reconnects with jittered backoff and resends what was not acknowledged,
 * as mqtt.js does. Driven by its parent over IPC (`ScaleCommand` in, `ScaleReport` out).
 */

export type ScaleCommand =
  | { readonly cmd: 'connect'; readonly port: number; readonly at: number }
  | { readonly cmd: 'run'; readonly at: number; readonly seconds: number; readonly drainMs: number }
  | { readonly cmd: 'close' };

export interface ScaleSetup {
  readonly worker: number;
  readonly workers: number;
  /** Children across all workers; this one takes every `workers`-th, from `worker`. */
  readonly total: number;
  readonly prefix: string;
  readonly groupSecret: string;
  readonly point: string;
}

export interface Progress {
  readonly connected: number;
  readonly phase1Done: number;
  readonly acked: number;
  readonly published: number;
  readonly reconnects: number;
  readonly refused: number;
}

export type ScaleReport =
  | { readonly type: 'ready' }
  | ({ readonly type: 'progress' } & Progress)
  | ({
      readonly type: 'phase1';
      readonly lastDoneAt: number;
      readonly connectErrors: number;
      /** Connection errors before CONNACK by code (ECONNRESET, …; `timeout`: no CONNACK in time). */
      readonly errorsByCode: Record<string, number>;
      readonly refusedByCode: Record<string, number>;
    } & Progress)
  | ({
      readonly type: 'phase2';
      readonly skipped: number;
      /** Published but never acknowledged when the drain window ended. */
      readonly unacked: number;
      /** Publish to PUBACK of the once-a-second readings, a uniform sample (ms). */
      readonly ackMs: number[];
      /** Per child: the message numbers acknowledged, as inclusive runs [from, to]. */
      readonly ackedRuns: Array<[string, Array<[number, number]>]>;
    } & Progress)
  | { readonly type: 'closed' };

/** Epoch milliseconds with sub-millisecond resolution, comparable across processes. */
export const epochMs = (): number => performance.timeOrigin + performance.now();

const KEEPALIVE_S = 60;
const CONNECT_TIMEOUT_MS = 30_000;
const MAX_IN_FLIGHT = 30;
const SAMPLE_CAP = 20_000;
/** Message number of the birth in a child's acknowledgement record (readings are 0, 1, 2, …). */
const BIRTH = -1;

interface InFlight {
  readonly n: number;
  readonly packet: Buffer;
  readonly sentAt: number;
  written: boolean;
}

interface Child {
  readonly id: string;
  readonly password: string;
  readonly statusTopic: string;
  readonly telemetryTopic: string;
  socket: Socket | undefined;
  reader: PacketReader;
  connected: boolean;
  started: boolean;
  attempts: number;
  nextId: number;
  readonly inFlight: Map<number, InFlight>;
  readonly acked: number[];
  birthAcked: boolean;
  doneAt: number;
  lastWriteAt: number;
  timer: NodeJS.Timeout | undefined;
}

const send = (msg: ScaleReport): void => {
  process.send?.(msg);
};

class Fleet {
  private readonly children: Child[] = [];
  private port = 0;
  private closing = false;
  private phase1Done = 0;
  private phase1Reported = false;
  private acked = 0;
  private published = 0;
  private reconnects = 0;
  private refused = 0;
  private connectErrors = 0;
  private skipped = 0;
  private lastDoneAt = 0;
  private readonly refusedByCode: Record<string, number> = {};
  private readonly errorsByCode: Record<string, number> = {};
  private samples: number[] = [];
  private sampled = 0;
  private measuring = false;

  constructor(private readonly setup: ScaleSetup) {
    for (let g = setup.worker; g < setup.total; g += setup.workers) {
      const id = `${setup.prefix}${g}`;
      this.children.push({
        id,
        password: deriveDeviceKey(setup.groupSecret, id),
        statusTopic: `outpost/v1/dev/${id}/status`,
        telemetryTopic: `outpost/v1/dev/${id}/telemetry`,
        socket: undefined,
        reader: new PacketReader(),
        connected: false,
        started: false,
        attempts: 0,
        nextId: 1,
        inFlight: new Map(),
        acked: [],
        birthAcked: false,
        doneAt: 0,
        lastWriteAt: 0,
        timer: undefined,
      });
    }
  }

  progress(): Progress {
    return {
      connected: this.children.reduce((n, c) => n + (c.connected ? 1 : 0), 0),
      phase1Done: this.phase1Done,
      acked: this.acked,
      published: this.published,
      reconnects: this.reconnects,
      refused: this.refused,
    };
  }

  /** Every child at once: the site after a power cut, or a gateway restart. */
  connectAll(port: number): void {
    this.port = port;
    for (const c of this.children) this.open(c);
    setInterval(() => this.keepAlive(), 10_000).unref();
  }

  private open(c: Child): void {
    if (this.closing) return;
    const socket = netConnect({ host: '127.0.0.1', port: this.port });
    c.socket = socket;
    c.reader = new PacketReader();
    socket.setNoDelay(true);
    c.timer = setTimeout(() => {
      // No CONNACK in time: give up on this connection and try again, as a device does.
      this.connectError('timeout');
      socket.destroy();
    }, CONNECT_TIMEOUT_MS);
    socket.on('connect', () => {
      this.write(
        c,
        connectPacket({
          clientId: c.id,
          username: c.id,
          password: c.password,
          keepaliveS: KEEPALIVE_S,
          will: { topic: c.statusTopic, payload: '{"state":"offline"}', qos: 1, retain: true },
        }),
      );
    });
    socket.on('data', (chunk: Buffer) => {
      let packets;
      try {
        packets = c.reader.feed(chunk);
      } catch {
        socket.destroy();
        return;
      }
      for (const p of packets) {
        if (p.type === 'connack') this.onConnack(c, p.returnCode);
        else if (p.type === 'puback') this.onPuback(c, p.id);
      }
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (!c.connected) this.connectError(err.code ?? 'error');
    });
    socket.on('close', () => {
      if (c.timer) clearTimeout(c.timer);
      c.timer = undefined;
      c.connected = false;
      if (c.socket === socket) c.socket = undefined;
      if (this.closing) return;
      // Full jitter on a doubling ceiling, as the gateway's own reconnects do.
      this.reconnects++;
      c.attempts++;
      const ceiling = Math.min(8000, 500 * 2 ** Math.min(c.attempts, 4));
      setTimeout(() => this.open(c), 100 + Math.random() * ceiling);
    });
  }

  private connectError(code: string): void {
    this.connectErrors++;
    this.errorsByCode[code] = (this.errorsByCode[code] ?? 0) + 1;
  }

  private onConnack(c: Child, rc: number): void {
    if (c.timer) clearTimeout(c.timer);
    c.timer = undefined;
    if (rc !== 0) {
      this.refused++;
      this.refusedByCode[rc] = (this.refusedByCode[rc] ?? 0) + 1;
      c.socket?.destroy();
      return;
    }
    c.connected = true;
    c.attempts = 0;
    // What the last connection did not get acknowledged goes again, marked as a resend.
    for (const f of c.inFlight.values()) {
      this.write(c, f.written ? asDup(f.packet) : f.packet);
      f.written = true;
    }
    if (!c.started) {
      c.started = true;
      this.publish(c, BIRTH, c.statusTopic, '{"state":"online","attributes":{"model":"scale-sim"}}', true);
      this.reading(c, 0);
    }
  }

  private onPuback(c: Child, id: number): void {
    const f = c.inFlight.get(id);
    if (!f) return;
    c.inFlight.delete(id);
    const now = epochMs();
    if (f.n === BIRTH) c.birthAcked = true;
    else {
      c.acked.push(f.n);
      this.acked++;
      if (this.measuring && f.n > 0) this.sample(now - f.sentAt);
    }
    if (c.doneAt === 0 && c.birthAcked && c.acked.includes(0)) {
      c.doneAt = now;
      this.lastDoneAt = Math.max(this.lastDoneAt, now);
      this.phase1Done++;
      if (this.phase1Done === this.children.length && !this.phase1Reported) {
        this.phase1Reported = true;
        send({ type: 'phase1', lastDoneAt: this.lastDoneAt, connectErrors: this.connectErrors, errorsByCode: this.errorsByCode, refusedByCode: this.refusedByCode, ...this.progress() });
      }
    }
  }

  private sample(ms: number): void {
    this.sampled++;
    if (this.samples.length < SAMPLE_CAP) this.samples.push(ms);
    else {
      const i = Math.floor(Math.random() * this.sampled);
      if (i < SAMPLE_CAP) this.samples[i] = ms;
    }
  }

  private reading(c: Child, n: number): void {
    const payload = `{"id":${n},"ts":${Date.now()},"points":{"${this.setup.point}":{"value":${(n % 997) + 0.25},"quality":"good"}}}`;
    this.publish(c, n, c.telemetryTopic, payload, false);
  }

  private publish(c: Child, n: number, topic: string, payload: string, retain: boolean): void {
    if (c.inFlight.size >= MAX_IN_FLIGHT) {
      this.skipped++;
      return;
    }
    let id = c.nextId;
    while (c.inFlight.has(id)) id = (id % 65535) + 1;
    c.nextId = (id % 65535) + 1;
    const f: InFlight = { n, packet: publishPacket(topic, payload, id, { retain }), sentAt: epochMs(), written: false };
    c.inFlight.set(id, f);
    this.published++;
    if (c.connected) {
      this.write(c, f.packet);
      f.written = true;
    }
  }

  private write(c: Child, buf: Buffer): void {
    c.socket?.write(buf);
    c.lastWriteAt = performance.now();
  }

  private keepAlive(): void {
    const idleSince = performance.now() - (KEEPALIVE_S * 1000) / 3;
    for (const c of this.children) if (c.connected && c.lastWriteAt < idleSince) this.write(c, PINGREQ);
  }

  /** One reading a second per child from `at`, spread evenly over each second across the site. */
  run(at: number, seconds: number, drainMs: number): void {
    const { total, worker, workers } = this.setup;
    const count = this.children.length;
    // Child k of this worker is child worker + k * workers of the site: its slot in the second.
    const offset = (k: number): number => ((worker + k * workers) / total) * 1000;
    const due = (i: number): number => at + Math.floor(i / count) * 1000 + offset(i % count);
    const end = seconds * count;
    let next = 0;
    this.measuring = true;
    const tick = (): void => {
      const now = epochMs();
      while (next < end && due(next) <= now) {
        this.reading(this.children[next % count]!, Math.floor(next / count) + 1);
        next++;
      }
      if (next < end) {
        setTimeout(tick, 2);
        return;
      }
      const deadline = now + drainMs;
      const drain = (): void => {
        const left = this.children.reduce((n, c) => n + c.inFlight.size, 0);
        if (left > 0 && epochMs() < deadline) {
          setTimeout(drain, 50);
          return;
        }
        this.measuring = false;
        send({ type: 'phase2', skipped: this.skipped, unacked: left, ackMs: this.samples, ackedRuns: this.children.map((c) => [c.id, runs(c.acked)]), ...this.progress() });
      };
      drain();
    };
    setTimeout(tick, Math.max(0, at - epochMs()));
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(
      this.children.map(
        (c) =>
          new Promise<void>((resolve) => {
            const s = c.socket;
            if (c.timer) clearTimeout(c.timer);
            if (!s || s.destroyed) {
              resolve();
              return;
            }
            const t = setTimeout(() => {
              s.destroy();
              resolve();
            }, 5000);
            s.once('close', () => {
              clearTimeout(t);
              resolve();
            });
            // A clean goodbye: the broker drops the will [MQTT-3.14.4-3].
            if (c.connected) s.end(DISCONNECT);
            else s.destroy();
          }),
      ),
    );
  }
}

/** Sorted message numbers as inclusive runs: [0, 1, 2, 5] -> [[0, 2], [5, 5]]. */
export function runs(ns: readonly number[]): Array<[number, number]> {
  const sorted = [...ns].sort((a, b) => a - b);
  const out: Array<[number, number]> = [];
  for (const n of sorted) {
    const last = out[out.length - 1];
    if (last && n <= last[1] + 1) last[1] = Math.max(last[1], n);
    else out.push([n, n]);
  }
  return out;
}

function main(): void {
  const setup = JSON.parse(process.argv[2] ?? '{}') as ScaleSetup;
  const fleet = new Fleet(setup);
  const progress = setInterval(() => send({ type: 'progress', ...fleet.progress() }), 500);
  process.on('message', (m: ScaleCommand) => {
    if (m.cmd === 'connect') setTimeout(() => fleet.connectAll(m.port), Math.max(0, m.at - epochMs()));
    else if (m.cmd === 'run') fleet.run(m.at, m.seconds, m.drainMs);
    else if (m.cmd === 'close') {
      clearInterval(progress);
      void fleet.close().then(() => {
        send({ type: 'closed' });
        process.disconnect?.();
      });
    }
  });
  // The parent gone (killed, crashed): this worker must not outlive it.
  process.on('disconnect', () => process.exit(0));
  send({ type: 'ready' });
}

if (process.send) main();
