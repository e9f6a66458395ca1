import type { SiteConfig } from '../config/schema.js';
import { deviceInventoryFields } from '../devices/config.js';
import type { ProtocolRegistry } from '../protocols.js';

/** The config's top-level sections (gateway, http, broker, cloud, devices, rules, …). */
export type Section = Extract<keyof SiteConfig, string>;

/**
 * What applying a new config takes, least disruptive first:
 * - `unchanged`: the same config; nothing to do;
 * - `in-place`: the rules are swapped (unchanged rules keep their windows) and the drivers whose
 *   devices changed are restarted; nothing else stops: children stay connected, the cloud link
 *   stays up;
 * - `restart`: every part stops in order (nothing in flight is lost: runtime/parts/index.ts) and
 *   starts again on the new config, in the same process, on the same ports.
 */
export type DeployPlan =
  | { readonly kind: 'unchanged' }
  | { readonly kind: 'in-place'; readonly changed: readonly Section[]; readonly devices: readonly string[] }
  | { readonly kind: 'restart'; readonly changed: readonly Section[]; readonly why: string };

/** A config that cannot be applied to a running gateway at all (edit the file and restart). */
export class DeployRefused extends Error {
  override readonly name = 'DeployRefused';
}

const INVENTORY = Object.keys(deviceInventoryFields);

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** The sections of `next` that differ from `running`. */
export function changedSections(running: SiteConfig, next: SiteConfig): Section[] {
  const keys = new Set([...Object.keys(running), ...Object.keys(next)] as Section[]);
  return [...keys].filter((k) => !same(running[k], next[k])).sort();
}

export function planDeployment(running: SiteConfig, next: SiteConfig, protocols: ProtocolRegistry): DeployPlan {
  if (next.gateway.id !== running.gateway.id) {
    throw new DeployRefused(`gateway.id changes from "${running.gateway.id}" to "${next.gateway.id}": a gateway's identity (its topics, its store) is changed in the file, with a restart`);
  }
  if (next.storage.path !== running.storage.path) {
    throw new DeployRefused(`storage.path changes from ${running.storage.path} to ${next.storage.path}: the store is moved in the file, with a restart`);
  }
  const changed = changedSections(running, next);
  if (changed.length === 0) return { kind: 'unchanged' };
  // The deployer reads `deploy` itself; rules and polled devices change in place.
  const beyond = changed.filter((s) => s !== 'rules' && s !== 'devices' && s !== 'deploy');
  if (beyond.length > 0) return { kind: 'restart', changed, why: `${beyond.join(', ')} changed` };
  if (!changed.includes('devices')) return { kind: 'in-place', changed, devices: [] };
  const why = devicesInPlace(running, next, protocols);
  if (typeof why === 'string') return { kind: 'restart', changed, why };
  return { kind: 'in-place', changed, devices: why };
}

/**
 * The devices whose drivers restart when only polled devices changed their settings (address,
 * timing, points); a reason to restart everything otherwise: a device added or removed (the broker's
 * identities and the registry know the device list), a child device (the broker is its driver),
 * or inventory fields (the registry and configurations use them).
 */
function devicesInPlace(running: SiteConfig, next: SiteConfig, protocols: ProtocolRegistry): string[] | string {
  const before = new Map(running.devices.map((d) => [d.id, d]));
  const after = new Map(next.devices.map((d) => [d.id, d]));
  const added = [...after.keys()].filter((id) => !before.has(id));
  const removed = [...before.keys()].filter((id) => !after.has(id));
  if (added.length > 0 || removed.length > 0) return `devices ${[...added.map((id) => `added: ${id}`), ...removed.map((id) => `removed: ${id}`)].join(', ')}`;
  const changed: string[] = [];
  for (const [id, d] of after) {
    const old = before.get(id)!;
    if (same(old, d)) continue;
    if (old.protocol !== d.protocol) return `device ${id} changes protocol`;
    if (protocols.get(d.protocol)?.capabilities.brokerIdentity) return `device ${id} is a child of the broker`;
    const pick = (e: Record<string, unknown>): unknown[] => INVENTORY.map((k) => e[k]);
    if (!same(pick(old), pick(d))) return `device ${id} changes its inventory fields (${INVENTORY.join(', ')})`;
    changed.push(id);
  }
  return changed;
}
