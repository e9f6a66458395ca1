import type Database from 'better-sqlite3';
import type { Counter, Db, Gauge, Metrics, OutboxStats, OutboxStreamConfig, StreamStats } from '../runtime/contracts/index.js';
import { overflowPolicy, type OverflowPolicy } from './overflow/index.js';

export type CounterName = 'produced' | 'delivered' | 'expired' | 'dropped' | 'deadLettered' | 'replayed';
const COUNTERS: readonly CounterName[] = ['produced', 'delivered', 'expired', 'dropped', 'deadLettered', 'replayed'];
const OUTCOME: Record<CounterName, string> = {
  produced: 'produced',
  delivered: 'delivered',
  expired: 'expired',
  dropped: 'dropped',
  deadLettered: 'dead-lettered',
  replayed: 'replayed',
};

export interface StreamState {
  readonly config: OutboxStreamConfig;
  readonly policy: OverflowPolicy;
  depth: number;
  bytes: number;
  readonly counts: Record<CounterName, number>;
  /** Changes not yet written to outbox_counters. */
  readonly pending: Record<CounterName, number>;
  /** Written in the open transaction, counted once it commits. */
  readonly staged: Record<CounterName, number>;
}

const zeroCounts = (): Record<CounterName, number> => ({ produced: 0, delivered: 0, expired: 0, dropped: 0, deadLettered: 0, replayed: 0 });

/**
 * The outbox's streams and their accounting: depth, bytes and the counters of
 * `produced + replayed = delivered + expired + dropped + deadLettered + depth`. A change is noted
 * as pending, written to `outbox_counters` in the transaction that changed the rows (`flush`), and
 * counted (and exported as metrics) only once that transaction committed; a rollback forgets it
 * and reads depth and bytes from the rows again.
 */
export class StreamAccounts {
  private readonly states = new Map<string, StreamState>();
  private order: string[] = [];
  private drain: { name: string; priority: number }[] = [];
  private readonly bumpCounter: Database.Statement<[string, string, number]>;
  private readonly mCount: Counter;
  private readonly mDepth: Gauge;
  private readonly mBytes: Gauge;

  constructor(
    private readonly db: Db,
    /** Budget of a stream found in the store but not configured (it drains last). */
    private readonly quotaBytes: number,
    metrics: Metrics,
    streams: readonly OutboxStreamConfig[],
  ) {
    for (const config of streams) this.add(config);
    // Rows of streams no longer configured still drain, last, within the global quota.
    for (const r of db.prepare('SELECT DISTINCT stream FROM outbox_chunks UNION SELECT DISTINCT stream FROM outbox_counters').all() as { stream: string }[]) {
      if (!this.states.has(r.stream)) this.unknown(r.stream);
    }
    this.loadDepth();
    for (const r of db.prepare('SELECT stream, name, value FROM outbox_counters').all() as { stream: string; name: string; value: number }[]) {
      const s = this.states.get(r.stream);
      if (s && (COUNTERS as readonly string[]).includes(r.name)) s.counts[r.name as CounterName] = r.value;
    }
    this.bumpCounter = db.prepare(
      'INSERT INTO outbox_counters (stream, name, value) VALUES (?, ?, ?) ON CONFLICT (stream, name) DO UPDATE SET value = value + excluded.value',
    );
    this.mCount = metrics.counter('outpost_outbox_readings_total', 'Readings per stream and outcome (produced, delivered, expired, dropped, dead-lettered, replayed)', [
      'stream',
      'outcome',
    ]);
    this.mDepth = metrics.gauge('outpost_outbox_depth', 'Readings waiting in the outbox', ['stream']);
    this.mBytes = metrics.gauge('outpost_outbox_bytes', 'Bytes waiting in the outbox', ['stream']);
    this.publishGauges();
  }

  /** The stream's state; a stream not configured is added (priority 9, drop-oldest). */
  of(name: string): StreamState {
    return this.states.get(name) ?? this.unknown(name);
  }

  find(name: string): StreamState | undefined {
    return this.states.get(name);
  }

  all(): IterableIterator<StreamState> {
    return this.states.values();
  }

  /** Streams by priority, highest (0) first. */
  byPriority(): readonly string[] {
    return this.order;
  }

  drainOrder(): readonly { readonly name: string; readonly priority: number }[] {
    return this.drain;
  }

  totalBytes(): number {
    let n = 0;
    for (const s of this.states.values()) n += s.bytes;
    return n;
  }

  /** Readings and their bytes left the stream as `outcome` (inside the transaction that removed them). */
  removed(s: StreamState, rows: number, bytes: number, outcome: 'delivered' | 'expired' | 'deadLettered' | 'dropped'): void {
    if (rows === 0) return;
    s.depth -= rows;
    s.bytes -= bytes;
    s.pending[outcome] += rows;
  }

  /** Writes the pending counter changes; runs inside the transaction that made them. */
  flush(): void {
    for (const s of this.states.values()) {
      for (const k of COUNTERS) {
        const d = s.pending[k];
        if (d === 0) continue;
        this.bumpCounter.run(s.config.name, k, d);
        s.staged[k] += d;
        s.pending[k] = 0;
      }
    }
  }

  /** The transaction that carried the last changes committed: count them. */
  committed(): void {
    for (const s of this.states.values()) {
      for (const k of COUNTERS) {
        const d = s.staged[k];
        if (d === 0) continue;
        s.counts[k] += d;
        s.staged[k] = 0;
        this.mCount.inc({ stream: s.config.name, outcome: OUTCOME[k] }, d);
      }
    }
    this.publishGauges();
  }

  /** The transaction rolled back: forget its changes and read depth and bytes again. */
  rolledBack(): void {
    for (const s of this.states.values()) {
      for (const k of COUNTERS) {
        s.staged[k] = 0;
        s.pending[k] = 0;
      }
    }
    this.loadDepth();
    this.publishGauges();
  }

  stats(): OutboxStats {
    const streams: StreamStats[] = this.order.map((name) => {
      const s = this.states.get(name)!;
      return { stream: name, priority: s.config.priority, depth: s.depth, bytes: s.bytes, ...s.counts };
    });
    const sum = (k: keyof StreamStats): number => streams.reduce((n, s) => n + (s[k] as number), 0);
    return {
      depth: sum('depth'),
      bytes: sum('bytes'),
      appended: sum('produced'),
      delivered: sum('delivered'),
      expired: sum('expired'),
      dropped: sum('dropped'),
      deadLettered: sum('deadLettered'),
      replayed: sum('replayed'),
      streams,
    };
  }

  private add(config: OutboxStreamConfig): StreamState {
    const state: StreamState = { config, policy: overflowPolicy(config.overflow), depth: 0, bytes: 0, counts: zeroCounts(), pending: zeroCounts(), staged: zeroCounts() };
    this.states.set(config.name, state);
    this.order = [...this.states.values()].sort((a, b) => a.config.priority - b.config.priority).map((s) => s.config.name);
    this.drain = this.order.map((name) => ({ name, priority: this.states.get(name)!.config.priority }));
    return state;
  }

  private unknown(name: string): StreamState {
    return this.add({ name, priority: 9, quotaBytes: this.quotaBytes, overflow: 'drop-oldest' });
  }

  private loadDepth(): void {
    for (const s of this.states.values()) {
      s.depth = 0;
      s.bytes = 0;
    }
    const rows = this.db
      .prepare('SELECT stream, coalesce(sum(last_seq - rowid + 1), 0) AS n, coalesce(sum(bytes), 0) AS b FROM outbox_chunks GROUP BY stream')
      .all() as { stream: string; n: number; b: number }[];
    for (const r of rows) {
      const s = this.of(r.stream);
      s.depth = r.n;
      s.bytes = r.b;
    }
  }

  private publishGauges(): void {
    for (const s of this.states.values()) {
      this.mDepth.set(s.depth, { stream: s.config.name });
      this.mBytes.set(s.bytes, { stream: s.config.name });
    }
  }
}
