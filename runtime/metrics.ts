import { Counter as PromCounter, Gauge as PromGauge, Registry } from 'prom-client';
import type { Counter, Gauge, Labels, Metrics } from './contracts/index.js';

/** Metrics backed by a private prom-client registry (one per gateway, so tests can run several). */
export class PromMetrics implements Metrics {
  readonly registry = new Registry();
  private readonly counters = new Map<string, PromCounter>();
  private readonly gauges = new Map<string, PromGauge>();

  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    let c = this.counters.get(name);
    if (!c) {
      c = new PromCounter({ name, help, labelNames: [...labelNames], registers: [this.registry] });
      this.counters.set(name, c);
    }
    const counter = c;
    return {
      inc: (labels?: Labels, by = 1) => {
        if (labels) counter.inc(labels, by);
        else counter.inc(by);
      },
      bind: (labels: Labels) => {
        const child = counter.labels(labels);
        return { inc: (by = 1) => child.inc(by) };
      },
    };
  }

  gauge(name: string, help: string, labelNames: readonly string[] = []): Gauge {
    let g = this.gauges.get(name);
    if (!g) {
      g = new PromGauge({ name, help, labelNames: [...labelNames], registers: [this.registry] });
      this.gauges.set(name, g);
    }
    const gauge = g;
    return {
      set: (value: number, labels?: Labels) => {
        if (labels) gauge.set(labels, value);
        else gauge.set(value);
      },
    };
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }

  /** Sum of a counter over all label sets (for status output). */
  async total(name: string): Promise<number> {
    const m = this.registry.getSingleMetric(name);
    if (!m) return 0;
    const data = await m.get();
    return data.values.reduce((sum, v) => sum + v.value, 0);
  }
}
