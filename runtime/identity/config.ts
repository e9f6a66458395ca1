import { z } from 'zod';
import { idSchema } from '../contracts/index.js';
import { PASSWORD_HASH_PATTERN } from './passwords.js';

/**
 * Who may connect to the gateway's MQTT broker (docs/security.md). Every identity's id is its MQTT
 * client id. Devices publish under their own subtree; clients (a site panel, a SCADA reader) have
 * only what `broker.grants` gives them.
 */
const passwordHash = z.string().regex(PASSWORD_HASH_PATTERN, 'expected an scrypt hash ($scrypt$ln=15,r=8,p=1$…): make one with `outpost identity hash-password`');
const certSha256 = z
  .string()
  .regex(/^([0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$/, 'expected a SHA-256 certificate fingerprint (AB:CD:… or 64 hex digits)')
  .transform((f) => f.replace(/:/g, '').toUpperCase());

const account = z
  .strictObject({
    id: idSchema,
    /** scrypt hash of the password (the password itself is never stored). */
    passwordHash: passwordHash.optional(),
    /** The device's client certificate, pinned by fingerprint (TLS listener). */
    certSha256: certSha256.optional(),
  })
  .refine((a) => a.passwordHash !== undefined || a.certSha256 !== undefined, { message: 'give passwordHash or certSha256 (or both)', path: ['passwordHash'] });

const glob = z.string().min(1).max(128).regex(/^[A-Za-z0-9_.*?-]+$/, 'a device id pattern: letters, digits, "_", ".", "-", "*" and "?"');

/**
 * An enrollment group: a fleet of devices whose credentials derive from one secret or one CA, so
 * the config needs no line per device (Azure DPS group enrollment). A device is enrolled (recorded
 * in the store) at its first connection.
 */
const group = z
  .strictObject({
    name: idSchema,
    /** The device ids this group may enroll. */
    devices: glob.default('*'),
    /** Devices authenticate with password = base64url(HMAC-SHA256(secret, device id)). */
    secretFile: z.string().min(1).optional(),
    /** The same secret inline (the config file then holds a secret: keep it owner-only). */
    secret: z.string().min(16, 'at least 16 characters').optional(),
    /** Devices present a client certificate issued by this CA, with the device id as its CN (TLS listener). */
    caFile: z.string().min(1).optional(),
  })
  .superRefine((g, ctx) => {
    const kinds = [g.secretFile, g.secret, g.caFile].filter((x) => x !== undefined).length;
    if (kinds !== 1) ctx.addIssue({ code: 'custom', path: ['secretFile'], message: 'give exactly one of secretFile, secret or caFile' });
  });

export const identitiesSchema = z
  .strictObject({
    /** Child devices with their own credential. */
    devices: z.array(account).default([]),
    /** Clients that are not devices (a site panel): they get only what broker.grants give them. */
    clients: z.array(account).default([]),
    groups: z.array(group).default([]),
    /** Identities refused whatever their credential (also `outpost identity revoke`, kept in the store). */
    revoked: z.array(idSchema).default([]),
  })
  .superRefine((s, ctx) => {
    const seen = new Map<string, string>();
    for (const [kind, list] of [['devices', s.devices], ['clients', s.clients]] as const) {
      list.forEach((a, i) => {
        const other = seen.get(a.id);
        if (other) ctx.addIssue({ code: 'custom', path: [kind, i, 'id'], message: `"${a.id}" is already an identity under identities.${other}` });
        seen.set(a.id, kind);
      });
    }
    const names = new Set<string>();
    s.groups.forEach((g, i) => {
      if (names.has(g.name)) ctx.addIssue({ code: 'custom', path: ['groups', i, 'name'], message: `duplicate group "${g.name}"` });
      names.add(g.name);
    });
  });

export type IdentitiesConfig = z.output<typeof identitiesSchema>;
