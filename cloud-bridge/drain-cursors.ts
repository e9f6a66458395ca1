/** A range of a stream to read next: rows after `after`, up to `upTo` when given. */
export interface DrainRange {
  readonly after: number;
  readonly upTo?: number;
  readonly live: boolean;
}

/**
 * Where each stream is read from during one session. Rows stored before the session began are the
 * backlog, rows after it are live. With `liveShare` 0 a stream drains strictly oldest first. With a
 * share s > 0, live batches take about s of what is sent while a backlog remains, so hours of
 * backlog do not hold back what happens now; each part keeps its own order (a device's live
 * readings may then reach the cloud before its older backlog, which `ts` and `seq` still order).
 */
export class DrainCursors {
  private readonly backlog = new Map<string, number>();
  private readonly live = new Map<string, number>();
  private readonly backlogDone = new Set<string>();
  private watermark = 0;
  private sentLive = 0;
  private sentBacklog = 0;

  constructor(private readonly liveShare: number) {}

  /** A new session: everything stored up to `newestRowid` is backlog. */
  reset(newestRowid: number): void {
    this.backlog.clear();
    this.live.clear();
    this.backlogDone.clear();
    this.watermark = newestRowid;
    this.sentLive = 0;
    this.sentBacklog = 0;
  }

  /** Ranges to try for `stream`, preferred first. */
  candidates(stream: string): DrainRange[] {
    const backlogAfter = this.backlog.get(stream) ?? 0;
    if (this.liveShare === 0) return [{ after: backlogAfter, live: false }];
    const liveAfter = this.live.get(stream) ?? this.watermark;
    if (this.backlogDone.has(stream)) return [{ after: liveAfter, live: true }];
    const live: DrainRange = { after: liveAfter, live: true };
    const old: DrainRange = { after: backlogAfter, upTo: this.watermark, live: false };
    const liveDue = this.sentLive < this.liveShare * (this.sentLive + this.sentBacklog + 1);
    return liveDue ? [live, old] : [old, live];
  }

  /** The backlog range of `stream` came back empty: from now on it is one live range. */
  exhausted(stream: string): void {
    this.backlogDone.add(stream);
  }

  sent(stream: string, last: number, live: boolean, rows: number): void {
    (live ? this.live : this.backlog).set(stream, last);
    if (live) this.sentLive += rows;
    else this.sentBacklog += rows;
  }

  /** A batch failed: read its part of the stream again from its first row. */
  rewind(stream: string, first: number, live: boolean): void {
    const map = live && this.liveShare > 0 ? this.live : this.backlog;
    const fallback = live && this.liveShare > 0 ? this.watermark : 0;
    map.set(stream, Math.min(map.get(stream) ?? fallback, first - 1));
    if (!live) this.backlogDone.delete(stream);
  }
}
