import { createHmac, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { compileGlob, errorMessage } from '../contracts/index.js';
import type { Identity } from '../broker/acl.js';
import type { IdentitiesConfig } from './config.js';
import { deriveDeviceKey, sameSecret, verifyPassword } from './passwords.js';
import type { IdentityStore } from './store.js';

/** What a connecting client presents. */
export interface Presented {
  readonly clientId: string;
  readonly username?: string | undefined;
  readonly password?: Buffer | undefined;
  readonly remoteAddress: string;
  /** The client certificate of a TLS connection, if it sent one. */
  readonly certificate?: PeerCertificate | undefined;
}

export interface PeerCertificate {
  readonly cert: X509Certificate;
  /** Whether TLS verified its chain against the listener's client CAs. */
  readonly chainVerified: boolean;
}

/** CONNACK return codes of MQTT 3.1.1 (§3.2.2.3) the broker refuses with. */
export type RefusalCode = 2 | 3 | 4 | 5;
export type AuthOutcome = { readonly ok: true; readonly identity: Identity; readonly enrolled: boolean } | { readonly ok: false; readonly code: RefusalCode; readonly cause: string; readonly message: string };

interface Account {
  readonly kind: 'device' | 'client';
  readonly passwordHash?: string | undefined;
  readonly certSha256?: string | undefined;
}

interface Group {
  readonly name: string;
  readonly matches: (id: string) => boolean;
  readonly secret?: Buffer;
  readonly ca?: X509Certificate;
}

export function isLoopback(address: string): boolean {
  const a = address.startsWith('::ffff:') ? address.slice(7) : address;
  return a === '::1' || (isIP(a) === 4 && a.startsWith('127.'));
}

/** A client id Outpost accepts: what an identity id may be (no `/`, `+`, `#`, NUL; bounded). */
const CLIENT_ID = /^[A-Za-z0-9_.-]+$/;

/**
 * Decides who a connecting client is (docs/security.md): per-identity passwords (scrypt) or pinned
 * certificates, enrollment groups (a derived key or a CA), anonymous from loopback when allowed.
 * The client id must be the identity. Revocations (config, store) win over every credential.
 */
export class IdentityRegistry {
  private readonly accounts = new Map<string, Account>();
  private readonly groups: Group[];
  private readonly revoked = new Set<string>();
  /** Passwords already verified against their scrypt hash, as an HMAC under a per-process key: a reconnect costs a hash, not scrypt. */
  private readonly verified = new Map<string, string>();
  private readonly cacheKey: Buffer;

  constructor(
    private readonly cfg: IdentitiesConfig,
    private readonly opts: {
      /** Devices read by a driver (Modbus): id -> protocol. They can never connect. */
      readonly driven: ReadonlyMap<string, string>;
      readonly anonymous: boolean;
      readonly maxClientIdBytes: number;
      readonly store?: IdentityStore | undefined;
      readonly secret: Buffer;
      readonly now: () => number;
    },
  ) {
    for (const d of cfg.devices) this.accounts.set(d.id, { kind: 'device', passwordHash: d.passwordHash, certSha256: d.certSha256 });
    for (const c of cfg.clients) this.accounts.set(c.id, { kind: 'client', passwordHash: c.passwordHash, certSha256: c.certSha256 });
    this.groups = cfg.groups.map((g) => {
      const matches = compileGlob(g.devices);
      try {
        if (g.caFile !== undefined) return { name: g.name, matches, ca: new X509Certificate(readFileSync(g.caFile)) };
        const secret = g.secret !== undefined ? Buffer.from(g.secret) : readFileSync(g.secretFile ?? '').subarray(0, 4096);
        // A secret file's trailing newline is not part of the secret.
        return { name: g.name, matches, secret: Buffer.from(secret.toString('utf8').trim()) };
      } catch (err) {
        throw new Error(`identities.groups "${g.name}": cannot read ${g.caFile ?? g.secretFile ?? ''}: ${errorMessage(err)}`, { cause: err });
      }
    });
    for (const id of cfg.revoked) this.revoked.add(id);
    for (const r of opts.store?.revocations() ?? []) this.revoked.add(r.id);
    this.cacheKey = createHmac('sha256', opts.secret).update('outpost/password-cache').digest();
  }

  /** PEM of every CA whose client certificates may identify devices (the TLS listener's `ca`). */
  groupCas(): string[] {
    return this.groups.flatMap((g) => (g.ca ? [g.ca.toString()] : []));
  }

  enrolled(): ReturnType<IdentityStore['enrolled']> {
    return this.opts.store?.enrolled() ?? [];
  }

  revocations(): { id: string; source: string; at?: number; reason?: string | null }[] {
    const stored = this.opts.store?.revocations() ?? [];
    const fromConfig = this.cfg.revoked.filter((id) => !stored.some((r) => r.id === id)).map((id) => ({ id, source: 'config' }));
    return [...stored, ...fromConfig];
  }

  isRevoked(id: string): boolean {
    return this.revoked.has(id);
  }

  /** Revokes `id` (kept in the store); the caller closes its live connection. */
  revoke(id: string, source: string, reason?: string): void {
    this.revoked.add(id);
    this.verified.delete(id);
    this.opts.store?.revoke(id, this.opts.now(), source, reason);
  }

  /** Lifts a revocation made at run time (one in the config stays). */
  restore(id: string): boolean {
    const had = this.opts.store?.restore(id) ?? false;
    if (!this.cfg.revoked.includes(id)) this.revoked.delete(id);
    return had;
  }

  /** Takes revocations made by another process (the CLI) into account; returns the ids newly revoked. */
  refresh(): string[] {
    const stored = new Set((this.opts.store?.revocations() ?? []).map((r) => r.id));
    const added = [...stored].filter((id) => !this.revoked.has(id));
    for (const id of this.revoked) if (!stored.has(id) && !this.cfg.revoked.includes(id)) this.revoked.delete(id);
    for (const id of added) {
      this.revoked.add(id);
      this.verified.delete(id);
    }
    return added;
  }

  async authenticate(p: Presented): Promise<AuthOutcome> {
    const id = p.clientId;
    // [MQTT-3.1.3-5] lets a server refuse client ids it does not like: ours are identities and
    // topic levels, so `/`, `+`, `#` and NUL would let one id reach into another's subtree.
    if (id === '' || Buffer.byteLength(id) > this.opts.maxClientIdBytes || !CLIENT_ID.test(id)) {
      return refuse(2, 'bad-client-id', `client id "${id.slice(0, 80)}" refused: use the device id (letters, digits, "_", ".", "-", at most ${this.opts.maxClientIdBytes} bytes)`);
    }
    if (p.username !== undefined && p.username !== id) {
      return refuse(4, 'username-mismatch', `username "${p.username.slice(0, 80)}" is not the client id "${id}": the client id must be the identity`);
    }
    const driven = this.opts.driven.get(id);
    if (driven !== undefined) return refuse(5, 'driven-device', `"${id}" is a ${driven} device: its readings come from its driver, never from an MQTT client`);
    if (this.revoked.has(id)) return refuse(5, 'revoked', `"${id}" is revoked`);

    if (p.certificate) {
      const byCert = this.byCertificate(id, p.certificate);
      if (byCert) return this.accept(byCert);
      if (p.password === undefined) return refuse(5, 'bad-certificate', `the client certificate does not identify "${id}" (its CN must be the client id, issued by a group CA or pinned by fingerprint)`);
    }
    if (p.password !== undefined) {
      const byPassword = await this.byPassword(id, p.password.toString('utf8'));
      if (byPassword) return this.accept(byPassword);
      return refuse(4, 'bad-credentials', `bad username or password for "${id}"`);
    }
    if (this.opts.anonymous && isLoopback(p.remoteAddress) && !this.accounts.has(id) && !this.groups.some((g) => g.matches(id))) {
      return { ok: true, identity: { id, kind: 'anonymous', method: 'anonymous' }, enrolled: false };
    }
    return refuse(5, 'no-credentials', `"${id}" sent no credentials: anonymous clients are not allowed${this.opts.anonymous ? ' from other than loopback or with an identity\'s id' : ''}`);
  }

  private accept(identity: Identity): AuthOutcome {
    const enrolled = identity.method.startsWith('group:') ? (this.opts.store?.seen(identity.id, identity.method, this.opts.now()) ?? false) : false;
    return { ok: true, identity, enrolled };
  }

  private byCertificate(id: string, peer: PeerCertificate): Identity | undefined {
    const cn = /(?:^|\n)CN=([^\n]*)/.exec(peer.cert.subject)?.[1];
    if (cn !== id) return undefined;
    const now = this.opts.now();
    if (Date.parse(peer.cert.validFrom) > now || Date.parse(peer.cert.validTo) < now) return undefined;
    const account = this.accounts.get(id);
    const fp = peer.cert.fingerprint256.replace(/:/g, '');
    // A pinned certificate is the only one that identifies its account.
    if (account?.certSha256 !== undefined) return sameSecret(account.certSha256, fp) ? { id, kind: account.kind, method: 'certificate' } : undefined;
    if (!peer.chainVerified) return undefined;
    for (const g of this.groups) {
      if (g.ca && g.matches(id) && peer.cert.checkIssued(g.ca) && peer.cert.verify(g.ca.publicKey)) return { id, kind: 'device', method: `group:${g.name}` };
    }
    // A certificate from broker.tls.clientCaFile identifies an identity declared in the config.
    if (account !== undefined && account.certSha256 === undefined) return { id, kind: account.kind, method: 'certificate' };
    return undefined;
  }

  private async byPassword(id: string, password: string): Promise<Identity | undefined> {
    const account = this.accounts.get(id);
    if (account?.passwordHash !== undefined) {
      const tag = createHmac('sha256', this.cacheKey).update(account.passwordHash).update('\u0000').update(password).digest('base64');
      const known = this.verified.get(id);
      if (known !== undefined && sameSecret(known, tag)) return { id, kind: account.kind, method: 'password' };
      if (!(await verifyPassword(password, account.passwordHash))) return undefined;
      if (this.verified.size >= 100_000) this.verified.clear();
      this.verified.set(id, tag);
      return { id, kind: account.kind, method: 'password' };
    }
    if (account !== undefined) return undefined;
    for (const g of this.groups) {
      if (g.secret && g.matches(id) && sameSecret(password, deriveDeviceKey(g.secret, id))) return { id, kind: 'device', method: `group:${g.name}` };
    }
    return undefined;
  }
}

function refuse(code: RefusalCode, cause: string, message: string): AuthOutcome {
  return { ok: false, code, cause, message };
}
