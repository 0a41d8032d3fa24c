/**
 * TLS and mutual TLS with certificates made by openssl at test time: ALPN h2, client
 * certificates verified against the CA, and the certificate reloaded when its files change.
 */
import * as fs from "node:fs";
import type * as http2 from "node:http2";
import type { TLSSocket } from "node:tls";
import { allow, defineProvider } from "../src/index.js";
import { createExHookServer, type ExHookServer } from "../src/server.js";
import { decode, encode, servicePath } from "./helpers/proto.js";
import { closeSession, connect, createTestPki, grpcCall, memoryLogger, until, type TestPki } from "./helpers/ops.js";

let calls = 0;
const provider = defineProvider({
  onClientAuthenticate: () => {
    calls++;
    return allow();
  },
});
const loaded = encode("v3", "ProviderLoadedRequest", { broker: { version: "5.9.0" }, meta: { node: "emqx@tls" } });

let pki: TestPki;
beforeAll(() => {
  pki = createTestPki();
});
afterAll(() => pki.cleanup());

const peerCn = (s: http2.ClientHttp2Session) => String((s.socket as TLSSocket).getPeerCertificate().subject.CN);

describe("mutual TLS (ca given)", () => {
  let server: ExHookServer;
  let url: string;
  let serverFiles: { cert: string; key: string };
  const logger = memoryLogger();
  beforeAll(async () => {
    serverFiles = pki.issue("server", "exhook-server-1", { server: true });
    pki.issue("emqx", "emqx-node-1");
    server = createExHookServer({
      provider,
      port: 0,
      host: "127.0.0.1",
      tls: { ...serverFiles, ca: pki.caCert, reloadIntervalMs: 50 },
      logger,
    });
    url = `https://127.0.0.1:${(await server.listen()).port}`;
  });
  afterAll(() => server.close(500));

  const asEmqx = () => ({
    ca: fs.readFileSync(pki.caCert),
    cert: fs.readFileSync(`${pki.dir}/emqx.crt`),
    key: fs.readFileSync(`${pki.dir}/emqx.key`),
  });

  test("a client presenting a certificate signed by the CA is served over h2", async () => {
    const s = await connect(url, asEmqx());
    try {
      expect(s.alpnProtocol).toBe("h2");
      expect(peerCn(s)).toBe("exhook-server-1");
      const r = await grpcCall(s, servicePath("v3", "OnProviderLoaded"), loaded);
      expect(r.grpcStatus).toBe(0);
      expect(decode("v3", "LoadedResponse", r.message as Buffer)["hooks"]).toEqual([{ name: "client.authenticate", topics: [] }]);
      const a = await grpcCall(
        s,
        servicePath("v3", "OnClientAuthenticate"),
        encode("v3", "ClientAuthenticateRequest", { clientinfo: { clientid: "c" } }),
      );
      expect(decode("v3", "ValuedResponse", a.message as Buffer)["bool_result"]).toBe(true);
    } finally {
      await closeSession(s);
    }
  });

  test("a client presenting no certificate is refused before any call runs", async () => {
    const before = calls;
    const outcome = await connect(url, { ca: fs.readFileSync(pki.caCert) }).then(
      async (s) => {
        // TLS 1.3: the handshake completes on the client before the server checks the certificate,
        // so the refusal arrives as the connection being closed under the first call.
        const r = await grpcCall(s, servicePath("v3", "OnClientAuthenticate"), encode("v3", "ClientAuthenticateRequest", {})).then(
          () => "answered",
          (e: Error) => `refused: ${e.message}`,
        );
        s.destroy();
        return r;
      },
      (e: Error) => `refused: ${e.message}`,
    );
    expect(outcome).toMatch(/^refused: .*alert certificate required/);
    expect(calls).toBe(before);
    await until(
      () => logger.lines.some((l) => l.msg === "TLS handshake failed (client without a valid certificate?)"),
      "the TLS failure to be logged",
    );
  });

  test("a client certificate from another CA is refused", async () => {
    pki.newCa("rogue-ca");
    const rogue = pki.issue("rogue", "intruder", { signer: "rogue-ca" });
    const before = calls;
    const outcome = await connect(url, {
      ca: fs.readFileSync(pki.caCert),
      cert: fs.readFileSync(rogue.cert),
      key: fs.readFileSync(rogue.key),
    }).then(
      async (s) => {
        const r = await grpcCall(s, servicePath("v3", "OnClientAuthenticate"), encode("v3", "ClientAuthenticateRequest", {})).then(
          () => "answered",
          (e: Error) => `refused: ${e.message}`,
        );
        s.destroy();
        return r;
      },
      (e: Error) => `refused: ${e.message}`,
    );
    expect(outcome).toMatch(/^refused: /);
    expect(calls).toBe(before);
  });

  test("replacing the certificate files serves the new certificate without a restart", async () => {
    const old = await connect(url, asEmqx());
    expect(peerCn(old)).toBe("exhook-server-1");
    // Issue the new pair under other names, then move it over the served files (as a secret update does).
    const next = pki.issue("server2", "exhook-server-2", { server: true });
    fs.renameSync(next.key, serverFiles.key);
    fs.renameSync(next.cert, serverFiles.cert);
    let cn = "";
    await until(async () => {
      const s = await connect(url, asEmqx());
      cn = peerCn(s);
      await closeSession(s);
      return cn === "exhook-server-2";
    }, "the new certificate to be served");
    expect(cn).toBe("exhook-server-2");
    // The connection opened before the change keeps working.
    expect((await grpcCall(old, servicePath("v3", "OnClientAuthenticate"), encode("v3", "ClientAuthenticateRequest", {}))).grpcStatus).toBe(
      0,
    );
    await closeSession(old);
  });

  test("a broken replacement keeps the previous certificate (reloadTls reports false)", () => {
    fs.writeFileSync(serverFiles.cert, "not a certificate");
    expect(server.reloadTls()).toBe(false);
    expect(
      logger.lines.some(
        (l) => l.level === "warn" && l.msg === "TLS files changed but could not be loaded; keeping the previous certificate",
      ),
    ).toBe(true);
  });
});

describe("TLS without client certificates", () => {
  test("any client may connect; plain h2c clients are refused", async () => {
    const files = pki.issue("plain", "exhook-plain", { server: true });
    const server = createExHookServer({
      provider,
      port: 0,
      host: "127.0.0.1",
      tls: { ...files, reloadIntervalMs: 0 },
      logger: memoryLogger(),
    });
    const { port } = await server.listen();
    try {
      const s = await connect(`https://127.0.0.1:${port}`, { ca: fs.readFileSync(pki.caCert) });
      expect((await grpcCall(s, servicePath("v3", "OnProviderLoaded"), loaded)).grpcStatus).toBe(0);
      await closeSession(s);
      const h2c = await connect(`http://127.0.0.1:${port}`).then(
        (c) =>
          grpcCall(c, servicePath("v3", "OnProviderLoaded"), loaded)
            .then(
              () => "answered",
              () => "refused",
            )
            .finally(() => c.destroy()),
        () => "refused",
      );
      expect(h2c).toBe("refused");
    } finally {
      await server.close(500);
    }
  });

  test("bad TLS settings are refused when the server is created", () => {
    expect(() => createExHookServer({ provider, port: 0, tls: { cert: "/nonexistent.crt", key: "/nonexistent.key" } })).toThrow(
      /^cannot read TLS certificate \/nonexistent.crt: ENOENT/,
    );
    const files = pki.issue("lonely", "x", { server: true });
    expect(() => createExHookServer({ provider, port: 0, tls: { ...files, requestClientCert: true } })).toThrow(
      "tls.requestClientCert needs tls.ca (the CA that signs client certificates)",
    );
  });
});
