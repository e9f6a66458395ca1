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
