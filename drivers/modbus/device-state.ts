import { PointTable } from '../../runtime/contracts/index.js';
import { RequestDecoder } from './codec.js';
import { planReads, type ReadRequest } from './planner.js';
import { ReportFilter } from './report-filter.js';
import type { ModbusDevice, ModbusPoint } from './types.js';

/** Points of one device polled at one interval, planned into requests. */
export interface Group {
  readonly device: DeviceState;
  readonly intervalMs: number;
  readonly requests: readonly ReadRequest[];
  due: number;
  /** Requests the last completed poll of this group issued (retries included). */
  lastRequests: number;
}

/**
 * What is worked out once per request, and what its last poll left, for two shortcuts. A steady
 * plant: when every point of the request reports by exception, all were good last time, no
 * heartbeat is due and the registers are word for word what they were, nothing can be reported
 * and the points are not decoded again. A reading per point and poll: when no point has a
 * deadband and all decode, all are reported, and the request's values go on as one run.
 */
export interface RequestState {
  /** Every point has a deadband: unchanged registers report nothing. */
  readonly byException: boolean;
  /** No point has a deadband: every good reading is reported, whatever came before. */
  readonly reportsAll: boolean;
  readonly decoder: RequestDecoder;
  /** The request's points as one run of the device's report filter. */
  readonly run: number;
  /** Index in the device's point table of each of the request's points. */
  readonly index: readonly number[];
  words: number[] | undefined;
  allGood: boolean;
  /** The earliest maxSilenceMs heartbeat due among the points. */
  nextForced: number;
}

/** What a bus keeps per device: its poll plan, report by exception, breaker and counters. */
export interface DeviceState {
  readonly device: ModbusDevice;
  readonly requestState: Map<ReadRequest, RequestState>;
  mRequests?: { inc(by?: number): void };
  mReadings?: { inc(by?: number): void };
  /** The device's poll groups, by ascending interval. */
  readonly groups: Group[];
  readonly points: Map<string, ModbusPoint>;
  /** The device's points in a fixed order: readings are batched against it. */
  readonly table: PointTable;
  readonly index: Map<ModbusPoint, number>;
  /** Report by exception, per point index. */
  readonly report: ReportFilter;
  /** Polls in a row that got no answer. */
  failures: number;
  /** The breaker is open until then (0: closed). */
  openUntil: number;
  openMs: number;
  polls: number;
  requests: number;
  errors: number;
  lastError: string | undefined;
}

/**
 * A device's state before its first poll: its points grouped by poll interval, each group planned
 * into as few requests as the protocol allows.
 */
export function deviceState(device: ModbusDevice): DeviceState {
  const state: DeviceState = {
    device,
    groups: [],
    points: new Map(device.points.map((p) => [p.name, p])),
    table: new PointTable(device.id, device.points),
    index: new Map(device.points.map((p, i) => [p, i])),
    report: new ReportFilter(device.points.length),
    requestState: new Map(),
    failures: 0,
    openUntil: 0,
    openMs: device.breaker.openMs,
    polls: 0,
    requests: 0,
    errors: 0,
    lastError: undefined,
  };
  const byInterval = new Map<number, ModbusPoint[]>();
  for (const p of device.points) {
    const interval = p.intervalMs ?? device.pollIntervalMs;
    const list = byInterval.get(interval) ?? [];
    list.push(p);
    byInterval.set(interval, list);
  }
  for (const [intervalMs, points] of [...byInterval].sort((a, b) => a[0] - b[0])) {
    const g: Group = { device: state, intervalMs, requests: planReads(points, device.maxGap), due: 0, lastRequests: 0 };
    for (const req of g.requests) {
      const byException = req.points.every((p) => p.deadband !== undefined);
      const reportsAll = req.points.every((p) => p.deadband === undefined);
      const index = req.points.map((p) => state.index.get(p)!);
      const decoder = new RequestDecoder(req.address, req.points);
      const run = state.report.addRun(index);
      state.requestState.set(req, { byException, reportsAll, decoder, run, index, words: undefined, allGood: false, nextForced: 0 });
    }
    state.groups.push(g);
  }
  return state;
}
