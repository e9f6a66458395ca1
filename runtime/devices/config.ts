import { z } from 'zod';
import { idSchema, leafPathSchema } from '../contracts/index.js';

/**
 * Fields every device entry of the site config may carry, whatever its protocol (docs/config.md):
 * what the device is, for the inventory and for configurations' target conditions, and its bound
 * twin properties.
 */
export const deviceInventoryFields = {
  model: z.string().min(1).max(128).optional(),
  firmware: z.string().min(1).max(64).optional(),
  labels: z.record(z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'label names use letters, digits, "_" and "-"'), z.string().max(256)).optional(),
  /**
   * Desired property path -> writable point: the property is set by a verified write of the point,
   * and reported as the point's read value (devices that speak no twin protocol).
   */
  twin: z.record(leafPathSchema, idSchema).optional(),
};
