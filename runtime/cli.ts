#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-old-space-size=128 --max-semi-space-size=4
// First: the MQTT libraries must find the quiet `debug` when they load.
import './quiet-debug.js';
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from './config/load.js';
import { Gateway } from './gateway.js';
import { ListenError } from './listen.js';
import type { SiteConfig } from './config/schema.js';
import { createLogger } from './logger.js';
import { ProblemLog } from './problems.js';
import { loadRules, replay } from './rules-test.js';
import { errorMessage, redactUrl } from './contracts/index.js';
import { CONNECTION_OPTIONS, gatewayFetch, resolveConnection, type ConnectionArgs, type FetchLike } from './http/client.js';

const USAGE = `outpost — edge gateway runtime

Usage:
  outpost start --config FILE     run the gateway with a site config
  outpost validate FILE           check a site config; prints every error with its path
  outpost demo [--duration S] [--json]
                                  gateway + simulated site + simulated cloud on this machine
  outpost status [CONN] [--json]  a running gateway at a glance: link, readings, outbox per
                                  stream, devices, buses, rollouts, memory
  outpost outbox [CONN] [--json]  the outbox per stream: depth, bytes, produced, delivered,
                                  expired, dropped, dead-lettered
  outpost rollouts [CONN]         releases and rollouts with a bar per phase (outpost ota status)
  outpost healthcheck [CONN] [--timeout-ms N]
                                  exit 0 when the gateway answers /healthz in time, else 1 (no token)
  outpost dead-letters [CONN] [--limit N] [--replay [--ids 1,2,…]]
                                  readings the cloud refused: list them, or put them back in
                                  their streams (all, or the given ids)
  outpost write DEVICE POINT VALUE [CONN]   write a Modbus point (true/false, a number, or --string TEXT), verified by reading it back
  outpost devices [list] [CONN] [--json]
                                  the inventory: protocol, model, online, last seen, desired and
                                  applied versions, configurations
  outpost devices show|explain ID [CONN] [--json]
                                  one device's twin; or each desired property, what set it, what
                                  it overrides and whether the device reports it
  outpost devices remove ID [CONN]
                                  forget a device that left the site (not one of the site config)
  outpost twin get ID [CONN] [--json]
                                  a device's desired and reported documents
  outpost twin set ID PATH=VALUE... | --patch JSON [CONN] [--json]
                                  change its desired state directly (VALUE is JSON when it parses,
                                  else text; PATH=null removes the direct value); prints the version
  outpost call DEVICE METHOD [--payload JSON] [--timeout-ms N] [--wait] [CONN] [--json]
                                  call a method on an MQTT child; prints its status and payload
  outpost configurations [CONN] [--json]
                                  configurations with how many devices they target, applied or not
  outpost rules test RULES --input READINGS.jsonl
                                  replay recorded readings through the rules of RULES (a site
                                  config, or a file with rules:); prints what they would emit
  outpost rules reload [CONN]     apply the running gateway's config file rules again
  outpost config check FILE       validate a site config
  outpost config deploy FILE [CONN] [--no-wait]
                                  replace the whole running config: only what changed restarts; rolled
                                  back when it fails its health checks (SIGHUP deploys the config file)
  outpost config history [CONN] [--json]
                                  config versions: status, source, hash, what applying them did
  outpost config rollback [VERSION] [CONN]
                                  deploy an earlier version again (default: the one before)
  outpost ota status [CONN] [--json]
                                  releases, download progress and rollouts (a bar per phase)
  outpost ota pause|resume|abort RELEASE [CONN]
                                  control a rollout (also from the cloud)
  outpost ota submit SIGNED.json [CONN]
                                  give the gateway a signed release locally (as the cloud would)
  outpost sim --modbus meter|plc|boiler[@PORT]... [--children N --broker URL --group-secret-file F]
                                  simulated devices on chosen ports, to try a site config before the
                                  plant is wired; prints their device entries
  outpost hash-password           bcrypt hash of a password on stdin, for http.admin.passwordHash (the editor)
  outpost identity hash-password|key|revoke|restore|list|ca|cert …
                                  child device identities and credentials (outpost identity help)
  outpost tokens create --config FILE --name NAME --scope read|operate|admin
                                  a new API token, printed once (only its hash is kept)
  outpost tokens list --config FILE [--json]
  outpost tokens revoke NAME --config FILE
                                  refused from the next request on, no restart
  outpost hash-token [--stdin]    a new token and its SHA-256 for http.tokens (or the hash of stdin)
  outpost cloud-ingest --broker URL --database URL [--share-group G] …
                                  the reference cloud consumer: every gateway's readings into
                                  PostgreSQL, each once (outpost cloud-ingest --help)

Exit codes of the verbs that talk to a gateway (status, outbox, devices, twin, call,
configurations): 0 done; 1 the gateway refused or failed (an unknown or offline device, a call with
no answer in time or answered with a status of 400 or more, a gateway that cannot be reached); 2 a
usage error.

CONN, how the verbs that talk to a running gateway reach it:
  --config FILE      its site config: the URL from http, and its certificate pinned from the
                     state directory (http.crt beside the store)
  --url URL          default https://127.0.0.1:8080, or OUTPOST_URL, or from --config (or OUTPOST_CONFIG)
  --token-file FILE  the API token (else the environment variable OUTPOST_TOKEN)
  --ca FILE          the certificate to trust (else OUTPOST_CA; else from --config; else the
                     system's CAs)
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'validate':
      return validate(rest);
    case 'start':
      return start(rest);
    case 'demo': {
      const { runDemo } = await import('./demo.js');
      return runDemo(rest);
    }
    case 'status':
    case 'outbox': {
      const { statusCommand } = await import('./status-cli.js');
      return statusCommand(command, rest, connect);
    }
    case 'config': {
      const { configCommand } = await import('./config-cli.js');
      return configCommand(rest, connect);
    }
    case 'rollouts':
      return otaWithConnection(['status', ...rest]);
    case 'healthcheck': {
      const { healthcheckCommand } = await import('./status-cli.js');
      return healthcheckCommand(rest, connect);
    }
    case 'write':
      return writePoint(rest);
    case 'rules':
      return rulesCommand(rest);
    case 'dead-letters':
      return deadLetters(rest);
    case 'ota':
      return otaWithConnection(rest);
    case 'devices':
    case 'twin':
    case 'call':
    case 'configurations': {
      const { devicesCommand } = await import('./devices-cli.js');
      return devicesCommand(command, rest, connect);
    }
    case 'tokens': {
      const { tokensCommand } = await import('./tokens-cli.js');
      try {
        return await tokensCommand(rest);
      } catch (err) {
        return reportConfigError(err);
      }
    }
    case 'hash-token': {
      const { hashTokenCommand } = await import('./tokens-cli.js');
      return hashTokenCommand(rest);
    }
    case 'hash-password': {
      // The editor's admin password (http.admin.passwordHash), as Node-RED expects it: bcrypt.
      const input = await readStdinLine();
      if (input.length < 8) {
        process.stderr.write('outpost hash-password: give a password of at least 8 characters on stdin (echo -n PASSWORD | outpost hash-password)\n');
        return 2;
      }
      const bcrypt = (await import('bcryptjs')).default;
      process.stdout.write(`${bcrypt.hashSync(input, 10)}\n`);
      return 0;
    }
    case 'sim': {
      // The simulator is loaded only here and by the demo (the gateway itself never imports it).
      const { simCommand } = await import('./sim-cli.js');
      return simCommand(rest);
    }
    case 'identity': {
      const { identityCommand } = await import('./identity/cli.js');
      return identityCommand(rest);
    }
    case 'cloud-ingest': {
      const { cloudIngestCommand } = await import('./cloud-ingest/cli.js');
      return cloudIngestCommand(rest);
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

async function validate(args: string[]): Promise<number> {
  const { positionals } = parseArgs({ args, allowPositionals: true });
  const file = positionals[0];
  if (!file) {
    process.stderr.write('usage: outpost validate FILE\n');
    return 2;
  }
  try {
    const cfg = await loadConfig(file);
    process.stdout.write(`${file}: valid (gateway ${cfg.gateway.id}, ${cfg.devices.length} devices, ${cfg.rules.length} rules)\n`);
    return 0;
  } catch (err) {
    return reportConfigError(err);
  }
}

/** The first line of standard input (a password piped in, never an argument that `ps` would show). */
async function readStdinLine(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? '';
}

/**
 * Why the gateway did not start, in one line that names the config field and what to do (a port
 * in use, a store another gateway holds, a storage path that cannot be opened); never a stack.
 */
function startFailure(cfg: SiteConfig, err: unknown): string {
  if (err instanceof ListenError) {
    const ports: Array<[string, number | null | undefined, string | undefined]> = [
      ['broker.port', cfg.broker.port, cfg.broker.host],
      ['broker.tls.port', cfg.broker.tls?.port, cfg.broker.tls?.host ?? cfg.broker.host],
      ['http.port', cfg.http.port, cfg.http.host],
      ['ota.server.port', cfg.ota?.server.port, cfg.ota?.server.host],
    ];
    const field = ports.find(([, port, host]) => port === err.port && host === err.host)?.[0] ?? 'a listener';
    return `${field} ${err.message}`;
  }
  return errorMessage(err);
}

function reportConfigError(err: unknown): number {
  if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}\n`);
    return 1;
  }
  throw err;
}

async function start(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { config: { type: 'string', short: 'c' } } });
  if (!values.config) {
    process.stderr.write('usage: outpost start --config FILE\n');
    return 2;
  }
  let cfg: SiteConfig;
  let text: string;
  try {
    cfg = await loadConfig(values.config);
    text = await readFile(values.config, 'utf8');
  } catch (err) {
    return reportConfigError(err);
  }
  const problems = new ProblemLog();
  const log = createLogger({ problems });
  // Signals are taken from here on: a SIGTERM that arrives while the gateway starts, or right
  // after its start line, stops it gracefully once started (without a handler Node would just die).
  let signalled: NodeJS.Signals | undefined;
  let wake: (() => void) | undefined;
  const onSignal = (sig: NodeJS.Signals): void => {
    signalled ??= sig;
    wake?.();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let gateway: Gateway;
  try {
    gateway = await Gateway.start(cfg, {
      log,
      configFile: values.config,
      configText: text,
      problems,
      // Neither a deployed config nor the one before it could start again: exit, and the
      // supervisor starts the process on the last good version.
      onFatal: (err) => {
        process.stderr.write(`outpost ${cfg.gateway.id}: stopped: no config could be started (${errorMessage(err)})\n`);
        process.exit(1);
      },
    });
  } catch (err) {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (err instanceof ConfigError) return reportConfigError(err);
    // Gateway.start stopped what it had started; the process exits without a stack.
    process.stderr.write(`outpost ${cfg.gateway.id}: not started: ${startFailure(cfg, err)}\n`);
    return 1;
  }
  // A version deployed over this very file may run instead of it (runtime/deploy).
  cfg = gateway.config;
  const api = gateway.status().api;
  // One line a supervisor (and test/helpers/gateway-process.ts) reads: the ports, and the API
  // certificate's fingerprint for clients to pin.
  process.stdout.write(
    `outpost ${cfg.gateway.id}: ${cfg.broker.external ? `broker external ${redactUrl(cfg.broker.external.url)}` : `broker on ${cfg.broker.host}:${gateway.ports.broker}`}, api on ${api.scheme}://${cfg.http.host}:${gateway.ports.http}` +
      `${api.certificateSha256 ? ` (certificate sha256 ${api.certificateSha256})` : ''}\n` +
      (cfg.broker.tls && gateway.ports.brokerTls !== undefined
        ? `outpost ${cfg.gateway.id}: mqtts on ${cfg.broker.tls.host ?? cfg.broker.host}:${gateway.ports.brokerTls} (certificate sha256 ${String((gateway.status() as { brokerTlsSha256?: string }).brokerTlsSha256 ?? '?')})\n`
        : '') +
      (cfg.nodeRed?.enabled ? `outpost ${cfg.gateway.id}: Node-RED editor on ${api.scheme}://${cfg.http.host}:${gateway.ports.http}/red\n` : '') +
      (cfg.ota && gateway.ports.ota !== undefined ? `outpost ${cfg.gateway.id}: update server (hawkBit DDI) on http://${cfg.ota.server.host}:${gateway.ports.ota}/${cfg.ota.server.tenant}\n` : ''),
  );
  // SIGHUP (systemctl reload): deploy the config file as it is now, as `outpost config deploy` does.
  process.on('SIGHUP', () => {
    readFile(values.config!, 'utf8')
      .then((next) => gateway.deployer.deploy(next, 'sighup').done)
      .then(
        (o) => log.info({ version: o.version, status: o.status, reason: o.reason }, 'config file deployed (SIGHUP)'),
        (err: unknown) =>
          log.error({ err: errorMessage(err), ...(err instanceof ConfigError ? { problems: err.problems } : {}) }, 'config file not deployed (SIGHUP); running config kept'),
      );
  });
  if (signalled === undefined) await new Promise<void>((resolve) => (wake = resolve));
  log.info({ signal: signalled }, 'stopping');
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  await gateway.stop();
  return 0;
}

async function rulesCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'test') {
    const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { input: { type: 'string', short: 'i' } } });
    const file = positionals[0];
    if (!file || !values.input || positionals.length > 1) {
      process.stderr.write('usage: outpost rules test RULES --input READINGS.jsonl\n');
      return 2;
    }
    let config;
    let text: string;
    try {
      config = await loadRules(file);
      text = await readFile(values.input, 'utf8');
    } catch (err) {
      if (err instanceof ConfigError) return reportConfigError(err);
      process.stderr.write(`${values.input}: ${errorMessage(err)}\n`);
      return 1;
    }
    const r = replay(
      config,
      text.split('\n'),
      (line) => process.stdout.write(`${line}\n`),
      (msg) => process.stderr.write(`${values.input}: ${msg}\n`),
    );
    process.stderr.write(`${r.readings} readings in, ${r.outputs} out${r.badLines > 0 ? `, ${r.badLines} lines refused` : ''}\n`);
    for (const e of r.errors) process.stderr.write(`rule ${e.rule}: ${e.errors} readings dropped by expression errors; last: ${e.lastError ?? ''}\n`);
    return r.badLines > 0 ? 1 : 0;
  }
  if (sub === 'reload') {
    const { values } = parseArgs({ args: rest, options: CONNECTION_OPTIONS });
    const conn = await connect(values);
    if (!conn) return 2;
    try {
      const res = await conn.fetch(`${conn.url}/api/v1/rules/reload`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
      const body = (await res.json()) as { error?: string; problems?: string[] };
      if (!res.ok) {
        process.stderr.write(`${body.error ?? res.statusText}\n${(body.problems ?? []).map((p) => `  ${p}\n`).join('')}`);
        return 1;
      }
      process.stdout.write(`${JSON.stringify(body)}\n`);
      return 0;
    } catch (err) {
      process.stderr.write(`cannot reach the gateway at ${conn.url}: ${errorMessage(err)}\n`);
      return 1;
    }
  }
  process.stderr.write('usage: outpost rules test RULES --input READINGS.jsonl | outpost rules reload [--config FILE] [--url URL] [--token-file FILE] [--ca FILE]\n');
  return 2;
}

async function deadLetters(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      ...CONNECTION_OPTIONS,
      limit: { type: 'string', default: '100' },
      replay: { type: 'boolean', default: false },
      ids: { type: 'string' },
    },
  });
  const conn = await connect(values);
  if (!conn) return 2;
  const base = `${conn.url}/api/v1/dead-letters`;
  let ids: number[] | undefined;
  if (values.ids !== undefined) {
    ids = values.ids.split(',').map((x) => Number(x.trim()));
    if (ids.some((n) => !Number.isInteger(n) || n < 1)) {
      process.stderr.write(`--ids: expected positive integers separated by commas, got "${values.ids}"\n`);
      return 2;
    }
  }
  try {
    const res = values.replay
      ? await conn.fetch(`${base}/replay`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(ids ? { ids } : {}),
          signal: AbortSignal.timeout(10_000),
        })
      : await conn.fetch(`${base}?limit=${encodeURIComponent(values.limit)}`, { signal: AbortSignal.timeout(10_000) });
    const body = (await res.json());
    if (!res.ok) {
      process.stderr.write(`${base}: HTTP ${res.status}: ${JSON.stringify(body)}\n`);
      return 1;
    }
    process.stdout.write(`${JSON.stringify(body, null, 2)}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`cannot reach the gateway at ${base}: ${errorMessage(err)}\n`);
    return 1;
  }
}

async function writePoint(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { ...CONNECTION_OPTIONS, string: { type: 'boolean', default: false } },
  });
  const [device, point, text] = positionals;
  if (device === undefined || point === undefined || text === undefined || positionals.length > 3) {
    process.stderr.write('usage: outpost write DEVICE POINT VALUE [--string] [--config FILE] [--url URL] [--token-file FILE] [--ca FILE]\n');
    return 2;
  }
  let value: number | boolean | string;
  if (values.string) value = text;
  else if (text === 'true' || text === 'false') value = text === 'true';
  else {
    value = Number(text);
    if (text.trim() === '' || !Number.isFinite(value)) {
      process.stderr.write(`VALUE: expected true, false or a number (use --string for text), got "${text}"\n`);
      return 2;
    }
  }
  const conn = await connect(values);
  if (!conn) return 2;
  const url = `${conn.url}/api/v1/devices/${encodeURIComponent(device)}/points/${encodeURIComponent(point)}/write`;
  try {
    const res = await conn.fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ value }),
      signal: AbortSignal.timeout(30_000),
    });
    const body = (await res.json()) as Record<string, unknown>;
    if (!res.ok) {
      process.stderr.write(`write refused (HTTP ${res.status}): ${String(body.error)}\n`);
      return 1;
    }
    process.stdout.write(`${JSON.stringify(body)}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`cannot reach the gateway at ${url}: ${errorMessage(err)}\n`);
    return 1;
  }
}

/** The gateway's URL and a fetch that presents the token and trusts its certificate; undefined (reported) when the options are unusable. */
async function connect(args: ConnectionArgs): Promise<{ url: string; fetch: FetchLike } | undefined> {
  try {
    const conn = await resolveConnection(args);
    return { url: conn.url, fetch: gatewayFetch(conn) };
  } catch (err) {
    if (err instanceof ConfigError) reportConfigError(err);
    else process.stderr.write(`${errorMessage(err)}\n`);
    return undefined;
  }
}

/**
 * `outpost ota …` (ota/cli.ts) with the connection options: they are taken out of its arguments
 * here, and its requests (made with the global fetch) go through the gateway client for the
 * command's duration; its --url defaults to the one resolved. ota/cli.ts can take the client
 * directly (runtime/http/client.ts) and this shim go.
 */
async function otaWithConnection(args: string[]): Promise<number> {
  const { otaCommand } = await import('../ota/cli.js');
  const own = new Set(['--config', '-c', '--token-file', '--ca']);
  const rest: string[] = [];
  const taken: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const [flag, inline] = a.startsWith('--') && a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    if (own.has(flag)) {
      const value = inline ?? args[++i];
      if (value === undefined) {
        process.stderr.write(`${flag}: a value is needed\n`);
        return 2;
      }
      taken[flag === '-c' ? 'config' : flag.slice(2)] = value;
    } else rest.push(a);
  }
  const hasUrl = rest.some((a) => a === '--url' || a.startsWith('--url='));
  const urlAt = rest.findIndex((a) => a === '--url');
  const conn = await connect({ ...taken, ...(urlAt !== -1 && rest[urlAt + 1] !== undefined ? { url: rest[urlAt + 1] } : {}) });
  if (!conn) return 2;
  const globalFetch = globalThis.fetch;
  // Its bodiless POSTs (rollout commands) get the JSON content type every state change needs.
  const shim: FetchLike = (input, init = {}) => {
    const headers = new Headers(init.headers);
    const changes = (init.method ?? 'GET') !== 'GET' && init.method !== 'HEAD';
    if (changes && !headers.has('content-type')) headers.set('content-type', 'application/json');
    return conn.fetch(input, { ...init, headers, ...(changes && (init.body === undefined || init.body === '') ? { body: '{}' } : {}) });
  };
  globalThis.fetch = shim as typeof fetch;
  try {
    return await otaCommand(hasUrl ? rest : [...rest, '--url', conn.url]);
  } finally {
    globalThis.fetch = globalFetch;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`outpost: ${failureLine(err)}\n`);
    process.exitCode = (err as { code?: unknown }).code?.toString().startsWith('ERR_PARSE_ARGS') ? 2 : 1;
  },
);

/**
 * What went wrong, in one line a user can act on: an unknown option gets the usage hint, a gateway
 * that cannot be reached gets where to point the CLI; never a stack (OUTPOST_DEBUG=1 shows one).
 */
function failureLine(err: unknown): string {
  if (process.env.OUTPOST_DEBUG === '1' && err instanceof Error && err.stack) return err.stack;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) return `${errorMessage(err)} (outpost help lists the verbs and their options)`;
  const cause = (err as { cause?: { code?: string; address?: string; port?: number } }).cause;
  if (err instanceof TypeError && err.message === 'fetch failed' && cause) {
    const where = cause.address !== undefined ? ` at ${cause.address}:${String(cause.port)}` : '';
    return `cannot reach the gateway${where} (${cause.code ?? errorMessage(cause)}): is it running? Point the CLI at it with --config FILE (its API address), --url URL, or OUTPOST_URL`;
  }
  return errorMessage(err);
}
