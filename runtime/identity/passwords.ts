import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
export { deriveDeviceKey } from '../contracts/index.js';

/**
 * Device passwords at rest: scrypt (memory-hard, in node:crypto), in a PHC-style string
 * `$scrypt$ln=15,r=8,p=1$<salt>$<hash>` (base64, no padding). A leaked config or store gives an
 * attacker hashes that cost ~0.1 s and 32 MiB each to try. Verification runs on libuv's thread
 * pool, so a connection storm queues there instead of blocking the event loop.
 */
const PREFIX = '$scrypt$';
const DEFAULT = { ln: 15, r: 8, p: 1 } as const;
const KEY_BYTES = 32;

export const PASSWORD_HASH_PATTERN = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]{16,})\$([A-Za-z0-9+/]{43})$/;

function run(password: string, salt: Buffer, ln: number, r: number, p: number): Promise<Buffer> {
  const N = 2 ** ln;
  return new Promise((resolve, reject) =>
    // maxmem: scrypt needs 128·N·r bytes; node's default cap (32 MiB) is exactly too small for ln=15.
    scrypt(password, salt, KEY_BYTES, { N, r, p, maxmem: 256 * N * r }, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

const b64 = (b: Buffer): string => b.toString('base64').replace(/=+$/, '');

/** The stored form of `password`. */
export async function hashPassword(password: string, cost: { ln?: number } = {}): Promise<string> {
  const ln = cost.ln ?? DEFAULT.ln;
  const salt = randomBytes(16);
  const key = await run(password, salt, ln, DEFAULT.r, DEFAULT.p);
  return `${PREFIX}ln=${ln},r=${DEFAULT.r},p=${DEFAULT.p}$${b64(salt)}$${b64(key)}`;
}

/** Whether `password` matches `stored` (constant time in the comparison); false for a malformed hash. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const m = PASSWORD_HASH_PATTERN.exec(stored);
  if (!m) return false;
  const [ln, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (ln < 10 || ln > 20 || r < 1 || r > 32 || p < 1 || p > 16) return false;
  const expected = Buffer.from(m[5] ?? '', 'base64');
  const key = await run(password, Buffer.from(m[4] ?? '', 'base64'), ln, r, p);
  return key.length === expected.length && timingSafeEqual(key, expected);
}

/** Constant-time equality of two strings (lengths may differ). */
export function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
