import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LinkProxy } from '../../sim/link-proxy.js';

let echo: Server;
let proxy: LinkProxy;
const clients: Socket[] = [];
const upstreams = new Set<Socket>();

beforeEach(async () => {
  echo = createServer((s) => {
    upstreams.add(s);
    s.on('close', () => upstreams.delete(s));
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
  proxy = await LinkProxy.start({ port: (echo.address() as AddressInfo).port });
});
afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  await proxy.close();
  for (const s of upstreams) s.destroy();
  await new Promise<void>((resolve) => echo.close(() => resolve()));
});

function open(): Socket {
  const s = connect(proxy.port, '127.0.0.1');
  s.on('error', () => undefined);
  clients.push(s);
  return s;
}

/** Resolves with what comes back for `text`, or rejects if the socket closes first or 2 s pass. */
function roundTrip(s: Socket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const timer = setTimeout(() => reject(new Error(`no echo of "${text}" within 2 s`)), 2000);
    const onData = (d: Buffer): void => {
      got += d.toString();
      if (got.length >= text.length) {
        clearTimeout(timer);
        s.off('close', onClose);
        s.off('data', onData);
        resolve(got);
      }
    };
    const onClose = (): void => {
      clearTimeout(timer);
      reject(new Error('connection closed'));
    };
    s.on('data', onData);
    s.once('close', onClose);
    s.write(text);
  });
}

/** Resolves when the socket is closed by the other end; rejects after 2 s. */
function closed(s: Socket): Promise<void> {
  if (s.destroyed) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('connection still open after 2 s')), 2000);
    s.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

describe('LinkProxy', { timeout: 10_000 }, () => {
  it('listens on a free loopback port and relays both ways while up', async () => {
    expect(proxy.port).toBeGreaterThan(0);
    expect(proxy.url).toBe(`mqtt://127.0.0.1:${proxy.port}`);
    expect(proxy.up).toBe(true);
    expect(await roundTrip(open(), 'hello')).toBe('hello');
    expect(proxy.connections).toBe(1);
  });

  it('down() drops live connections', async () => {
    const a = open();
    const b = open();
    expect(await roundTrip(a, 'a')).toBe('a');
    expect(await roundTrip(b, 'b')).toBe('b');
    proxy.down();
    await closed(a);
    await closed(b);
    // The proxy's own connections to the target are gone too.
    for (let i = 0; i < 100 && upstreams.size > 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(upstreams.size).toBe(0);
    expect(proxy.up).toBe(false);
    expect(proxy.outages).toBe(1);
  });

  it('refuses new connections while down, and counts them', async () => {
    proxy.down();
    const s = open();
    await expect(roundTrip(s, 'anyone?')).rejects.toThrow('connection closed');
    expect(proxy.refused).toBe(1);
    expect(proxy.connections).toBe(0);
  });

  it('restore() accepts and relays again', async () => {
    proxy.down();
    await expect(roundTrip(open(), 'x')).rejects.toThrow('connection closed');
    proxy.restore();
    expect(proxy.up).toBe(true);
    expect(await roundTrip(open(), 'back')).toBe('back');
    expect(proxy.connections).toBe(1);
  });

  it('close() drops live connections without counting an outage', async () => {
    const s = open();
    expect(await roundTrip(s, 'bye')).toBe('bye');
    await proxy.close();
    await closed(s);
    expect(proxy.outages).toBe(0);
  });

  it('counts one outage per down period, not per call', () => {
    proxy.down();
    proxy.down();
    proxy.restore();
    proxy.down();
    expect(proxy.outages).toBe(2);
  });

  it('reset() drops live connections but keeps the link up', async () => {
    const a = open();
    expect(await roundTrip(a, 'a')).toBe('a');
    proxy.reset();
    await closed(a);
    expect(proxy.up).toBe(true);
    expect(await roundTrip(open(), 'again')).toBe('again');
    expect(proxy.faults).toBe(1);
  });

  it('stall() holds traffic in both directions for a while, then delivers it in order', async () => {
    const s = open();
    expect(await roundTrip(s, 'x')).toBe('x');
    proxy.stall(300);
    const t0 = Date.now();
    expect(await roundTrip(s, 'held-then-sent')).toBe('held-then-sent');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
  });

  it('latency and a throughput cap slow the link down', async () => {
    proxy.setConditions({ latencyMs: 100 });
    const s = open();
    let t0 = Date.now();
    await roundTrip(s, 'slow');
    // Once each way.
    expect(Date.now() - t0).toBeGreaterThanOrEqual(180);
    proxy.setConditions({ bytesPerS: 10_000 });
    t0 = Date.now();
    expect(await roundTrip(s, 'y'.repeat(2000))).toBe('y'.repeat(2000));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    proxy.clear();
    t0 = Date.now();
    await roundTrip(s, 'fast');
    expect(Date.now() - t0).toBeLessThan(150);
  });

  it('dropAfterBytes resets each connection after that many bytes toward the target', async () => {
    proxy.setConditions({ dropAfterBytes: 10 });
    const s = open();
    const got: string[] = [];
    s.on('data', (d: Buffer) => got.push(d.toString()));
    s.write('0123456789abcdef');
    await closed(s);
    // Reset mid-stream: nothing past the 10th byte ever reached the target.
    expect('0123456789'.startsWith(got.join(''))).toBe(true);
    expect(proxy.faults).toBe(2);
    const t = open();
    expect(await roundTrip(t, 'short')).toBe('short');
  });
});
