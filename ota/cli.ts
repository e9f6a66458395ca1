import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { text } from 'node:stream/consumers';
import { parseArgs } from 'node:util';
import { bar, renderRollout } from './render.js';
import type { RolloutStatus } from './rollout.js';
import { errorMessage } from '../runtime/contracts/index.js';
import { deriveDeviceToken, hashToken } from './ddi/device-auth.js';

interface OtaView {
  releases?: Array<{ release: string; version: string; state: string; detail?: string }>;
  rollouts?: RolloutStatus[];
  fetching?: { release: string; artifact: string; have: number; size: number };
  cache?: { usedBytes: number; quotaBytes: number };
}

async function call(url: string, init: RequestInit = {}): Promise<{ ok: boolean; status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(10_000) });
  return { ok: res.ok, status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const DEVICE_ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;

/** The first line of a file, or of stdin: secrets never come from the command line (ps, shell history). */
async function secretInput(file: string | undefined): Promise<string> {
  const all = file === undefined ? await text(process.stdin) : await readFile(file, 'utf8');
  return all.split(/\r?\n/)[0]!.trim();
}

/**
 * Update server credentials, offline (docs/ota.md "Device authentication"):
 *   new-token [DEVICE]              a random 256-bit token and its SHA-256 (for targetTokenHashes; also a group secret)
 *   hash-token                      the SHA-256 of the token read from stdin
 *   device-token DEVICE [--secret-file FILE]   the token of DEVICE derived from the group secret (file or stdin)
 */
async function credentials(verb: string, arg: string | undefined, secretFile: string | undefined): Promise<number | undefined> {
  if (verb === 'new-token') {
    if (arg !== undefined && !DEVICE_ID.test(arg)) return usage(`not a device id: ${arg}`);
    const token = randomBytes(32).toString('base64url');
    const hash = hashToken(token);
    process.stdout.write(`token: ${token}\nsha256: ${hash}\n${arg ? `config: ota.server.targetTokenHashes: { "${arg}": "${hash}" }\n` : ''}`);
    return 0;
  }
  if (verb === 'hash-token') {
    const token = await secretInput(undefined);
    if (token === '') return usage('no token on stdin');
    process.stdout.write(`${hashToken(token)}\n`);
    return 0;
  }
  if (verb === 'device-token') {
    if (arg === undefined || !DEVICE_ID.test(arg)) return usage('device-token needs a device id');
    const secret = await secretInput(secretFile);
    if (secret.length < 32) return usage('the group secret (from --secret-file or stdin) has fewer than 32 characters');
    process.stdout.write(`${deriveDeviceToken(secret, arg)}\n`);
    return 0;
  }
  return undefined;
}

function usage(problem?: string): number {
  if (problem) process.stderr.write(`${problem}\n`);
  process.stderr.write(
    'usage: outpost ota status | pause RELEASE | resume RELEASE | abort RELEASE | submit SIGNED.json  [--url URL]\n' +
      '       outpost ota new-token [DEVICE] | hash-token < TOKEN | device-token DEVICE [--secret-file FILE] (else the group secret on stdin)\n',
  );
  return 2;
}

/** `outpost ota status|pause|resume|abort|submit`: the running gateway's OTA, over its HTTP API; and credentials. */
export async function otaCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { url: { type: 'string', default: 'http://127.0.0.1:8080' }, json: { type: 'boolean', default: false }, 'secret-file': { type: 'string' } },
  });
  const [verb, arg] = positionals;
  try {
    const done = verb === undefined ? undefined : await credentials(verb, arg, values['secret-file']);
    if (done !== undefined) return done;
  } catch (err) {
    process.stderr.write(`${errorMessage(err)}\n`);
    return 1;
  }
  const api = `${values.url.replace(/\/$/, '')}/api/v1/ota`;
  try {
    if (verb === 'status' || verb === undefined) {
      const r = await call(api);
      if (!r.ok) return fail(api, r.status, r.body);
      if (values.json) process.stdout.write(`${JSON.stringify(r.body, null, 2)}\n`);
      else process.stdout.write(render(r.body));
      return 0;
    }
    if ((verb === 'pause' || verb === 'resume' || verb === 'abort') && arg) {
      const url = `${api}/rollouts/${encodeURIComponent(arg)}/${verb}`;
      const r = await call(url, { method: 'POST' });
      if (!r.ok) return fail(url, r.status, r.body);
      process.stdout.write(`${arg}: ${String(r.body.state)}\n`);
      return 0;
    }
    if (verb === 'submit' && arg) {
      const r = await call(`${api}/releases`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: await readFile(arg, 'utf8') });
      if (!r.ok) return fail(`${api}/releases`, r.status, r.body);
      process.stdout.write(`release ${String(r.body.release)} accepted\n`);
      return 0;
    }
  } catch (err) {
    process.stderr.write(`cannot reach the gateway at ${api}: ${errorMessage(err)}\n`);
    return 1;
  }
  return usage();
}

function fail(url: string, status: number, body: Record<string, unknown>): number {
  process.stderr.write(`${url}: HTTP ${status}: ${typeof body.error === 'string' ? body.error : JSON.stringify(body)}\n`);
  return 1;
}

function render(v: OtaView): string {
  const out: string[] = [];
  for (const r of v.releases ?? []) out.push(`release ${r.release} ${r.version}: ${r.state}${r.detail ? ` (${r.detail})` : ''}`);
  if (v.fetching) out.push(`fetching ${v.fetching.artifact} ${bar(v.fetching.have, v.fetching.size)} ${v.fetching.have} / ${v.fetching.size} bytes`);
  for (const r of v.rollouts ?? []) out.push(...renderRollout(r));
  if (v.cache) out.push(`cache: ${(v.cache.usedBytes / 2 ** 20).toFixed(1)} of ${(v.cache.quotaBytes / 2 ** 20).toFixed(0)} MiB`);
  if (out.length === 0) out.push('no releases');
  return `${out.join('\n')}\n`;
}
