import { z } from 'zod';

/**
 * Pieces of the site config schema that every room uses (docs/config.md). Each room owns the
 * schema of its own section (drivers/*, rules/, cloud-bridge/, ota/); runtime/config composes them.
 */

/** Ids of gateways, devices, points, rules and streams. */
export const idSchema = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9_.-]+$/, 'only letters, digits, "_", "." and "-" are allowed');

export const durationMsSchema = z.number().int().positive();

/** Deadband of a value: absolute, percent of the last value's magnitude, or both. */
export const deadbandSchema = z
  .strictObject({ absolute: z.number().finite().positive().optional(), percent: z.number().finite().positive().max(100).optional() })
  .refine((d) => d.absolute !== undefined || d.percent !== undefined, 'give absolute, percent or both');

/**
 * TLS of an MQTT client (the cloud link, an external site broker) for mqtts:// and ssl:// URLs:
 * `ca` (PEM file of the CA that signed the broker's certificate; default: the system's), `cert`
 * and `key` (PEM files; mutual TLS), `servername` (SNI / name to verify, when it differs from the
 * URL's host).
 */
export const clientTlsSchema = z
  .strictObject({
    ca: z.string().min(1).optional(),
    cert: z.string().min(1).optional(),
    key: z.string().min(1).optional(),
    servername: z.string().min(1).optional(),
    /** Never turn off outside a lab: false accepts any broker certificate. */
    rejectUnauthorized: z.boolean().default(true),
  })
  .refine((t) => (t.cert === undefined) === (t.key === undefined), { message: 'cert and key go together', path: ['cert'] });
export type ClientTlsConfig = z.output<typeof clientTlsSchema>;
