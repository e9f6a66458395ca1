import { applyMergePatch } from '../contracts/index.js';

/**
 * Twin documents (docs/devices.md): JSON objects whose leaves are scalars (number, boolean,
 * string, null), nested at most MAX_DEPTH levels, with at most MAX_LEAVES leaves and MAX_DOC_BYTES
 * of JSON. No arrays (a list is an object keyed by position), as in the device twins of the large
 * IoT platforms: a leaf is then addressed by one path (`motor.maxSpeed`), merged, versioned and
 * explained on its own. Keys use letters, digits, "_" and "-": "." separates path levels and "$"
 * is kept for the gateway's own records.
 */
export type Scalar = number | boolean | string | null;
export interface TwinDoc {
  [key: string]: Scalar | TwinDoc;
}

export const MAX_DEPTH = 5;
export const MAX_LEAVES = 256;
export const MAX_DOC_BYTES = 16 * 1024;
export const MAX_STRING = 1024;
const KEY = /^[A-Za-z0-9_-]{1,64}$/;

/** A document that breaks the rules, with every problem named by its path. */
export class TwinDocError extends Error {
  override readonly name = 'TwinDocError';
  constructor(readonly problems: readonly string[]) {
    super(problems.join('; '));
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * Checks `value` as a twin document (or a patch: `null` leaves allowed there as deletions) and
 * returns it typed; throws TwinDocError naming each problem by `label` and its path.
 */
export function checkDoc(value: unknown, label: string): TwinDoc {
  const problems: string[] = [];
  let leaves = 0;
  const walk = (v: unknown, path: string, depth: number): void => {
    if (problems.length >= 20) return;
    if (!isObject(v)) {
      problems.push(`${path}: expected an object`);
      return;
    }
    if (depth > MAX_DEPTH) {
      problems.push(`${path}: nested deeper than ${MAX_DEPTH} levels`);
      return;
    }
    for (const [k, x] of Object.entries(v)) {
      const at = `${path}.${k}`;
      if (!KEY.test(k)) {
        problems.push(`${at}: keys use letters, digits, "_" and "-" (1 to 64)`);
        continue;
      }
      if (Array.isArray(x)) problems.push(`${at}: arrays are not allowed in twin documents (use an object keyed by position)`);
      else if (isObject(x)) walk(x, at, depth + 1);
      else if (typeof x === 'number' && !Number.isFinite(x)) problems.push(`${at}: expected a finite number`);
      else if (typeof x === 'string' && x.length > MAX_STRING) problems.push(`${at}: a string of at most ${MAX_STRING} characters`);
      else if (x !== null && typeof x !== 'number' && typeof x !== 'string' && typeof x !== 'boolean') problems.push(`${at}: expected a number, boolean, string, null or object`);
      else if (++leaves === MAX_LEAVES + 1) problems.push(`${label}: more than ${MAX_LEAVES} properties`);
    }
  };
  walk(value, label, 1);
  if (problems.length === 0) {
    const bytes = Buffer.byteLength(JSON.stringify(value));
    if (bytes > MAX_DOC_BYTES) problems.push(`${label}: ${bytes} bytes of JSON, at most ${MAX_DOC_BYTES}`);
  }
  if (problems.length > 0) throw new TwinDocError(problems);
  return value as TwinDoc;
}

/** The document's leaves by path (`a.b.c`), in key order. */
export function flatten(doc: TwinDoc, prefix = '', out = new Map<string, Scalar>()): Map<string, Scalar> {
  for (const [k, v] of Object.entries(doc)) {
    const path = prefix === '' ? k : `${prefix}.${k}`;
    if (isObject(v)) flatten(v, path, out);
    else out.set(path, v);
  }
  return out;
}

/** The document whose leaves are `leaves`; a leaf whose path runs through another leaf is skipped. */
export function unflatten(leaves: Iterable<readonly [string, Scalar]>): TwinDoc {
  const root: TwinDoc = {};
  outer: for (const [path, value] of leaves) {
    const keys = path.split('.');
    let node = root;
    for (let i = 0; i < keys.length - 1; i++) {
      const k = keys[i]!;
      const next = node[k];
      if (next === undefined) node = node[k] = {};
      else if (isObject(next)) node = next;
      else continue outer;
    }
    const last = keys.at(-1)!;
    if (isObject(node[last])) continue;
    node[last] = value;
  }
  return sortKeys(root);
}

/** The same document with keys in sorted order at every level: one text per content. */
export function sortKeys(doc: TwinDoc): TwinDoc {
  const out: TwinDoc = {};
  for (const k of Object.keys(doc).sort()) {
    const v = doc[k]!;
    out[k] = isObject(v) ? sortKeys(v) : v;
  }
  return out;
}

/** Whether path `a` is `b`, lies under it, or `b` lies under `a` (they cannot both be leaves). */
export function pathsOverlap(a: string, b: string): boolean {
  return a === b || a.startsWith(`${b}.`) || b.startsWith(`${a}.`);
}

/**
 * A JSON merge patch (RFC 7396) as leaf changes: each leaf path with its new value, `null` where
 * the patch deletes (a whole object deleted gives its path).
 */
export function patchLeaves(patch: TwinDoc): Map<string, Scalar> {
  return flatten(patch);
}

/** `doc` with the merge patch applied (RFC 7396): null deletes, objects merge, anything else replaces. */
export function applyPatch(doc: TwinDoc, patch: TwinDoc): TwinDoc {
  return applyMergePatch(doc, patch);
}

/** The merge patch that turns `from` into `to` (RFC 7396), or undefined when they are equal. */
export function diffDocs(from: TwinDoc, to: TwinDoc): TwinDoc | undefined {
  const patch: TwinDoc = {};
  for (const k of new Set([...Object.keys(from), ...Object.keys(to)])) {
    const a = from[k];
    const b = to[k];
    if (b === undefined) patch[k] = null;
    else if (isObject(a) && isObject(b)) {
      const sub = diffDocs(a, b);
      if (sub) patch[k] = sub;
    } else if (a !== b || (isObject(b) && !isObject(a))) patch[k] = b;
  }
  return Object.keys(patch).length > 0 ? patch : undefined;
}
