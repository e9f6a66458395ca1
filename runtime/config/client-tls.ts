import { readFileSync } from 'node:fs';
import { errorMessage, type ClientTlsConfig } from '../contracts/index.js';
import { ConfigError } from './load.js';

/** TLS options of an MQTT client as mqtt.js takes them: the PEM files already read. */
export interface ClientTlsOptions {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  servername?: string;
  rejectUnauthorized: boolean;
}

/** Reads the PEM files of a client TLS section at `field` (`cloud.tls`); a missing file is a config error naming the field. */
export function readClientTls(tls: ClientTlsConfig, field: string): ClientTlsOptions {
  const read = (name: 'ca' | 'cert' | 'key'): Buffer | undefined => {
    const file = tls[name];
    if (file === undefined) return undefined;
    try {
      return readFileSync(file);
    } catch (err) {
      throw new ConfigError('config', [`${field}.${name}: cannot read ${file}: ${errorMessage(err)}`]);
    }
  };
  const [ca, cert, key] = [read('ca'), read('cert'), read('key')];
  return { rejectUnauthorized: tls.rejectUnauthorized, ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}), ...(tls.servername ? { servername: tls.servername } : {}) };
}
