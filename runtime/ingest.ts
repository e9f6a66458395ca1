import {
  errorMessage,
  isBatch,
  type Clock,
  type Counter,
  type LocalOutput,
  type Logger,
  type Metrics,
  type Outbox,
  type OutboxItem,
  type Readings,
  type ReadingSink,
  type RuleEngine,
  type RuleOutput,
  type TimerHandle,
} from './contracts/index.js';
import type { Db } from './store/database.js';

interface Pending {
  readonly readings: Readings;
  /** Readings for the outbox as they are, past the rules (from Node-RED's `outpost out`). */
  readonly direct?: readonly OutboxItem[];
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

/** Readings per transaction at most; above this a batch is committed at once. */
const MAX_GROUP = 5000;

/**
 * The in-process path from drivers through rules into the outbox, with group commit: readings
 * submitted in the same turn of the event loop share one transaction, in which the rules run, their
 * outputs are appended to the outbox and the rules' open state is saved. Every submitter's promise
 * resolves only after that commit, so an MQTT PUBACK is never sent for data that is not on disk.
 */
export class IngestPipeline implements ReadingSink {
  private pending: Pending[] = [];
  /** Local outputs of the transaction in progress. */
  private local: LocalOutput[] = [];
  private pendingCount = 0;
  private scheduled = false;
  private closed = false;
  private windowTimer: TimerHandle | undefined;
  private windowDeadline: number | undefined;
  private readonly saveState: (key: string, state: string) => void;
  private readonly deleteState: (key: string) => void;
  private readonly commit: (batch: Pending[], now: number) => number;
  private readonly mReadings: Counter;
  private readonly mOutputs: Counter;
  private readonly mCommits: Counter;
  private readonly mFailures: Counter;
  readingsIn = 0;
  ruleOutputs = 0;

  constructor(
    db: Db,
    private rules: RuleEngine,
    private readonly outbox: Outbox,
    private readonly clock: Clock,
    private readonly log: Logger,
    metrics: Metrics,
    private readonly onCommitted: () => void,
    /** Rule outputs for the local broker and Modbus writes, handed over once their cause is committed. */
    private readonly onLocal: (outputs: LocalOutput[]) => void = () => {},
  ) {
    const upsert = db.prepare('INSERT INTO rule_state (key, state) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET state = excluded.state');
    const del = db.prepare('DELETE FROM rule_state WHERE key = ?');
    this.saveState = (k, s) => upsert.run(k, s);
    this.deleteState = (k) => del.run(k);
    this.commit = db.transaction((batch: Pending[], now: number) => this.apply(batch, now));
    this.mReadings = metrics.counter('outpost_readings_total', 'Readings taken over from drivers');
    this.mOutputs = metrics.counter('outpost_rule_outputs_total', 'Readings emitted by rules', ['route']);
    this.mCommits = metrics.counter('outpost_store_commits_total', 'Ingest transactions committed');
    this.mFailures = metrics.counter('outpost_store_commit_failures_total', 'Ingest transactions that failed (nothing acknowledged)');
    const select = db.prepare('SELECT key, state FROM rule_state');
    this.loadState = () => select.all() as { key: string; state: string }[];
    this.dropState = db.transaction((keys: string[]) => {
      for (const k of keys) del.run(k);
    });
    rules.restore(this.loadState());
    this.armWindowTimer();
  }

  private readonly loadState: () => { key: string; state: string }[];
  private readonly dropState: (keys: string[]) => void;

  /**
   * Hot reload: readings submitted so far are committed with the running rules, then `next` takes
   * over in the same turn of the event loop, so no reading is processed by neither or by both.
   * `keep(key)` tells which saved state (open windows, operator memory) `next` takes over; the
   * rest is deleted.
   */
  replaceRules(next: RuleEngine, keep: (key: string) => boolean): void {
    this.flush();
    const rows = this.loadState();
    this.dropState(rows.filter((r) => !keep(r.key)).map((r) => r.key));
    next.restore(rows.filter((r) => keep(r.key)));
    this.rules = next;
    this.windowDeadline = undefined;
    if (this.windowTimer) this.clock.clearTimeout(this.windowTimer);
    this.windowTimer = undefined;
    this.armWindowTimer();
  }

  /** Called after each commit with the readings it took; see addTap. */
  private readonly taps = new Set<(readings: readonly Readings[]) => void>();

  /**
   * Calls `fn` after each commit with the readings it took (Node-RED's `outpost in`, the device
   * registry's last-seen and bound twin properties); returns the removal. Runs outside the
   * transaction; what it does cannot undo the commit, and one that throws does not stop the others.
   */
  addTap(fn: (readings: readonly Readings[]) => void): () => void {
    this.taps.add(fn);
    return () => this.taps.delete(fn);
  }

  submit(readings: Readings): Promise<void> {
    return this.enqueue(readings, undefined);
  }

  /** Appends `items` to the outbox in the next commit, past the rules; resolves once committed. */
  append(items: readonly OutboxItem[]): Promise<void> {
    return this.enqueue([], items);
  }

  private enqueue(readings: Readings, direct: readonly OutboxItem[] | undefined): Promise<void> {
    if (this.closed) return Promise.reject(new Error('gateway is stopping; readings not taken'));
    return new Promise((resolve, reject) => {
      this.pending.push(direct ? { readings, direct, resolve, reject } : { readings, resolve, reject });
      this.pendingCount += readings.length + (direct?.length ?? 0);
      if (this.pendingCount >= MAX_GROUP) this.flush();
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Commit whatever is pending and close due windows. */
  flush(): void {
    this.scheduled = false;
    const batch = this.pending;
    this.pending = [];
    this.pendingCount = 0;
    const now = this.clock.now();
    const due = this.windowDeadline !== undefined && this.windowDeadline <= now;
    if (batch.length === 0 && !due) {
      // A timer may fire a millisecond before the wall clock reaches the deadline: arm it again.
      this.armWindowTimer();
      return;
    }
    let outputs: number;
    this.local = [];
    try {
      outputs = this.commit(batch, now);
    } catch (err) {
      this.outbox.rolledBack();
      // The rules already moved their memory (deadbands, windows) for readings that are not
      // stored: go back to what the store holds, so the retried readings count once.
      try {
        this.rules.reset(this.loadState());
      } catch (resetErr) {
        this.log.error({ err: errorMessage(resetErr) }, 'rule state not reloaded after a failed commit');
      }
      this.mFailures.inc();
      const error = new Error(`store commit failed: ${errorMessage(err)}`, { cause: err });
      this.log.error({ err: error.message, readings: batch.reduce((n, p) => n + p.readings.length, 0) }, 'ingest commit failed');
      for (const p of batch) p.reject(error);
      this.armWindowTimer();
      return;
    }
    this.outbox.committed();
    this.mCommits.inc();
    for (const p of batch) p.resolve();
    try {
      if (outputs > 0) this.onCommitted();
    } catch (err) {
      this.log.error({ err: errorMessage(err) }, 'uplink notify failed');
    }
    if (this.taps.size > 0 && batch.length > 0) {
      const taken = batch.map((p) => p.readings);
      for (const tap of this.taps) {
        try {
          tap(taken);
        } catch (err) {
          this.log.error({ err: errorMessage(err) }, 'reading tap failed');
        }
      }
    }
    if (this.local.length > 0) {
      const local = this.local;
      this.local = [];
      this.mOutputs.inc({ route: 'local' }, local.length);
      try {
        this.onLocal(local);
      } catch (err) {
        this.log.error({ err: errorMessage(err) }, 'local rule outputs failed');
      }
    }
    this.armWindowTimer();
  }

  async stop(): Promise<void> {
    this.closed = true;
    if (this.windowTimer) this.clock.clearTimeout(this.windowTimer);
    this.flush();
    await Promise.resolve();
  }

  /** Runs inside the transaction. */
  private apply(batch: Pending[], now: number): number {
    const cloud: OutboxItem[] = [];
    let clouded = 0;
    const emit = (out: RuleOutput): void => {
      if (out.route !== 'cloud') {
        this.local.push(out);
        return;
      }
      cloud.push(out.batch ? { batch: out.batch, stream: out.stream } : { envelope: out.envelope, stream: out.stream });
      clouded += out.batch ? out.batch.length : 1;
    };
    let readings = 0;
    for (const p of batch) {
      const rs = p.readings;
      if (isBatch(rs)) this.rules.processBatch(rs, emit);
      else for (const r of rs) this.rules.process(r, emit);
      if (p.direct) {
        for (const item of p.direct) cloud.push(item);
        clouded += p.direct.length;
      }
      readings += p.readings.length;
    }
    this.rules.tick(now, emit);
    this.outbox.append(cloud, now);
    for (const row of this.rules.takeDirtyState()) {
      if (row.state === null) this.deleteState(row.key);
      else this.saveState(row.key, row.state);
    }
    this.readingsIn += readings;
    this.ruleOutputs += clouded;
    this.mReadings.inc(undefined, readings);
    if (clouded > 0) this.mOutputs.inc({ route: 'cloud' }, clouded);
    return clouded;
  }

  private armWindowTimer(): void {
    if (this.closed) return;
    const next = this.rules.nextDeadline();
    if (next === this.windowDeadline && this.windowTimer) return;
    if (this.windowTimer) this.clock.clearTimeout(this.windowTimer);
    this.windowTimer = undefined;
    this.windowDeadline = next;
    if (next === undefined) return;
    this.windowTimer = this.clock.setTimeout(() => {
      this.windowTimer = undefined;
      this.flush();
    }, Math.max(0, next - this.clock.now()));
  }
}
