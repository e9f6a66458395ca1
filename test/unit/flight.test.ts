import { describe, expect, it } from 'vitest';
import { FlightControl } from '../../cloud-bridge/flight.js';
import { ManualClock } from '../helpers/fakes.js';

/** Sends batches while there is room; returns the sizes sent. */
function fill(flight: FlightControl): number[] {
  const sizes: number[] = [];
  for (let room = flight.room(); room > 0; room = flight.room()) {
    flight.sent(room);
    sizes.push(room);
  }
  return sizes;
}

describe('flight control', () => {
  it('allows one batch after connecting and one more per acknowledgement, up to maxInFlight', () => {
    const flight = new FlightControl(10, 3, new ManualClock());
    expect(fill(flight)).toEqual([10]);
    flight.acked(10);
    // Window 2, none in flight.
    expect(fill(flight)).toEqual([10, 10]);
    flight.acked(10);
    // Window 3, one in flight.
    expect(fill(flight)).toEqual([10, 10]);
    flight.acked(10);
    // Window 3 at most, two in flight.
    expect(fill(flight)).toEqual([10]);
    expect(flight.inFlight).toBe(3);
    // A new connection starts again at one batch.
    flight.clear();
    flight.connected();
    expect(fill(flight)).toEqual([10]);
  });

  it('a failed batch frees its place without widening the window', () => {
    const flight = new FlightControl(10, 3, new ManualClock());
    fill(flight);
    flight.settled(10);
    expect(flight.inFlight).toBe(0);
    expect(fill(flight)).toEqual([10]);
  });

  it('halves the readings in flight each time a connection is lost with batches unacknowledged, down to 16', () => {
    const flight = new FlightControl(50, 4, new ManualClock());
    const steady = (): number[] => {
      flight.clear();
      for (let i = 0; i < 4; i++) flight.acked(0);
      return fill(flight);
    };
    expect(steady()).toEqual([50, 50, 50, 50]);
    flight.lost();
    expect(steady()).toEqual([50, 50]);
    flight.lost();
    expect(steady()).toEqual([50]);
    flight.lost();
    expect(steady()).toEqual([25]);
    flight.lost();
    flight.lost();
    expect(steady()).toEqual([16]);
  });

  it('never caps below one batch when batches are smaller than 16', () => {
    const flight = new FlightControl(4, 4, new ManualClock());
    for (let i = 0; i < 10; i++) flight.lost();
    for (let i = 0; i < 4; i++) flight.acked(0);
    flight.clear();
    expect(fill(flight)).toEqual([4]);
  });

  it('grows the cap back by one batch per 2 s of acknowledgements without a loss', async () => {
    const clock = new ManualClock();
    const flight = new FlightControl(40, 4, clock);
    flight.lost();
    flight.lost();
    // 40 readings now; each acknowledgement adds 40 × (ms since the last growth) / 2000.
    const inFlightAfterAckAt = async (ms: number): Promise<number> => {
      await clock.advance(ms);
      flight.clear();
      flight.acked(0);
      flight.acked(0);
      flight.acked(0);
      flight.clear();
      return fill(flight).reduce((a, b) => a + b, 0);
    };
    expect(await inFlightAfterAckAt(1000)).toBe(60);
    expect(await inFlightAfterAckAt(2000)).toBe(100);
    expect(await inFlightAfterAckAt(60_000)).toBe(160);
  });
});
