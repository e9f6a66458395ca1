import { registerFileProtocol } from '../fixtures/protocols/register-file/protocol.js';
import { RegisterFiles } from '../fixtures/protocols/register-file/register-file.js';
import { driverContract, noBroker } from './driver-suite.js';

// The test-only protocol of test/fixtures/protocols/register-file: the same contract as the built-in ones.
driverContract('register-file (test-only protocol)', {
  neverReached: 'reported',
  write: { point: 'setpoint', value: 42.5, readBack: 42.5, readOnlyPoint: 'temp' },
  setup({ reachable }) {
    const files = new RegisterFiles();
    const file = files.file('boiler');
    file.set(0, 21.5);
    file.unreachable = !reachable;
    return Promise.resolve({
      protocol: registerFileProtocol(files),
      env: { localBroker: noBroker, acceptUnknownDevices: false, otherDevices: new Set<string>() },
      device: 'rf-1',
      devices: [
        {
          id: 'rf-1',
          protocol: 'register-file',
          file: 'boiler',
          pollIntervalMs: 100,
          points: [
            { name: 'temp', address: 0 },
            { name: 'setpoint', address: 1, writable: true },
          ],
        },
      ],
      reachable: () => Promise.resolve(void (file.unreachable = false)),
      unreachable: () => Promise.resolve(void (file.unreachable = true)),
      held: (point) => file.get(point === 'temp' ? 0 : 1),
      close: () => Promise.resolve(),
    });
  },
});
