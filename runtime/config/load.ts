import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import { errorMessage } from '../contracts/index.js';
import type { z } from 'zod';
import type { ProtocolRegistry } from '../protocols.js';
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

export function parseConfigText(text: string, file = 'config', protocols?: ProtocolRegistry): SiteConfig {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      file,
      doc.errors.map(
        (e) => `line ${e.linePos?.[0]?.line ?? '?'}: ${(e.message.split('\n')[0] ?? e.message).replace(/ at line \d+, column \d+:?$/, '')}`,
      ),
    );
  }
  return parseConfig(doc.toJS(), file, protocols);
}

export async function loadConfig(file: string, protocols?: ProtocolRegistry): Promise<SiteConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [`cannot read file: ${errorMessage(err)}`]);
  }
  return parseConfigText(text, file, protocols);
}
