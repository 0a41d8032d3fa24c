/**
 * A throwaway PostgreSQL cluster a test owns, so it can stop and start it under load without
 * disturbing the shared one (scripts/with-postgres.sh) other test files use. Binaries: from
 * EXHOOK_TEST_PG_BIN (set by with-postgres.sh), else pg_config or the newest
 * /usr/lib/postgresql/<n>/bin. As root, initdb and postgres run as the `postgres` user.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";

/** The binaries directory, or undefined when PostgreSQL is not installed. */
export function pgBinDir(): string | undefined {
  const fromEnv = process.env["EXHOOK_TEST_PG_BIN"];
  if (fromEnv && existsSync(path.join(fromEnv, "initdb"))) return fromEnv;
  try {
    const d = execFileSync("pg_config", ["--bindir"], { encoding: "utf8" }).trim();
    if (existsSync(path.join(d, "initdb"))) return d;
  } catch {
    // no pg_config
  }
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => existsSync(path.join(root, v, "bin", "initdb")))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? path.join(root, versions[0], "bin") : undefined;
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
    s.on("error", reject);
  });
}

/** A running cluster. */
export interface PgCluster {
  /** `postgres://postgres@127.0.0.1:<port>/postgres`. */
  readonly url: string;
  /** `pg_ctl stop -m fast`: connections are closed, new ones refused. */
  stop(): void;
  /** `pg_ctl start -w`. */
  start(): void;
  /** Stops (immediate) and deletes it. */
  destroy(): void;
}

/** Creates and starts a cluster (a second or two). */
export async function startPgCluster(bin: string): Promise<PgCluster> {
  const dir = mkdtempSync(path.join(tmpdir(), "exhook-pgc-"));
  const runAs = process.getuid?.() === 0 ? (process.env["EXHOOK_TEST_PG_RUNAS"] ?? "postgres") : undefined;
  if (runAs) {
    if (spawnSync("id", [runAs]).status !== 0)
      execFileSync("useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", runAs]);
    const uid = Number(execFileSync("id", ["-u", runAs], { encoding: "utf8" }).trim());
    chownSync(dir, uid, -1);
  }
  const run = (cmd: string, args: string[]) => {
    const argv = runAs ? ["runuser", ["-u", runAs, "--", path.join(bin, cmd), ...args]] : [path.join(bin, cmd), args];
    const r = spawnSync(argv[0] as string, argv[1] as string[], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${r.status}): ${r.stderr}${r.stdout}`);
  };
  const port = await freePort();
  const data = path.join(dir, "data");
  run("initdb", ["-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync"]);
  const start = () =>
    run("pg_ctl", [
      "-D",
      data,
      "-l",
      path.join(dir, "server.log"),
      "-w",
      "-t",
      "30",
      "-o",
      `-c listen_addresses=127.0.0.1 -p ${port} -k ${dir} -c fsync=off -c full_page_writes=off`,
      "start",
    ]);
  start();
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    stop: () => run("pg_ctl", ["-D", data, "-m", "fast", "-w", "stop"]),
    start,
    destroy() {
      try {
        run("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]);
      } catch {
        // already stopped
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
