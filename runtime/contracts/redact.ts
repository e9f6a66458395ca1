/**
 * Secrets out of what the gateway writes for people: log lines, status, error details. A URL may
 * carry credentials in its user info (`mqtts://user:pass@host`, RFC 3986 §3.2.1 calls that use
 * deprecated, yet brokers and artifact origins accept it) and in its query (`?access_token=`,
 * presigned S3/GCS/Azure links carry their signature there). The one place that knows how to
 * take them out.
 */

/** What replaces a secret: visible, so a reader knows something was there. */
export const REDACTED = '***';

/**
 * Query parameter names that carry credentials: OAuth tokens, API keys, passwords, signatures of
 * presigned links (X-Amz-Signature, X-Goog-Signature, Azure's `sig`), session ids. Matching by
 * substring over-redacts a harmless `keyword=`, which costs nothing but a less useful log line.
 */
const SENSITIVE_PARAM = /token|secret|passw|pwd|auth|credential|signature|^sig$|key|session|jwt|^code$/i;

/** Whether a field or parameter name says its value is a secret. */
export function isSecretName(name: string): boolean {
  return SENSITIVE_PARAM.test(name);
}

function redactParams(params: URLSearchParams): boolean {
  let changed = false;
  for (const name of new Set(params.keys())) {
    if (isSecretName(name)) {
      params.set(name, REDACTED);
      changed = true;
    }
  }
  return changed;
}

/**
 * `url` with its user info replaced (`mqtts://***@host`) and the values of sensitive query (and
 * fragment) parameters replaced; returned unchanged, byte for byte, when it holds neither. Text
 * that does not parse as a URL loses anything between `//` and an `@`.
 */
export function redactUrl(url: string): string {
  // A request target (`/path?query`, as an HTTP server logs it) is read against a placeholder origin.
  const relative = url.startsWith('/') && !url.startsWith('//');
  let u: URL;
  try {
    u = relative ? new URL(url, 'http://h') : new URL(url);
  } catch {
    return url.replace(/\/\/[^/@\s]*@/, `//${REDACTED}@`);
  }
  let changed = false;
  if (u.username !== '' || u.password !== '') {
    u.username = REDACTED;
    u.password = '';
    changed = true;
  }
  if (u.search !== '' && redactParams(u.searchParams)) changed = true;
  if (u.hash.includes('=')) {
    const params = new URLSearchParams(u.hash.slice(1));
    if (redactParams(params)) {
      u.hash = params.toString();
      changed = true;
    }
  }
  if (!changed) return url;
  return relative ? `${u.pathname}${u.search}${u.hash}` : u.toString();
}

/** A URL in running text: a scheme, `://`, and what follows up to a space, a quote or a backslash (JSON escapes). */
const URL_IN_TEXT = /\b[a-z][a-z0-9+.-]{1,15}:\/\/[^\s"'<>\\`]+/gi;
/** Credentials of an HTTP Authorization header (RFC 9110 §11.6.2) and of hawkBit DDI (GatewayToken, TargetToken). */
const AUTH_IN_TEXT = /\b(Bearer|Basic|GatewayToken|TargetToken)\s+[A-Za-z0-9._~+/=-]{4,}/g;

/**
 * `text` (a log line, an error message) with every URL in it passed through `redactUrl` and the
 * credentials of Authorization headers replaced. Safe on serialized JSON: what it writes is plain
 * URL characters and it never crosses a quote or a backslash.
 */
export function redactText(text: string): string {
  if (!text.includes('://') && !/Bearer|Basic|Token/.test(text)) return text;
  return text.replace(URL_IN_TEXT, (m) => redactUrl(m)).replace(AUTH_IN_TEXT, (_m, scheme: string) => `${scheme} ${REDACTED}`);
}
