import { afterEach, describe, expect, it } from 'vitest';
import { envelopeSchema, WriteRefused, type WriteRefusal } from '../../runtime/contracts/index.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { DriversUnderTest, ID_PREFIX, type DriverImplementation } from './driver-harness.js';

export type { DeviceUnderTest, DriverImplementation } from './driver-harness.js';
export { noBroker } from './driver-harness.js';

/** Long enough for several polls at the intervals the implementations configure (about 100 ms). */
const QUIET_MS = 500;

function expectJsonable(status: Record<string, unknown>): void {
  expect(status).toBeTypeOf('object');
  expect(JSON.parse(JSON.stringify(status))).toEqual(status);
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => new Error('resolved, expected a rejection'),
    (err: unknown) => err,
  );
}

function expectRefused(err: unknown, kind: WriteRefusal): void {
  expect(err).toBeInstanceOf(WriteRefused);
  expect((err as WriteRefused).kind).toBe(kind);
}

/**
 * The driver contract (runtime/contracts/driver.ts), written once and run for every protocol: one
 * call per implementation declares its tests. Drivers are built through the protocol's registry
 * entry (`create()`), run with real time against a real peer, and judged by what reaches the sink.
 */
export function driverContract(name: string, impl: DriverImplementation): void {
  describe(`driver contract: ${name}`, () => {
    const cleanup: Array<() => Promise<unknown> | void> = [];
    afterEach(async () => {
      for (const f of cleanup.splice(0).reverse()) await f();
    });

    async function drivers(reachable: boolean, opts: { start?: boolean; hold?: boolean } = {}): Promise<DriversUnderTest> {
      const t = await impl.setup({ reachable });
      cleanup.push(() => t.close());
      const run = new DriversUnderTest(t);
      cleanup.push(() => run.owned.dispose());
      cleanup.push(() => run.stop());
      if (opts.hold) run.sink.hold();
      if (opts.start !== false) await run.start();
      return run;
    }

    it('has a name and a JSON-able status before start, while running and after stop', async () => {
      const run = await drivers(true, { start: false });
      expect(run.drivers.length).toBeGreaterThan(0);
      for (const d of run.drivers) {
        expect(d.name).toMatch(/\S/);
        expectJsonable(d.status());
      }
      await run.start();
      await waitFor('a good reading', () => run.good().length > 0);
      for (const d of run.drivers) expectJsonable(d.status());
      await run.stop();
      for (const d of run.drivers) expectJsonable(d.status());
    });

    it('hands readings to the sink as Envelopes or a ReadingBatch, numbered from the sequence', async () => {
      const run = await drivers(true);
      await waitFor('good readings', () => run.good().length >= 3);
      expect(run.shapes().every((s) => s !== 'other')).toBe(true);
      for (const s of run.sink.submissions) {
        if (Array.isArray(s)) for (const e of s) expect(Object.isFrozen(e) && envelopeSchema.safeParse(e).success).toBe(true);
      }
      const readings = run.sink.readings;
      expect(readings.every((r) => run.sequence.issued(r.seq) && r.id === `${ID_PREFIX}${r.seq}`)).toBe(true);
      expect(new Set(readings.map((r) => r.seq)).size).toBe(readings.length);
      const configured = new Set(run.t.devices.map((d) => d.id));
      expect(readings.every((r) => configured.has(r.device))).toBe(true);
    });

    it('starts with its device unreachable, reports it as the protocol can, and takes readings once it is reachable', async () => {
      const run = await drivers(false);
      if (impl.neverReached === 'reported') {
        await waitFor('bad or stale readings of the unreachable device', () => run.readings().length > 0);
        expect(run.readings().every((r) => r.quality === 'bad' || r.quality === 'stale')).toBe(true);
      } else {
        await sleep(QUIET_MS);
        expect(run.readings()).toEqual([]);
      }
      for (const d of run.drivers) expectJsonable(d.status());
      await run.t.reachable();
      await waitFor('good readings once the device is reachable', () => run.good().length > 0);
    });

    it('turns every point of a device that stops answering bad or stale, never a silent gap, and good again when it answers', async () => {
      const run = await drivers(true);
      await waitFor('good readings', () => run.good().length > 0);
      const before = run.sink.readings.length;
      const points = new Set(run.good().map((r) => r.point));
      await run.t.unreachable();
      const notGood = (): Set<string> => new Set(run.readings(before).filter((r) => r.quality !== 'good').map((r) => r.point));
      await waitFor('a bad or stale reading of every point', () => [...points].every((p) => notGood().has(p)), 10_000, 25, () => `got ${[...notGood()].join(', ')} of ${[...points].join(', ')}`);
      const after = run.sink.readings.length;
      await run.t.reachable();
      await waitFor('good readings once the device answers again', () => run.good(after).length > 0);
    });

    it('stop waits for a submission in flight', async () => {
      const run = await drivers(true, { hold: true });
      await waitFor('a submission in flight', () => run.sink.pending > 0);
      let stopped = false;
      const stopping = run.stop().then(() => (stopped = true));
      await sleep(200);
      expect(stopped).toBe(false);
      run.sink.release();
      await stopping;
      expect(stopped).toBe(true);
    });

    it('stop is idempotent, and nothing reaches the sink after it', async () => {
      const run = await drivers(true);
      await waitFor('good readings', () => run.good().length > 0);
      await Promise.all([run.stop(), run.stop()]);
      await run.stop();
      const n = run.sink.readings.length;
      await sleep(QUIET_MS);
      expect(run.sink.readings.length).toBe(n);
    });

    it('leaves no timer or socket of its own open after stop', async () => {
      const run = await drivers(true);
      await waitFor('good readings', () => run.good().length > 0);
      await run.stop();
      await waitFor('every timer and socket the drivers opened to be closed', () => run.owned.stillOpen().length === 0, 3000, 25, () => run.owned.stillOpen().join(', '));
    });

    it('offers writes exactly when its protocol declares the write capability', async () => {
      const run = await drivers(true, { start: false });
      const declared = run.t.protocol.capabilities.write;
      for (const d of run.drivers) {
        expect(typeof d.write === 'function').toBe(declared);
        expect(Array.isArray(d.devices)).toBe(declared);
      }
      if (!declared) return;
      // The suite needs a writable point to prove the capability with.
      expect(impl.write).toBeDefined();
      const served = new Set(run.drivers.flatMap((d) => d.devices ?? []));
      expect([...served].sort()).toEqual(run.t.devices.map((d) => String(d.id)).sort());
    });

    const w = impl.write;
    if (!w) return;

    it('refuses a write to an unknown device or point, or to a point that is not writable, before sending anything', async () => {
      const run = await drivers(true);
      await waitFor('good readings', () => run.good().length > 0);
      const writer = run.writer();
      const held = run.t.held?.(w.readOnlyPoint);
      expectRefused(await rejection(writer.write('no-such-device', w.point, w.value)), 'unknown-device');
      expectRefused(await rejection(writer.write(run.t.device, 'no-such-point', w.value)), 'unknown-point');
      expectRefused(await rejection(writer.write(run.t.device, w.readOnlyPoint, w.value)), 'not-writable');
      expect(run.t.held?.(w.readOnlyPoint)).toEqual(held);
    });

    it('resolves a write with the value read back, which the device then holds', async () => {
      const run = await drivers(true);
      await waitFor('good readings', () => run.good().length > 0);
      expect(await run.writer().write(run.t.device, w.point, w.value)).toEqual({ device: run.t.device, point: w.point, value: w.value, readBack: w.readBack });
      expect(run.t.held?.(w.point)).toEqual(w.readBack);
    });

    it('rejects a write to a device that does not answer, and not as a refusal', async () => {
      const run = await drivers(true);
      await waitFor('good readings', () => run.good().length > 0);
      await run.t.unreachable();
      const err = await rejection(run.writer().write(run.t.device, w.point, w.value));
      expect(err).toBeInstanceOf(Error);
      expect(err).not.toBeInstanceOf(WriteRefused);
    });
  });
}
