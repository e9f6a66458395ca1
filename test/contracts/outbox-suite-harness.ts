import { expect } from 'vitest';
import { makeEnvelope, type Envelope, type Metrics, type Outbox, type OutboxItem, type StreamStats } from '../../runtime/contracts/index.js';

/*
 * What the cases of the outbox contract suite (outbox-suite.ts, outbox-suite-outflows.ts) share:
 * the streams they configure, the harness each gets, readings, and the check of the accounting.
 */

/** A stream as the suite configures it; the policies are the two every outbox offers. */
export interface StreamSetup {
  readonly name: string;
  readonly priority: number;
  readonly quotaBytes: number;
  readonly ttlMs?: number;
  readonly overflow: 'drop-oldest' | 'reject-new';
}

export const MiB = 1024 * 1024;
export const STREAMS: readonly StreamSetup[] = [
  { name: 'alarms', priority: 0, quotaBytes: MiB, overflow: 'reject-new' },
  { name: 'telemetry', priority: 5, quotaBytes: MiB, overflow: 'drop-oldest' },
  { name: 'bulk', priority: 9, quotaBytes: MiB, overflow: 'drop-oldest' },
];

/** What a group of cases gets from the suite: a fresh store per test, and the ways to use it. */
export interface ContractHarness {
  /** An outbox on the test's store (default: alarms 0 reject-new, telemetry 5 and bulk 9 drop-oldest, 1 MiB each; quota 10 MiB), checking its accounting after every operation. */
  readonly open: (streams?: readonly StreamSetup[], quotaBytes?: number, metrics?: Metrics) => Outbox;
  /** The gateway restarts: the store is closed and the outbox opened on it again. */
  readonly reopen: (streams?: readonly StreamSetup[], quotaBytes?: number) => Outbox;
  /** A transaction of the store, as the ingest pipeline's. */
  readonly transaction: (fn: () => void) => void;
  /** Appends `list` in a transaction that commits, then tells the outbox. */
  readonly append: (o: Outbox, list: readonly OutboxItem[], now?: number) => void;
  /** Appends `count` readings numbered from `from` (ids r<from>…) to `stream`. */
  readonly put: (o: Outbox, stream: string, from: number, count: number, now?: number) => void;
  /** Declares a case that restarts the gateway on the same store, where the store can be reopened. */
  readonly reopenIt: (title: string, fn: () => void) => void;
}

/** A reading numbered `i`: its id is `r<i>`, so what a stream holds reads as a list of ids. */
export const env = (i: number, device = 'd'): Envelope =>
  makeEnvelope({ id: `r${i}`, device, point: 'p', value: i, quality: 'good', ts: 1_700_000_000_000 + i, seq: i });

/** `count` readings numbered from `from`, for `stream`. */
export const items = (stream: string, from: number, count: number): OutboxItem[] =>
  Array.from({ length: count }, (_, k) => ({ envelope: env(from + k), stream }));

/** The ids of the readings a stream holds, oldest first. */
export const ids = (o: Outbox, stream: string): string[] => o.peek(stream, 0, 1_000_000).map((r) => (JSON.parse(r.body) as Envelope).id);

export const streamOf = (o: Outbox, name: string): StreamStats => {
  const s = o.stats().streams.find((st) => st.stream === name);
  if (!s) throw new Error(`no stream "${name}" in the outbox's stats`);
  return s;
};

/**
 * What the contract promises after every operation that settled (committed, rolled back, or a
 * write in its own transaction): per stream, and summed,
 * `produced + replayed = delivered + expired + dropped + deadLettered + depth`; and what the
 * stats say a stream holds is what `peek` returns: as many rows, as many bytes, ids increasing.
 */
export function expectAccounted(o: Outbox, when: string): void {
  const stats = o.stats();
  for (const s of stats.streams) {
    expect(s.produced + s.replayed, `${when}: ${s.stream}: produced + replayed = delivered + expired + dropped + deadLettered + depth`).toBe(
      s.delivered + s.expired + s.dropped + s.deadLettered + s.depth,
    );
    const rows = o.peek(s.stream, 0, Number.MAX_SAFE_INTEGER);
    expect(rows.length, `${when}: ${s.stream}: depth is the rows peek returns`).toBe(s.depth);
    expect(
      rows.reduce((b, r) => b + r.bytes, 0),
      `${when}: ${s.stream}: bytes are those of the rows peek returns`,
    ).toBe(s.bytes);
    expect(
      rows.reduce((b, r) => b + Buffer.byteLength(r.body), 0),
      `${when}: ${s.stream}: a row's bytes are those of its body in UTF-8`,
    ).toBe(s.bytes);
    const backwards = rows.findIndex((r, i) => i > 0 && r.rowid <= rows[i - 1]!.rowid);
    expect(backwards, `${when}: ${s.stream}: ids increase (first that does not)`).toBe(-1);
  }
  expect(stats.appended + stats.replayed, `${when}: the sums balance too`).toBe(stats.delivered + stats.expired + stats.dropped + stats.deadLettered + stats.depth);
  expect(stats.depth).toBe(stats.streams.reduce((n, s) => n + s.depth, 0));
  expect(stats.bytes).toBe(stats.streams.reduce((n, s) => n + s.bytes, 0));
}

/**
 * `o`, checking the accounting (expectAccounted) after every operation that settles: so every
 * test of the suite proves the equation after each of its steps, not only at its end.
 */
export function accounted(o: Outbox): Outbox {
  let n = 0;
  const settled = <T>(what: string, result: T): T => {
    expectAccounted(o, `after ${what} (operation ${++n})`);
    return result;
  };
  return {
    append: (list, now) => o.append(list, now),
    drainOrder: () => o.drainOrder(),
    peek: (stream, after, limit, upTo) => o.peek(stream, after, limit, upTo),
    newestRowid: () => o.newestRowid(),
    ack: (stream, first, last) => settled('ack', o.ack(stream, first, last)),
    deadLetter: (stream, rowids, reason, now) => settled('deadLetter', o.deadLetter(stream, rowids, reason, now)),
    listDeadLetters: (limit) => o.listDeadLetters(limit),
    deadLetterCount: () => o.deadLetterCount(),
    replayDeadLetters: (now, list) => settled('replayDeadLetters', o.replayDeadLetters(now, list)),
    expire: (now) => settled('expire', o.expire(now)),
    committed: () => settled('committed', o.committed()),
    rolledBack: () => settled('rolledBack', o.rolledBack()),
    stats: () => o.stats(),
  };
}
