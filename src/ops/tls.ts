/**
 * TLS and mutual TLS for the ExHook port (EMQX `https://` server URLs): certificate, key and
 * optional client CA read from files, and reloaded without a restart when the files change
 * (cert-manager and Kubernetes secrets rotate files in place).
 */
import { readFileSync, unwatchFile, watchFile } from "node:fs";
import type * as http2 from "node:http2";
import { createSecureContext, type SecureContextOptions } from "node:tls";
import { ExHookConfigError } from "../errors.js";
import type { Logger } from "../provider.js";

/** TLS settings of the ExHook server (PEM file paths). */
export interface TlsFiles {
  /** Server certificate chain (PEM). */
  readonly cert: string;
  /** Server private key (PEM). */
  readonly key: string;
  /**
   * CA bundle (PEM) that client certificates must chain to. When given, clients must present a
   * certificate signed by it (mutual TLS: set `ssl.certfile`/`ssl.keyfile` in EMQX). Default: none,
   * any client may connect.
   */
  readonly ca?: string;
  /**
   * Whether to ask for and verify a client certificate. Default: `true` when `ca` is given, else
   * `false`.
   */
  readonly requestClientCert?: boolean;
  /**
   * How often to check the files for changes, in ms; 0 disables reloading. Default 5000.
   * Polling (stat) is used because it follows the symlink swaps Kubernetes does for secrets,
   * which `fs.watch` misses.
   */
  readonly reloadIntervalMs?: number;
}

/** Reads the files into `http2.createSecureServer` options (ALPN `h2` only). Throws on bad files. */
export function readTlsOptions(files: TlsFiles): http2.SecureServerOptions {
  const material = readMaterial(files);
  // Validates now (bad PEM, key not matching the certificate) rather than at the first handshake.
  createSecureContext(material);
  const verify = files.requestClientCert ?? files.ca !== undefined;
  if (verify && files.ca === undefined)
    throw new ExHookConfigError("tls.requestClientCert needs tls.ca (the CA that signs client certificates)");
  return {
    ...material,
    requestCert: verify,
    rejectUnauthorized: verify,
    // EMQX's gRPC client speaks HTTP/2 only; refusing HTTP/1.1 makes a misconfiguration obvious.
    allowHTTP1: false,
    ALPNProtocols: ["h2"],
  };
}

function readMaterial(files: TlsFiles): SecureContextOptions {
  const read = (path: string, what: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new ExHookConfigError(`cannot read TLS ${what} ${path}: ${(err as Error).message}`);
    }
  };
  return {
    cert: read(files.cert, "certificate"),
    key: read(files.key, "key"),
    ...(files.ca !== undefined ? { ca: read(files.ca, "CA") } : {}),
  };
}

/**
 * Watches the files and swaps the server's secure context when they change. New connections get
 * the new certificate; existing ones keep theirs. A half-written pair (new cert, old key) fails
 * validation and is retried at the next check. Returns a stop function.
 */
export function watchTls(
  server: http2.Http2SecureServer,
  files: TlsFiles,
  logger: Logger | undefined,
): { reload(): boolean; stop(): void } {
  const reload = (): boolean => {
    try {
      const material = readMaterial(files);
      createSecureContext(material);
      server.setSecureContext(material);
      logger?.info({ cert: files.cert }, "TLS certificate reloaded");
      return true;
    } catch (err) {
      logger?.warn(
        { err: (err as Error).message, cert: files.cert },
        "TLS files changed but could not be loaded; keeping the previous certificate",
      );
      return false;
    }
  };
  const interval = files.reloadIntervalMs ?? 5000;
  if (!Number.isFinite(interval) || interval < 0)
    throw new ExHookConfigError(`tls.reloadIntervalMs must be a non-negative number, got ${JSON.stringify(interval)}`);
  const paths = [files.cert, files.key, ...(files.ca !== undefined ? [files.ca] : [])];
  let pending: NodeJS.Timeout | undefined;
  const onChange = (cur: { mtimeMs: number; ino: number }, prev: { mtimeMs: number; ino: number }) => {
    if (cur.mtimeMs === prev.mtimeMs && cur.ino === prev.ino) return;
    // Cert and key usually change together: reload once after both writes.
    clearTimeout(pending);
    pending = setTimeout(reload, Math.min(200, interval));
    pending.unref();
  };
  if (interval > 0) for (const p of paths) watchFile(p, { interval, persistent: false }, onChange);
  return {
    reload,
    stop() {
      clearTimeout(pending);
      if (interval > 0) for (const p of paths) unwatchFile(p, onChange);
    },
  };
}
