import { width } from './codec.js';
import type { ModbusPoint, Table } from './types.js';

export interface ReadRequest {
  readonly table: Table;
  readonly address: number;
  readonly length: number;
  readonly points: readonly ModbusPoint[];
}

/** Protocol limits per read: 125 registers (FC3/FC4), 2000 bits (FC1/FC2). */
export const MAX_REGISTERS = 125;
export const MAX_BITS = 2000;

/**
 * Merges points of the same table into as few reads as the protocol allows: a point joins the
 * current request when the gap to it is at most `maxGap` and the request stays within the limit.
 */
export function planReads(points: readonly ModbusPoint[], maxGap: number): ReadRequest[] {
  const byTable = new Map<Table, ModbusPoint[]>();
  for (const p of points) {
    const list = byTable.get(p.table) ?? [];
    list.push(p);
    byTable.set(p.table, list);
  }
  const requests: ReadRequest[] = [];
  for (const [table, list] of byTable) {
    const limit = table === 'coil' || table === 'discrete' ? MAX_BITS : MAX_REGISTERS;
    list.sort((a, b) => a.address - b.address);
    let start = -1;
    let end = -1;
    let members: ModbusPoint[] = [];
    for (const p of list) {
      const pEnd = p.address + width(p);
      if (members.length > 0 && p.address - end <= maxGap && Math.max(end, pEnd) - start <= limit) {
        members.push(p);
        end = Math.max(end, pEnd);
        continue;
      }
      if (members.length > 0) requests.push({ table, address: start, length: end - start, points: members });
      start = p.address;
      end = pEnd;
      members = [p];
    }
    if (members.length > 0) requests.push({ table, address: start, length: end - start, points: members });
  }
  return requests;
}
