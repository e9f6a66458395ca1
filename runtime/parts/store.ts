import type { Component, ComponentContext, Db, Store } from '../contracts/index.js';
import { readableByOthers } from '../security/secret-files.js';
import { BootSequence } from '../sequence.js';
import { databaseFiles, migrate, openDatabase } from '../store/database.js';
import { runtimeMigrations } from '../store/runtime-schema.js';
import { StoreLock } from '../store/store-lock.js';
import type { Part } from './site.js';

/** The gateway's one SQLite store: opened first, closed last; the boot sequence lives in it. */
export class StoreComponent implements Component, Store {
  readonly name = 'store';
  private opened: Db | undefined;
  private seq: BootSequence | undefined;
  private lock: StoreLock | undefined;

  constructor(
    private readonly opts: { path: string; synchronous: 'normal' | 'full'; maxDbBytes?: number | undefined; gatewayId: string },
  ) {}

  get db(): Db {
    if (!this.opened) throw new Error('the store is not open');
    return this.opened;
  }

  /** Ids and sequence numbers unique across restarts (a new boot number per start). */
  get sequence(): BootSequence {
    if (!this.seq) throw new Error('the store is not open');
    return this.seq;
  }

  migrate(component: string, migrations: Parameters<Store['migrate']>[1]): void {
    migrate(this.db, component, migrations);
  }

  async start(ctx?: ComponentContext): Promise<void> {
    const onDisk = this.opts.path !== ':memory:' && this.opts.path !== '';
    // Before the database opens: a second gateway must not touch a store another one runs on.
    const lock = onDisk ? StoreLock.acquire(this.opts.path) : undefined;
    let db: Db | undefined;
    try {
      db = openDatabase({ path: this.opts.path, synchronous: this.opts.synchronous, maxBytes: this.opts.maxDbBytes });
      // openDatabase made them owner-only; a file owned by another user (or on a filesystem without
      // modes) stays as it was, and the operator should know.
      for (const f of databaseFiles(this.opts.path)) {
        if (readableByOthers(f)) ctx?.log.warn({ file: f }, `store file is readable by group or others: chmod 600 ${f}`);
      }
      migrate(db, 'runtime', runtimeMigrations);
      this.seq = new BootSequence(db, this.opts.gatewayId);
    } catch (err) {
      db?.close();
      lock?.release();
      throw err;
    }
    this.opened = db;
    this.lock = lock;
    await Promise.resolve();
  }

  async stop(): Promise<void> {
    this.opened?.close();
    this.lock?.release();
    this.lock = undefined;
    await Promise.resolve();
  }

  status(): Record<string, unknown> {
    return { boot: this.seq?.boot };
  }
}

export const storePart: Part = {
  name: 'store',
  build(site) {
    const { storage, gateway } = site.config;
    const store = new StoreComponent({ path: storage.path, synchronous: storage.synchronous, maxDbBytes: storage.maxDbBytes, gatewayId: gateway.id });
    site.provide('store', store);
    return store;
  },
};
