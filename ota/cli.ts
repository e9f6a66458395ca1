import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { bar, renderRollout } from './render.js';
import type { RolloutStatus } from './rollout.js';
import { errorMessage } from '../runtime/contracts/index.js';

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

/** `outpost ota status|pause|resume|abort|submit`: the running gateway's OTA, over its HTTP API. */
export async function otaCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { url: { type: 'string', default: 'http://127.0.0.1:8080' }, json: { type: 'boolean', default: false } } });
  const [verb, arg] = positionals;
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
  process.stderr.write('usage: outpost ota status | pause RELEASE | resume RELEASE | abort RELEASE | submit SIGNED.json  [--url URL]\n');
  return 2;
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
