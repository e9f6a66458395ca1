import { describe, expect, it } from 'vitest';
import { parseConfigText, secretFields } from '../../runtime/config/load.js';
import { configProblems as problems } from '../helpers/fakes.js';

const site = (broker: string, extra = ''): string => `
gateway: { id: gw1 }
broker: ${broker}
cloud: { url: "mqtt://127.0.0.1:1883" }
storage: { path: /tmp/x.db }
${extra}`;

describe('broker.external', () => {
  it('takes a site broker with defaults filled: persistent-session client id from the gateway id, backoff', () => {
    const cfg = parseConfigText(site('{ external: { url: "mqtt://site-broker:1883", username: gw, password: s3cret }, acceptUnknownDevices: true }'));
    expect(cfg.broker.external).toEqual({ url: 'mqtt://site-broker:1883', username: 'gw', password: 's3cret', keepaliveS: 30, backoff: { initialMs: 500, maxMs: 30_000 } });
    expect(cfg.broker.acceptUnknownDevices).toBe(true);
  });

  it('refuses a URL that is not an MQTT URL of host and port, naming the field', () => {
    expect(problems(site('{ external: { url: "http://site-broker" } }'))).toEqual([
      'broker.external.url: expected an mqtt://, mqtts://, tcp:// or ssl:// URL of the site broker (host and port, no path)',
    ]);
    expect(problems(site('{ external: { url: "mqtt://h:1883/x" } }'))[0]).toMatch(/^broker\.external\.url: /);
  });

  it('refuses the embedded listener fields beside it, each by name, instead of ignoring them', () => {
    const p = problems(site('{ port: 1884, grants: [], anonymous: true, external: { url: "mqtt://h:1883" } }'));
    expect(p).toHaveLength(3);
    for (const field of ['port', 'grants', 'anonymous']) expect(p).toContain(`broker.${field}: ${field} configures the embedded broker, which does not run with broker.external: the site broker's own listener, ACLs and limits apply (remove ${field})`);
  });

  it('refuses identities beside it: children authenticate at the site broker', () => {
    const p = problems(site('{ external: { url: "mqtt://h:1883" } }', 'identities: { groups: [{ name: g, devices: "*", secret: "0123456789abcdef0123" }] }'));
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(/^identities: identities authenticate children on the embedded broker, which does not run with broker\.external/);
  });

  it('refuses a rule output on a topic the gateway takes from the site broker (it would come back as a child message)', () => {
    const rules = (topic: string): string => `rules: [{ id: r, type: filter, match: { device: "*", point: "*" }, route: mqtt, mqtt: { topic: "${topic}" } }]`;
    const p = problems(site('{ external: { url: "mqtt://h:1883" } }', rules('outpost/v1/dev/{device}/telemetry')));
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(/^rules\[0\]\.mqtt\.topic: with broker\.external the gateway subscribes to outpost\/v1\/dev\/\+\/telemetry, /);
    expect(problems(site('{ external: { url: "mqtt://h:1883" } }', rules('outpost/v1/dev/{device}/cmd/set')))).toEqual([]);
    expect(problems(site('{ port: 0 }', rules('outpost/v1/dev/{device}/telemetry')))).toEqual([]);
  });

  it('refuses a backoff whose start exceeds its cap, and a cert without a key', () => {
    expect(problems(site('{ external: { url: "mqtts://h:8883", backoff: { initialMs: 5000, maxMs: 1000 }, tls: { cert: /c.pem } } }'))).toEqual([
      'broker.external.tls.cert: cert and key go together',
      'broker.external.backoff.initialMs: initialMs must not exceed maxMs',
    ]);
  });

  it('counts its password and a URL with user info as secrets, its PEM file paths not', () => {
    expect(secretFields({ broker: { external: { url: 'mqtt://u:p@h:1883', password: 'x', tls: { ca: '/ca.pem', cert: '/c.pem', key: '/k.pem' } } } })).toEqual(['broker.external.url', 'broker.external.password']);
  });

  it('leaves the embedded broker as it was without it', () => {
    const cfg = parseConfigText(site('{ port: 0, anonymous: true }'));
    expect(cfg.broker.external).toBeUndefined();
    expect(cfg.broker.port).toBe(0);
  });
});
