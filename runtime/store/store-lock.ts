import { closeSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { hostname } from 'node:os';

/** Another gateway process holds the store. */
export class StoreInUse extends Error {
  override readonly name = 'StoreInUse';
  constructor(
    readonly path: string,
    readonly pid: number,
  ) {
    super(`storage.path ${path} is in use by another Outpost gateway (pid ${pid}): stop that one, or give this gateway its own storage.path`);
  }
}

interface Holder {
  readonly pid: number;
  readonly host: string;
  readonly since: number;
}

/** Paths this process holds: a second gateway in the same process is refused too. */
const heldHere = new Set<string>();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, owned by someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readHolder(path: string): Holder | undefined {
  try {
    const h = JSON.parse(readFileSync(path, 'utf8')) as Partial<Holder>;
    return typeof h.pid === 'number' && typeof h.host === 'string' ? { pid: h.pid, host: h.host, since: Number(h.since ?? 0) } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * One gateway per store: a lock file beside the database (`<db>.lock`, owner-only) naming the
 * process that holds it. Two gateways on one file would share the outbox, knock each other off the
 * cloud with the same client id and report depths the database does not hold. A lock left by a
 * process that is gone (kill -9, power cut) is taken over; one held by a live process on this host
 * is refused with its pid.
 */
export class StoreLock {
  private released = false;

  private constructor(readonly path: string) {}

  static acquire(dbPath: string): StoreLock {
    const path = `${dbPath}.lock`;
    // The store's directory, as openDatabase would make it (owner-only), when this is the first start.
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fd = openSync(path, 'wx', 0o600);
        try {
          writeSync(fd, JSON.stringify({ pid: process.pid, host: hostname(), since: Date.now() }));
        } finally {
          closeSync(fd);
        }
        heldHere.add(path);
        return new StoreLock(path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const holder = readHolder(path);
      const mine = holder?.pid === process.pid;
      if (holder && holder.host === hostname() && ((mine && heldHere.has(path)) || (!mine && alive(holder.pid)))) throw new StoreInUse(dbPath, holder.pid);
      // Stale (its process is gone) or unreadable (a crash while writing it): take it over. Two
      // processes doing so at once race on the exclusive create above; the loser sees the winner.
      try {
        unlinkSync(path);
      } catch {
        // Gone already: another process took it over first.
      }
    }
    throw new Error(`storage.path ${dbPath}: could not take the lock ${path}`);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    heldHere.delete(this.path);
    if (readHolder(this.path)?.pid === process.pid) {
      try {
        unlinkSync(this.path);
      } catch {
        // Removed by hand: nothing to release.
      }
    }
  }
}
