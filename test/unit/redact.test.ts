import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { redactText, redactUrl } from '../../runtime/contracts/index.js';
import { createLogger } from '../../runtime/logger.js';
import { waitFor } from '../helpers/wait.js';

describe('redactUrl', () => {
  it('replaces the user info of a broker URL and keeps host and port', () => {
    expect(redactUrl('mqtts://user:s3cret@cloud.example:8883')).toBe('mqtts://***@cloud.example:8883');
    expect(redactUrl('mqtt://token-only@cloud.example')).toBe('mqtt://***@cloud.example');
  });

  it('replaces the values of credential query parameters and keeps the others', () => {
    const out = redactUrl('https://origin.example/a.swu?X-Amz-Signature=abc123&X-Amz-Credential=AKIA%2Fx&part=2&access_token=t0k');
    expect(out).not.toMatch(/abc123|AKIA|t0k/);
    expect(out).toContain('part=2');
    expect(redactUrl('https://origin.example/a#access_token=frag&x=1')).not.toContain('frag');
  });

  it('returns a URL without secrets byte for byte', () => {
    for (const u of ['mqtt://127.0.0.1:1883', 'https://origin.example/a%20b.swu?part=2', 'tcp://[::1]:1883']) expect(redactUrl(u)).toBe(u);
  });

  it('redacts the query of a request target as an HTTP server logs it', () => {
    expect(redactUrl('/api/v1/x?access_token=tk&limit=5')).toBe('/api/v1/x?access_token=***&limit=5');
    expect(redactUrl('/api/v1/status')).toBe('/api/v1/status');
  });

  it('takes user info out of text that is not a URL', () => {
    expect(redactUrl('bad //u:p@host')).toBe('bad //***@host');
  });
});

describe('redactText', () => {
  it('redacts every URL and Authorization credential in a message, and keeps JSON valid', () => {
    const line = JSON.stringify({
      err: 'Request cannot be constructed from a URL that includes credentials: https://alice:pw-1@o.example/f?token=tk-2',
      h: 'authorization: Bearer bearer-3; TargetToken target-4',
    });
    const out = redactText(line);
    expect(out).not.toMatch(/alice|pw-1|tk-2|bearer-3|target-4/);
    expect(() => JSON.parse(out) as unknown).not.toThrow();
  });
});

describe('createLogger', () => {
  it('keeps secrets out of every level, trace included, by field name and inside any text', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-log-'));
    try {
      const file = join(dir, 'log.jsonl');
      const log = createLogger({ level: 'trace', destination: file }) as ReturnType<typeof createLogger> & { trace(o: object, m?: string): void; flush(cb: (err?: Error) => void): void };
      log.trace({ opts: { password: 'pw-A', tls: { key: 'key-B' } }, headers: { authorization: 'Basic auth-C' } }, 'options');
      log.child({ url: 'mqtts://u:pw-D@h' }).info('child with a URL binding');
      log.error({ err: new Error('connect to mqtts://u:pw-E@h:8883 failed') }, 'an Error object');
      log.warn({ url: '/api/v1/dead-letters?token=pw-J' }, 'message naming https://o.example/a?sig=pw-F');
      log.debug({ token: 'pw-G', passwordHash: '$2b$10$pw-H', targetTokens: { dev: 'pw-I' } }, 'fields');
      // The destination opens its file asynchronously; the lines arrive once it has.
      const read = (): string => (existsSync(file) ? readFileSync(file, 'utf8') : '');
      await waitFor('five lines', () => {
        log.flush(() => undefined);
        return read().split('\n').filter(Boolean).length === 5;
      });
      const text = read();
      expect(text).not.toMatch(/pw-[A-J]|key-B|auth-C/);
      expect(text).toContain('***');
      for (const line of text.split('\n').filter(Boolean)) expect(() => JSON.parse(line) as unknown).not.toThrow();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
