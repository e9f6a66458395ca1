import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { readFileSync } from 'node:fs';
import { AccessPolicy } from '../broker/acl.js';
import { EmbeddedBroker } from '../broker/embedded-broker.js';
import { ExternalBroker } from '../broker/external-broker.js';
import { readClientTls } from '../config/client-tls.js';
import { type Component, type ComponentContext } from '../contracts/index.js';
import { IdentityRegistry } from '../identity/registry.js';
import { IdentityStore } from '../identity/store.js';
import { serverCertificate } from '../security/certificates.js';
import { gatewaySecret } from '../security/secret-files.js';
import type { SiteConfig } from '../config/schema.js';
import type { ProtocolRegistry } from '../protocols.js';
import type { Part } from './site.js';

/** Devices read by their driver (Modbus): they can never be an MQTT identity. */
export function drivenDevices(config: SiteConfig, protocols: ProtocolRegistry): Map<string, string> {
  return new Map(config.devices.filter((d) => !protocols.get(d.protocol)?.capabilities.brokerIdentity).map((d) => [d.id, d.protocol]));
}

/**
 * The broker children talk to. Embedded: the MQTT broker's core (aedes) with its identities.
 * External (broker.external): the gateway's client of the site broker. Either way drivers register
 * their interceptors on it before any child message is taken.
 */
export const brokerPart: Part = {
  name: 'mqtt-broker',
  build(site) {
    const { config, protocols, clock } = site.opts;
    const external = config.broker.external;
    if (external) {
      const broker = new ExternalBroker({ config: external, gatewayId: config.gateway.id, tls: external.tls && readClientTls(external.tls, 'broker.external.tls') });
      site.provide('localBroker', broker);
      return broker;
    }
    const store = site.get('store');
    const stateDir = dirname(config.storage.path);
    // The registry reads the store, which is open once the broker starts (the store part is before it).
    const registry = (): IdentityRegistry =>
      new IdentityRegistry(config.identities, {
        driven: drivenDevices(config, protocols),
        anonymous: config.broker.anonymous,
        maxClientIdBytes: config.broker.limits.maxClientIdBytes,
        store: new IdentityStore(store),
        secret: gatewaySecret(stateDir),
        now: () => clock.now(),
      });
    const broker = new EmbeddedBroker({ registry, policy: new AccessPolicy(config.broker.grants), limits: config.broker.limits });
    site.provide('localBroker', broker);
    site.provide('embeddedBroker', broker);
    return broker;
  },
};

/** The broker's listeners: child devices connect once everything that takes their data runs. */
class BrokerListener implements Component {
  readonly name = 'mqtt-listener';
  private fingerprint: string | undefined;

  constructor(
    private readonly broker: EmbeddedBroker,
    private readonly config: SiteConfig,
  ) {}

  async start(ctx: ComponentContext): Promise<void> {
    const { broker: b, storage } = this.config;
    if (b.port !== null) await this.broker.listen(b.host, b.port);
    if (b.tls) {
      const host = b.tls.host ?? b.host;
      const cert = await serverCertificate({ certFile: b.tls.certFile, keyFile: b.tls.keyFile, dir: dirname(storage.path), name: 'mqtt-broker', hosts: [...new Set([host, 'localhost', '127.0.0.1', hostname()])].filter((h) => h !== '0.0.0.0' && h !== '::') });
      this.fingerprint = cert.fingerprint;
      if (cert.created) ctx.log.info({ certFile: cert.certFile, sha256: cert.fingerprint }, 'MQTT TLS certificate created (self-signed): give devices this fingerprint or the file');
      const ca = [...this.broker.identities.groupCas(), ...(b.tls.clientCaFile ? [readFileSync(b.tls.clientCaFile, 'utf8')] : [])];
      await this.broker.listenTls(host, b.tls.port, { cert: cert.cert, key: cert.key, ...(ca.length > 0 ? { ca } : {}) }, { requireCertificate: b.tls.requireCertificate, verifiesChains: ca.length > 0 });
    }
  }

  /** Intake stops first: no new connection, no new PUBLISH; what is in flight is finished by its owners. */
  async stop(): Promise<void> {
    await this.broker.stopIntake();
  }

  status(): Record<string, unknown> {
    return { ports: { broker: this.broker.listeningPort, ...(this.config.broker.tls ? { brokerTls: this.broker.tlsPort } : {}) }, ...(this.fingerprint ? { brokerTlsSha256: this.fingerprint } : {}) };
  }
}

/** The link to an external site broker opens where the listener would: once everything that takes children's data runs. */
class SiteBrokerLink implements Component {
  readonly name = 'mqtt-listener';

  constructor(private readonly broker: ExternalBroker) {}

  async start(): Promise<void> {
    this.broker.connect();
    await Promise.resolve();
  }

  /** Intake stops first: the message being committed is acknowledged, the rest stays in the site broker's session. */
  async stop(): Promise<void> {
    await this.broker.stopIntake();
  }

  status(): Record<string, unknown> {
    return {};
  }
}

export const brokerListenerPart: Part = {
  name: 'mqtt-listener',
  build(site) {
    const broker = site.get('localBroker');
    if (broker instanceof ExternalBroker) return new SiteBrokerLink(broker);
    return new BrokerListener(site.get('embeddedBroker'), site.config);
  },
};
