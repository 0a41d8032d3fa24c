/**
 * The socket side of unary gRPC (src/protocol/grpc-unary.ts) on `node:http2` server streams:
 * reading a request body under a size bound, sending an answer (message + `grpc-status: 0`
 * trailers) or a Trailers-Only error. Every write checks that the stream can still take it and
 * never throws: a peer may reset a stream, or the whole connection, between any two lines here,
 * and an exception from a late write would be an uncaught one.
 */
import type * as http2 from "node:http2";
import { OK_TRAILERS, trailersOnlyHeaders, type GrpcContentType, type GrpcFailure } from "./grpc-unary.js";

// Constant header objects and options: `respond` copies them, so one of each serves every call.
// No `date` header (gRPC has no use for it; Node would add one to every answer).
const OK_HEADERS: Readonly<Record<GrpcContentType, http2.OutgoingHttpHeaders>> = {
  "application/grpc+proto": { ":status": 200, "content-type": "application/grpc+proto" },
  "application/grpc": { ":status": 200, "content-type": "application/grpc" },
};
const RESPOND_WITH_TRAILERS: http2.ServerStreamResponseOptions = {
  waitForTrailers: true,
  sendDate: false,
} as http2.ServerStreamResponseOptions;
const RESPOND_AND_END: http2.ServerStreamResponseOptions = { endStream: true, sendDate: false } as http2.ServerStreamResponseOptions;

/** One `wantTrailers` listener for every stream (no closure per call). */
function sendOkTrailers(this: http2.ServerHttp2Stream): void {
  if (this.destroyed || this.closed) return;
  try {
    this.sendTrailers(OK_TRAILERS);
  } catch {
    // The stream went away between the check and the write: nothing is owed to anyone any more.
  }
}

/** Whether an answer can still be written on `stream`. */
function writable(stream: http2.ServerHttp2Stream): boolean {
  return !stream.destroyed && !stream.closed && !stream.headersSent;
}

/**
 * Sends a unary answer: HEADERS, one uncompressed message, `grpc-status: 0` trailers. Returns
 * false when the stream could not take it any more (the peer reset it or left).
 */
export function respondMessage(stream: http2.ServerHttp2Stream, contentType: GrpcContentType, message: Uint8Array): boolean {
  if (!writable(stream)) return false;
  const frame = Buffer.allocUnsafe(message.length + 5);
  frame[0] = 0;
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  try {
    stream.respond(OK_HEADERS[contentType], RESPOND_WITH_TRAILERS);
    stream.on("wantTrailers", sendOkTrailers);
    stream.end(frame);
    return true;
  } catch {
    return false;
  }
}

/** Sends a Trailers-Only error: one HEADERS frame with the status and END_STREAM, no message. */
export function respondFailure(stream: http2.ServerHttp2Stream, contentType: GrpcContentType, failure: GrpcFailure): boolean {
  if (!writable(stream)) return false;
  try {
    stream.respond(trailersOnlyHeaders(contentType, failure), RESPOND_AND_END);
    return true;
  } catch {
    return false;
  }
}

/** Answers a request that is not gRPC at all (wrong content type): HTTP 415, as gRPC specifies. */
export function respondUnsupportedMediaType(stream: http2.ServerHttp2Stream): void {
  if (!writable(stream)) return;
  try {
    stream.respond({ ":status": 415, "content-type": "text/plain" }, RESPOND_AND_END);
  } catch {
    // gone already
  }
}

/**
 * Reads a whole request body, at most `maxBytes` (+5 for the envelope), and hands it to `onBody`
 * at END_STREAM; `undefined` when the bound was passed (what comes after is discarded, not kept).
 */
export function readBody(stream: http2.ServerHttp2Stream, maxBytes: number, onBody: (body: Buffer | undefined) => void): void {
  let first: Buffer | undefined;
  let chunks: Buffer[] | undefined;
  let size = 0;
  let tooLarge = false;
  stream.on("data", (chunk: Buffer) => {
    if (tooLarge) return;
    size += chunk.length;
    if (size > maxBytes + 5) {
      tooLarge = true;
      first = undefined;
      chunks = undefined;
      return;
    }
    if (first === undefined) first = chunk;
    else (chunks ??= [first]).push(chunk);
  });
  stream.on("end", () => onBody(tooLarge ? undefined : chunks ? Buffer.concat(chunks, size) : (first ?? EMPTY)));
}

const EMPTY = Buffer.alloc(0);
