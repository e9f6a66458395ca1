import type { AddressInfo, Server } from 'node:net';

/** A listener could not be opened: where, and the system's reason (EADDRINUSE, EACCES, …). */
export class ListenError extends Error {
  override readonly name = 'ListenError';
  constructor(
    readonly host: string,
    readonly port: number,
    readonly code: string,
    cause: unknown,
  ) {
    super(
      `${host}:${port}: ${
        code === 'EADDRINUSE'
          ? 'in use by another process: choose another port, or stop that process'
          : code === 'EACCES'
            ? 'not allowed (ports below 1024 need privileges): choose a port above 1023'
            : code === 'EADDRNOTAVAIL'
              ? 'not an address of this machine: fix the host'
              : `cannot listen (${code})`
      }`,
      { cause },
    );
  }
}

/**
 * Listens on host:port (0: a free port) and resolves with the port; rejects with a ListenError.
 * `backlog`: connections the kernel may hold before they are accepted (Node's default is 511; the
 * kernel caps it at net.core.somaxconn).
 */
export async function listenOn(server: Server, host: string, port: number, backlog?: number): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    const fail = (err: NodeJS.ErrnoException): void => reject(new ListenError(host, port, err.code ?? 'unknown', err));
    server.once('error', fail);
    server.listen({ port, host, ...(backlog === undefined ? {} : { backlog }) }, () => {
      server.off('error', fail);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}
