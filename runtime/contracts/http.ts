import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { NextFunction, Request, RequestHandler, Response, Router } from 'express';
import type { z } from 'zod';

export type { NextFunction, Request, RequestHandler, Response, Router };

/**
 * A failure with an HTTP meaning, thrown by a route handler (or passed to `next`): answered with
 * `status` in the one error shape, `{"error": message, ...details}`.
 */
export class HttpError extends Error {
  override readonly name = 'HttpError';
  constructor(
    readonly status: number,
    message: string,
    readonly details?: Readonly<Record<string, unknown>>,
  ) {
    super(message);
  }
}

/** Why a request body was refused: counted by the listener that cares (`onRefused`). */
export type BodyRefusal = 'too-large' | 'not-json' | 'invalid-body';

export interface JsonBodyOptions {
  /** Bytes of body at most; default 1 MiB. */
  readonly limitBytes?: number;
  /** Called once per refused body, before it is answered. */
  readonly onRefused?: (reason: BodyRefusal) => void;
  /** Extra fields of the error answer (a protocol's own error fields, e.g. hawkBit's errorCode). */
  readonly errorFields?: (status: number, message: string) => Readonly<Record<string, unknown>>;
}

/**
 * What a token must hold for a request to the local API (docs/security.md): `admin` implies
 * `operate` implies `read`.
 */
export type ApiScope = 'read' | 'operate' | 'admin';

/** How the API guards what is mounted under a prefix. */
export interface MountOptions {
  /**
   * The scope every request under the prefix needs, whatever its method. Default: `read` for GET
   * and HEAD, `operate` for the rest. Say `admin` for configuration, identities and tokens.
   */
  readonly scope?: ApiScope;
  /**
   * The handler authenticates its callers itself (the Node-RED editor's own login): no API token is
   * asked for, and no JSON content type; the Host and Origin checks still apply.
   */
  readonly ownAuth?: boolean;
}

export interface HttpListener {
  readonly port: number;
  /** The node:http server (for handlers that also take WebSocket upgrades). */
  readonly server: Server;
  /** Closes the listener and every connection it holds. */
  close(): Promise<void>;
}

/**
 * The gateway's one HTTP layer (express) as components see it: one router type, one JSON body
 * reader with limits, one error shape, and the mapping of domain errors to statuses. Components
 * register their routes; they never build servers or error bodies of their own.
 */
export interface HttpHost {
  /** A new router for a component's routes. */
  router(): Router;
  /**
   * Reads the request's JSON body (any content type; empty means `{}`) and checks it against
   * `schema`; `req.body` is then the parsed value. A body that is too large, not JSON or not valid
   * is answered 413 / 400 naming what was wrong, and the handlers after it do not run.
   */
  jsonBody<T>(schema: z.ZodType<T>, opts?: JsonBodyOptions): RequestHandler;
  /**
   * Serves `handler` on the gateway's API listener under `prefix` (`/api/v1/ota`, `/red`). Every
   * request needs an API token (`opts` says which scope) unless the handler authenticates itself.
   */
  mount(prefix: string, handler: RequestHandler | Router, opts?: MountOptions): void;
  /**
   * Serves `handler` on a listener of its own (the update server). Unknown paths and errors are
   * answered in the one error shape; `errorFields` adds a protocol's own fields to it.
   */
  listen(
    opts: {
      readonly name: string;
      readonly host: string;
      readonly port: number;
      readonly keepAliveTimeoutMs?: number;
      readonly errorFields?: JsonBodyOptions['errorFields'];
      /**
       * Sees each request before the router and returns true when it answered it: for one hot
       * route whose requests are many and cheap to answer (the update server's artifact ranges),
       * which then skips the router's work per request. It must answer exactly as the router would;
       * what it throws is answered like a failed handler.
       */
      readonly preRoute?: (req: IncomingMessage, res: ServerResponse) => boolean;
    },
    handler: Router,
  ): Promise<HttpListener>;
  /** Answers `status` in the one error shape. */
  sendError(res: ServerResponse, status: number, message: string, details?: Readonly<Record<string, unknown>>): void;
}
