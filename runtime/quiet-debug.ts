import { createRequire, Module } from 'node:module';

/**
 * The MQTT libraries (mqtt-packet's parser and writer, mqtt.js' client) trace every packet through
 * the `debug` package. Switched off, each call still collects its arguments into a fresh array
 * (`function debug(...args)`): the largest single source of garbage on the intake path (8.5 % of
 * what the gateway allocated per message in a heap profile of the node-red-e2e load). Unless
 * `DEBUG` is set (then the real package runs, for diagnosis), the copy those libraries load is a
 * function that does nothing and allocates nothing. Imported first by the `outpost` command, before
 * any of them loads.
 */
interface Debugger {
  (...args: unknown[]): void;
  enabled: boolean;
  namespace: string;
  extend(sub: string, delimiter?: string): Debugger;
  log: (...args: unknown[]) => void;
}

function nothing(): void {}

function createDebug(namespace: string): Debugger {
  // A function without a rest parameter: calling it with arguments allocates nothing.
  const d = function debug(): void {} as unknown as Debugger;
  d.enabled = false;
  d.namespace = namespace;
  d.log = nothing;
  d.extend = (sub, delimiter = ':') => createDebug(`${namespace}${delimiter}${sub}`);
  return d;
}

const quiet = Object.assign(createDebug, {
  default: createDebug,
  debug: createDebug,
  enabled: () => false,
  enable: nothing,
  disable: () => '',
  names: [] as string[],
  skips: [] as string[],
  formatters: {},
  coerce: (v: unknown) => v,
  humanize: (ms: number) => `${ms}ms`,
  selectColor: () => 0,
  log: nothing,
});

if (!process.env.DEBUG) {
  const require = createRequire(import.meta.url);
  for (const library of ['mqtt-packet', 'mqtt']) {
    try {
      const file = createRequire(require.resolve(library)).resolve('debug');
      if (require.cache[file]) continue;
      const m = new Module(file);
      m.filename = file;
      m.exports = quiet;
      m.loaded = true;
      require.cache[file] = m;
    } catch {
      // The library resolves no `debug` of its own: nothing to quiet.
    }
  }
}
