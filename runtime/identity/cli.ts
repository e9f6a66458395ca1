import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.js';
import { errorMessage } from '../contracts/index.js';
import { openDatabase, storeOf } from '../store/database.js';
import { createCa, fingerprint, issue } from '../security/certificates.js';
import { writeOwnerOnly } from '../security/secret-files.js';
import { deriveDeviceKey, hashPassword } from './passwords.js';
import { IdentityStore } from './store.js';

const USAGE = `usage: outpost identity VERB
  hash-password                       read a password on stdin, print its scrypt hash (identities.*.passwordHash)
  key --config FILE --group NAME ID   print device ID's key derived from enrollment group NAME's secret
  revoke ID --config FILE [--reason TEXT]   refuse ID from now on (a running gateway cuts its connection within a second)
  restore ID --config FILE            lift a revocation made with revoke, the API or the cloud
  list --config FILE                  enrolled devices and revocations in the store
  ca --out DIR                        create a site CA (DIR/ca.crt, DIR/ca.key owner-only) for groups with caFile
  cert ID --ca DIR --out DIR          issue device ID a client certificate (CN=ID) signed by the site CA
`;

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? '';
}

async function withStore<T>(configFile: string | undefined, fn: (store: IdentityStore) => T): Promise<T> {
  if (!configFile) throw new Error('--config FILE is required (the store is at its storage.path)');
  const cfg = await loadConfig(configFile);
  const db = openDatabase({ path: cfg.storage.path, synchronous: cfg.storage.synchronous });
  try {
    return fn(new IdentityStore(storeOf(db)));
  } finally {
    db.close();
  }
}

/** `outpost identity …`: credentials, enrollment keys, certificates and revocations of child devices. */
export async function identityCommand(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args, allowPositionals: true, options: { config: { type: 'string' }, group: { type: 'string' }, reason: { type: 'string' }, out: { type: 'string' }, ca: { type: 'string' }, days: { type: 'string' } } });
  } catch (err) {
    process.stderr.write(`${errorMessage(err)}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const [verb, id] = positionals;
  try {
    switch (verb) {
      case 'hash-password': {
        const password = await readStdin();
        if (password.length < 8) throw new Error('a password of at least 8 characters is needed on stdin');
        process.stdout.write(`${await hashPassword(password)}\n`);
        return 0;
      }
      case 'key': {
        if (!id || !values.group || !values.config) break;
        const cfg = await loadConfig(values.config);
        const group = cfg.identities.groups.find((g) => g.name === values.group);
        if (!group) throw new Error(`no enrollment group "${values.group}" under identities.groups`);
        const secret = group.secret ?? (group.secretFile ? readFileSync(group.secretFile, 'utf8').trim() : undefined);
        if (secret === undefined) throw new Error(`group "${group.name}" enrolls by certificate (caFile): issue one with \`outpost identity cert\``);
        process.stdout.write(`${deriveDeviceKey(secret, id)}\n`);
        return 0;
      }
      case 'revoke':
        if (!id) break;
        await withStore(values.config, (s) => s.revoke(id, Date.now(), 'cli', values.reason));
        process.stdout.write(`${id}: revoked\n`);
        return 0;
      case 'restore': {
        if (!id) break;
        const had = await withStore(values.config, (s) => s.restore(id));
        process.stdout.write(had ? `${id}: restored\n` : `${id}: was not revoked in the store (a revocation in the config stays until removed there)\n`);
        return 0;
      }
      case 'list': {
        const out = await withStore(values.config, (s) => ({ enrolled: s.enrolled(), revoked: s.revocations() }));
        process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
        return 0;
      }
      case 'ca': {
        if (!values.out) break;
        const ca = await createCa('outpost-site-ca');
        mkdirSync(values.out, { recursive: true, mode: 0o700 });
        writeOwnerOnly(join(values.out, 'ca.key'), ca.key);
        writeOwnerOnly(join(values.out, 'ca.crt'), ca.cert);
        process.stdout.write(`site CA in ${values.out}/ca.crt (sha256 ${fingerprint(ca.cert)}); keep ca.key off the gateway when you can\n`);
        return 0;
      }
      case 'cert': {
        if (!id || !values.ca || !values.out) break;
        const ca = { cert: readFileSync(join(values.ca, 'ca.crt'), 'utf8'), key: readFileSync(join(values.ca, 'ca.key'), 'utf8') };
        const pair = await issue(ca, id, { days: values.days ? Number(values.days) : 825 });
        writeOwnerOnly(join(values.out, `${id}.key`), pair.key);
        writeOwnerOnly(join(values.out, `${id}.crt`), pair.cert);
        process.stdout.write(`${values.out}/${id}.crt (sha256 ${fingerprint(pair.cert)})\n`);
        return 0;
      }
      default:
        break;
    }
  } catch (err) {
    process.stderr.write(`outpost identity ${verb ?? ''}: ${errorMessage(err)}\n`);
    return 1;
  }
  process.stderr.write(USAGE);
  return 2;
}
