import { request } from 'node:http';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger as silent } from '../helpers/fakes.js';
import { coreRoutes } from '../../runtime/http/api.js';
import { HttpLayer } from '../../runtime/http/http-layer.js';
import { PromMetrics } from '../../runtime/metrics.js';

interface Response {
  status: number;
  type: string | undefined;
  body: string;
}


let api: HttpLayer;
let port: number;
let status: Record<string, unknown>;
let metrics: () => Promise<string>;

beforeEach(async () => {
  status = { gateway: 'gw1', boot: 3, link: 'up', outbox: { depth: 2, dropped: 0 } };
  const m = new PromMetrics();
  m.counter('outpost_test_total', 'A counter for the test').inc(undefined, 5);
  metrics = () => m.text();
  api = new HttpLayer(silent);
  port = (await api.listenApi('127.0.0.1', 0, coreRoutes(api, { status: () => status, metrics: () => metrics() }))).port;
});
afterEach(async () => {
  await api.close();
});

function call(method: string, path: string): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body }));
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within 5 s`)));
    req.on('error', reject);
    req.end();
  });
}

describe('local HTTP API', { timeout: 10_000 }, () => {
  it('listens on a free loopback port when asked for port 0', () => {
    expect(port).toBeGreaterThan(0);
  });

  it('answers /healthz with {"ok":true}', async () => {
    const r = await call('GET', '/healthz');
    expect(r.status).toBe(200);
    expect(r.type).toBe('application/json');
    expect(JSON.parse(r.body)).toEqual({ ok: true });
  });

  it('serves the current status as JSON on /api/v1/status', async () => {
    const r = await call('GET', '/api/v1/status');
    expect(r.status).toBe(200);
    expect(r.type).toBe('application/json');
    expect(JSON.parse(r.body)).toEqual(status);
    status = { ...status, link: 'down' };
    expect(JSON.parse((await call('GET', '/api/v1/status')).body)).toMatchObject({ link: 'down' });
  });

  it('ignores the query string when routing', async () => {
    const r = await call('GET', '/api/v1/status?pretty=1');
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual(status);
  });

  it('serves Prometheus text on /metrics', async () => {
    const r = await call('GET', '/metrics');
    expect(r.status).toBe(200);
    expect(r.type).toBe('text/plain; version=0.0.4');
    expect(r.body).toContain('# TYPE outpost_test_total counter');
    expect(r.body).toMatch(/^outpost_test_total 5$/m);
  });

  it('answers HEAD with headers and no body', async () => {
    const r = await call('HEAD', '/healthz');
    expect(r.status).toBe(200);
    expect(r.body).toBe('');
  });

  it('answers an unknown path with 404 and a JSON error naming the path', async () => {
    const r = await call('GET', '/api/v2/nothing');
    expect(r.status).toBe(404);
    expect(r.type).toBe('application/json');
    expect(JSON.parse(r.body)).toEqual({ error: 'no resource at /api/v2/nothing' });
  });

  it('answers another method with 405 and a JSON error naming the method and the path', async () => {
    for (const method of ['POST', 'PUT', 'DELETE']) {
      const r = await call(method, '/api/v1/status');
      expect(r.status).toBe(405);
      expect(r.type).toBe('application/json');
      expect(JSON.parse(r.body)).toEqual({ error: `method ${method} not allowed on /api/v1/status` });
    }
  });

  it('answers 500 with a JSON error when a handler fails, and keeps serving', async () => {
    metrics = () => Promise.reject(new Error('registry broken'));
    const r = await call('GET', '/metrics');
    expect(r.status).toBe(500);
    expect(JSON.parse(r.body)).toEqual({ error: 'internal error' });
    expect((await call('GET', '/healthz')).status).toBe(200);
  });

  it('stops answering after close()', async () => {
    await api.close();
    await expect(call('GET', '/healthz')).rejects.toThrow(/ECONNREFUSED/);
  });
});
