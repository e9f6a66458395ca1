import { createServer, type AddressInfo } from 'node:net';

/**
 * A port that was free a moment ago on 127.0.0.1, for third-party servers (Mosquitto) that cannot
 * listen on port 0 and report the port they got. Our own servers always listen on port 0.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
