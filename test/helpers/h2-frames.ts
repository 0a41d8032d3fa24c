/**
 * Hand-built HTTP/2 frames over a plain `net.Socket`, for the peer faults `node:http2` will not
 * commit as a client (CONTINUATION floods, RST_STREAM right behind HEADERS, GOAWAY floods, a
 * client that never reads). Frame layout (RFC 9113 §4.1): 24-bit length, type, flags, 31-bit
 * stream id, payload. Header blocks are HPACK literals without indexing (RFC 7541 §6.2.2), no
 * Huffman, so every header costs its bytes and nothing is remembered between blocks.
 */
import * as net from "node:net";

export const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

export const FrameType = {
  DATA: 0,
  HEADERS: 1,
  PRIORITY: 2,
  RST_STREAM: 3,
  SETTINGS: 4,
  PUSH_PROMISE: 5,
  PING: 6,
  GOAWAY: 7,
  WINDOW_UPDATE: 8,
  CONTINUATION: 9,
} as const;
export const Flag = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;

/** One frame. */
export function frame(type: number, flags: number, streamId: number, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const out = Buffer.alloc(9 + payload.length);
  out.writeUIntBE(payload.length, 0, 3);
  out[3] = type;
  out[4] = flags;
  out.writeUInt32BE(streamId & 0x7fffffff, 5);
  out.set(payload, 9);
  return out;
}

/** HPACK integer with an N-bit prefix (RFC 7541 §5.1). */
function hpackInt(value: number, prefixBits: number, first = 0): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [first | value];
  const out = [first | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}

function hpackString(text: string): Buffer {
  const bytes = Buffer.from(text, "latin1");
  return Buffer.concat([Buffer.from(hpackInt(bytes.length, 7)), bytes]);
}

/** A header block: every header as a literal without indexing, new name. */
export function headerBlock(headers: ReadonlyArray<readonly [string, string]>): Buffer {
  return Buffer.concat(headers.flatMap(([name, value]) => [Buffer.from([0x00]), hpackString(name), hpackString(value)]));
}

/** The request headers of a unary gRPC call, EMQX-style. */
export function grpcRequestHeaders(path: string, timeout = "5S"): Array<[string, string]> {
  return [
    [":method", "POST"],
    [":scheme", "http"],
    [":path", path],
    [":authority", "127.0.0.1"],
    ["content-type", "application/grpc+proto"],
    ["te", "trailers"],
    ["grpc-timeout", timeout],
  ];
}

/** A 5-byte gRPC envelope around `message`. */
export function grpcFrame(message: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + message.length);
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}

export const settings = (values: ReadonlyArray<readonly [number, number]> = []): Buffer => {
  const payload = Buffer.alloc(6 * values.length);
  values.forEach(([id, v], i) => {
    payload.writeUInt16BE(id, 6 * i);
    payload.writeUInt32BE(v, 6 * i + 2);
  });
  return frame(FrameType.SETTINGS, 0, 0, payload);
};
export const settingsAck = (): Buffer => frame(FrameType.SETTINGS, Flag.ACK, 0);
export const headers = (streamId: number, block: Uint8Array, flags: number = Flag.END_HEADERS): Buffer =>
  frame(FrameType.HEADERS, flags, streamId, block);
export const continuation = (streamId: number, block: Uint8Array, flags: number = 0): Buffer =>
  frame(FrameType.CONTINUATION, flags, streamId, block);
export const data = (streamId: number, payload: Uint8Array, flags: number = Flag.END_STREAM): Buffer =>
  frame(FrameType.DATA, flags, streamId, payload);
/** A body as DATA frames of at most 16 KiB (the default SETTINGS_MAX_FRAME_SIZE), END_STREAM on the last. */
export const dataFrames = (streamId: number, payload: Uint8Array, maxFrameSize = 16384): Buffer => {
  const frames: Buffer[] = [];
  for (let off = 0; off < payload.length || frames.length === 0; off += maxFrameSize) {
    const end = Math.min(payload.length, off + maxFrameSize);
    frames.push(frame(FrameType.DATA, end === payload.length ? Flag.END_STREAM : 0, streamId, payload.subarray(off, end)));
  }
  return Buffer.concat(frames);
};
export const rstStream = (streamId: number, code: number): Buffer => {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code);
  return frame(FrameType.RST_STREAM, 0, streamId, p);
};
export const ping = (opaque = 0): Buffer => {
  const p = Buffer.alloc(8);
  p.writeUInt32BE(opaque, 4);
  return frame(FrameType.PING, 0, 0, p);
};
export const goaway = (lastStreamId: number, code: number): Buffer => {
  const p = Buffer.alloc(8);
  p.writeUInt32BE(lastStreamId & 0x7fffffff);
  p.writeUInt32BE(code, 4);
  return frame(FrameType.GOAWAY, 0, 0, p);
};
export const windowUpdate = (streamId: number, increment: number): Buffer => {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(increment);
  return frame(FrameType.WINDOW_UPDATE, 0, streamId, p);
};

/** SETTINGS identifiers. */
export const Setting = {
  HEADER_TABLE_SIZE: 1,
  ENABLE_PUSH: 2,
  MAX_CONCURRENT_STREAMS: 3,
  INITIAL_WINDOW_SIZE: 4,
  MAX_FRAME_SIZE: 5,
  MAX_HEADER_LIST_SIZE: 6,
} as const;

/** A raw connection: the preface and our SETTINGS are sent on connect. */
export interface RawH2 {
  readonly socket: net.Socket;
  /** Writes bytes; resolves once they are handed to the kernel (or the socket is gone). */
  write(bytes: Uint8Array): Promise<void>;
  /** Frames the server sent so far (parsed; empty when reading is paused). */
  readonly received: Array<{ type: number; flags: number; streamId: number; payload: Buffer }>;
  /** Resolves when the socket is closed (by either side). */
  readonly closed: Promise<void>;
}

/**
 * Opens a raw HTTP/2 connection. `read: false` never reads the socket (the kernel buffers fill,
 * then the server's writes stall), which is what a client that stops reading looks like.
 */
export function rawConnect(
  port: number,
  options: { settings?: ReadonlyArray<readonly [number, number]>; read?: boolean } = {},
): Promise<RawH2> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    const received: RawH2["received"] = [];
    let buf = Buffer.alloc(0);
    const closed = new Promise<void>((r) => socket.once("close", () => r()));
    socket.on("error", () => {});
    if (options.read === false) socket.pause();
    else {
      socket.on("data", (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        while (buf.length >= 9) {
          const len = buf.readUIntBE(0, 3);
          if (buf.length < 9 + len) break;
          const f = {
            type: buf[3] as number,
            flags: buf[4] as number,
            streamId: buf.readUInt32BE(5) & 0x7fffffff,
            payload: buf.subarray(9, 9 + len),
          };
          received.push(f);
          buf = buf.subarray(9 + len);
          // Answer the server's SETTINGS so it applies ours.
          if (f.type === FrameType.SETTINGS && !(f.flags & Flag.ACK) && !socket.destroyed) socket.write(settingsAck());
        }
      });
    }
    socket.once("connect", () => {
      socket.off("error", reject);
      socket.write(Buffer.concat([PREFACE, settings(options.settings ?? [])]));
      resolve({
        socket,
        received,
        closed,
        write: (bytes) => new Promise<void>((r) => (socket.destroyed ? r() : socket.write(bytes, () => r()))),
      });
    });
    socket.once("error", reject);
  });
}
