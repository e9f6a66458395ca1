import { compileGlob, compileTopicFilter, filterCovers, localTopics, LOCAL_PREFIX } from '../contracts/index.js';
import type { BrokerGrant } from './config.js';

/**
 * Who is on the other end of a connection, once authenticated. `device`: a child device (its id
 * is its client id and its topic subtree); `client`: an identity that is not a device (a site
 * panel); `anonymous`: no credential (only when broker.anonymous allows it, from loopback).
 */
export interface Identity {
  readonly id: string;
  readonly kind: 'device' | 'client' | 'anonymous';
  /** How it proved who it is: `password`, `group:<name>`, `certificate`, `anonymous`. */
  readonly method: string;
}

interface CompiledGrant {
  readonly applies: (id: string) => boolean;
  readonly anonymous: boolean;
  readonly publish: readonly ((topic: string) => boolean)[];
  readonly subscribe: readonly string[];
  readonly receive: readonly ((topic: string) => boolean)[];
}

/** The levels under a device's own subtree it may subscribe to (localTopics.deviceInbox). */
const INBOX = /^(cmd|desired|update)(\/|$)/;

/**
 * Deny by default (docs/security.md, "Permissions"): a device publishes under
 * `outpost/v1/dev/{id}/` only and subscribes to its own command, desired-state and update topics;
 * everything else comes from `broker.grants`. Nothing reaches `$`-topics. Wills and retained
 * messages are checked as the publishes they are.
 */
export class AccessPolicy {
  private readonly grants: readonly CompiledGrant[];

  constructor(grants: readonly BrokerGrant[]) {
    this.grants = grants.map((g) => {
      const matchers = g.identities.map((p) => compileGlob(p));
      return {
        applies: (id: string) => matchers.some((m) => m(id)),
        anonymous: g.identities.includes('anonymous'),
        publish: g.publish.map((f) => compileTopicFilter(f)),
        subscribe: g.subscribe,
        receive: g.subscribe.map((f) => compileTopicFilter(f)),
      };
    });
  }

  private grantsOf(who: Identity): CompiledGrant[] {
    // An anonymous client's id is whatever it chose: only grants naming `anonymous` apply to it.
    return this.grants.filter((g) => (who.kind === 'anonymous' ? g.anonymous : g.applies(who.id)));
  }

  canPublish(who: Identity, topic: string): boolean {
    if (topic.startsWith('$')) return false;
    // The trailing "/" matters: device "pump" must not publish under "pump-2".
    if (who.kind === 'device' && topic.startsWith(`${LOCAL_PREFIX}/${who.id}/`)) return true;
    return this.grantsOf(who).some((g) => g.publish.some((m) => m(topic)));
  }

  canSubscribe(who: Identity, filter: string): boolean {
    if (filter.startsWith('$')) return false;
    if (who.kind === 'device' && localTopics.deviceInbox(who.id).some((own) => filterCovers(own, filter))) return true;
    return this.grantsOf(who).some((g) => g.subscribe.some((allowed) => filterCovers(allowed, filter)));
  }

  /** Whether a message on `topic` may be delivered to `who` (checked again at delivery: subscriptions outlive grants). */
  canReceive(who: Identity, topic: string): boolean {
    if (topic.startsWith('$')) return false;
    if (who.kind === 'device') {
      const root = `${LOCAL_PREFIX}/${who.id}/`;
      if (topic.startsWith(root) && INBOX.test(topic.slice(root.length))) return true;
    }
    return this.grantsOf(who).some((g) => g.receive.some((m) => m(topic)));
  }
}
