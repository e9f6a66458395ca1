import { createServer, Socket, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/wait.js';
import { OwnedResources } from './owned-resources.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function listening(): Promise<Server> {
  const server = createServer((s) => s.on('end', () => s.end()));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanup.push(() => new Promise((resolve) => server.close(resolve)));
  return server;
}

describe('the tracker of what a component leaves open (used by the driver contract)', () => {
  it('sees a timer and a socket opened inside run(), also from their callbacks, until they are closed', async () => {
    const server = await listening();
    const port = (server.address() as { port: number }).port;
    const owned = new OwnedResources();
    cleanup.push(() => owned.dispose());
    let late: NodeJS.Timeout | undefined;
    cleanup.push(() => clearTimeout(late));
    const socket = await owned.run(
      () =>
        new Promise<Socket>((resolve) => {
          const s = new Socket();
          s.connect(port, '127.0.0.1', () => {
            // Opened from a callback of the component's socket: still the component's.
            late = setTimeout(() => undefined, 60_000);
            resolve(s);
          });
        }),
    );
    await waitFor('the timer opened in the connect callback', () => owned.stillOpen().includes('Timeout'));
    expect(owned.stillOpen()).toContain('TCPWRAP');
    // Opened by the test after run() returned: not the component's.
    const mine = setTimeout(() => undefined, 60_000);
    cleanup.push(() => clearTimeout(mine));
    expect(owned.stillOpen().filter((t) => t === 'Timeout')).toHaveLength(1);
    socket.end();
    await waitFor('the socket closed', () => !owned.stillOpen().includes('TCPWRAP'));
    expect(owned.stillOpen()).toEqual(['Timeout']);
  });

  it('counts a timer that fired or was cleared as closed', async () => {
    const owned = new OwnedResources();
    cleanup.push(() => owned.dispose());
    const cleared = owned.run(() => setTimeout(() => undefined, 60_000));
    await owned.run(() => new Promise((resolve) => setTimeout(resolve, 10)));
    clearTimeout(cleared);
    await waitFor('both timers closed', () => owned.stillOpen().length === 0);
    expect(owned.opened).toBeGreaterThanOrEqual(2);
  });
});
