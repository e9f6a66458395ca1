import { applyMergePatch, cloudTwinTopics, resolveLeaf, TWIN_POINTS, type CloudDesired, type EdgeDesired, type VersionedLeaf } from '../runtime/contracts/index.js';
import type { LedgerReading } from './ledger.js';

type Doc = Record<string, unknown>;


function leaves(doc: Doc, prefix = '', out = new Map<string, unknown>()): Map<string, unknown> {
  for (const [k, v] of Object.entries(doc)) {
    const p = prefix ? `${prefix}.${k}` : k;
    if (v !== null && typeof v === 'object') leaves(v as Doc, p, out);
    else out.set(p, v);
  }
  return out;
}

/**
 * The cloud side of twins as the contract describes it (docs/devices.md), for the simulated cloud:
 * per gateway and device, its copy of the direct desired edits (leaf, value, version), merged with
 * the edge's records by the same rule the gateway uses (resolveLeaf) and published back retained;
 * the reported documents, the inventory, the configurations' counts and call answers the gateway
 * sent up. Messages go out through `publish` (the cloud broker).
 */
export class CloudTwins {
  private readonly desired = new Map<string, Map<string, VersionedLeaf>>();
  readonly reported = new Map<string, Doc>();
  readonly inventory = new Map<string, Record<string, unknown>>();
  readonly configurationStatus = new Map<string, Record<string, unknown>>();
  readonly callAnswers = new Map<string, Record<string, unknown>>();
  /** Records received per gateway, device and point (duplicates included). */
  readonly received = new Map<string, number>();
  /** Messages sent down and their bytes (desired documents, configurations, calls). */
  sent = { messages: 0, bytes: 0 };

  constructor(
    private readonly prefix: string,
    private readonly publish: (topic: string, payload: string, retain: boolean) => Promise<void>,
  ) {}

  private key = (gateway: string, device: string): string => `${gateway}\u0000${device}`;

  /** A record the gateway sent up (`$` points). */
  record(gateway: string, r: LedgerReading): void {
    if (typeof r.value !== 'string') return;
    let body: unknown;
    try {
      body = JSON.parse(r.value);
    } catch {
      return;
    }
    const k = this.key(gateway, r.device);
    this.received.set(`${k}\u0000${r.point}`, (this.received.get(`${k}\u0000${r.point}`) ?? 0) + 1);
    if (r.point === TWIN_POINTS.reported) this.reported.set(k, applyMergePatch(this.reported.get(k) ?? {}, body as Doc));
    else if (r.point === TWIN_POINTS.inventory) this.inventory.set(k, body as Record<string, unknown>);
    else if (r.point === TWIN_POINTS.desired) this.onEdgeDesired(gateway, r.device, body as EdgeDesired);
    else if (r.point.startsWith('$configuration/')) this.configurationStatus.set(this.key(gateway, r.point.slice('$configuration/'.length)), body as Record<string, unknown>);
    else if (r.point.startsWith('$call/')) this.callAnswers.set(r.point.slice('$call/'.length), body as Record<string, unknown>);
  }

  /** The edge's edits: merged leaf by leaf by the one rule; published back when the document changed. */
  private onEdgeDesired(gateway: string, device: string, edits: EdgeDesired): void {
    const k = this.key(gateway, device);
    const held = this.desired.get(k) ?? new Map<string, VersionedLeaf>();
    let changed = false;
    for (const [path, edge] of Object.entries(edits)) {
      const won = resolveLeaf(edge, held.get(path));
      if (won?.from === 'edge' && (held.get(path)?.value !== edge.value || held.get(path)?.version !== edge.version)) {
        held.set(path, edge);
        changed = true;
      }
    }
    this.desired.set(k, held);
    if (changed) void this.send(gateway, device).catch(() => undefined);
  }

  /** An edit made in the cloud (a merge patch of leaves; null removes the direct value): each leaf's next version. */
  async edit(gateway: string, device: string, patch: Record<string, unknown>): Promise<void> {
    const k = this.key(gateway, device);
    const held = this.desired.get(k) ?? new Map<string, VersionedLeaf>();
    for (const [path, value] of leaves(patch)) held.set(path, { value: value as VersionedLeaf['value'], version: (held.get(path)?.version ?? 0) + 1 });
    this.desired.set(k, held);
    await this.send(gateway, device);
  }

  /** The cloud's copy of a device's direct desired leaves. */
  desiredOf(gateway: string, device: string): Record<string, VersionedLeaf> {
    return Object.fromEntries(this.desired.get(this.key(gateway, device)) ?? []);
  }

  private async send(gateway: string, device: string, tags?: CloudDesired['tags']): Promise<void> {
    const doc: CloudDesired = { v: 1, props: this.desiredOf(gateway, device), ...(tags ? { tags } : {}) };
    await this.out(cloudTwinTopics.desired(this.prefix, gateway, device), JSON.stringify(doc), true);
  }

  /** One configuration for the whole site (retained); undefined removes it. */
  async configure(gateway: string, id: string, c: { version: number; target: string; desired: Record<string, unknown>; priority?: number } | undefined): Promise<void> {
    await this.out(cloudTwinTopics.configuration(this.prefix, gateway, id), c === undefined ? '' : JSON.stringify({ v: 1, ...c }), true);
  }

  /** A method call; its answer arrives in `callAnswers` under `id`. */
  async call(gateway: string, c: { id: string; device: string; method: string; payload?: unknown; timeoutMs?: number; wait?: boolean }): Promise<void> {
    await this.out(cloudTwinTopics.calls(this.prefix, gateway), JSON.stringify(c), false);
  }

  private async out(topic: string, payload: string, retain: boolean): Promise<void> {
    this.sent.messages++;
    this.sent.bytes += Buffer.byteLength(topic) + Buffer.byteLength(payload);
    await this.publish(topic, payload, retain);
  }
}
