/**
 * Errors on the ExHook port that are not ours: a peer that resets its connection, resets a stream
 * with an error code, sends GOAWAY with an error code, breaks the protocol or floods. Each one is
 * handled (an unhandled `'error'` event on a stream would end the process), logged at `debug`
 * (they are routine on a busy server: every EMQX node restart causes some) and counted by kind.
 *
 * Also counted here: internal errors, i.e. errors of our own while serving a call (a bug, not a
 * peer's doing), logged at `error` with their stack.
 */
import type * as http2 from "node:http2";
import type { Logger } from "../provider.js";

/** Kinds of peer errors (bounded: they are metric label values). */
export const PEER_ERROR_KINDS = ["connection_reset", "broken_pipe", "stream_reset", "goaway", "protocol", "timeout", "other"] as const;
/** A kind of peer error. */
export type PeerErrorKind = (typeof PEER_ERROR_KINDS)[number];

/** What {@link ServerErrors.counts} returns. */
export interface ErrorCounts {
  /** Peer errors by kind (stream and connection errors both count: one reset with 5 calls in flight counts 6). */
  readonly peer: Readonly<Record<PeerErrorKind, number>>;
  /** Errors of our own while serving a call (answered `INTERNAL`). */
  readonly internal: number;
}

/** The error bookkeeping of one server. */
export interface ServerErrors {
  /** The `'error'` listener every server stream gets before anything else (`this` is the stream). */
  readonly onStreamError: (this: http2.ServerHttp2Stream, err: Error) => void;
  /** For the server's `sessionError` event (connection-level errors). */
  onSessionError(err: Error, session?: http2.ServerHttp2Session): void;
  /** For errors of our own while serving a call. */
  onInternalError(err: unknown): void;
  counts(): ErrorCounts;
}

/** The kind of a Node error raised by a peer's behaviour. */
export function peerErrorKind(err: unknown): PeerErrorKind {
  const code = (err as { code?: unknown } | null)?.code;
  switch (code) {
    case "ECONNRESET":
      return "connection_reset";
    case "EPIPE":
      return "broken_pipe";
    case "ETIMEDOUT":
      return "timeout";
    case "ERR_HTTP2_STREAM_ERROR":
    case "ERR_HTTP2_STREAM_CANCEL":
      return "stream_reset";
    case "ERR_HTTP2_SESSION_ERROR":
    case "ERR_HTTP2_GOAWAY_SESSION":
      return "goaway";
    case "ERR_HTTP2_ERROR":
    case "ERR_HTTP2_INVALID_STREAM":
    case "ERR_HTTP2_STREAM_SELF_DEPENDENCY":
    case "ERR_HTTP2_INVALID_SESSION":
    case "ERR_HTTP2_TOO_MANY_INVALID_FRAMES":
    case "ERR_HTTP2_SESSION_TIMEOUT":
      return "protocol";
    default:
      return "other";
  }
}

/** Creates the error bookkeeping of one server. */
export function createServerErrors(logger: Logger | undefined): ServerErrors {
  const peer = Object.fromEntries(PEER_ERROR_KINDS.map((k) => [k, 0])) as Record<PeerErrorKind, number>;
  let internal = 0;
  const record = (err: Error, where: "stream" | "connection", remote: string | undefined) => {
    const kind = peerErrorKind(err);
    peer[kind]++;
    logger?.debug({ kind, code: (err as NodeJS.ErrnoException).code, err: err.message, where, remote }, "peer error on the ExHook port");
  };
  return {
    onStreamError(err) {
      record(err, "stream", remoteOf(this.session));
    },
    onSessionError(err, session) {
      record(err, "connection", remoteOf(session));
    },
    onInternalError(err) {
      internal++;
      const e = err instanceof Error ? err : new Error(String(err));
      logger?.error({ err: e.message, type: e.name, stack: e.stack }, "internal error while serving a call (answered INTERNAL)");
    },
    counts: () => ({ peer: { ...peer }, internal }),
  };
}

/** The peer's address, if the connection still knows it (never throws: this runs in error listeners). */
function remoteOf(session: http2.Http2Session | undefined): string | undefined {
  try {
    return session?.socket?.remoteAddress;
  } catch {
    return undefined;
  }
}
