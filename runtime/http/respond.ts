import type { ServerResponse } from 'node:http';
import { errorMessage, HttpError, WriteRefused, type WriteRefusal } from '../contracts/index.js';

/** A JSON answer with an exact content type and length (HEAD gets the headers only). */
export function sendJson(res: ServerResponse, status: number, body: unknown, contentType = 'application/json'): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** The one error shape of every listener: `{"error": message, ...details}`. */
export function sendError(res: ServerResponse, status: number, message: string, details?: Readonly<Record<string, unknown>>): void {
  sendJson(res, status, { error: message, ...details });
}

/** Refused writes: nothing was sent to the device. */
const WRITE_STATUS: Record<WriteRefusal, number> = {
  'unknown-device': 404,
  'unknown-point': 404,
  'not-writable': 400,
  'invalid-value': 400,
  busy: 503,
};

/**
 * Domain errors to HTTP: the one place that knows which failure of a part means which status.
 * Undefined: an unexpected failure (answered 500 "internal error", logged).
 */
export function statusOf(err: unknown): { status: number; message: string; details?: Readonly<Record<string, unknown>> } | undefined {
  if (err instanceof HttpError) return { status: err.status, message: err.message, ...(err.details ? { details: err.details } : {}) };
  if (err instanceof WriteRefused) return { status: WRITE_STATUS[err.kind], message: err.message };
  // express' own errors (a path that cannot be decoded) carry a 4xx status.
  const status = (err as { status?: unknown; expose?: unknown } | null)?.status;
  if (typeof status === 'number' && status >= 400 && status < 500) return { status, message: errorMessage(err) };
  return undefined;
}
