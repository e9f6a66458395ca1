/**
 * Metrics seen by components. The runtime keeps them in its registry (runtime/metrics.ts) and exposes them to Prometheus; every drop,
 * rejection and delivery is a counter here so that `produced = delivered + dropped + queued` can
 * be checked from outside.
 */
export type Labels = Record<string, string>;

export interface Counter {
  inc(labels?: Labels, by?: number): void;
  /** The counter for one fixed label set, looked up once: for hot paths. */
  bind(labels: Labels): { inc(by?: number): void };
}

export interface Gauge {
  set(value: number, labels?: Labels): void;
}

export interface Metrics {
  counter(name: string, help: string, labelNames?: readonly string[]): Counter;
  gauge(name: string, help: string, labelNames?: readonly string[]): Gauge;
}
