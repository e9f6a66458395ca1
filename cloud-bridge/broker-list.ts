import { redactUrl } from '../runtime/contracts/index.js';

/** One cloud broker the uplink may connect to, parsed from an entry of `cloud.urls`. */
export interface BrokerTarget {
  /** Position in the list: 0 is the preferred broker. */
  readonly index: number;
  /** As configured (it may carry user info: log `shown`). */
  readonly url: string;
  /** The URL with its user info and credential parameters redacted. */
  readonly shown: string;
  /** mqtt.js's name of the transport: mqtt, mqtts, tcp or ssl. */
  readonly protocol: string;
  readonly host: string;
  readonly port: number | undefined;
  /** User info of the URL, which wins over cloud.username/password (as mqtt.js does for one URL). */
  readonly username?: string | undefined;
  readonly password?: string | undefined;
}

export function brokerTarget(url: string, index: number): BrokerTarget {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (err) {
    throw new Error(`cloud broker URL ${redactUrl(url)} cannot be parsed`, { cause: err });
  }
  // WHATWG keeps the brackets of an IPv6 host; a socket wants the address alone.
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
  return {
    index,
    url,
    shown: redactUrl(url),
    protocol: parsed.protocol.replace(/:$/, ''),
    host,
    port: parsed.port === '' ? undefined : Number(parsed.port),
    username: parsed.username === '' ? undefined : decodeURIComponent(parsed.username),
    password: parsed.password === '' ? undefined : decodeURIComponent(parsed.password),
  };
}

/**
 * Which cloud broker the next connection attempt goes to. Failover, not rotation: a round of
 * attempts starts at the first (preferred) broker and moves down the list only when an attempt
 * fails, so the gateway is always on the first broker that answers. mqtt.js's own `servers`
 * option rotates to the next entry on every reconnect instead, which would leave a gateway on a
 * fallback node after every drop and spread a fleet over nodes the operator ranked last.
 */
export class BrokerList {
  readonly targets: readonly BrokerTarget[];
  private at = 0;
  /** The broker of the last connection that came up (none yet: undefined). */
  private upOn: BrokerTarget | undefined;

  constructor(urls: readonly string[]) {
    if (urls.length === 0) throw new Error('no cloud broker URL: set cloud.url or cloud.urls');
    this.targets = urls.map((u, i) => brokerTarget(u, i));
  }

  /** The broker of the attempt under way (or of the connection, once it is up). */
  get current(): BrokerTarget {
    return this.targets[this.at]!;
  }

  /** The broker of the last connection that came up. */
  get connectedTo(): BrokerTarget | undefined {
    return this.upOn;
  }

  /** A new round of attempts (after a drop, the backoff or a network change): the preferred broker. */
  restart(): BrokerTarget {
    this.at = 0;
    return this.current;
  }

  /** The attempt on the current broker failed: the next one of this round, or undefined when the round is over. */
  advance(): BrokerTarget | undefined {
    if (this.at + 1 >= this.targets.length) return undefined;
    this.at++;
    return this.current;
  }

  /**
   * The current broker accepted the connection. Returns the broker it replaces when that is
   * another one (a failover): the last one the link was up on or, for the first connection, the
   * preferred one.
   */
  connected(): BrokerTarget | undefined {
    const before = this.upOn ?? this.targets[0]!;
    this.upOn = this.current;
    return before.index !== this.at ? before : undefined;
  }
}
