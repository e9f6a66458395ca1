import { registerFileProtocol } from '../fixtures/protocols/register-file/protocol.js';
import { RegisterFiles } from '../fixtures/protocols/register-file/driver.js';
import { driverContractSuite } from './driver-suite.js';

driverContractSuite('register-file (the test-only protocol)', () => {
  const plant = new RegisterFiles();
  plant.set('rf-1', 'level', 12);
  plant.set('rf-1', 'valve', 0);
  return Promise.resolve({
    entry: registerFileProtocol(plant),
    device: 'rf-1',
    devices: [
      {
        id: 'rf-1',
        protocol: 'register-file',
        pollIntervalMs: 50,
        points: [
          { name: 'level', address: 0, unit: 'm' },
          { name: 'valve', address: 1, writable: true },
        ],
      },
    ],
    reachable: () => Promise.resolve(plant.setOnline('rf-1', true)),
    unreachable: () => Promise.resolve(plant.setOnline('rf-1', false)),
    write: { writable: 'valve', readOnly: 'level', value: 1 },
    close: () => Promise.resolve(),
  });
});
