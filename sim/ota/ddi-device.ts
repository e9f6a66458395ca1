import { createHash, createHmac } from 'node:crypto';

/**
 * A device's target token under a group secret, as a provisioning tool would put it on the device:
 * base64url(HMAC-SHA256(groupSecret, deviceId)) (written here independently of the gateway's code).
 */
export function groupTargetToken(groupSecret: string, deviceId: string): string {
  return createHmac('sha256', Buffer.from(groupSecret, 'utf8')).update(Buffer.from(deviceId, 'utf8')).digest('base64url');
}

export interface DdiDeviceOptions {
  /** `http://host:port/{tenant}` of the update server. */
  readonly server: string;
  readonly id: string;
  readonly version: string;
  /** `TargetToken …`, when the server wants one. */
  readonly authorization?: string | undefined;
  /** Share of installs that fail (0–1). */
  readonly failRate?: number | undefined;
  /** Break each download after this many bytes once, then resume it with a Range request. */
  readonly interruptAfter?: number | undefined;
  readonly installMs?: number | undefined;
  readonly rebootMs?: number | undefined;
  /** Poll at least this often, whatever the server suggests (tests). */
  readonly maxPollMs?: number | undefined;
  readonly random?: (() => number) | undefined;
}

interface Deployment {
  id: string;
  deployment: {
    chunks: Array<{ version: string; artifacts: Array<{ filename: string; size: number; hashes: { sha256: string }; _links: { 'download-http': { href: string } } }> }>;
  };
}

export type CycleOutcome = 'idle' | 'installed' | 'failed' | 'canceled';

/**
 * A simulated child device with a hawkBit DDI update agent: polls, downloads (optionally
 * interrupted and resumed with Range), verifies the sha256, "installs", "reboots" into the new
 * version and reports each step as DDI feedback. A share of installs fails on purpose.
 */
export class DdiDevice {
  version: string;
  readonly outcomes: CycleOutcome[] = [];
  bytesDownloaded = 0;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private reported = false;

  constructor(private readonly opts: DdiDeviceOptions) {
    this.version = opts.version;
  }

  private get base(): string {
    return `${this.opts.server}/controller/v1/${this.opts.id}`;
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.opts.authorization ? { authorization: this.opts.authorization } : {}), ...extra };
  }

  private async send(method: string, url: string, body: unknown): Promise<void> {
    const res = await fetch(url, { method, headers: this.headers({ 'content-type': 'application/json' }), body: JSON.stringify(body) });
    await res.arrayBuffer();
  }

  private async feedback(actionId: string, execution: string, finished: 'success' | 'failure' | 'none', details: string[]): Promise<void> {
    await this.send('POST', `${this.base}/deploymentBase/${actionId}/feedback`, { id: actionId, status: { execution, result: { finished }, details } });
  }

  /** One poll and whatever work it brings. */
  async cycle(): Promise<{ outcome: CycleOutcome; sleepMs: number }> {
    if (!this.reported) {
      await this.send('PUT', `${this.base}/configData`, { mode: 'merge', data: { version: this.version } });
      this.reported = true;
    }
    const res = await fetch(this.base, { headers: this.headers() });
    if (!res.ok) throw new Error(`poll: ${res.status}`);
    const poll = (await res.json()) as { config: { polling: { sleep: string } }; _links?: Record<string, { href: string }> };
    const [h, m, s] = poll.config.polling.sleep.split(':').map(Number) as [number, number, number];
    const sleepMs = Math.min(((h * 60 + m) * 60 + s) * 1000, this.opts.maxPollMs ?? Infinity);
    const cancel = poll._links?.cancelAction?.href;
    if (cancel) {
      const id = new URL(cancel).pathname.split('/').at(-1)!;
      await this.send('POST', `${this.base}/cancelAction/${id}/feedback`, { id, status: { execution: 'canceled', result: { finished: 'success' } } });
      return { outcome: this.note('canceled'), sleepMs };
    }
    const dep = poll._links?.deploymentBase?.href;
    if (!dep) return { outcome: 'idle', sleepMs };
    const d = (await (await fetch(dep, { headers: this.headers() })).json()) as Deployment;
    const chunk = d.deployment.chunks[0]!;
    const art = chunk.artifacts[0]!;
    await this.feedback(d.id, 'proceeding', 'none', [`downloading ${art.filename}`]);
    const data = await this.download(art._links['download-http'].href, art.size);
    if (createHash('sha256').update(data).digest('hex') !== art.hashes.sha256) {
      await this.feedback(d.id, 'closed', 'failure', ['sha256 of the download does not match']);
      return { outcome: this.note('failed'), sleepMs };
    }
    await this.feedback(d.id, 'proceeding', 'none', ['installing']);
    await sleep(this.opts.installMs ?? 0);
    if ((this.opts.random ?? Math.random)() < (this.opts.failRate ?? 0)) {
      await this.feedback(d.id, 'closed', 'failure', ['install failed: image refused by the bootloader']);
      return { outcome: this.note('failed'), sleepMs };
    }
    await sleep(this.opts.rebootMs ?? 0);
    this.version = chunk.version;
    await this.send('PUT', `${this.base}/configData`, { mode: 'merge', data: { version: this.version } });
    await this.feedback(d.id, 'closed', 'success', [`running ${this.version} after reboot`]);
    return { outcome: this.note('installed'), sleepMs };
  }

  private note(o: CycleOutcome): CycleOutcome {
    this.outcomes.push(o);
    return o;
  }

  /** GET with resume: a broken transfer continues with `Range: bytes=N-`. */
  private async download(href: string, size: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    let have = 0;
    let interrupt = this.opts.interruptAfter;
    while (have < size) {
      const ctl = new AbortController();
      const res = await fetch(href, { headers: this.headers(have > 0 ? { range: `bytes=${have}-` } : {}), signal: ctl.signal });
      if (res.status !== 200 && res.status !== 206) throw new Error(`download: ${res.status}`);
      if (res.status === 200 && have > 0) {
        parts.length = 0;
        have = 0;
      }
      try {
        for await (const chunk of res.body!) {
          const b = Buffer.from(chunk as Uint8Array);
          parts.push(b);
          have += b.length;
          this.bytesDownloaded += b.length;
          if (interrupt !== undefined && have >= interrupt) {
            interrupt = undefined;
            ctl.abort();
            break;
          }
        }
      } catch (err) {
        if (!ctl.signal.aborted) throw err;
      }
    }
    return Buffer.concat(parts).subarray(0, size);
  }

  start(): void {
    this.loop ??= (async () => {
      while (!this.stopped) {
        let wait = 100;
        try {
          wait = (await this.cycle()).sleepMs;
        } catch {
          wait = Math.min(1000, this.opts.maxPollMs ?? 1000);
        }
        await sleep(wait);
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
