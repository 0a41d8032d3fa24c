/**
 * A gRPC client that calls like EMQX's grpc-erl does: h2c with prior knowledge, one connection per
 * pool worker, `content-type: application/grpc+proto`, `te: trailers`, `grpc-timeout`,
 * `grpc-encoding: identity`, `grpc-message-type`, `user-agent: grpc-erlang/0.1.0`.
 * It sends and returns raw bytes, so tests decode answers with a decoder of their choice.
 */
import * as http2 from "node:http2";
import * as net from "node:net";

/** The raw outcome of one call. */
export interface RawReply {
  /** HTTP status. */
  readonly httpStatus: number;
  /** `grpc-status` (from trailers, or from headers of a Trailers-Only reply); NaN if missing. */
  readonly grpcStatus: number;
  /** Decoded `grpc-message`, "" if none. */
  readonly grpcMessage: string;
  /** Message payloads received (each without its 5-byte prefix). */
  readonly messages: Uint8Array[];
  /** Compressed-flag of each received message. */
  readonly compressed: boolean[];
  /** Response headers (first HEADERS frame). */
  readonly headers: http2.IncomingHttpHeaders;
  /** Whether the reply was Trailers-Only (grpc-status in the first HEADERS frame). */
  readonly trailersOnly: boolean;
}

/** Options of one call. */
export interface RawCallOptions {
  /** `grpc-timeout` to send, as EMQX formats it (`"5S"`, `"800m"`); default `"5S"`; `null` for none. */
  readonly timeout?: string | null;
  /** Request message type for `grpc-message-type` (EMQX sends the fully qualified name). */
  readonly messageType?: string;
  /** Raw body override: send these bytes instead of a framed message. */
  readonly rawBody?: Uint8Array;
  /** Extra headers. */
  readonly headers?: Record<string, string>;
}

/** One pool of HTTP/2 connections to an ExHook server, like one EMQX node's pool. */
export interface EmqxLikeClient {
  /** Calls `/<service>/<rpc>` with `body` (an encoded request message) on connection `worker`. */
  call(path: string, body: Uint8Array, options?: RawCallOptions, worker?: number): Promise<RawReply>;
  /** Number of connections. */
  readonly poolSize: number;
  /** Closes the connections: gracefully, then cut after `graceMs` [1000] if streams are still open. */
  close(graceMs?: number): Promise<void>;
}

/** Opens `poolSize` h2c connections to `url` (e.g. `http://127.0.0.1:9000`), as EMQX does eagerly. */
export function createEmqxLikeClient(url: string, poolSize = 8): EmqxLikeClient {
  const sessions: http2.ClientHttp2Session[] = [];
  /** The TCP socket under each session (h2c), to cut it when a graceful close cannot finish. */
  const sockets: Array<net.Socket | undefined> = [];
  const u = new URL(url);
  for (let i = 0; i < poolSize; i++) {
    const s = http2.connect(
      url,
      u.protocol === "http:"
        ? { createConnection: () => (sockets[i] = net.connect(Number(u.port) || 80, u.hostname.replace(/^\[|\]$/g, ""))) }
        : {},
    );
    s.on("error", () => {});
    sessions.push(s);
  }
  let next = 0;
  return {
    poolSize,
    call(path, body, options = {}, worker) {
      const session = sessions[(worker ?? next++) % poolSize] as http2.ClientHttp2Session;
      const headers: http2.OutgoingHttpHeaders = {
        ":method": "POST",
        ":path": path,
        ":scheme": "http",
        "content-type": "application/grpc+proto",
        "user-agent": "grpc-erlang/0.1.0",
        te: "trailers",
        "grpc-encoding": "identity",
        ...(options.messageType ? { "grpc-message-type": options.messageType } : {}),
        ...(options.timeout === null ? {} : { "grpc-timeout": options.timeout ?? "5S" }),
        ...options.headers,
      };
      return new Promise<RawReply>((resolve, reject) => {
        const req = session.request(headers);
        let first: http2.IncomingHttpHeaders | undefined;
        let trailers: http2.IncomingHttpHeaders | undefined;
        const chunks: Buffer[] = [];
        req.on("response", (h) => (first = h));
        req.on("trailers", (t) => (trailers = t));
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("error", reject);
        req.on("close", () => {
          if (!first) {
            reject(new Error(`stream closed without a response (rst code ${req.rstCode})`));
            return;
          }
          const data = Buffer.concat(chunks);
          const messages: Uint8Array[] = [];
          const compressed: boolean[] = [];
          let off = 0;
          while (off + 5 <= data.length) {
            const len = data.readUInt32BE(off + 1);
            compressed.push((data[off] as number) === 1);
            messages.push(new Uint8Array(data.subarray(off + 5, off + 5 + len)));
            off += 5 + len;
          }
          const trailersOnly = first["grpc-status"] !== undefined;
          const src = trailersOnly ? first : (trailers ?? {});
          resolve({
            httpStatus: Number(first[":status"]),
            grpcStatus: Number(src["grpc-status"] ?? NaN),
            grpcMessage: decodeURIComponent(String(src["grpc-message"] ?? "")),
            messages,
            compressed,
            headers: first,
            trailersOnly,
          });
        });
        if (options.rawBody) {
          req.end(Buffer.from(options.rawBody));
        } else {
          const frame = Buffer.alloc(5 + body.length);
          frame.writeUInt32BE(body.length, 1);
          frame.set(body, 5);
          req.end(frame);
        }
      });
    },
    close(graceMs = 1000) {
      return Promise.all(
        sessions.map(
          (s, i) =>
            new Promise<void>((resolve) => {
              if (s.destroyed) return resolve();
              // A graceful close waits for the open streams, and then for the peer to close the
              // connection; a peer that died without the socket noticing does neither, so the
              // socket is cut after the grace period.
              const t = setTimeout(() => {
                s.destroy();
                sockets[i]?.destroy();
              }, graceMs);
              s.once("close", () => {
                clearTimeout(t);
                resolve();
              });
              if (!s.closed) s.close();
            }),
        ),
      ).then(() => undefined);
    },
  };
}
