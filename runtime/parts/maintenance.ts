import { errorMessage, type Component, type ComponentContext } from '../contracts/index.js';
import { checkpoint } from '../store/database.js';
import type { Part } from './site.js';

/**
 * Every 5 s: readings past their stream's TTL leave the outbox as `expired` (counted), and the WAL
 * is checkpointed and truncated so it stays small whatever the write rate.
 */
class StoreMaintenance implements Component {
  readonly name = 'store-maintenance';
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly run: () => void) {}

  async start(ctx: ComponentContext): Promise<void> {
    this.timer = setInterval(() => {
      try {
        this.run();
      } catch (err) {
        ctx.log.error({ err: errorMessage(err) }, 'store maintenance failed');
      }
    }, 5_000);
    this.timer.unref();
    await Promise.resolve();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await Promise.resolve();
  }

  status(): Record<string, unknown> {
    return {};
  }
}

export const maintenancePart: Part = {
  name: 'store-maintenance',
  build(site) {
    const { clock } = site.opts;
    const store = site.get('store');
    const outbox = site.get('outbox').outbox;
    return new StoreMaintenance(() => {
      outbox.expire(clock.now());
      checkpoint(store.db);
    });
  },
};
