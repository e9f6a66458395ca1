import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, fstatSync, mkdirSync, openSync, readFileSync, renameSync, statSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';

/**
 * Files that hold secrets (keys, the gateway secret, credential stores) are created owner-only
 * (0600, their directory 0700) and written atomically (a temporary file renamed over the old).
 */
export function writeOwnerOnly(path: string, data: string | Buffer): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
  } finally {
    closeSync(fd);
  }
  // The mode given to open() is masked by the umask; chmod is not.
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

/** Whether group or others may read `path` (a secret there is exposed to other local users). */
export function readableByOthers(path: string): boolean {
  try {
    return (statSync(path).mode & 0o044) !== 0;
  } catch {
    return false;
  }
}

/** Makes an existing file or directory owner-only (0600 / 0700); returns false when it could not. */
export function restrictToOwner(path: string): boolean {
  try {
    const fd = openSync(path, 'r');
    const isDir = fstatSync(fd).isDirectory();
    closeSync(fd);
    chmodSync(path, isDir ? 0o700 : 0o600);
    return true;
  } catch {
    return false;
  }
}

/**
 * The gateway's own secret: 32 random bytes created on first start in the state directory (beside
 * the store), owner-only. Keys the gateway derives (the Node-RED credential secret, the fast
 * credential cache) come from it, so a copied config alone unlocks nothing.
 */
export function gatewaySecret(stateDir: string): Buffer {
  const path = join(stateDir, 'gateway.secret');
  if (!existsSync(path)) writeOwnerOnly(path, randomBytes(32).toString('base64'));
  const raw = Buffer.from(readFileSync(path, 'utf8').trim(), 'base64');
  if (raw.length < 32) throw new Error(`${path}: not a gateway secret (expected 32 bytes in base64); remove it to create a new one`);
  return raw;
}
