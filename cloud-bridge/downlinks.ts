import { compileTopicFilter, errorMessage, type Logger } from '../runtime/contracts/index.js';

/** Cloud topics the gateway listens to (releases, commands), subscribed again on every connection. */
export class Downlinks {
  private readonly entries: Array<{ filter: string; matches: (topic: string) => boolean; handler: (topic: string, payload: Buffer) => void }> = [];

  constructor(private readonly log: Logger) {}

  add(filter: string, handler: (topic: string, payload: Buffer) => void): void {
    this.entries.push({ filter, matches: compileTopicFilter(filter), handler });
  }

  /** The filters to subscribe to, each once. */
  filters(): string[] {
    return [...new Set(this.entries.map((d) => d.filter))];
  }

  /** A message from the cloud to every handler whose filter matches; one that throws is logged, the others still run. */
  deliver(topic: string, payload: Buffer): void {
    for (const d of this.entries) {
      if (!d.matches(topic)) continue;
      try {
        d.handler(topic, payload);
      } catch (err) {
        this.log.error({ topic, err: errorMessage(err) }, 'downlink handler failed');
      }
    }
  }
}
