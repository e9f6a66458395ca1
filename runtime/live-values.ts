import { isBatch, type Quality, type Readings, type Value } from './contracts/index.js';

/** A point as the status page shows it: its last reading and a short trend of numeric values. */
export interface LivePoint {
  readonly point: string;
  readonly value: Value;
  readonly quality: Quality;
  readonly ts: number;
  readonly unit?: string;
  /** Up to `trendLength` numeric values, oldest first, at most one per `trendEveryMs`. */
  readonly trend: readonly number[];
}

interface Entry {
  value: Value;
  quality: Quality;
  ts: number;
  unit: string | undefined;
  trend: number[];
  trendAt: number;
}

/**
 * The last value of every point committed, per device, with a short trend: fed by the ingest
 * path's tap after each commit (never inside it), bounded in points and trend length. What the
 * status page shows as the site's devices.
 */
export class LiveValues {
  private readonly devices = new Map<string, Map<string, Entry>>();
  private points = 0;

  constructor(
    private readonly opts: { maxPoints: number; trendLength: number; trendEveryMs: number } = { maxPoints: 5000, trendLength: 40, trendEveryMs: 1000 },
  ) {}

  take(all: readonly Readings[]): void {
    for (const rs of all) {
      if (isBatch(rs)) {
        for (let k = 0; k < rs.length; k++) this.set(rs.device, rs.point(k), rs.value(k), rs.quality(k), rs.ts(k), rs.table.units[rs.pointIndex(k)]);
      } else {
        for (const r of rs) this.set(r.device, r.point, r.value, r.quality, r.ts, r.unit);
      }
    }
  }

  private set(device: string, point: string, value: Value, quality: Quality, ts: number, unit: string | undefined): void {
    let points = this.devices.get(device);
    let e = points?.get(point);
    if (!e) {
      if (this.points >= this.opts.maxPoints) return;
      if (!points) this.devices.set(device, (points = new Map<string, Entry>()));
      points.set(point, (e = { value, quality, ts, unit, trend: [], trendAt: 0 }));
      this.points++;
    }
    e.value = value;
    e.quality = quality;
    e.ts = ts;
    e.unit = unit;
    if (typeof value === 'number' && quality === 'good' && ts - e.trendAt >= this.opts.trendEveryMs) {
      e.trend.push(value);
      e.trendAt = ts;
      if (e.trend.length > this.opts.trendLength) e.trend.shift();
    }
  }

  /** Devices by id, each with its points by name. */
  snapshot(): { device: string; points: LivePoint[] }[] {
    return [...this.devices]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([device, points]) => ({
        device,
        points: [...points].map(([point, e]) => ({ point, value: e.value, quality: e.quality, ts: e.ts, ...(e.unit !== undefined ? { unit: e.unit } : {}), trend: [...e.trend] })),
      }));
  }
}
