/**
 * The one way to turn anything thrown into a message for a log line, a status field or an HTTP
 * error: an Error's message (with its cause's, when it has one), else the value as text.
 */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) {
    const cause = err.cause instanceof Error && !err.message.includes(err.cause.message) ? ` (${err.cause.message})` : '';
    return `${err.message}${cause}`;
  }
  if (typeof err === 'string') return err;
  if (err !== null && typeof err === 'object' && typeof (err as { message?: unknown }).message === 'string') return (err as { message: string }).message;
  return String(err);
}
