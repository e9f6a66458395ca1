import { AsyncLocalStorage, createHook, type AsyncHook } from 'node:async_hooks';

/** Resources that keep a process busy or hold a connection: timers and sockets of any kind. */
const TRACKED = new Set(['Timeout', 'Immediate', 'TCPWRAP', 'TCPCONNECTWRAP', 'TCPSERVERWRAP', 'PIPEWRAP', 'PIPECONNECTWRAP', 'UDPWRAP', 'TTYWRAP', 'SIGNALWRAP', 'PROCESSWRAP', 'FSEVENTWRAP', 'STATWATCHER']);

/**
 * The timers and sockets a component opened, and whether they are closed again. Whatever runs in
 * `run()` is the component's, and so is whatever it starts from there (its timers' and sockets'
 * callbacks continue in the same async context); what a peer or the test opens is not. A resource
 * counts as closed once Node destroys it: a timer that fired or was cleared, a socket closed.
 */
export class OwnedResources {
  private readonly context = new AsyncLocalStorage<OwnedResources>();
  private readonly open = new Map<number, string>();
  private readonly hook: AsyncHook;
  /** Resources opened in all, closed or not. */
  opened = 0;

  constructor() {
    this.hook = createHook({
      init: (id, type) => {
        if (!TRACKED.has(type) || this.context.getStore() !== this) return;
        this.opened++;
        this.open.set(id, type);
      },
      destroy: (id) => {
        this.open.delete(id);
      },
    }).enable();
  }

  /** Runs `fn` as the component: what it opens is tracked. */
  run<T>(fn: () => T): T {
    return this.context.run(this, fn);
  }

  /** Types of the resources still open, e.g. ['TCPWRAP', 'Timeout']. */
  stillOpen(): string[] {
    return [...this.open.values()];
  }

  dispose(): void {
    this.hook.disable();
    this.open.clear();
  }
}
