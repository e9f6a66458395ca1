import { parseArgs } from 'node:util';
import { CONNECTION_OPTIONS } from './http/client.js';
import { CliFailure, requestApi, type Connect } from './devices-cli.js';
import { plainTable } from './plain-table.js';

/**
 * `outpost status` and `outpost outbox` (docs/operations.md): the gateway at a glance as text for
 * people, or the API's answer as it came with `--json`. Exit codes as the device verbs: 0 done,
 * 1 the gateway refused or cannot be reached, 2 a usage error.
 */

interface StreamRow {
  stream: string;
  priority: number;
  depth: number;
  bytes: number;
  produced: number;
  delivered: number;
  expired: number;
  dropped: number;
  deadLettered: number;
  replayed: number;
}

interface Status {
  gateway: string;
  boot?: number;
  uptimeS: number;
  link: string;
  uplink?: { sentToday?: number; dailyBytes?: number; failing?: { since: number; failures: number; reason: string; heldUntil?: number } };
  readingsIn?: number;
  ruleOutputs?: number;
  outbox: { depth: number; bytes: number; appended: number; delivered: number; expired: number; dropped: number; deadLettered: number; streams: StreamRow[] };
  children?: { connected: number };
  /** With broker.external: the gateway's link to the site broker. */
  siteBroker?: { url: string; state: string; since: number; refused?: string; lastError?: string };
  drivers?: Array<Record<string, unknown>>;
  devices?: { count: number; online: number; configurations: number; waitingRecords: number; callsInFlight: number };
  ota?: { rollouts?: Array<{ release: string; state: string }> };
  memory?: { rss: number; heapUsed: number };
}

const fmt = (n: number | undefined): string => (n === undefined ? '-' : Math.round(n).toLocaleString('en-US'));

function bytes(n: number | undefined): string {
  if (n === undefined) return '-';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function duration(s: number): string {
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86_400)} d ${Math.floor((s % 86_400) / 3600)} h`;
}

export function renderStreams(streams: readonly StreamRow[]): string {
  return plainTable(
    ['STREAM', 'PRIORITY', 'DEPTH', 'BYTES', 'PRODUCED', 'DELIVERED', 'EXPIRED', 'DROPPED', 'DEAD-LETTERED'],
    streams.map((s) => [s.stream, String(s.priority), fmt(s.depth), bytes(s.bytes), fmt(s.produced), fmt(s.delivered), fmt(s.expired), fmt(s.dropped), fmt(s.deadLettered)]),
    { right: [1, 2, 3, 4, 5, 6, 7, 8] },
  );
}

/** The status as a few lines and tables: what an operator looks at first, first. */
export function renderStatus(s: Status, now: number): string {
  const lines: string[] = [];
  lines.push(`gateway   ${s.gateway}, up ${duration(s.uptimeS)}${s.boot === undefined ? '' : `, boot ${s.boot}`}`);
  let link = s.link;
  const f = s.uplink?.failing;
  if (f) link += ` for ${duration(Math.max(0, Math.round((now - f.since) / 1000)))}: ${f.failures} failures, ${f.reason}${f.heldUntil && f.heldUntil > now ? ` (held for ${Math.ceil((f.heldUntil - now) / 1000)} s)` : ''}`;
  lines.push(`link      ${link}; sent today ${bytes(s.uplink?.sentToday)}${s.uplink?.dailyBytes ? ` of ${bytes(s.uplink.dailyBytes)}` : ''}`);
  lines.push(`readings  ${fmt(s.readingsIn)} in, ${fmt(s.ruleOutputs)} rule outputs`);
  const o = s.outbox;
  lines.push(`outbox    ${fmt(o.depth)} waiting (${bytes(o.bytes)}); ${fmt(o.delivered)} delivered, ${fmt(o.dropped)} dropped, ${fmt(o.expired)} expired, ${fmt(o.deadLettered)} dead-lettered`);
  if (s.devices) lines.push(`devices   ${fmt(s.devices.count)} in the inventory, ${fmt(s.devices.online)} online, ${s.devices.configurations} configurations; ${s.siteBroker ? 'children on the site broker' : `${fmt(s.children?.connected)} MQTT connections`}`);
  const sb = s.siteBroker;
  if (sb) lines.push(`site      broker ${sb.url} ${sb.state} for ${duration(Math.max(0, Math.round((now - sb.since) / 1000)))}${sb.refused ? `: refused (${sb.refused})` : sb.state !== 'up' && sb.lastError ? `: ${sb.lastError}` : ''}`);
  const rollouts = s.ota?.rollouts ?? [];
  if (rollouts.length > 0) lines.push(`rollouts  ${rollouts.map((r) => `${r.release} ${r.state}`).join(', ')} (outpost rollouts)`);
  if (s.memory) lines.push(`memory    ${s.memory.rss} MiB resident, ${s.memory.heapUsed} MiB heap`);
  const out = [lines.join('\n'), '', renderStreams(o.streams).trimEnd()];
  // Each Modbus bus is a driver with its connection and devices (drivers/modbus/bus.ts).
  const buses = (s.drivers ?? []).filter((d) => typeof d.connection === 'string');
  if (buses.length > 0) {
    out.push(
      '',
      plainTable(
        ['BUS', 'CONNECTED', 'DEVICES', 'LAST ERROR'],
        buses.map((b) => [typeof b.connection === 'string' ? b.connection : '', b.connected === true ? 'yes' : 'no', ((b.devices as Array<{ device: string }> | undefined) ?? []).map((d) => d.device).join(', '), typeof b.lastConnectError === 'string' ? b.lastConnectError : '']),
      ).trimEnd(),
    );
  }
  return `${out.join('\n')}\n`;
}

const OPTIONS = { ...CONNECTION_OPTIONS, json: { type: 'boolean', default: false } } as const;

export async function statusCommand(command: 'status' | 'outbox', args: string[], connect: Connect): Promise<number> {
  try {
    const { values, positionals } = parseArgs({ args, allowPositionals: true, options: OPTIONS });
    if (positionals.length > 0) throw new CliFailure(2, `outpost ${command} takes no arguments but the connection options and --json`);
    const api = await connect(values);
    if (!api) return 2;
    const status = (await requestApi(api, 'GET', '/api/v1/status')) as Status;
    if (values.json) process.stdout.write(`${JSON.stringify(command === 'status' ? status : status.outbox, null, 2)}\n`);
    else process.stdout.write(command === 'status' ? renderStatus(status, Date.now()) : `${renderStreams(status.outbox.streams)}\n`);
    return 0;
  } catch (err) {
    if (!(err instanceof CliFailure)) throw err;
    if (err.message !== '') process.stderr.write(`${err.message}\n`);
    return err.exitCode;
  }
}

/**
 * `outpost healthcheck [CONN] [--timeout-ms N]`: exit 0 when the gateway answers `/healthz` in
 * time, 1 when it does not (the systemd health timer restarts it then: systemd/outpost-health.*).
 * Needs no token.
 */
export async function healthcheckCommand(args: string[], connect: Connect): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { ...CONNECTION_OPTIONS, 'timeout-ms': { type: 'string', default: '5000' } } });
  const timeoutMs = Number(values['timeout-ms']);
  if (positionals.length > 0 || !Number.isInteger(timeoutMs) || timeoutMs < 100) {
    process.stderr.write('usage: outpost healthcheck [--config FILE | --url URL] [--timeout-ms N ≥ 100]\n');
    return 2;
  }
  const api = await connect(values);
  if (!api) return 2;
  try {
    const res = await api.fetch(`${api.url}/healthz`, { signal: AbortSignal.timeout(timeoutMs) });
    const body = (await res.json()) as { ok?: unknown };
    if (res.status === 200 && body.ok === true) {
      process.stdout.write(`ok: ${api.url}\n`);
      return 0;
    }
    process.stderr.write(`unhealthy: ${api.url}/healthz answered ${res.status}\n`);
  } catch (err) {
    process.stderr.write(`unhealthy: no answer from ${api.url}/healthz within ${timeoutMs} ms (${(err as Error).message})\n`);
  }
  return 1;
}
