import type { Component, HttpListener } from '../contracts/index.js';
import { coreRoutes } from '../http/api.js';
import { HttpLayer } from '../http/http-layer.js';
import type { Part } from './site.js';

/** The local HTTP API listener, and the HTTP layer every other part registers its routes with. */
class HttpComponent implements Component {
  readonly name = 'http';
  private listener: HttpListener | undefined;
  private port = 0;

  constructor(
    readonly layer: HttpLayer,
    private readonly opts: { host: string; port: number; status: () => Record<string, unknown>; metrics: () => Promise<string> },
  ) {}

  async start(): Promise<void> {
    this.listener = await this.layer.listenApi(this.opts.host, this.opts.port, coreRoutes(this.layer, this.opts));
    this.port = this.listener.port;
  }

  async stop(): Promise<void> {
    await this.layer.close();
  }

  status(): Record<string, unknown> {
    return { ports: { http: this.port } };
  }
}

export const httpPart: Part = {
  name: 'http',
  build(site) {
    const { log, metrics, status } = site.opts;
    const layer = new HttpLayer(log.child({ component: 'http' }));
    site.provide('http', layer);
    return new HttpComponent(layer, { host: site.config.http.host, port: site.config.http.port, status, metrics: () => metrics.text() });
  },
};
