import { describe, expect, it } from 'vitest';
import {
  isBatch,
  systemClock,
  WriteRefused,
  type Driver,
  type DriverEnvironment,
  type Envelope,
  type ProtocolEntry,
  type Readings,
  type WriteValue,
} from '../../runtime/contracts/index.js';
import type { DeviceEntryInput } from '../../runtime/config/schema.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { CountingSequence } from '../../runtime/sequence.js';
import { silentLogger } from '../helpers/fakes.js';
import { sleep, waitFor } from '../helpers/wait.js';

/**
 * What one implementation gives the driver suite: its protocol's registry entry (the seam the
 * gateway builds drivers through), device entries as a site config would hold them, and a way to
 * take its device off and bring it back.
 */
export interface DriverHarness {
  readonly entry: ProtocolEntry;
  readonly devices: readonly DeviceEntryInput[];
  /** The site's services for the factory (the local broker for MQTT children). */
  readonly env?: DriverEnvironment;
  /** The device under test (its readings are what the suite looks at). */
  readonly device: string;
  /** The device answers / publishes. */
  reachable(): Promise<void>;
  /** The device is gone: nothing listening, no answer, or a child that dropped off the network. */
  unreachable(): Promise<void>;
  /** A writable and a read-only point of `device`, and a value to write (protocols with the write capability). */
  readonly write?: { readonly writable: string; readonly readOnly: string; readonly value: WriteValue };
  close(): Promise<void>;
}

/** Readings as the sink got them, and submissions not settled yet. */
class CollectingSink {
  readonly readings: Envelope[] = [];
  pending = 0;
  /** Delay before a submission resolves, as a commit takes time. */
  delayMs = 0;

  submit = async (readings: Readings): Promise<void> => {
    this.pending++;
    try {
      if (this.delayMs > 0) await sleep(this.delayMs);
      for (const r of isBatch(readings) ? [...readings] : readings) this.readings.push(r);
    } finally {
      this.pending--;
    }
  };

  of(device: string, quality?: Envelope['quality'][]): Envelope[] {
    return this.readings.filter((r) => r.device === device && (quality === undefined || quality.includes(r.quality)));
  }
}

const noBroker: DriverEnvironment = {
  localBroker: {
    intercept: () => undefined,
    observe: () => undefined,
  },
  acceptUnknownDevices: true,
};

const jsonable = (v: unknown): unknown => JSON.parse(JSON.stringify(v)) as unknown;

/**
 * The Driver contract (runtime/contracts/driver.ts), proved once for every protocol: each
 * implementation runs this suite with its harness, as aedes-persistence runs one suite for every
 * backend.
 */
export function driverContractSuite(name: string, makeHarness: () => Promise<DriverHarness>): void {
  describe(`driver contract: ${name}`, { timeout: 30_000 }, () => {
    async function setup(): Promise<{ h: DriverHarness; drivers: readonly Driver[]; sink: CollectingSink; sequence: CountingSequence; start(): Promise<void>; stop(): Promise<void> }> {
      const h = await makeHarness();
      const configs = h.devices.map((d) => h.entry.schema.parse(d));
      const drivers = h.entry.create(configs, h.env ?? noBroker);
      const sink = new CollectingSink();
      const sequence = new CountingSequence('suite:');
      const ctx = { sink, sequence, clock: systemClock, log: silentLogger, metrics: new PromMetrics() };
      return {
        h,
        drivers,
        sink,
        sequence,
        start: async () => {
          for (const d of drivers) await d.start(ctx);
        },
        stop: async () => {
          for (const d of drivers) await d.stop();
          await h.close();
        },
      };
    }

    it('is built through its registry entry, with a name and a JSON-able status before start, while running and after stop', async () => {
      const t = await setup();
      expect(t.drivers.length).toBeGreaterThan(0);
      for (const d of t.drivers) {
        expect(typeof d.name === 'string' && d.name.length > 0).toBe(true);
        expect(jsonable(d.status())).toEqual(jsonable(d.status()));
      }
      await t.h.reachable();
      await t.start();
      await waitFor('a reading', () => t.sink.of(t.h.device).length > 0, 10_000);
      for (const d of t.drivers) expect(jsonable(d.status())).toBeTypeOf('object');
      await t.stop();
      for (const d of t.drivers) expect(jsonable(d.status())).toBeTypeOf('object');
    });

    it('hands the readings of a reachable device to the sink, good, numbered by the sequence', async () => {
      const t = await setup();
      try {
        await t.h.reachable();
        await t.start();
        await waitFor('good readings', () => t.sink.of(t.h.device, ['good']).length >= 2, 10_000);
        const seqs = t.sink.readings.map((r) => r.seq);
        expect(new Set(seqs).size).toBe(seqs.length);
        for (const r of t.sink.readings) {
          expect(r.seq).toBeGreaterThan(0);
          expect(r.id.length).toBeGreaterThan(0);
          expect(Object.isFrozen(r)).toBe(true);
        }
        // Every number came from the sequence: the next one is beyond them all.
        expect(t.sequence.next().seq).toBeGreaterThan(Math.max(...seqs));
      } finally {
        await t.stop();
      }
    });

    it('never throws for a device that is gone: it reports it bad or stale, never a silent gap, and takes it back when it returns', async () => {
      const t = await setup();
      try {
        await t.h.reachable();
        await t.start();
        await waitFor('good readings', () => t.sink.of(t.h.device, ['good']).length > 0, 10_000);
        await t.h.unreachable();
        const before = t.sink.readings.length;
        await waitFor('bad or stale readings', () => t.sink.readings.slice(before).some((r) => r.device === t.h.device && r.quality !== 'good'), 15_000);
        for (const d of t.drivers) expect(jsonable(d.status())).toBeTypeOf('object');
        await t.h.reachable();
        const back = t.sink.readings.length;
        await waitFor('good readings again', () => t.sink.readings.slice(back).some((r) => r.device === t.h.device && r.quality === 'good'), 20_000);
      } finally {
        await t.stop();
      }
    });

    it('stops idempotently, after its submissions settled, and hands nothing to the sink afterwards', async () => {
      const t = await setup();
      await t.h.reachable();
      t.sink.delayMs = 50;
      await t.start();
      await waitFor('readings', () => t.sink.readings.length > 0, 10_000);
      for (const d of t.drivers) {
        await d.stop();
        await d.stop();
      }
      expect(t.sink.pending).toBe(0);
      const after = t.sink.readings.length;
      await sleep(500);
      expect(t.sink.readings.length).toBe(after);
      await t.h.close();
    });

    it('writes through its write capability if its protocol declares one: verified by reading back, refused by kind otherwise', async () => {
      const t = await setup();
      try {
        const writers = t.drivers.filter((d) => d.write !== undefined);
        if (!t.h.entry.capabilities.write) {
          expect(writers).toEqual([]);
          expect(t.h.write).toBeUndefined();
          return;
        }
        const w = t.h.write!;
        const owner = writers.find((d) => d.devices?.includes(t.h.device));
        expect(owner, 'a driver that serves the device and can write').toBeDefined();
        await t.h.reachable();
        await t.start();
        await waitFor('good readings', () => t.sink.of(t.h.device, ['good']).length > 0, 10_000);
        const refused = async (p: Promise<unknown>): Promise<string> => {
          try {
            await p;
          } catch (err) {
            expect(err).toBeInstanceOf(WriteRefused);
            return (err as WriteRefused).kind;
          }
          throw new Error('the write was not refused');
        };
        expect(await refused(owner!.write!('no-such-device', w.writable, w.value))).toBe('unknown-device');
        expect(await refused(owner!.write!(t.h.device, 'no-such-point', w.value))).toBe('unknown-point');
        expect(await refused(owner!.write!(t.h.device, w.readOnly, w.value))).toBe('not-writable');
        const done = await owner!.write!(t.h.device, w.writable, w.value);
        expect(done).toMatchObject({ device: t.h.device, point: w.writable, value: w.value, readBack: w.value });
      } finally {
        await t.stop();
      }
    });
  });
}
