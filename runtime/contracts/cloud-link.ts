/**
 * The cloud link as other parts see it (the uplink provides it): downlink subscriptions, and the
 * gate that other traffic (artifact downloads) passes through, so that sync windows, the rate cap
 * and the daily budget of a metered link hold for everything that crosses it.
 */
export interface CloudLink extends ArtifactLink {
  /**
   * Messages the cloud sends on `filter` (QoS 1, subscribed again on every connection). Handlers
   * run on the MQTT client's event; one that throws is logged and does not affect the others.
   */
  subscribe(filter: string, handler: (topic: string, payload: Buffer) => void): void;
  /** Called each time the link comes up (e.g. to resume downloads at once). */
  onLinkUp(fn: () => void): void;
}

/** The link as an artifact download needs it: the gate, and the download itself. */
export interface ArtifactLink extends LinkGate {
  /**
   * Brings `target.path` up to `target.size` bytes from the cloud origin, resuming from what the
   * file holds (HTTP Range); resolves with the bytes fetched by this call, rejects with FetchError.
   * The caller verifies the digest.
   */
  download(target: FetchTarget, opts?: FetchOptions): Promise<number>;
}

/** What the cloud link allows other traffic (sync windows, metered budget). */
export interface LinkGate {
  /** Milliseconds until other traffic may use the link; 0: now. */
  delayMs(): number;
  /** Closed until a sync window opens or the daily budget renews (not just held by the rate cap). */
  closed(): boolean;
  /** Bytes other traffic took from the link. */
  spend(bytes: number): void;
}

export interface FetchTarget {
  readonly url: string;
  readonly size: number;
  /** The file the bytes go to; what it holds already is kept and the rest requested (HTTP Range). */
  readonly path: string;
}

export interface FetchOptions {
  readonly signal?: AbortSignal | undefined;
  /** Abort when the origin sends nothing for this long. */
  readonly idleTimeoutMs?: number | undefined;
  readonly headers?: Readonly<Record<string, string>> | undefined;
  /**
   * Called with each chunk's size as it arrives, before it is written: may throw to stop the
   * transfer (the chunk is not written; what the file holds stays for the next call).
   */
  readonly admit?: ((bytes: number) => void) | undefined;
  /**
   * Called after each chunk is written: may wait (throttling the transfer: the origin is held back
   * by TCP flow control) or throw to stop it (the chunk is kept).
   */
  readonly pace?: (() => Promise<void> | void) | undefined;
  /** Called as bytes arrive: bytes in the file so far, and of them fetched by this call. */
  readonly onProgress?: ((have: number, fetched: number) => void) | undefined;
}

/** A download failed; `retryable` is false when trying again cannot help (the origin refuses or serves something else). */
export class FetchError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'FetchError';
  }
}

/** A transfer stopped on purpose (the link closed for downloads); it resumes from the file later. */
export class DownloadPaused extends FetchError {
  constructor(
    message: string,
    /** Milliseconds until the link is expected to allow downloads again. */
    readonly resumeInMs: number,
  ) {
    super(message, true);
    this.name = 'DownloadPaused';
  }
}
