import type { UplinkOptions } from '../../cloud-bridge/uplink.js';

/** Uplink options for the tests: small batches, no linger, jitter at half its ceiling. `url`: one broker, or a list in order of preference. */
export function uplinkOptions(url: string | readonly string[], over: Partial<UplinkOptions> = {}): UplinkOptions {
  return {
    gatewayId: 'gw-test',
    urls: typeof url === 'string' ? [url] : url,
    clientId: 'gw-test',
    topicPrefix: 'outpost',
    batchSize: 10,
    maxInFlight: 4,
    keepaliveS: 30,
    backoff: { initialMs: 1000, maxMs: 8000 },
    // The jitter at half its ceiling: the delays are 500, 1000, 2000 ms...
    random: () => 0.5,
    encoding: 'columnar',
    compression: 'none',
    qos: 1,
    protocolVersion: 4,
    maxAttempts: 3,
    ackTimeoutMs: 20_000,
    liveShare: 0,
    lingerMs: 0,
    ...over,
  };
}
