import { z } from 'zod';
import { callTimeoutMsSchema, deadbandSchema, durationMsSchema, errorMessage, idSchema, topicFilterProblem } from '../runtime/contracts/index.js';
import { compileExpression } from './expression.js';
import { READING_FIELDS } from './filter.js';
import { MAX_WINDOW_VALUES } from './accumulator.js';
import { AGGREGATES } from './aggregates.js';

/** The site config's rules (docs/rules.md): filter and window rules, validated with their expressions compiled. */
const match = z.strictObject({
  device: z.string().min(1).default('*'),
  point: z.string().min(1).default('*'),
  /** An MQTT topic filter over `{device}/{point}`, e.g. `+/temp` or `boiler-1/#`. */
  topic: z
    .string()
    .min(1)
    .superRefine((t, ctx) => {
      const problem = topicFilterProblem(t);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    })
    .optional(),
});

/** A JSONata expression over a reading's fields, compiled here so that a bad one is refused with its position. */
const expression = z
  .string()
  .min(1)
  .superRefine((text, ctx) => {
    try {
      compileExpression(text, READING_FIELDS);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: errorMessage(err) });
    }
  });

const deadband = deadbandSchema;

export const filterRuleSchema = z
  .strictObject({
    id: idSchema,
    type: z.literal('filter'),
    match: match.default({ device: '*', point: '*' }),
    /** Pass readings with min <= value <= max; readings with bad quality always pass. */
    min: z.number().finite().optional(),
    max: z.number().finite().optional(),
    /** JSONata expression: the reading passes when it is true. */
    where: expression.optional(),
    /** JSONata expressions for the passed reading's new value, point name and unit. */
    set: z.strictObject({ value: expression.optional(), point: expression.optional(), unit: expression.optional() }).optional(),
    /** Readings whose quality is not good: pass untouched, drop, or filter them like good ones. */
    bad: z.enum(['pass', 'drop', 'filter']).default('pass'),
    /** What deadband, changeOfValue and rateLimit keep their memory per. */
    groupBy: z.array(z.enum(['device', 'point', 'unit'])).default(['device', 'point']),
    deadband: deadband.optional(),
    changeOfValue: z.boolean().default(false),
    rateLimit: z.strictObject({ count: z.number().int().positive().default(1), perMs: durationMsSchema }).optional(),
    /**
     * cloud (outbox), alert (an alert reading to the outbox), mqtt (local broker), write (a device
     * point, through its driver's write capability), call (a method of a child device). `modbus` is
     * the deprecated name of `write`.
     */
    route: z
      .enum(['cloud', 'alert', 'mqtt', 'write', 'call', 'modbus'])
      .default('cloud')
      .transform((r) => (r === 'modbus' ? 'write' : r)),
    /** Outbox stream of routes cloud and alert. */
    stream: idSchema.default('telemetry'),
    alert: z
      .strictObject({
        severity: z.enum(['info', 'warning', 'critical']).default('warning'),
        message: expression.optional(),
        /** transition: raised once when the condition starts, cleared once when it ends (default); every: an alert per matching reading. */
        mode: z.enum(['transition', 'every']).default('transition'),
        /** Transition mode: the condition that clears a raised alert (a hysteresis band); default: the raise condition no longer holds. */
        clearWhere: expression.optional(),
        /** Transition mode: the condition must hold this long before the alert is raised. */
        holdMs: z.number().int().min(0).default(0),
      })
      .optional(),
    mqtt: z
      .strictObject({
        /** Topic with {device} and {point} filled in. */
        topic: z.string().min(1).regex(/^[^#+\s]+$/, 'a topic to publish on must not contain wildcards or whitespace'),
        qos: z.union([z.literal(0), z.literal(1)]).default(0),
        retain: z.boolean().default(false),
      })
      .optional(),
    write: z
      .strictObject({
        device: idSchema,
        point: z.string().min(1),
        /** At most one write to the point per this long; newer values wait and replace older ones. */
        minIntervalMs: z.number().int().min(0).default(1000),
        /**
         * The devices (ids or patterns) whose readings this rule trusts to drive the write: a
         * reading from any other device never turns into actuation, whatever `match` says.
         */
        sources: z
          .array(z.string().min(1).max(128).regex(/^[A-Za-z0-9_.*?-]+$/, 'a device id or pattern'), {
            error: (iss) => (iss.input === undefined ? 'a rule that writes names the devices it trusts: sources: [DEVICE, …]' : undefined),
          })
          .min(1, 'a rule that writes names the devices it trusts: sources: [DEVICE, …]'),
      })
      .optional(),
    call: z
      .strictObject({
        /** The child device whose method is called, with the reading as payload. */
        device: idSchema,
        method: idSchema,
        /** How long to wait for its answer. */
        timeoutMs: callTimeoutMsSchema.default(10_000),
        /** As for write: the devices whose readings this rule trusts to drive the call. */
        sources: z
          .array(z.string().min(1).max(128).regex(/^[A-Za-z0-9_.*?-]+$/, 'a device id or pattern'), {
            error: (iss) => (iss.input === undefined ? 'a rule that calls names the devices it trusts: sources: [DEVICE, …]' : undefined),
          })
          .min(1, 'a rule that calls names the devices it trusts: sources: [DEVICE, …]'),
      })
      .optional(),
  })
  .refine((r) => r.min === undefined || r.max === undefined || r.min <= r.max, {
    message: 'min must not be greater than max',
    path: ['min'],
  })
  .refine((r) => r.route !== 'mqtt' || r.mqtt !== undefined, { message: 'route mqtt needs mqtt: { topic }', path: ['mqtt'] })
  .refine((r) => r.route !== 'write' || r.write !== undefined, { message: 'route write needs write: { device, point }', path: ['write'] })
  .refine((r) => r.route !== 'call' || r.call !== undefined, { message: 'route call needs call: { device, method, sources }', path: ['call'] });

/** Window kinds (rules/window-kinds.ts); the Node-RED editor offers the same list. */
export const WINDOW_KIND_NAMES = ['tumbling', 'hopping', 'sliding', 'session', 'count'] as const;

export const windowRuleSchema = z
  .strictObject({
    id: idSchema,
    type: z.literal('window'),
    match: match.default({ device: '*', point: '*' }),
    /** JSONata expression: only readings it is true for enter the window. */
    where: expression.optional(),
    kind: z.enum(WINDOW_KIND_NAMES).default('tumbling'),
    /** Length of tumbling (aligned to multiples of it since the epoch), hopping and sliding windows. */
    windowMs: durationMsSchema.min(100).optional(),
    /** Hopping windows: one starts every hopMs (aligned likewise). */
    hopMs: durationMsSchema.min(100).optional(),
    /** Session windows: closed after this long without a reading of the group. */
    gapMs: durationMsSchema.min(100).optional(),
    /** Count windows: readings per window. */
    count: z.number().int().min(1).max(MAX_WINDOW_VALUES).optional(),
    /** Whose clock places a reading in a window: the gateway's on arrival, or the reading's `ts`. */
    time: z.enum(['processing', 'event']).default('processing'),
    /** Event time: how long after its end a window still takes late readings. */
    allowedLatenessMs: z.number().int().min(0).default(0),
    groupBy: z.array(z.enum(['device', 'point', 'unit'])).default(['device', 'point']),
    aggregates: z.array(z.enum(AGGREGATES)).min(1),
    /** Decimals the numeric aggregates are rounded to (an average of 1.808 is not 1.8079999999999998). */
    precision: z.number().int().min(0).max(15).default(6),
    route: z.literal('cloud').default('cloud'),
    stream: idSchema.default('telemetry'),
  })
  .superRefine((r, ctx) => {
    const need = (field: 'windowMs' | 'hopMs' | 'gapMs' | 'count'): void => {
      if (r[field] === undefined) ctx.addIssue({ code: 'custom', path: [field], message: `a ${r.kind} window needs ${field}` });
    };
    if (r.kind === 'tumbling' || r.kind === 'hopping' || r.kind === 'sliding') need('windowMs');
    if (r.kind === 'hopping') {
      need('hopMs');
      if (r.hopMs !== undefined && r.windowMs !== undefined && r.windowMs / r.hopMs > 100) {
        ctx.addIssue({ code: 'custom', path: ['hopMs'], message: 'at most 100 windows may overlap: hopMs must be at least windowMs / 100' });
      }
      if (r.hopMs !== undefined && r.windowMs !== undefined && r.hopMs > r.windowMs) ctx.addIssue({ code: 'custom', path: ['hopMs'], message: 'hopMs must not be greater than windowMs' });
    }
    if (r.kind === 'session') need('gapMs');
    if (r.kind === 'count') need('count');
    if (r.kind === 'count' && r.time === 'event') ctx.addIssue({ code: 'custom', path: ['time'], message: 'count windows do not use time' });
  });

export const ruleSchema = z.discriminatedUnion('type', [filterRuleSchema, windowRuleSchema]);

export type RuleConfig = z.output<typeof ruleSchema>;
