/** Helpers for the operations tests (test/ops-*.test.ts). */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as os from "node:os";
import * as path from "node:path";
import type { Logger } from "../../src/provider.js";

/** A logger that keeps what it is given (for assertions) and prints nothing. */
export function memoryLogger(): Logger & { lines: Array<{ level: string; obj: object; msg: string | undefined }> } {
  const lines: Array<{ level: string; obj: object; msg: string | undefined }> = [];
  const at = (level: string) => (obj: object, msg?: string) => void lines.push({ level, obj, msg });
  return { lines, debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

/** GET over HTTP/1.1; resolves with status and body. */
export function httpGet(port: number, urlPath: string): Promise<{ status: number; body: string; contentType: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: "127.0.0.1", port, path: urlPath, agent: false }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body, contentType: String(res.headers["content-type"] ?? "") }));
      })
      .on("error", reject);
  });
}

/** Parses Prometheus text into `name{k="v",...}` (labels sorted) → value. */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable metric line: ${line}`);
    const labels = m[2] ? [...m[2].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((l) => `${l[1]}="${l[2]}"`).sort() : [];
    out.set(labels.length ? `${m[1]}{${labels.join(",")}}` : (m[1] as string), Number(m[3]));
  }
  return out;
}

/** A metric key as {@link parseMetrics} writes it. */
export function key(name: string, labels: Record<string, string> = {}): string {
  const l = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort();
  return l.length ? `${name}{${l.join(",")}}` : name;
}

/** Polls `check` until it returns true (failure guard only, not a timing assertion). */
export async function until(check: () => boolean | Promise<boolean>, what: string, guardMs = 10_000): Promise<void> {
  const stop = Date.now() + guardMs;
  while (!(await check())) {
    if (Date.now() > stop) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Certificates made with openssl in a temp dir: a CA, a server cert for 127.0.0.1, clients. */
export interface TestPki {
  readonly dir: string;
  readonly caCert: string;
  /** Issues `<name>.crt`/`<name>.key` signed by `signer` ("ca" or another CA's name); returns paths. */
  issue(name: string, cn: string, options?: { server?: boolean; signer?: string }): { cert: string; key: string };
  /** Creates another, unrelated CA. */
  newCa(name: string): string;
  cleanup(): void;
}

export function createTestPki(): TestPki {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "exhook-pki-"));
  const ssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  const ecKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  const newCa = (name: string) => {
    ssl("req", "-x509", ...ecKey, "-keyout", `${name}.key`, "-out", `${name}.crt`, "-days", "2", "-subj", `/CN=${name}`);
    return path.join(dir, `${name}.crt`);
  };
  const caCert = newCa("ca");
  let serial = 1;
  return {
    dir,
    caCert,
    newCa,
    issue(name, cn, options = {}) {
      const signer = options.signer ?? "ca";
      ssl("req", ...ecKey, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${cn}`);
      const ext = path.join(dir, `${name}.ext`);
      fs.writeFileSync(
        ext,
        options.server ? "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n" : "extendedKeyUsage=clientAuth\n",
      );
      ssl(
        "x509",
        "-req",
        "-in",
        `${name}.csr`,
        "-CA",
        `${signer}.crt`,
        "-CAkey",
        `${signer}.key`,
        "-set_serial",
        String(serial++),
        "-out",
        `${name}.crt`,
        "-days",
        "2",
        "-extfile",
        ext,
      );
      return { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
    },
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

/** The outcome of one raw gRPC call. */
export interface Reply {
  readonly grpcStatus: number;
  readonly grpcMessage: string;
  readonly message: Buffer | undefined;
}

/** One unary gRPC call on an open session, EMQX-style headers, raw bytes in and out. */
export function grpcCall(session: http2.ClientHttp2Session, urlPath: string, body: Uint8Array, timeout = "5S"): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = session.request({
      ":method": "POST",
      ":path": urlPath,
      "content-type": "application/grpc+proto",
      te: "trailers",
      "grpc-timeout": timeout,
      "grpc-encoding": "identity",
      "user-agent": "grpc-erlang/0.1.0",
    });
    let head: http2.IncomingHttpHeaders | undefined;
    let trailers: http2.IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    req.on("response", (h) => (head = h));
    req.on("trailers", (t) => (trailers = t));
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("error", reject);
    req.on("close", () => {
      if (!head) return reject(new Error(`no response (rst code ${req.rstCode})`));
      const src = head["grpc-status"] !== undefined ? head : (trailers ?? {});
      const data = Buffer.concat(chunks);
      resolve({
        grpcStatus: Number(src["grpc-status"] ?? NaN),
        grpcMessage: decodeURIComponent(String(src["grpc-message"] ?? "")),
        message: data.length >= 5 ? data.subarray(5, 5 + data.readUInt32BE(1)) : undefined,
      });
    });
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    frame.set(body, 5);
    req.end(frame);
  });
}

/** Opens an HTTP/2 session and waits until it is connected (rejects on a failed handshake). */
export function connect(url: string, options: http2.SecureClientSessionOptions = {}): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(url, options);
    s.once("connect", () => {
      s.off("error", reject);
      s.on("error", () => {});
      resolve(s);
    });
    s.once("error", reject);
  });
}

export function closeSession(s: http2.ClientHttp2Session): Promise<void> {
  return new Promise((r) => (s.closed || s.destroyed ? r() : s.close(() => r())));
}
