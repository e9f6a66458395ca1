import { createRequire } from 'node:module';
import { createConnection, isIP, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import type { IClientOptions, MqttClient } from 'mqtt';

const require = createRequire(import.meta.url);

type ClientClass = new (streamBuilder: (client: MqttClient) => Socket | TLSSocket, options: IClientOptions) => MqttClient;
let clientClass: ClientClass | undefined;

/**
 * An mqtt.js client for an `mqtt://`, `tcp://`, `mqtts://` or `ssl://` URL, as `mqtt.connect` makes
 * it, without loading mqtt.js' connection table: `mqtt.connect` loads its WebSocket and SOCKS
 * transports (the `ws`, `socks` and `ip-address` packages) on its first connection although the
 * gateway never uses them, about 5 MiB of resident memory (docs/benchmarks.md, footprint). The
 * client is mqtt.js' own; this builds its TCP or TLS stream the way mqtt.js does: port 1883 or
 * 8883 by default, the host name as TLS server name (SNI) unless it is an address, certificates
 * verified unless `rejectUnauthorized: false`, credentials in the URL taking precedence, and TLS
 * when a client certificate and key are given.
 */
export function connectMqtt(url: string, options: IClientOptions): MqttClient {
  const u = new URL(url);
  const scheme = u.protocol.replace(/:$/, '');
  if (!['mqtt', 'tcp', 'mqtts', 'ssl'].includes(scheme)) throw new Error(`unsupported MQTT URL scheme "${scheme}:" (expected mqtt, mqtts, tcp or ssl)`);
  const secure = scheme === 'mqtts' || scheme === 'ssl' || (options.cert !== undefined && options.key !== undefined);
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1') || 'localhost';
  const opts: IClientOptions = { ...options, protocol: secure ? 'mqtts' : 'mqtt', host, hostname: host };
  if (u.port !== '') opts.port = Number(u.port);
  if (u.username !== '') {
    opts.username = decodeURIComponent(u.username);
    if (u.password !== '') opts.password = decodeURIComponent(u.password);
  }
  clientClass ??= (require('mqtt/lib/client') as { default: ClientClass }).default;
  // The stream is built from the client's options on every (re)connect, as mqtt.js does: whoever
  // holds the client may point it elsewhere (the uplink's failover between cluster nodes).
  const client = new clientClass((c) => stream(c), opts);
  // As mqtt.connect: an error with nobody listening yet does not end the process.
  client.on('error', () => undefined);
  return client;
}

function stream(client: MqttClient): Socket | TLSSocket {
  const o = client.options;
  const host = o.hostname ?? o.host ?? 'localhost';
  const secure = o.protocol === 'mqtts' || o.protocol === 'ssl';
  const port = o.port !== undefined && o.port !== 0 ? o.port : secure ? 8883 : 1883;
  if (!secure) return createConnection({ host, port });
  const rejectUnauthorized = o.rejectUnauthorized !== false;
  if (isIP(host) === 0 && o.servername === undefined) o.servername = host;
  // Like mqtt.js, every option goes to tls.connect (ca, cert, key, ciphers, checkServerIdentity…).
  const socket = tlsConnect({ ...(o as ConnectionOptions), host, port, rejectUnauthorized });
  // As mqtt.js: a TLS failure before the handshake completes is the client's error, and the
  // socket is ended; once the handshake is done the client's own stream handling takes over.
  const early = (err: Error): void => {
    if (rejectUnauthorized) client.emit('error', err);
    socket.end();
  };
  socket.on('error', early);
  socket.on('secureConnect', () => {
    if (rejectUnauthorized && !socket.authorized) socket.emit('error', new Error('TLS not authorized'));
    else socket.removeListener('error', early);
  });
  return socket;
}
