import { z } from 'zod';
import { idSchema } from '../../runtime/contracts/index.js';

/** What one point of an MQTT child device may carry (docs/config.md). */
export const childPointSpecSchema = z
  .strictObject({
    type: z.enum(['number', 'boolean', 'string']),
    min: z.number().finite().optional(),
    max: z.number().finite().optional(),
    /** Allowed values of a string point. */
    enum: z.array(z.string().min(1).max(1024)).min(1).optional(),
    unit: z.string().min(1).max(32).optional(),
  })
  .superRefine((p, ctx) => {
    if ((p.min !== undefined || p.max !== undefined) && p.type !== 'number') ctx.addIssue({ code: 'custom', path: ['min'], message: 'min/max are for type number' });
    if (p.enum !== undefined && p.type !== 'string') ctx.addIssue({ code: 'custom', path: ['enum'], message: 'enum is for type string' });
    if (p.min !== undefined && p.max !== undefined && p.min > p.max) ctx.addIssue({ code: 'custom', path: ['min'], message: 'min must not be greater than max' });
  });

export const mqttDeviceSchema = z.strictObject({
  id: idSchema,
  protocol: z.literal('mqtt'),
  /**
   * The device's payload schema: its points and what each may carry. Without it, any point with
   * any scalar value is taken.
   */
  points: z.record(z.string().regex(/^[A-Za-z0-9_.:-]{1,128}$/, 'point names use letters, digits, "_", ".", ":" and "-"'), childPointSpecSchema).optional(),
  /** With `points`: refuse a message that carries a point not declared there (default), or take it as is. */
  strict: z.boolean().default(true),
});

export type MqttDeviceConfig = z.output<typeof mqttDeviceSchema>;
