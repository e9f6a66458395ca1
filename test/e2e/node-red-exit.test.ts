import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { localTopics } from '../../runtime/contracts/index.js';
import { SimCloud } from '../../sim/cloud.js';
import { GatewayProcess } from '../helpers/gateway-process.js';
import { sleep, waitFor } from '../helpers/wait.js';

const require = createRequire(import.meta.url);
const bcrypt = require('bcryptjs') as { hashSync(p: string, rounds: number): string };
const WebSocket = require('ws') as new (url: string) => { on(e: string, f: (...a: unknown[]) => void): void; send(d: string): void; close(): void };

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/**
 * Found while testing: after Node-RED flows had run, a gateway did not exit on SIGTERM (its
 * listeners and store closed, the process stayed alive). Stopping must end every timer, socket and
 * child of every part, so the process exits by itself.
 */
describe('a gateway with Node-RED', () => {
  it('exits by itself on SIGTERM after flows ran, with the editor connected', { timeout: 90_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-nr-exit-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const cloud = await SimCloud.start();
    cleanup.push(() => cloud.stop());
    const file = join(dir, 'site.json');
    writeFileSync(
      file,
      JSON.stringify({
        gateway: { id: 'nr-exit' },
        broker: { host: '127.0.0.1', port: 0 },
        http: { host: '127.0.0.1', port: 0, admin: { username: 'admin', passwordHash: bcrypt.hashSync('s3cret', 8) } },
        nodeRed: { enabled: true },
        streams: [{ name: 'telemetry' }, { name: 'flows', priority: 3 }],
        rules: [{ id: 'all', type: 'filter', match: { device: '*', point: '*' } }],
        cloud: { url: cloud.url, lingerMs: 0, backoff: { initialMs: 100, maxMs: 500 } },
        storage: { path: join(dir, 'o.db') },
      }),
    );
    const gw = await GatewayProcess.start(file);
    let exited = false;
    cleanup.push(async () => {
      if (!exited) await gw.kill9();
    });
    const base = `http://127.0.0.1:${gw.httpPort}`;
    const tokenRes = await fetch(`${base}/red/auth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_id: 'node-red-admin', grant_type: 'password', scope: '*', username: 'admin', password: 's3cret' }),
    });
    const token = ((await tokenRes.json()) as { access_token: string }).access_token;
    const auth = { authorization: `Bearer ${token}` };

    // The editor's live connection, as an operator's open browser tab holds it.
    const comms = new WebSocket(`ws://127.0.0.1:${gw.httpPort}/red/comms`);
    const opened = new Promise<void>((resolve) => comms.on('open', () => resolve()));
    comms.on('error', () => undefined);
    await opened;
    comms.send(JSON.stringify({ auth: token }));
    comms.send(JSON.stringify({ subscribe: 'status/#' }));

    // Flows with the Outpost nodes and core nodes that keep timers: an inject repeating every
    // 100 ms, a delay node, a window, a function.
    const flow = [
      { id: 't1', type: 'tab', label: 'exit' },
      { id: 'in1', z: 't1', type: 'outpost in', device: 'pump-*', point: 'flow', wires: [['fn1', 'win1']] },
      { id: 'fn1', z: 't1', type: 'function', func: 'return { topic: "pump-x/double", payload: msg.payload * 2 };', outputs: 1, wires: [['dl1']] },
      { id: 'dl1', z: 't1', type: 'delay', pauseType: 'rate', rate: '100', nbRateUnits: '1', rateUnits: 'second', drop: false, wires: [['out1']] },
      { id: 'win1', z: 't1', type: 'outpost window', kind: 'tumbling', windowMs: 500, aggregates: ['avg'], wires: [['out1']] },
      { id: 'out1', z: 't1', type: 'outpost out', stream: 'flows', wires: [[]] },
      { id: 'inj1', z: 't1', type: 'inject', repeat: '0.1', once: true, onceDelay: 0.1, payloadType: 'date', wires: [['dbg1']] },
      { id: 'dbg1', z: 't1', type: 'debug', active: true, tosidebar: true, complete: 'payload', wires: [] },
    ];
    const deploy = await fetch(`${base}/red/flows`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json', 'Node-RED-API-Version': 'v2', 'Node-RED-Deployment-Type': 'full' },
      body: JSON.stringify({ flows: flow }),
    });
    expect(deploy.status).toBe(200);

    // A child device publishes for a while: readings flow through the flows to the cloud.
    const child = await mqtt.connectAsync(gw.brokerUrl, { clientId: 'pump-1', reconnectPeriod: 0 });
    for (let i = 0; i < 40; i++) {
      await child.publishAsync(localTopics.telemetry('pump-1'), JSON.stringify({ id: i, points: { flow: i } }), { qos: 1 });
      await sleep(25);
    }
    await waitFor('flow outputs at the cloud', () => (cloud.ledger.byDevice.get('pump-x') ?? 0) > 5, 15_000);
    await child.endAsync();

    const t0 = Date.now();
    const code = await Promise.race([gw.terminate(), sleep(20_000).then(() => 'still running' as const)]);
    exited = code !== 'still running';
    comms.close();
    expect(code).toBe(0);
    expect(Date.now() - t0).toBeLessThan(20_000);
  });
});
