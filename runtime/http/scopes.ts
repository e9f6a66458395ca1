import { createHash, randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { z } from 'zod';

/**
 * What an API token may do. Each scope implies the ones before it: `admin` (configuration,
 * identities, tokens) ⊃ `operate` (state-changing requests: point writes, rule reload, dead-letter
 * replay, rollout commands) ⊃ `read` (status, metrics, every GET).
 */
export const SCOPES = ['read', 'operate', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

/** Whether a token holding `held` may do what needs `needed`. */
export function grants(held: readonly Scope[], needed: Scope): boolean {
  const rank = SCOPES.indexOf(needed);
  return held.some((s) => SCOPES.indexOf(s) >= rank);
}

/** The prefix of every token, so a leaked one is recognisable (secret scanners, logs). */
export const TOKEN_PREFIX = 'opt_';

/** A new token: 32 random bytes, base64url, with the prefix. Shown once; only its hash is kept. */
export function newToken(): string {
  return `${TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
}

/**
 * The stored form of a token: SHA-256, hex. A token is 256 random bits, so a fast hash is enough:
 * there is no dictionary to try and no way to brute-force 2^256 values, which is what a slow
 * password hash (bcrypt, scrypt) would defend against; and a fast one keeps every request cheap.
 */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export const tokenNameSchema = z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'expected 1–64 letters, digits, "_", "." or "-"');

/** A token declared in the site config (`http.tokens[]`). */
export const apiTokenSchema = z.strictObject({
  name: tokenNameSchema,
  scopes: z.array(z.enum(SCOPES)).min(1),
  /** SHA-256 of the token, hex (`outpost hash-token`, or `printf %s "$TOKEN" | sha256sum`). */
  sha256: z
    .string()
    .regex(/^[0-9a-fA-F]{64}$/, 'expected the SHA-256 of the token, 64 hex digits')
    .transform((h) => h.toLowerCase()),
});
export type ApiTokenConfig = z.output<typeof apiTokenSchema>;

/** 127.0.0.0/8, ::1 and `localhost`: addresses no other machine can reach. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  return h === '::1' || h === '0:0:0:0:0:0:0:1' || h.startsWith('::ffff:127.');
}
