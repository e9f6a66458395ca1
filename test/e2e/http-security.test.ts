import { execFile } from 'node:child_process';
import { createDecipheriv, createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, parseConfig } from '../../runtime/config/load.js';
import { Gateway } from '../../runtime/gateway.js';
import { gatewayFetch } from '../../runtime/http/client.js';
import { createLogger } from '../../runtime/logger.js';
import { nodeRedCredentialSecret } from '../../runtime/parts/node-red.js';
import { fingerprint } from '../../runtime/security/certificates.js';
import { profiles, SimModbusSlave } from '../../sim/modbus-slave.js';
import { pointEntries } from '../../sim/site.js';
import { gatewayApi, json, TEST_API_TOKENS, TEST_TOKENS, type GatewayApi } from '../helpers/api.js';
import { CLI, GatewayProcess } from '../helpers/gateway-process.js';

const require = createRequire(import.meta.url);
const bcrypt = require('bcryptjs') as { hashSync(p: string, rounds: number): string };
const exec = promisify(execFile);

/** `outpost ARGS` as an operator runs it; resolves with the exit code and output. */
async function outpost(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [CLI, ...args], { timeout: 20_000, env: { ...process.env, ...env } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

const dir = mkdtempSync(join(tmpdir(), 'outpost-http-sec-'));
const configFile = join(dir, 'site.json');
let plc: SimModbusSlave;
let gateway: Gateway;
let api: GatewayApi;
const write = (value: unknown): RequestInit => json({ value });
const WRITE = '/api/v1/devices/plc-1/points/speed-setpoint/write';

beforeAll(async () => {
  plc = await SimModbusSlave.start({ points: profiles.plc() });
  writeFileSync(
    configFile,
    JSON.stringify({
      gateway: { id: 'sec-gw' },
      broker: { host: '127.0.0.1', port: 0 },
      http: {
        host: '127.0.0.1',
        port: 0,
        tokens: TEST_API_TOKENS,
        allowedHosts: ['gateway.plant-a.example'],
        admin: { username: 'admin', passwordHash: bcrypt.hashSync('s3cret', 8) },
      },
      nodeRed: { enabled: true },
      devices: [{ id: 'plc-1', protocol: 'modbus-tcp', host: plc.host, port: plc.port, timeoutMs: 300, points: pointEntries(plc.points) }],
      cloud: { url: 'mqtt://127.0.0.1:9' },
      storage: { path: join(dir, 'state', 'o.db') },
    }),
    // It holds the editor's password hash: owner-only, as the gateway asks of such a file.
    { mode: 0o600 },
  );
  gateway = await Gateway.start(await loadConfig(configFile), { log: createLogger({ level: 'silent' }), configFile });
  api = gatewayApi(gateway.ports.http, join(dir, 'state'));
}, 30_000);

afterAll(async () => {
  await gateway.stop();
  await plc.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function refusedTotal(reason: string): Promise<number> {
  const text = await (await api.fetch(`${api.base}/metrics`)).text();
  const m = new RegExp(`^outpost_http_refused_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/** A raw request with exactly the headers given (no token added), for Host and preflight tests. */
function raw(path: string, opts: { method?: string; headers?: Record<string, string>; body?: string }): Promise<{ status: number; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = (require('node:https') as typeof import('node:https')).request(
      { host: '127.0.0.1', port: gateway.ports.http, path, method: opts.method ?? 'GET', headers: opts.headers ?? {}, ca: api.cert, servername: 'localhost' },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

describe('the local HTTP API needs credentials', { timeout: 30_000 }, () => {
  it('refuses a request without a token, or with an unknown one, 401 with WWW-Authenticate: Bearer; /healthz stays open', async () => {
    const before = await refusedTotal('no-token');
    const none = await api.as(undefined)(`${api.base}/api/v1/status`);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer /);
    expect(await refusedTotal('no-token')).toBe(before + 1);
    const unknown = await api.as('opt_not-a-token')(`${api.base}/metrics`);
    expect(unknown.status).toBe(401);
    expect(unknown.headers.get('www-authenticate')).toContain('error="invalid_token"');
    expect((await api.as(undefined)(`${api.base}/healthz`)).status).toBe(200);
  });

  it('a read token reads but cannot change anything: 403 naming the scope needed, counted', async () => {
    const read = api.as(TEST_TOKENS.read);
    expect((await read(`${api.base}/api/v1/status`)).status).toBe(200);
    expect((await read(`${api.base}/api/v1/dead-letters`)).status).toBe(200);
    const before = await refusedTotal('scope');
    for (const [path, body] of [
      [WRITE, { value: 12 }],
      ['/api/v1/rules/reload', {}],
      ['/api/v1/dead-letters/replay', {}],
      ['/api/v1/ota/rollouts/x/pause', {}],
      ['/api/v1/ota/releases', {}],
    ] as const) {
      const res = await read(`${api.base}${path}`, json(body));
      expect(res.status, path).toBe(403);
      expect(((await res.json()) as { error: string; scope: string }).scope).toBe('operate');
    }
    expect(await refusedTotal('scope')).toBe(before + 5);
    expect(plc.valueOf('speed-setpoint')).not.toBe(12);
  });

  it('an operate token writes a point; tokens need admin, whatever the method', async () => {
    const operate = api.as(TEST_TOKENS.operate);
    const res = await operate(`${api.base}${WRITE}`, write(42.5));
    expect(res.status).toBe(200);
    expect(plc.valueOf('speed-setpoint')).toBeCloseTo(42.5, 6);
    const list = await operate(`${api.base}/api/v1/tokens`);
    expect(list.status).toBe(403);
    expect(await list.json()).toMatchObject({ scope: 'admin' });
    // express matches paths without regard to case: so does the guard.
    expect((await operate(`${api.base}/API/V1/TOKENS`)).status).toBe(403);
  });

  it('an admin token makes and revokes tokens over the API; the new token is shown once and works at once', async () => {
    const made = await api.fetch(`${api.base}/api/v1/tokens`, json({ name: 'scada', scopes: ['operate'] }));
    expect(made.status).toBe(201);
    const { token } = (await made.json()) as { token: string };
    expect(token).toMatch(/^opt_[A-Za-z0-9_-]{43}$/);
    expect((await api.as(token)(`${api.base}${WRITE}`, write(11))).status).toBe(200);
    const listed = (await (await api.fetch(`${api.base}/api/v1/tokens`)).json()) as { tokens: Array<Record<string, unknown>> };
    expect(listed.tokens.find((t) => t.name === 'scada')).toMatchObject({ scopes: ['operate'], source: 'store' });
    expect(JSON.stringify(listed)).not.toContain(token);
    expect((await api.fetch(`${api.base}/api/v1/tokens/scada`, { method: 'DELETE', headers: { 'content-type': 'application/json' } })).status).toBe(200);
    expect((await api.as(token)(`${api.base}/api/v1/status`)).status).toBe(401);
  });

  it('a token made and revoked with the CLI, while the gateway runs, works and is then refused from the next request', async () => {
    const made = await outpost(['tokens', 'create', '--config', configFile, '--name', 'ops-laptop', '--scope', 'read']);
    expect(made.code).toBe(0);
    const token = made.stdout.trim();
    expect(token).toMatch(/^opt_/);
    // Stored as its hash only.
    expect(readFileSync(join(dir, 'state', 'o.db')).includes(Buffer.from(token))).toBe(false);
    // The config says port 0: the URL names the port the gateway was given.
    const url = ['--url', api.base];
    const status = await outpost(['status', '--json', '--config', configFile, ...url], { OUTPOST_TOKEN: token });
    expect(status.stderr).toBe('');
    expect(JSON.parse(status.stdout)).toMatchObject({ gateway: 'sec-gw' });
    const listed = await outpost(['tokens', 'list', '--config', configFile]);
    expect(listed.stdout).toMatch(/^ops-laptop\tread\tstore\tlive/m);
    expect(listed.stdout).toMatch(/^test-admin\tadmin\tconfig/m);
    expect((await outpost(['tokens', 'revoke', 'ops-laptop', '--config', configFile])).code).toBe(0);
    const refused = await api.as(token)(`${api.base}/api/v1/status`);
    expect(refused.status).toBe(401);
    expect(await refused.json()).toEqual({ error: 'the token was revoked' });
    expect((await outpost(['status', '--config', configFile, ...url], { OUTPOST_TOKEN: token })).code).toBe(1);
  });
});

describe('the local HTTP API is safe from browsers', { timeout: 30_000 }, () => {
  it('refuses the no-cors text/plain POST that wrote a setpoint (the issue\'s attack), and text/plain even with a token', async () => {
    const before = plc.valueOf('speed-setpoint');
    // What a page on any site can make a browser send without a preflight: no Authorization
    // header, a "simple" content type, its own Origin.
    const attack = await raw(WRITE, { method: 'POST', headers: { 'content-type': 'text/plain', origin: 'https://evil.example' }, body: '{"value": 99}' });
    expect(attack.status).toBe(403);
    const noOrigin = await raw(WRITE, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{"value": 99}' });
    expect(noOrigin.status).toBe(401);
    const form = await api.as(TEST_TOKENS.operate)(`${api.base}${WRITE}`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{"value": 99}' });
    expect(form.status).toBe(415);
    expect(plc.valueOf('speed-setpoint')).toBe(before);
  });

  it('refuses a foreign Origin even with a valid token, and accepts the request\'s own origin', async () => {
    const foreign = await api.fetch(`${api.base}/api/v1/status`, { headers: { origin: 'https://evil.example' } });
    expect(foreign.status).toBe(403);
    const nullOrigin = await api.fetch(`${api.base}/api/v1/status`, { headers: { origin: 'null' } });
    expect(nullOrigin.status).toBe(403);
    const plain = await api.fetch(`${api.base}/api/v1/status`, { headers: { origin: api.base.replace('https', 'http') } });
    expect(plain.status).toBe(403);
    expect((await api.fetch(`${api.base}/api/v1/status`, { headers: { origin: api.base } })).status).toBe(200);
  });

  it('refuses a Host it does not answer to (DNS rebinding), takes loopback names and http.allowedHosts', async () => {
    const auth = { authorization: `Bearer ${TEST_TOKENS.admin}` };
    expect((await raw('/api/v1/status', { headers: { ...auth, host: 'rebind.evil.example' } })).status).toBe(403);
    expect((await raw('/red/', { headers: { host: 'rebind.evil.example' } })).status).toBe(403);
    expect((await raw('/api/v1/status', { headers: { ...auth, host: `localhost:${gateway.ports.http}` } })).status).toBe(200);
    expect((await raw('/api/v1/status', { headers: { ...auth, host: `[::1]:${gateway.ports.http}` } })).status).toBe(200);
    expect((await raw('/api/v1/status', { headers: { ...auth, host: 'gateway.plant-a.example' } })).status).toBe(200);
    expect(await refusedTotal('host')).toBeGreaterThanOrEqual(2);
  });

  it('sends no CORS header anywhere: preflights, answers, errors, the editor', async () => {
    const answers = [
      await raw('/api/v1/status', { method: 'OPTIONS', headers: { origin: api.base, 'access-control-request-method': 'POST', authorization: `Bearer ${TEST_TOKENS.admin}` } }),
      await raw(WRITE, { method: 'OPTIONS', headers: { 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' } }),
      await raw('/api/v1/status', { headers: { authorization: `Bearer ${TEST_TOKENS.admin}`, origin: api.base } }),
      await raw('/api/v1/status', { headers: { origin: 'https://evil.example' } }),
      await raw('/healthz', { headers: { origin: 'https://evil.example' } }),
      await raw('/red/', {}),
      await raw('/red/settings', { headers: { origin: api.base } }),
      await raw('/red/auth/token', { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } }),
    ];
    for (const a of answers) expect(Object.keys(a.headers).filter((h) => h.startsWith('access-control-'))).toEqual([]);
  });
});

describe('TLS', { timeout: 60_000 }, () => {
  it('is on by default: a self-signed certificate in the state directory, key 0600, fingerprint in status', async () => {
    const cert = readFileSync(join(dir, 'state', 'http.crt'), 'utf8');
    expect(gateway.status().api).toEqual({ scheme: 'https', certificateSha256: fingerprint(cert) });
    expect(statSync(join(dir, 'state', 'http.key')).mode & 0o777).toBe(0o600);
    // Plain HTTP to the API port gets no answer from the API.
    const plain = await new Promise<string>((resolve) => {
      const req = httpRequest({ host: '127.0.0.1', port: gateway.ports.http, path: '/healthz' }, (res) => resolve(`status ${res.statusCode}`));
      req.on('error', (err) => resolve(err.message));
      req.end();
    });
    expect(plain).not.toBe('status 200');
    // A client that trusts only the system's CAs refuses the self-signed certificate: nothing is turned off silently.
    await expect(gatewayFetch({ token: TEST_TOKENS.read })(`${api.base}/healthz`)).rejects.toThrow(/self-signed|certificate/);
  });

  it('prints the fingerprint in the start line and keeps the certificate across restarts; `outpost status --config` pins it', async () => {
    const d = mkdtempSync(join(tmpdir(), 'outpost-http-tls-'));
    const running: GatewayProcess[] = [];
    try {
      const file = join(d, 'site.json');
      writeFileSync(
        file,
        JSON.stringify({
          gateway: { id: 'tls-gw' },
          broker: { host: '127.0.0.1', port: 0 },
          http: { host: '127.0.0.1', port: 0, tokens: TEST_API_TOKENS },
          cloud: { url: 'mqtt://127.0.0.1:9' },
          storage: { path: join(d, 'o.db') },
        }),
      );
      const first = await GatewayProcess.start(file);
      // A failed assertion must not leave the gateway process running.
      running.push(first);
      const printed = first.fingerprint;
      expect(printed).toBe(fingerprint(readFileSync(join(d, 'http.crt'), 'utf8')));
      writeFileSync(join(d, 'token'), `${TEST_TOKENS.read}\n`);
      const status = await outpost(['status', '--json', '--config', file, '--url', `https://127.0.0.1:${first.httpPort}`, '--token-file', join(d, 'token')]);
      expect(status.stderr).toBe('');
      expect(JSON.parse(status.stdout)).toMatchObject({ gateway: 'tls-gw', api: { certificateSha256: printed } });
      expect(await first.terminate()).toBe(0);
      const second = await GatewayProcess.start(file);
      running.push(second);
      expect(second.fingerprint).toBe(printed);
      expect(await second.terminate()).toBe(0);
    } finally {
      for (const g of running.splice(0)) await g.kill9();
      rmSync(d, { recursive: true, force: true });
    }
  });

  it('tls: false is refused unless the API listens on loopback, naming the field', () => {
    const base = { gateway: { id: 'g' }, cloud: { url: 'mqtt://127.0.0.1:9' }, storage: { path: join(dir, 'x.db') } };
    expect(() => parseConfig({ ...base, http: { host: '0.0.0.0', tls: false } })).toThrow(/http\.tls: tls: false is allowed only on a loopback address/);
    expect(parseConfig({ ...base, http: { host: '127.0.0.1', tls: false } }).http.tls).toBe(false);
  });
});

describe('the Node-RED editor', { timeout: 30_000 }, () => {
  const userDir = join(dir, 'state', 'node-red');
  const login = (password: string, localAddress?: string): Promise<Response> =>
    gatewayFetch({ ca: api.cert }, localAddress ? { localAddress } : {})(
      `${api.base}/red/auth/token`,
      json({ client_id: 'node-red-admin', grant_type: 'password', scope: '*', username: 'admin', password }),
    );

  it('encrypts flow credentials with a key derived from the gateway secret, and keeps its files from other users', async () => {
    const res = await login('s3cret');
    expect(res.status).toBe(200);
    const { access_token: token } = (await res.json()) as { access_token: string };
    const flows = [{ id: 'b1', type: 'mqtt-broker', name: 'site broker', broker: '127.0.0.1', port: '1883', credentials: { user: 'u1', password: 'pw-do-not-leak' } }];
    const deploy = await gatewayFetch({ ca: api.cert, token })(`${api.base}/red/flows`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'Node-RED-API-Version': 'v2', 'Node-RED-Deployment-Type': 'full' },
      body: JSON.stringify({ flows }),
    });
    expect(deploy.status).toBe(200);
    const stored = readFileSync(join(userDir, 'flows_cred.json'), 'utf8');
    expect(stored).not.toContain('pw-do-not-leak');
    // Node-RED's format: {"$": iv (32 hex) + base64(aes-256-ctr)}, keyed by SHA-256 of credentialSecret.
    const enc = (JSON.parse(stored) as { $: string }).$;
    const key = createHash('sha256').update(nodeRedCredentialSecret(join(dir, 'state'))).digest();
    const decipher = createDecipheriv('aes-256-ctr', key, Buffer.from(enc.slice(0, 32), 'hex'));
    const plain = decipher.update(enc.slice(32), 'base64', 'utf8') + decipher.final('utf8');
    expect(JSON.parse(plain)).toEqual({ b1: { user: 'u1', password: 'pw-do-not-leak' } });
    // The key is not the raw gateway secret.
    expect(nodeRedCredentialSecret(join(dir, 'state'))).not.toContain(readFileSync(join(dir, 'state', 'gateway.secret'), 'utf8').trim());
    expect(statSync(userDir).mode & 0o777).toBe(0o700);
    const exposed = readdirSync(userDir, { recursive: true, encoding: 'utf8' })
      .filter((f) => !f.startsWith('node_modules'))
      .filter((f) => (statSync(join(userDir, f)).mode & 0o077) !== 0);
    expect(exposed).toEqual([]);
  });

  it('slows failed logins per address: after 5 failures an address waits (429, Retry-After), another address still logs in', async () => {
    // 127.0.0.2 is loopback too (Linux answers for all of 127/8): a second source address.
    for (let i = 0; i < 5; i++) expect((await login('wrong', '127.0.0.2')).status).toBe(403);
    const limited = await login('s3cret', '127.0.0.2');
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(Number(limited.headers.get('retry-after'))).toBeLessThanOrEqual(60);
    const other = await login('s3cret', '127.0.0.1');
    expect(other.status, await other.clone().text()).toBe(200);
    expect(await refusedTotal('login-limited')).toBe(1);
  });
});
