import { compileTopicFilter, errorMessage, type Logger } from '../runtime/contracts/index.js';

type Handler = (topic: string, payload: Buffer) => void;

/**
 * Cloud topics the gateway listens to (releases, commands): subscribed again on every connection,
 * each message handed to every handler whose filter matches it. A handler that throws is logged and
 * does not affect the others.
 */
export class Downlinks {
  private readonly entries: Array<{ filter: string; matches: (topic: string) => boolean; handler: Handler }> = [];

  constructor(private readonly log: Logger) {}

  add(filter: string, handler: Handler): void {
    this.entries.push({ filter, matches: compileTopicFilter(filter), handler });
  }

  /** The filters to subscribe on a new connection, each once. */
  filters(): string[] {
    return [...new Set(this.entries.map((d) => d.filter))];
  }

  dispatch(topic: string, payload: Buffer): void {
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
