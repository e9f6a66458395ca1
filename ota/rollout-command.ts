import { z } from 'zod';
import { COMMAND_SIGNING_CONTEXT, signedManifestSchema } from '../runtime/contracts/index.js';
import type { TrustedKeys } from './manifest.js';

/**
 * Rollout commands from the cloud (`…/rollouts/{release}/command`, docs/ota.md): a signed
 * envelope like a release's, signed under its own context by a trusted release key. The payload
 * names the gateway and the release, so a command cannot be replayed on another gateway's or
 * release's topic; `at` (its issue time) makes it apply once (rollout.ts).
 */

export const rolloutCommandSchema = z.strictObject({
  gateway: z.string().min(1).max(128),
  release: z.string().min(1).max(64),
  action: z.enum(['pause', 'resume', 'abort']),
  at: z.number().int().positive(),
});
export type RolloutCommand = z.output<typeof rolloutCommandSchema>;

export type CommandRefusal = 'malformed' | 'unsigned' | 'bad-signature' | 'invalid' | 'wrong-target';

export class CommandRefused extends Error {
  constructor(
    readonly reason: CommandRefusal,
    message: string,
  ) {
    super(message);
    this.name = 'CommandRefused';
  }
}

/**
 * The command in a signed envelope received on the topic of `release`, once its signature
 * verified and it names this gateway and that release; else throws CommandRefused. The payload
 * is parsed only after its signature verified.
 */
export function openCommand(payload: Buffer | string, keys: TrustedKeys, gatewayId: string, release: string): RolloutCommand {
  let raw: unknown;
  try {
    raw = JSON.parse(payload.toString());
  } catch {
    throw new CommandRefused('malformed', 'rollout command is not JSON');
  }
  const env = signedManifestSchema.safeParse(raw);
  if (!env.success) {
    const unsigned = raw !== null && typeof raw === 'object' && !('signatures' in raw);
    throw new CommandRefused(unsigned ? 'unsigned' : 'malformed', unsigned ? 'rollout command is not signed (no "signatures")' : 'rollout command is not a signed envelope');
  }
  if (!keys.verify(env.data, COMMAND_SIGNING_CONTEXT)) throw new CommandRefused('bad-signature', `no valid signature by a trusted key (signed by: ${env.data.signatures.map((s) => s.keyId).join(', ')})`);
  let json: unknown;
  try {
    json = JSON.parse(env.data.payload);
  } catch {
    throw new CommandRefused('malformed', 'rollout command payload is not JSON');
  }
  const c = rolloutCommandSchema.safeParse(json);
  if (!c.success) throw new CommandRefused('invalid', `rollout command: ${c.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  if (c.data.gateway !== gatewayId || c.data.release !== release) {
    throw new CommandRefused('wrong-target', `rollout command for ${c.data.gateway}/${c.data.release} received as ${gatewayId}/${release}`);
  }
  return c.data;
}
