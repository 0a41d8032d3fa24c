/**
 * A JSON Web Key Set fetched from a URL, for JWT authentication: loaded at start, refreshed in the
 * background every `refreshMs`, and once more (at most every `cooldownMs`) when a token names a key
 * id the set does not have (key rotation). Logins never wait for a refresh while a set is held: a
 * failed refresh keeps the last good set (logged and counted) and is retried with backoff.
 *
 * Each fetch is bounded: `timeoutMs` for the whole request and body, `maxBytes` for the body (a
 * larger answer is cut off and refused), no redirects, HTTP 200 with a JSON `{ "keys": [...] }`.
 */
import type { Logger } from "../provider.js";

/** Options of {@link createJwksSource}. */
export interface JwksSourceOptions {
  readonly url: string;
  /** Background refresh period, in ms. Default 300000 (5 minutes). */
  readonly refreshMs?: number;
  /** Timeout of one fetch (connect, headers and body), in ms. Default 5000. */
  readonly timeoutMs?: number;
  /** Largest accepted body, in bytes. Default 1 MiB. */
  readonly maxBytes?: number;
  /** Least time between two fetches caused by unknown key ids, in ms. Default 30000. */
  readonly cooldownMs?: number;
  /** Extra request headers (e.g. an API key). */
  readonly headers?: Readonly<Record<string, string>> | undefined;
  readonly logger?: Logger;
}

/** A JWKS as jose's `createLocalJWKSet` takes it. */
export interface JsonWebKeySet {
  readonly keys: readonly Record<string, unknown>[];
}

/** Counters of a {@link JwksSource}. */
export interface JwksStats {
  readonly fetches: number;
  readonly failures: number;
  /** Keys in the set in use (0 before the first successful fetch). */
  readonly keys: number;
  /** `Date.now()` of the last successful fetch, 0 if none. */
  readonly lastSuccess: number;
  readonly lastError: string | undefined;
}

/** What {@link createJwksSource} returns. */
export interface JwksSource {
  /** The set in use; waits for the first fetch when none succeeded yet (throws if it fails). */
  current(): Promise<JsonWebKeySet>;
  /** Fetches again now when the cooldown allows (a token named an unknown key); resolves with the set in use. */
  refreshForUnknownKey(): Promise<JsonWebKeySet>;
  stats(): JwksStats;
  /** Stops the refresh timer. */
  close(): void;
}

/** Fetches a JWKS with the bounds above; rejects with a message saying what was wrong. */
export async function fetchJwks(
  url: string,
  options: { timeoutMs: number; maxBytes: number; headers?: Readonly<Record<string, string>> | undefined },
): Promise<JsonWebKeySet> {
  const signal = AbortSignal.timeout(options.timeoutMs);
  let res: Response;
  try {
    res = await fetch(url, { signal, redirect: "error", headers: { accept: "application/json", ...(options.headers ?? {}) } });
  } catch (err) {
    throw new Error(signal.aborted ? `no answer within ${options.timeoutMs} ms` : `request failed: ${causeText(err)}`);
  }
  try {
    if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
    const declared = Number(res.headers.get("content-length") ?? NaN);
    if (declared > options.maxBytes) throw new Error(`body of ${declared} bytes is larger than the limit of ${options.maxBytes}`);
    const chunks: Uint8Array[] = [];
    let size = 0;
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    for (;;) {
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await reader.read();
      } catch (err) {
        throw new Error(signal.aborted ? `body not complete within ${options.timeoutMs} ms` : `reading the body failed: ${causeText(err)}`);
      }
      if (r.done) break;
      size += r.value.byteLength;
      if (size > options.maxBytes) throw new Error(`body larger than the limit of ${options.maxBytes} bytes`);
      chunks.push(r.value);
    }
    let json: unknown;
    try {
      json = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      throw new Error("body is not JSON");
    }
    const keys = (json as { keys?: unknown } | null)?.keys;
    if (!Array.isArray(keys) || keys.some((k) => typeof k !== "object" || k === null))
      throw new Error('body is not a JWKS ({ "keys": [...] })');
    return { keys: keys as Record<string, unknown>[] };
  } finally {
    // Release the connection whatever happened (an unread body keeps the socket busy).
    await res.body?.cancel().catch(() => {});
  }
}

function causeText(err: unknown): string {
  const e = err as Error & { cause?: Error };
  return e.cause?.message ?? e.message;
}

/** Creates a JWKS source and starts its first fetch. */
export function createJwksSource(options: JwksSourceOptions): JwksSource {
  const refreshMs = options.refreshMs ?? 300_000;
  const cooldownMs = options.cooldownMs ?? 30_000;
  const bounds = { timeoutMs: options.timeoutMs ?? 5000, maxBytes: options.maxBytes ?? 1024 * 1024, headers: options.headers };
  const { logger } = options;
  let set: JsonWebKeySet | undefined;
  let inFlight: Promise<JsonWebKeySet> | undefined;
  let lastAttempt = 0;
  let fetches = 0;
  let failures = 0;
  let lastSuccess = 0;
  let lastError: string | undefined;
  let failedInARow = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let closed = false;

  function schedule(ms: number): void {
    if (closed) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => void load().catch(() => {}), ms);
    timer.unref();
  }

  function load(): Promise<JsonWebKeySet> {
    if (inFlight) return inFlight;
    lastAttempt = Date.now();
    fetches++;
    inFlight = fetchJwks(options.url, bounds)
      .then(
        (jwks) => {
          set = jwks;
          lastSuccess = Date.now();
          lastError = undefined;
          if (failedInARow > 0) logger?.info({ url: options.url, keys: jwks.keys.length }, "JWKS fetched again after failures");
          failedInARow = 0;
          schedule(refreshMs);
          return jwks;
        },
        (err: unknown) => {
          failures++;
          failedInARow++;
          lastError = (err as Error).message;
          // Retry sooner than the refresh period while failing: 1 s, 2 s, 4 s ... up to refreshMs.
          const retry = Math.min(1000 * 2 ** Math.min(failedInARow - 1, 20), refreshMs);
          logger?.warn(
            {
              url: options.url,
              err: lastError,
              retryInMs: retry,
              keeping: set ? `${set.keys.length} keys from ${new Date(lastSuccess).toISOString()}` : "none",
            },
            "JWKS fetch failed",
          );
          schedule(retry);
          throw new Error(`JWKS ${options.url}: ${lastError}`);
        },
      )
      .finally(() => (inFlight = undefined));
    return inFlight;
  }

  void load().catch(() => {});

  return {
    async current() {
      if (set) return set;
      return inFlight ?? load();
    },
    async refreshForUnknownKey() {
      if (inFlight) return inFlight.catch(() => set as JsonWebKeySet);
      if (Date.now() - lastAttempt < cooldownMs && set) return set;
      try {
        return await load();
      } catch (err) {
        if (set) return set;
        throw err;
      }
    },
    stats: () => ({ fetches, failures, keys: set?.keys.length ?? 0, lastSuccess, lastError }),
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
    },
  };
}
