import type { Outbox } from '../runtime/contracts/index.js';
import type { InterfaceSource } from './net-watch.js';
import type { SyncWindowSpec } from './sync-windows.js';
import type { UplinkCompression, UplinkEncoding } from './uplink-payload.js';

export interface UplinkOptions {
  readonly gatewayId: string;
  /** The cloud broker, or the nodes of a cluster in order of preference (failover rule: broker-list.ts). */
  readonly urls: readonly string[];
  readonly clientId: string;
  readonly username?: string | undefined;
  readonly password?: string | undefined;
  readonly topicPrefix: string;
  readonly batchSize: number;
  readonly maxInFlight: number;
  readonly keepaliveS: number;
  readonly backoff: { readonly initialMs: number; readonly maxMs: number };
  /** Payload layout and compression (cloud-bridge/uplink-payload.ts, docs/topics.md). */
  readonly encoding: UplinkEncoding;
  readonly compression: UplinkCompression;
  /** 1: at least once. 2: once per batch across link drops, where the broker supports it. */
  readonly qos: 1 | 2;
  readonly protocolVersion: 4 | 5;
  /** Failures of a stream's oldest batch before it is halved; of a single reading before it is dead-lettered. */
  readonly maxAttempts: number;
  /** Batches in flight with no acknowledgement for this long: the connection is closed and they count as failed. */
  readonly ackTimeoutMs: number;
  /** Share of the link for live data while a backlog drains (0: strictly oldest first). */
  readonly liveShare: number;
  /** When set, the link is up only inside these windows (and while priority 0 streams hold rows). */
  readonly syncWindows?: readonly SyncWindowSpec[] | undefined;
  /** PEM contents, already read, for mqtts:// (mutual TLS when cert and key are given). */
  readonly tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer; servername?: string; rejectUnauthorized: boolean } | undefined;
  readonly lingerMs: number;
  readonly maxBytesPerS?: number | undefined;
  readonly dailyBytes?: number | undefined;
  /** How often to look at the host's interfaces for a change that ends the backoff wait; 0: never. */
  readonly netWatchMs?: number | undefined;
  /** The interface table (tests replace it). */
  readonly interfaces?: InterfaceSource | undefined;
  /** Jitter source of the reconnect backoff (tests replace it). */
  readonly random?: (() => number) | undefined;
}

/** `idle`: outside every sync window, the link is closed on purpose. */
export type LinkState = 'connecting' | 'up' | 'down' | 'idle' | 'stopped';

/** What the uplink uses of the outbox: it reads streams, acknowledges and dead-letters rows. */
export type UplinkOutbox = Pick<Outbox, 'drainOrder' | 'peek' | 'newestRowid' | 'ack' | 'deadLetter' | 'stats'>;
