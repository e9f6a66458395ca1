import type { Clock, Counter, RequestHandler } from '../contracts/index.js';
import { sendError } from './respond.js';

export interface LoginLimits {
  /** Failed logins from one address before it must wait. */
  readonly failures: number;
  /** The first wait; each wait after another run of failures doubles, up to `maxBlockMs`. */
  readonly blockMs: number;
  readonly maxBlockMs: number;
  /** Addresses tracked at most (the oldest is forgotten first): memory stays bounded under a spray of addresses. */
  readonly maxAddresses: number;
}

export const DEFAULT_LOGIN_LIMITS: LoginLimits = { failures: 5, blockMs: 60_000, maxBlockMs: 15 * 60_000, maxAddresses: 10_000 };

interface Entry {
  /** Attempts since the last wait, counted as failures from the moment they start (see begin()). */
  failures: number;
  /** Waits imposed in a row: the next one is blockMs × 2^blocks. */
  blocks: number;
  blockedUntil: number;
  lastFailure: number;
}

/**
 * Failed editor logins per source address, with an expiring backoff: after `failures` failures an
 * address waits `blockMs`, doubling with every further run of failures up to `maxBlockMs`. A
 * success forgets the address; so does a quiet `maxBlockMs` after its last failure. An attacker
 * can slow the admin (on the same address) by at most `maxBlockMs` at a time, never lock them out
 * for good, and other addresses are never affected.
 */
export class LoginLimiter {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly clock: Clock,
    private readonly limits: LoginLimits = DEFAULT_LOGIN_LIMITS,
  ) {}

  /**
   * An attempt from `address` begins: undefined when it may go on, else the seconds to wait. The
   * attempt counts as a failure until end() says otherwise, so attempts made in parallel cannot
   * get past the limit before the first of them is answered.
   */
  begin(address: string): number | undefined {
    const now = this.clock.now();
    const e = this.current(address, now);
    if (e && e.blockedUntil > now) return Math.ceil((e.blockedUntil - now) / 1000);
    const entry = e ?? this.add(address);
    entry.failures++;
    entry.lastFailure = now;
    if (entry.failures > this.limits.failures) {
      // Over the limit: this attempt is refused and starts a wait.
      entry.failures = 0;
      entry.blockedUntil = now + Math.min(this.limits.maxBlockMs, this.limits.blockMs * 2 ** entry.blocks);
      entry.blocks++;
      return Math.ceil((entry.blockedUntil - now) / 1000);
    }
    return undefined;
  }

  /** How the attempt begun ended: `success` forgets the address, `failure` keeps it counted, `other` (a malformed request) uncounts it. */
  end(address: string, outcome: 'success' | 'failure' | 'other'): void {
    if (outcome === 'success') this.entries.delete(address);
    else if (outcome === 'other') {
      const e = this.entries.get(address);
      if (e && e.failures > 0) e.failures--;
    }
  }

  /** Addresses tracked now (for tests and status). */
  get size(): number {
    return this.entries.size;
  }

  private current(address: string, now: number): Entry | undefined {
    const e = this.entries.get(address);
    if (e && now >= e.blockedUntil && now - Math.max(e.lastFailure, e.blockedUntil) >= this.limits.maxBlockMs) {
      this.entries.delete(address);
      return undefined;
    }
    return e;
  }

  private add(address: string): Entry {
    if (this.entries.size >= this.limits.maxAddresses) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    const e: Entry = { failures: 0, blocks: 0, blockedUntil: 0, lastFailure: 0 };
    this.entries.set(address, e);
    return e;
  }
}

/**
 * Express middleware in front of a login endpoint (Node-RED's POST /red/auth/token): refuses with
 * 429 and Retry-After while the address waits, and reads the answer's status to count the
 * attempt (2xx success; 401 and 403 failure).
 */
export function limitLogins(limiter: LoginLimiter, refused: Counter): RequestHandler {
  return (req, res, next) => {
    if (req.method !== 'POST') {
      next();
      return;
    }
    const address = req.socket.remoteAddress ?? 'unknown';
    const wait = limiter.begin(address);
    if (wait !== undefined) {
      refused.inc({ reason: 'login-limited' });
      res.setHeader('retry-after', String(wait));
      sendError(res, 429, `too many failed logins from ${address}: try again in ${wait} s`);
      return;
    }
    res.once('finish', () => {
      const s = res.statusCode;
      limiter.end(address, s >= 200 && s < 300 ? 'success' : s === 401 || s === 403 ? 'failure' : 'other');
    });
    res.once('close', () => {
      // An answer never finished (the client went away) is not a guess that failed.
      if (!res.writableFinished) limiter.end(address, 'other');
    });
    next();
  };
}
