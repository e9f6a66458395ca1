/**
 * The gateway's recent problems for people (the status page): the last warnings and errors it
 * logged (a refused payload, a failing Modbus device, a dead-lettered reading, the cloud refusing
 * the link), as the logger wrote them, secrets already taken out. A bounded ring; the log itself
 * stays the record.
 */
export interface Problem {
  readonly time: number;
  readonly level: 'warn' | 'error' | 'fatal';
  readonly msg: string;
  /** Where: the component, and a device, driver or rule when the line names one. */
  readonly where?: string;
  /** The line's other fields (reason, detail, err…), short. */
  readonly detail?: string;
}

const LEVELS: Record<number, Problem['level']> = { 40: 'warn', 50: 'error', 60: 'fatal' };
const WHERE = ['component', 'device', 'driver', 'rule', 'stream', 'release'];
const SKIP = new Set(['level', 'time', 'pid', 'hostname', 'msg', ...WHERE]);

export class ProblemLog {
  private readonly ring: Problem[] = [];
  /** Problems seen since start (the ring holds the last `size`). */
  total = 0;

  constructor(private readonly size = 100) {}

  /** A pino destination: takes the serialized lines (warn and above). */
  write(line: string): void {
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    const level = LEVELS[Number(o.level)];
    if (!level) return;
    const where = WHERE.filter((k) => typeof o[k] === 'string').map((k) => `${k === 'component' ? '' : `${k} `}${String(o[k])}`).join(' · ');
    const rest = Object.entries(o).filter(([k]) => !SKIP.has(k));
    const detail = rest.map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`).join('; ');
    this.total++;
    this.ring.push({
      time: typeof o.time === 'number' ? o.time : Date.now(),
      level,
      msg: (typeof o.msg === 'string' ? o.msg : '').slice(0, 300),
      ...(where !== '' ? { where } : {}),
      ...(detail !== '' ? { detail: detail.length > 400 ? `${detail.slice(0, 399)}…` : detail } : {}),
    });
    if (this.ring.length > this.size) this.ring.shift();
  }

  /** Newest first. */
  recent(limit = this.size): Problem[] {
    return this.ring.slice(-limit).reverse();
  }
}
