/**
 * What a simulated cloud received, deduplicated by reading id: the cloud side of the end-to-end
 * accounting. Delivery is at least once, so `received - unique` is the number of duplicates.
 */
export interface LedgerReading {
  readonly id: string;
  readonly device: string;
  readonly point: string;
  readonly quality: string;
  readonly value: unknown;
  readonly seq: number;
}

export class DeliveryLedger {
  private readonly ids = new Set<string>();
  private readonly perGateway = new Map<string, number>();
  readonly byDevice = new Map<string, number>();
  received = 0;
  batches = 0;
  rejected = 0;
  /** Readings with bad quality, per device. */
  readonly bad = new Map<string, number>();
  /** Readings with stale quality (source not answering), per device. */
  readonly stale = new Map<string, number>();
  /**
   * Readings that arrived for the first time after a newer reading (higher seq) of the same device
   * and point: a break of per-source order.
   */
  orderViolations = 0;
  /** OTA events (readings of point `ota`, their value parsed), once each, in arrival order. */
  readonly otaEvents: Array<{ device: string; event: Record<string, unknown> }> = [];
  private readonly lastSeq = new Map<string, number>();

  /**
   * Where the gateway's own records go (points starting with `$`: twins, inventory, configuration
   * counts, call answers; runtime/contracts/twins.ts), each once. They count in `unique` and
   * `uniqueFrom` (the outbox accounts for them like readings) but in no per-device figure.
   */
  onRecord: ((gateway: string, r: LedgerReading) => void) | undefined;
  /** Gateway records received, each once. */
  records = 0;

  recordBatch(gateway: string, readings: readonly LedgerReading[]): void {
    this.batches++;
    for (const r of readings) {
      this.received++;
      if (this.ids.has(r.id)) continue;
      this.ids.add(r.id);
      this.perGateway.set(gateway, (this.perGateway.get(gateway) ?? 0) + 1);
      if (r.point.startsWith('$')) {
        this.records++;
        this.onRecord?.(gateway, r);
        continue;
      }
      const key = `${r.device}\u0000${r.point}`;
      const last = this.lastSeq.get(key);
      if (last !== undefined && r.seq < last) this.orderViolations++;
      else this.lastSeq.set(key, r.seq);
      this.byDevice.set(r.device, (this.byDevice.get(r.device) ?? 0) + 1);
      if (r.quality === 'bad') this.bad.set(r.device, (this.bad.get(r.device) ?? 0) + 1);
      if (r.quality === 'stale') this.stale.set(r.device, (this.stale.get(r.device) ?? 0) + 1);
      if (r.point === 'ota' && typeof r.value === 'string') {
        try {
          this.otaEvents.push({ device: r.device, event: JSON.parse(r.value) as Record<string, unknown> });
        } catch {
          this.rejected++;
        }
      }
    }
  }

  has(id: string): boolean {
    return this.ids.has(id);
  }

  get unique(): number {
    return this.ids.size;
  }

  get duplicates(): number {
    return this.received - this.ids.size;
  }

  uniqueFrom(gateway: string): number {
    return this.perGateway.get(gateway) ?? 0;
  }

  /** Ids of `expected` that never arrived. */
  missing(expected: Iterable<string>): string[] {
    const out: string[] = [];
    for (const id of expected) if (!this.ids.has(id)) out.push(id);
    return out;
  }
}
