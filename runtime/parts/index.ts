import { brokerListenerPart, brokerPart } from './broker.js';
import { configPart } from './config.js';
import { devicesPart } from './devices.js';
import { driversPart } from './drivers.js';
import { httpPart } from './http.js';
import { identitiesPart } from './identities.js';
import { maintenancePart } from './maintenance.js';
import { nodeRedPart } from './node-red.js';
import { otaPart } from './ota.js';
import { outboxPart } from './outbox.js';
import { rulesPart } from './rules.js';
import type { Part } from './site.js';
import { statusPagePart } from './status-page.js';
import { storePart } from './store.js';
import { uplinkPart } from './uplink.js';

/**
 * The gateway's parts in start order; they stop in the reverse order. Adding a part is one entry
 * here and its file in this folder.
 *
 * The order is what makes a stop lose nothing:
 * - intake stops first: the maintenance timer, then the broker's listener (no new child message);
 * - then what produces readings or writes: Node-RED flows, OTA, the drivers (each hands over what it
 *   has in flight: a child's message is committed or not acknowledged), the device registry (its
 *   waiting twin records handed to the outbox);
 * - then the rules commit what is pending (after the write guard stopped);
 * - then the uplink delivers what the outbox holds for the drain time it was given, and closes;
 * - then the HTTP API (it answered status all along), the broker's core, and the store last.
 * Starting is the same list forwards: nothing takes data before the parts that store it run.
 */
export const PARTS: readonly Part[] = [
  storePart,
  outboxPart,
  brokerPart,
  httpPart,
  uplinkPart,
  configPart,
  rulesPart,
  statusPagePart,
  devicesPart,
  driversPart,
  otaPart,
  identitiesPart,
  nodeRedPart,
  brokerListenerPart,
  maintenancePart,
];
