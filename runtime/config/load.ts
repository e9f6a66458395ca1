import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { errorMessage, isSecretName, redactUrl, type Logger } from '../contracts/index.js';
import type { z } from 'zod';
import { createLogger } from '../logger.js';
import type { ProtocolRegistry } from '../protocols.js';
import { readableByOthers } from '../security/secret-files.js';
import { siteConfigSchema, type SiteConfig } from './schema.js';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly file: string,
    readonly problems: readonly string[],
  ) {
    super(`${file}: invalid config\n${problems.map((p) => `  ${p}`).join('\n')}`);
  }
}

/** `devices[1].points[3].address` */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out === '' ? '(root)' : out;
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (value === null) return 'null';
  if (typeof value !== 'object') return typeof value;
  return Array.isArray(value) ? 'an array' : 'an object';
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let cur: unknown = root;
  for (const key of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[key];
  }
  return cur;
}

export function formatIssues(raw: unknown, issues: readonly z.core.$ZodIssue[]): string[] {
  return issues.map((issue) => {
    const where = formatPath(issue.path);
    if (issue.code === 'invalid_type') {
      const expected = issue.expected === 'int' ? 'integer' : issue.expected;
      return `${where}: expected ${expected}, got ${describe(valueAt(raw, issue.path))}`;
    }
    if (issue.code === 'unrecognized_keys') {
      return `${where}: unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
    }
    return `${where}: ${issue.message}`;
  });
}

/** Validate an already-parsed object; throws ConfigError naming every problem by path. */
export function parseConfig(raw: unknown, file = 'config', protocols?: ProtocolRegistry): SiteConfig {
  const result = siteConfigSchema(protocols).safeParse(raw);
  if (!result.success) throw new ConfigError(file, formatIssues(raw, result.error.issues));
  return result.data;
}

function parseYaml(text: string, file: string): unknown {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      file,
      doc.errors.map(
        (e) => `line ${e.linePos?.[0]?.line ?? '?'}: ${(e.message.split('\n')[0] ?? e.message).replace(/ at line \d+, column \d+:?$/, '')}`,
      ),
    );
  }
  return doc.toJS() as unknown;
}

export function parseConfigText(text: string, file = 'config', protocols?: ProtocolRegistry): SiteConfig {
  return parseConfig(parseYaml(text, file), file, protocols);
}

/**
 * Fields whose names sound secret but whose values are not: public keys the gateway trusts, and
 * paths of PEM files (the key file itself is the secret, and its mode is the operator's to set).
 */
const NOT_SECRET = new Set(['ota.trustedKeys', 'deploy.trustedKeys', 'cloud.tls.ca', 'cloud.tls.cert', 'cloud.tls.key', 'broker.external.tls.ca', 'broker.external.tls.cert', 'broker.external.tls.key']);

/**
 * Where a parsed config holds secrets, by path: a non-empty string under a secret-sounding name
 * (password, passwordHash, token, gatewayToken, secret, key, …; everything under targetTokens), and
 * any URL with user info or credential query parameters. Names, not values.
 */
export function secretFields(raw: unknown): string[] {
  const found: string[] = [];
  const walk = (value: unknown, path: PropertyKey[], secretAbove: boolean): void => {
    const at = formatPath(path);
    if (NOT_SECRET.has(at)) return;
    if (typeof value === 'string') {
      if (value !== '' && (secretAbove || redactUrl(value) !== value)) found.push(at);
      return;
    }
    if (value === null || typeof value !== 'object') return;
    const entries: [PropertyKey, unknown][] = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
    // A field naming a file (secretFile, keyFile, caFile) holds a path: the secret is in that file.
    for (const [k, v] of entries) {
      // Labels of a secret (a token's name and scopes) are not the secret, nor is the SHA-256 of a
      // random 32-byte token (it cannot be reversed; a password hash can be attacked, and counts).
      if (typeof k === 'string' && (k === 'name' || k === 'scopes' || k === 'id' || k === 'sha256')) continue;
      walk(v, [...path, k], secretAbove || (typeof k === 'string' && isSecretName(k) && !k.endsWith('File')));
    }
  };
  walk(raw, [], false);
  return found;
}

/** Files already warned about in this process: SIGHUP and rule reloads read the file again. */
const warned = new Set<string>();

/**
 * A config file that holds secrets must not be readable by other local users. Warned once per file
 * (naming the fields, never their values, and the command that fixes it); the gateway still starts,
 * as a refusal would take a site down over a mode an operator can fix while it runs.
 */
function warnIfExposed(file: string, raw: unknown, log: Logger | undefined): void {
  const key = resolve(file);
  if (warned.has(key) || !readableByOthers(file)) return;
  const fields = secretFields(raw);
  if (fields.length === 0) return;
  warned.add(key);
  (log ?? createLogger()).warn({ file, fields }, `${file} holds secrets (${fields.join(', ')}) and is readable by group or others: chmod 600 ${file}`);
}

export interface LoadOptions {
  /** Where the warning about an exposed config file goes (default: a logger on stderr, as the gateway's). */
  readonly log?: Logger;
}

export async function loadConfig(file: string, protocols?: ProtocolRegistry, opts: LoadOptions = {}): Promise<SiteConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [`cannot read file: ${errorMessage(err)}`]);
  }
  const raw = parseYaml(text, file);
  // Before validation: an invalid file exposes its secrets just as well.
  warnIfExposed(file, raw, opts.log);
  return parseConfig(raw, file, protocols);
}
