import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { ConfigError, parseConfigText } from './config/load.js';
import { errorMessage } from './contracts/index.js';
import type { ConfigVersion } from './deploy/history.js';
import type { DeployPlan } from './deploy/plan.js';
import { CONNECTION_OPTIONS } from './http/client.js';
import { ago, CliFailure, requestApi, type Connect } from './devices-cli.js';
import { plainTable } from './plain-table.js';

/**
 * `outpost config check|deploy|history|rollback` (docs/operations.md, "Configuration as a
 * deployment"). Exit codes as the other verbs: 0 done (deploy and rollback: the version is active),
 * 1 refused, failed and rolled back, or the gateway cannot be reached; 2 a usage error.
 */

const USAGE = `usage:
  outpost config check FILE                       validate a site config (nothing is sent)
  outpost config deploy FILE [CONN] [--no-wait]   replace the running gateway's whole config
  outpost config history [CONN] [--json]          its config versions, newest first
  outpost config rollback [VERSION] [CONN] [--no-wait]
                                                  deploy an earlier version again (default: the one before)
`;

const OPTIONS = { ...CONNECTION_OPTIONS, json: { type: 'boolean', default: false }, 'no-wait': { type: 'boolean', default: false } } as const;

type Api = NonNullable<Awaited<ReturnType<Connect>>>;

export function describePlan(plan: DeployPlan): string {
  switch (plan.kind) {
    case 'unchanged':
      return 'unchanged: nothing to apply';
    case 'in-place':
      return `in place (${plan.changed.join(', ')} changed)${plan.devices.length > 0 ? `; drivers of ${plan.devices.join(', ')} restart` : '; nothing restarts'}`;
    case 'restart':
      return `every part restarts (${plan.why})`;
  }
}

export function renderHistory(versions: readonly ConfigVersion[], now: number): string {
  return plainTable(
    ['VERSION', 'STATUS', 'SOURCE', 'WHEN', 'SHA256', 'APPLIED', 'REASON'],
    versions.map((v) => [
      String(v.version),
      v.status,
      v.source,
      ago(v.createdAt, now),
      v.sha256.slice(0, 12),
      v.plan && typeof v.plan === 'object' && 'kind' in v.plan ? String((v.plan).kind) : '-',
      v.reason ?? '',
    ]),
  );
}

/** Waits for a version to be decided, with a live line on a terminal; the outcome's exit code. */
async function follow(api: Api, version: number, wait: boolean): Promise<number> {
  if (!wait) return 0;
  const tty = process.stderr.isTTY;
  const started = Date.now();
  // A restart stops the API for a moment: unreachable is retried for up to 2 minutes.
  for (;;) {
    let v: ConfigVersion | undefined;
    try {
      v = (await requestApi(api, 'GET', `/api/v1/config/versions/${version}`, undefined, { timeoutMs: 5000 })) as ConfigVersion;
    } catch (err) {
      if (!(err instanceof CliFailure) || Date.now() - started > 120_000) throw err;
    }
    if (v && v.status !== 'pending') {
      if (tty) process.stderr.write('\r\x1b[K');
      if (v.status === 'active' || v.status === 'superseded') {
        process.stdout.write(`config version ${version} active\n`);
        return 0;
      }
      process.stderr.write(`config version ${version} ${v.status}: ${v.reason ?? ''}\n`);
      return 1;
    }
    if (tty) process.stderr.write(`\r\x1b[Kconfig version ${version}: health checks running (${Math.round((Date.now() - started) / 1000)} s)`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

export async function configCommand(args: string[], connect: Connect): Promise<number> {
  const [sub, ...rest] = args;
  try {
    const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: OPTIONS });
    const api = async (): Promise<Api> => {
      const a = await connect(values);
      if (!a) throw new CliFailure(2, '');
      return a;
    };
    switch (sub) {
      case 'check': {
        if (positionals.length !== 1) throw new CliFailure(2, USAGE);
        const file = positionals[0]!;
        parseConfigText(await readText(file), file);
        process.stdout.write(`${file}: valid\n`);
        return 0;
      }
      case 'deploy': {
        if (positionals.length !== 1) throw new CliFailure(2, USAGE);
        const text = await readText(positionals[0]!);
        const a = await api();
        const d = (await requestApi(a, 'POST', '/api/v1/config', { text })) as { version: number; plan: DeployPlan };
        process.stdout.write(`config version ${d.version}: ${describePlan(d.plan)}\n`);
        return d.plan.kind === 'unchanged' ? 0 : follow(a, d.version, !values['no-wait']);
      }
      case 'rollback': {
        if (positionals.length > 1) throw new CliFailure(2, USAGE);
        const version = positionals[0] === undefined ? undefined : Number(positionals[0]);
        if (version !== undefined && (!Number.isInteger(version) || version < 1)) throw new CliFailure(2, `VERSION: expected a version number (outpost config history lists them), got ${positionals[0]}`);
        const a = await api();
        const d = (await requestApi(a, 'POST', '/api/v1/config/rollback', version === undefined ? {} : { version })) as { version: number; plan: DeployPlan };
        process.stdout.write(`config version ${d.version} (a rollback): ${describePlan(d.plan)}\n`);
        return follow(a, d.version, !values['no-wait']);
      }
      case 'history': {
        if (positionals.length > 0) throw new CliFailure(2, USAGE);
        const body = (await requestApi(await api(), 'GET', '/api/v1/config/versions')) as { versions: ConfigVersion[] };
        process.stdout.write(values.json ? `${JSON.stringify(body, null, 2)}\n` : `${renderHistory(body.versions, Date.now())}\n`);
        return 0;
      }
      default:
        throw new CliFailure(2, USAGE);
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      return 1;
    }
    if (err instanceof CliFailure) {
      if (err.message !== '') process.stderr.write(err.message.endsWith('\n') ? err.message : `${err.message}\n`);
      return err.exitCode;
    }
    if ((err as { code?: unknown }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      process.stderr.write(`${errorMessage(err)}\n${USAGE}`);
      return 2;
    }
    throw err;
  }
}

async function readText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new CliFailure(1, `${file}: cannot read: ${errorMessage(err)}`);
  }
}
