import { outboxMigrations, SqliteOutbox } from '../../cloud-bridge/outbox.js';
import type { Component, ComponentContext, Outbox, OutboxStats, OutboxStreamConfig } from '../contracts/index.js';
import type { Part } from './site.js';
import type { StoreComponent } from './store.js';

/** The durable outbox in the store: streams with budgets, TTLs and overflow policies (cloud-bridge/outbox.ts). */
export class OutboxComponent implements Component {
  readonly name = 'outbox';
  private box: SqliteOutbox | undefined;
  private last: OutboxStats | undefined;

  constructor(
    private readonly store: StoreComponent,
    private readonly config: { quotaBytes: number; streams: readonly (Omit<OutboxStreamConfig, 'quotaBytes'> & { quotaBytes?: number | undefined })[] },
  ) {}

  /** The outbox, as the contract says (runtime/contracts/outbox.ts). */
  get outbox(): Outbox {
    if (!this.box) throw new Error('the outbox is not open');
    return this.box;
  }

  async start(ctx: ComponentContext): Promise<void> {
    this.store.migrate('outbox', outboxMigrations);
    const { quotaBytes, streams } = this.config;
    this.box = new SqliteOutbox(this.store.db, quotaBytes, ctx.metrics, streams.map((st) => ({ ...st, quotaBytes: st.quotaBytes ?? quotaBytes })));
    await Promise.resolve();
  }

  async stop(): Promise<void> {
    if (this.box) this.last = this.box.stats();
    await Promise.resolve();
  }

  status(): { outbox: OutboxStats } | Record<string, never> {
    const stats = this.last ?? this.box?.stats();
    return stats ? { outbox: stats } : {};
  }
}

export const outboxPart: Part = {
  name: 'outbox',
  build(site) {
    const c = new OutboxComponent(site.get('store'), { quotaBytes: site.config.storage.quotaBytes, streams: site.config.streams });
    site.provide('outbox', c);
    return c;
  },
};
