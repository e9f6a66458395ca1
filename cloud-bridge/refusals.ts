/**
 * What an MQTT 5 reason code from the cloud broker says about a failed batch (PUBACK/PUBREC of the
 * batch, or the DISCONNECT that ended its connection).
 *
 * - `poison`: something about the message: the poison guard narrows the batch down to the reading
 *   and dead-letters it.
 * - `link`: something about the gateway's rights, the broker's state or the link (not authorized,
 *   quota, server busy…): every reading would fail alike, so nothing is dead-lettered; the uplink
 *   holds its batches for a backoff and says why in its status.
 */
export type RefusalKind = 'poison' | 'link';

export interface Refusal {
  readonly kind: RefusalKind;
  /** What the operator reads in the status and the log. */
  readonly reason: string;
}

const LINK: Readonly<Record<number, string>> = {
  0x87: 'not authorized: the cloud broker does not let this gateway publish on its telemetry topic (check the broker ACL for its user)',
  0x8a: 'banned by the cloud broker',
  0x8b: 'the cloud broker is shutting down',
  0x8d: 'keep alive timeout at the cloud broker',
  0x8e: 'session taken over by another connection with the same client id (another gateway with this cloud.clientId?)',
  0x89: 'the cloud broker is busy',
  0x90: 'topic name invalid: the cloud broker does not accept the telemetry topic (check cloud.topicPrefix)',
  0x91: 'packet identifier in use',
  0x93: 'receive maximum exceeded',
  0x96: 'message rate too high for the cloud broker',
  0x97: 'quota exceeded at the cloud broker',
  0x98: 'administrative action at the cloud broker',
  0x9c: 'the cloud broker asks to use another server',
  0x9d: 'the cloud broker moved',
  0x9f: 'connection rate exceeded at the cloud broker',
};

const POISON: Readonly<Record<number, string>> = {
  0x80: 'unspecified error',
  0x81: 'malformed packet',
  0x82: 'protocol error',
  0x83: 'implementation specific error',
  0x95: 'packet too large',
  0x99: 'payload format invalid',
};

const hex = (code: number): string => `0x${code.toString(16).padStart(2, '0')}`;

/** How to treat a batch the broker answered or disconnected with `code` (0x80 and above). */
export function classifyReasonCode(code: number, context: 'refused by the cloud broker' | 'the cloud broker disconnected'): Refusal {
  const link = LINK[code];
  if (link !== undefined) return { kind: 'link', reason: `${context}: ${link} (${hex(code)})` };
  return { kind: 'poison', reason: `${context}: ${POISON[code] ?? 'reason code'} (${hex(code)})` };
}
