import type { Counter, Gauge, Labels, Metrics } from './contracts/index.js';

/** One time series: its label set (in the order first given) and its value. */
interface Series {
  readonly labels: string;
  value: number;
}

/** A counter or gauge with its series, keyed by its label values. */
class Family {
  readonly series = new Map<string, Series>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'gauge',
    readonly labelNames: readonly string[],
  ) {
    // Like every Prometheus client: a metric without labels exists from the start, at 0.
    if (labelNames.length === 0) this.series.set('', { labels: '', value: 0 });
  }

  /** The series of a label set, made on first use; a label the metric does not declare is a bug. */
  at(labels: Labels | undefined): Series {
    if (labels === undefined) return this.cell('', '');
    let key = '';
    for (const n of this.labelNames) key += `${labels[n] ?? ''}\u0000`;
    const found = this.series.get(key);
    if (found) return found;
    for (const n of Object.keys(labels)) {
      if (!this.labelNames.includes(n)) throw new Error(`metric ${this.name}: label "${n}" is not one of its labels (${this.labelNames.join(', ')})`);
    }
    const text = Object.entries(labels)
      .map(([n, v]) => `${n}="${String(v).replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')}"`)
      .join(',');
    return this.cell(key, text);
  }

  private cell(key: string, labels: string): Series {
    let s = this.series.get(key);
    if (!s) this.series.set(key, (s = { labels, value: 0 }));
    return s;
  }

  text(): string {
    const name = escape(this.name);
    const lines = [`# HELP ${name} ${escape(this.help)}`, `# TYPE ${name} ${this.type}`];
    for (const s of this.series.values()) lines.push(`${this.name}${s.labels === '' ? '' : `{${s.labels}}`} ${valueText(s.value)}`);
    return lines.join('\n');
  }
}

function escape(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function valueText(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (!Number.isFinite(v)) return v < 0 ? '-Inf' : '+Inf';
  return `${v}`;
}

function checkIncrement(name: string, by: number): void {
  if (!(by >= 0)) throw new Error(`metric ${name}: a counter cannot be increased by ${by}`);
}

/**
 * The gateway's counters and gauges, one registry per gateway (tests run several), exposed in the
 * Prometheus text format (0.0.4) on `/metrics`. Counters and gauges with labels are all the gateway
 * needs, so they are kept here rather than in a client library: a metric with its label sets is a
 * map of numbers, a bound counter adds to one number without building a key per call (the hot path
 * counts every message), and the process does not load prom-client and its OpenTelemetry API
 * (about 8 MiB of a gateway's resident memory; docs/benchmarks.md, footprint).
 */
export class PromMetrics implements Metrics {
  private readonly families = new Map<string, Family>();

  private family(name: string, help: string, type: 'counter' | 'gauge', labelNames: readonly string[]): Family {
    let f = this.families.get(name);
    if (!f) {
      if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(name)) throw new Error(`invalid metric name "${name}"`);
      for (const l of labelNames) if (!/^[a-zA-Z_][a-zA-Z0-9_]*$/.test(l)) throw new Error(`metric ${name}: invalid label name "${l}"`);
      f = new Family(name, help, type, [...labelNames]);
      this.families.set(name, f);
    } else if (f.type !== type) {
      throw new Error(`metric ${name} is a ${f.type}, not a ${type}`);
    }
    return f;
  }

  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    const f = this.family(name, help, 'counter', labelNames);
    return {
      inc: (labels?: Labels, by = 1) => {
        checkIncrement(name, by);
        f.at(labels).value += by;
      },
      bind: (labels: Labels) => {
        const s = f.at(labels);
        return {
          inc: (by = 1) => {
            checkIncrement(name, by);
            s.value += by;
          },
        };
      },
    };
  }

  gauge(name: string, help: string, labelNames: readonly string[] = []): Gauge {
    const f = this.family(name, help, 'gauge', labelNames);
    return {
      set: (value: number, labels?: Labels) => {
        f.at(labels).value = value;
      },
    };
  }

  /** The exposition text of every metric, in the order they were first declared. */
  text(): Promise<string> {
    return Promise.resolve(`${[...this.families.values()].map((f) => f.text()).join('\n\n')}\n`);
  }

  /** Sum of a counter or gauge over all its label sets (for status output). */
  total(name: string): Promise<number> {
    const f = this.families.get(name);
    let sum = 0;
    if (f) for (const s of f.series.values()) sum += s.value;
    return Promise.resolve(sum);
  }
}
