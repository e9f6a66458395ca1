import { z } from 'zod';
import { compileExpression, ExpressionError, boolize, type Compiled } from '../../rules/expression.js';
import { idSchema, type VersionedLeaf } from '../contracts/index.js';
import { checkDoc, flatten, pathsOverlap, TwinDocError, unflatten, type Scalar, type TwinDoc } from './twin-doc.js';

/**
 * Configurations (docs/devices.md): one statement of desired state for every current and future
 * device its target condition selects. The effective desired state of a device is its direct
 * edits over the configurations that target it, these taken by priority (higher first) then id
 * (lower first): the same inputs give the same result on any gateway, in any order of arrival.
 */

/** What a target condition can read of a device. `labels.*`: `labels.line = "2"`. */
export const DEVICE_FIELDS = ['id', 'protocol', 'model', 'firmware', 'online', 'labels.*', 'tags.*', 'attributes.*'] as const;

/** A device as target conditions see it. */
export interface DeviceFacts {
  readonly id: string;
  readonly protocol: string;
  readonly online: boolean;
  /** From the site config's device entry (model, labels) or the device's birth message. */
  readonly attributes: Readonly<Record<string, string | number | boolean>>;
  /** From the site config. */
  readonly labels: Readonly<Record<string, string>>;
  /** Set by the cloud or an operator. */
  readonly tags: Readonly<Record<string, string | number | boolean>>;
}

/** Compiles a target condition; throws ExpressionError with the character position. */
export function compileTarget(text: string): (device: DeviceFacts) => boolean {
  const f: Compiled = compileExpression(text, DEVICE_FIELDS);
  return (d) => {
    try {
      return boolize(
        f({
          id: d.id,
          protocol: d.protocol,
          model: d.attributes.model,
          firmware: d.attributes.firmware,
          online: d.online,
          labels: d.labels,
          tags: d.tags,
          attributes: d.attributes,
        }),
      );
    } catch {
      // A condition that cannot be evaluated for this device (a label of the wrong type) does not select it.
      return false;
    }
  };
}

const labelMap = z.record(z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'label names use letters, digits, "_" and "-"'), z.string().max(256));

/** A configuration's desired document: a twin document whose leaves are values (no null). */
const desiredDoc = z.unknown().transform((v, ctx): TwinDoc => {
  try {
    const doc = checkDoc(v, 'desired');
    for (const [path, leaf] of flatten(doc)) {
      if (leaf === null) ctx.addIssue({ code: 'custom', message: `desired.${path}: a configuration sets values; leave the property out instead of null` });
    }
    return doc;
  } catch (err) {
    if (!(err instanceof TwinDocError)) throw err;
    for (const p of err.problems) ctx.addIssue({ code: 'custom', message: p });
    return z.NEVER;
  }
});

const targetText = z
  .string()
  .min(1)
  .max(1024)
  .superRefine((text, ctx) => {
    try {
      compileTarget(text);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: err instanceof ExpressionError ? err.message : String(err) });
    }
  });

/** The site config's `configurations` entries (docs/config.md). */
export const configurationSchema = z.strictObject({
  id: idSchema,
  /** Which devices it applies to: an expression over id, protocol, model, firmware, online, labels.*, tags.*, attributes.*. */
  target: targetText,
  desired: desiredDoc,
  /** Higher wins where configurations set the same property; equal priorities: the lower id wins. */
  priority: z.number().int().min(-1_000_000).max(1_000_000).default(0),
  labels: labelMap.default({}),
});
export type ConfigurationEntry = z.output<typeof configurationSchema>;

/** A configuration as the gateway holds it: from the site config or the cloud, with its version. */
export interface Configuration {
  readonly id: string;
  readonly origin: 'site' | 'cloud';
  readonly version: number;
  readonly target: string;
  readonly desired: TwinDoc;
  readonly priority: number;
  readonly labels: Readonly<Record<string, string>>;
}

/** A configuration ready to evaluate. */
export interface CompiledConfiguration extends Configuration {
  readonly matches: (device: DeviceFacts) => boolean;
  readonly leaves: ReadonlyMap<string, Scalar>;
}

export function compileConfiguration(c: Configuration): CompiledConfiguration {
  return { ...c, matches: compileTarget(c.target), leaves: flatten(c.desired) };
}

/** Configurations in the order they are applied: priority, higher first; then id. */
export function byPrecedence(a: Configuration, b: Configuration): number {
  return b.priority - a.priority || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** Where an effective property comes from: `direct` (an edit of this device) or `configuration:ID`. */
export type Source = 'direct' | `configuration:${string}`;

export interface Effective {
  readonly doc: TwinDoc;
  /** Each leaf of `doc` and what set it. */
  readonly sources: ReadonlyMap<string, Source>;
  /** What lost to it, leaf by leaf (for `devices explain`). */
  readonly shadowed: ReadonlyMap<string, readonly { source: Source; value: Scalar }[]>;
  /** The configurations that target the device (applied or entirely overridden). */
  readonly targeting: readonly string[];
}

/**
 * The effective desired state of `device`: its direct edits first (a null value leaves the
 * property to the configurations), then each targeting configuration in precedence order; a leaf
 * is taken unless a leaf already taken has the same path or lies on its path.
 */
export function effectiveDesired(device: DeviceFacts, direct: ReadonlyMap<string, VersionedLeaf>, configurations: readonly CompiledConfiguration[]): Effective {
  const taken = new Map<string, { value: Scalar; source: Source }>();
  const shadowed = new Map<string, { source: Source; value: Scalar }[]>();
  const offer = (path: string, value: Scalar, source: Source): void => {
    for (const [p, t] of taken) {
      if (!pathsOverlap(p, path)) continue;
      const list = shadowed.get(p) ?? [];
      list.push({ source, value });
      shadowed.set(p, list);
      void t;
      return;
    }
    taken.set(path, { value, source });
  };
  for (const [path, leaf] of [...direct].sort(([a], [b]) => (a < b ? -1 : 1))) if (leaf.value !== null) offer(path, leaf.value, 'direct');
  const targeting: string[] = [];
  for (const c of configurations) {
    if (!c.matches(device)) continue;
    targeting.push(c.id);
    for (const [path, value] of c.leaves) offer(path, value, `configuration:${c.id}`);
  }
  const sources = new Map<string, Source>();
  for (const [p, t] of taken) sources.set(p, t.source);
  return { doc: unflatten([...taken].map(([p, t]) => [p, t.value] as const)), sources, shadowed, targeting };
}
