/**
 * `users import` (EMQX CSV/JSON, mosquitto_passwd), `users export` (EMQX's format), `users
 * superuser`, and the change reports, against a real store; imported users then log in through the
 * real authenticator.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCommand } from "../src/commands/index";
import { createAuthenticator, openSqliteStore } from "../src/usecases/index";

let dir: string;
let n = 0;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), `exhook-users-cli-${n++}-`));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function run(args: string[], stdin = "") {
  const out: string[] = [];
  const err: string[] = [];
  const changed: string[] = [];
  // --create: the first command of each test makes the store (a missing store is an error otherwise).
  const code = await runCommand([...args, "--create"], {
    stdout: (t) => out.push(t),
    stderr: (t) => err.push(t),
    readStdin: async () => stdin,
    env: { EXHOOK_DATA_DIR: join(dir, "data") },
    onUserChanged: (u) => void changed.push(u),
  });
  return { code, out: out.join(""), err: err.join(""), changed };
}

const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

/** Logs in through the real authenticator on the CLI's store. */
async function login(username: string, password: string): Promise<string> {
  const store = openSqliteStore({ file: join(dir, "data", "exhook.db") });
  try {
    const auth = createAuthenticator({ store, throttle: false, cacheTtlMs: 0, rehash: false, scrypt: { N: 1024, r: 8, p: 1, keylen: 32 } });
    return (await auth.check(username, password, "c")).outcome;
  } finally {
    await store.close();
  }
}

// Vectors: EMQX sha256 with salt suffix of "s3cret" (python hashlib), bcrypt $2b$ of "s3cret" (python3-bcrypt).
const SALT = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6";
const SHA256_SUFFIX = "290ea70db0b5c6f061d878b8b8477d174f484209e25128708ae4920e79a33372";
const BCRYPT = "$2b$04$G3us/Dj34oNjejo/jbWOIOI8xEyR8VWNRmv1elYTyDIax7VbFJV8W";

test("EMQX CSV: invalid entries are reported by line and nothing is written; --dry-run counts; --skip-invalid imports the rest", async () => {
  const csv = file(
    "users.csv",
    [
      "user_id,password_hash,salt,is_superuser",
      `alice,${SHA256_SUFFIX},${SALT},true`,
      `"bob, the builder",${BCRYPT},,false`,
      "carol,abc,x,false",
      `alice,${SHA256_SUFFIX},${SALT},false`,
      "dave,only-two-fields",
      "",
    ].join("\n"),
  );
  const noAlgo = await run(["users", "import", csv]);
  expect(noAlgo.code).toBe(1);
  expect(noAlgo.err).toContain(`${csv}:2: not a bcrypt hash: give --algorithm`);

  const args = ["users", "import", csv, "--algorithm", "sha256", "--salt-position", "suffix"];
  const bad = await run(args);
  expect(bad.code).toBe(1);
  expect(bad.err.split("\n").filter(Boolean)).toEqual([
    `emqx-exhook: ${csv}:6: 2 fields, the header has 4`,
    `emqx-exhook: ${csv}:4: password_hash is not a sha256 hash (64 hex digits)`,
    `emqx-exhook: ${csv}:5: user "alice" already given at ${csv}:2`,
  ]);
  expect(bad.out).toBe(
    "nothing written (invalid entries (fix them, or --skip-invalid to import the rest)): would be 2 added, 0 replaced, 0 skipped (already exist; --replace to overwrite), 3 invalid; hash formats: sha256: 1, bcrypt: 1\n",
  );
  expect((await run(["users", "list"])).err).toBe("no users\n");

  const dry = await run([...args, "--dry-run", "--skip-invalid"]);
  expect(dry.out).toContain("nothing written (dry run): would be 2 added");
  expect((await run(["users", "list"])).err).toBe("no users\n");

  const done = await run([...args, "--skip-invalid"]);
  expect(done.code).toBe(1); // some entries were invalid
  expect(done.out).toBe(
    "imported: 2 added, 0 replaced, 0 skipped (already exist; --replace to overwrite), 3 invalid; hash formats: sha256: 1, bcrypt: 1\n",
  );
  const list = (await run(["users", "list"])).out.split("\n").map((l) => l.split("\t").slice(0, 4).join(" | "));
  expect(list).toEqual([
    "alice | client ids: any | superuser: yes | hash: sha256",
    "bob, the builder | client ids: any | superuser: no | hash: bcrypt",
    "",
  ]);
  expect(await login("alice", "s3cret")).toBe("ok");
  expect(await login("alice", "S3cret")).toBe("bad-password");
  expect(await login("bob, the builder", "s3cret")).toBe("ok");
});

test("EMQX JSON: pbkdf2 settings, plain-text passwords; existing users skipped unless --replace, which reports the change", async () => {
  const pbkdf2 = "64e9b965a1fd7b37946215876c62f164a7f34c96963bb725321ddd66c7857e4b"; // sha256, 4096 iterations, of "s3cret"
  const json = file(
    "users.json",
    JSON.stringify([
      { user_id: "p1", password_hash: pbkdf2, salt: SALT, is_superuser: false },
      { user_id: "p2", password: "typed-in", is_superuser: true },
      { user_id: "", password_hash: pbkdf2, salt: SALT },
    ]),
  );
  const args = ["users", "import", json, "--algorithm", "pbkdf2", "--mac-fun", "sha256", "--iterations", "4096", "--skip-invalid"];
  const first = await run(args);
  expect(first.err).toBe(`emqx-exhook: ${json}: entry #3 (): a username must not be empty\n`);
  expect(first.out).toBe(
    "imported: 2 added, 0 replaced, 0 skipped (already exist; --replace to overwrite), 1 invalid; hash formats: pbkdf2: 1, scrypt (from plain text): 1\n",
  );
  expect(await login("p1", "s3cret")).toBe("ok");
  expect(await login("p2", "typed-in")).toBe("ok");
  const again = await run(args);
  expect(again.out).toContain("0 added, 0 replaced, 2 skipped");
  expect(again.changed).toEqual([]);
  const replaced = await run([...args, "--replace"]);
  expect(replaced.out).toContain("0 added, 2 replaced, 0 skipped");
  expect(replaced.changed).toEqual(["p1", "p2"]);
  const pbkdf2Missing = await run(["users", "import", json, "--algorithm", "pbkdf2"]);
  expect(pbkdf2Missing.code).toBe(2);
  expect(pbkdf2Missing.err).toContain("--algorithm pbkdf2 needs --mac-fun (e.g. sha256) and --iterations N");
});

test("mosquitto_passwd and mosquitto-go-auth files; bad lines named", async () => {
  const passwd = file(
    "passwd",
    [
      "# made with mosquitto_passwd 2.0.11",
      "alice:$7$101$vyCLKqoXlj7CikVS$EOYXA8MFfHPFzVjNbIN2ZJAI91i8VleSHLGcCTR1N2D9H04ayW7q/Fkkb7r/JZEtGUmywpRfuzn14Rvhqorf3A==",
      "carol:$6$5wCfjpExECnQ6GGK$e5aRL95kyc9m+0fTovjaYzwSEow66gALCKYj7eUXvUtbdDh6h9KDzIqdMcYV/oc9pLex1LjREwkUK1dYYm3ztw==",
      "dave:$2y$05$rxOEFKp.JVAYkffyXKBgZuVd9yAaggp0wpVCHbv.YZV3x766MlJQa",
      "erin:$argon2id$v=19$m=4096,t=3,p=2$J07gT1bC5kUgzXXVWp0ssg$qTm+AwcjtsZdqRADN+m2Sw",
      "np:PBKDF2$sha256$901$x3RPLXFz3ateaMpJ$8eu+hGM+2XiqCUo3FzfaV7ck7RExX40s",
      "frank:plaintext",
      "no-colon-here",
      "",
    ].join("\n"),
  );
  const r = await run(["users", "import", passwd, "--salt-encoding", "utf-8", "--skip-invalid"]);
  expect(r.err.split("\n").filter(Boolean)).toEqual([
    `emqx-exhook: ${passwd}:7: not a hash (a plain-text password? hash it first, e.g. mosquitto_passwd -U)`,
    `emqx-exhook: ${passwd}:8: expected user:hash`,
  ]);
  expect(r.out).toContain("5 added");
  expect(r.out).toContain("mosquitto-pbkdf2: 1, mosquitto-sha512: 1, bcrypt: 1, argon2id: 1, pbkdf2: 1");
  for (const [u, p] of [
    ["alice", "alice-pw"],
    ["carol", "carol-pw"],
    ["dave", "dave-pw"],
    ["erin", "s3cret"],
    ["np", "123"],
  ]) {
    expect(await login(u as string, p as string)).toBe("ok");
    expect(await login(u as string, `${p}x`)).toBe("bad-password");
  }
});

test("export in EMQX's format: what EMQX can verify, grouped by the settings it needs; the rest listed or (--all) included", async () => {
  const csv = file("in.csv", `user_id,password_hash,salt,is_superuser\nalice,${SHA256_SUFFIX},${SALT},true\nbob,${BCRYPT},,false\n`);
  expect((await run(["users", "import", csv, "--algorithm", "sha256", "--salt-position", "suffix"])).code).toBe(0);
  expect((await run(["users", "add", "zoe", "--password-stdin"], "zoe-pw\n")).code).toBe(0);
  const out = await run(["users", "export"]);
  expect(out.out).toBe(
    `user_id,password_hash,salt,is_superuser\nalice,${SHA256_SUFFIX},${SALT},true\nbob,${BCRYPT},${BCRYPT.slice(0, 29)},false\n`,
  );
  expect(out.err.split("\n").filter(Boolean)).toEqual([
    "1 user need the EMQX built-in database authenticator with password_hash_algorithm { name = sha256, salt_position = suffix }",
    "1 user need the EMQX built-in database authenticator with password_hash_algorithm { name = bcrypt }",
    "EMQX uses one algorithm per authenticator: import each group into its own authenticator",
    "1 user with scrypt hashes EMQX cannot verify left out (--all to include): zoe",
  ]);
  const json = await run(["users", "export", "--format", "emqx-json", "--all"]);
  const rows = JSON.parse(json.out) as Array<{ user_id: string; password_hash: string; is_superuser: boolean }>;
  expect(rows.map((r) => [r.user_id, r.is_superuser])).toEqual([
    ["alice", true],
    ["bob", false],
    ["zoe", false],
  ]);
  expect(rows[2]?.password_hash).toMatch(/^\$scrypt\$/);
  // What was exported imports again as the same users (round trip through EMQX's format).
  rmSync(join(dir, "data"), { recursive: true, force: true });
  const again = file("again.csv", out.out);
  expect((await run(["users", "import", again, "--algorithm", "sha256", "--salt-position", "suffix"])).out).toContain("2 added");
  expect(await login("alice", "s3cret")).toBe("ok");
});

test("superuser flag: add --superuser, superuser on|off, shown in list; password changes and removals are reported", async () => {
  const add = await run(["users", "add", "root", "--password-stdin", "--superuser"], "pw\n");
  expect(add).toMatchObject({ code: 0, out: "added user root (superuser)\n", changed: ["root"] });
  expect((await run(["users", "list"])).out).toContain("root\tclient ids: any\tsuperuser: yes\thash: scrypt\t");
  expect(await run(["users", "superuser", "root", "off"])).toMatchObject({
    code: 0,
    out: "user root is no longer a superuser\n",
    changed: ["root"],
  });
  expect((await run(["users", "list"])).out).toContain("superuser: no");
  expect((await run(["users", "superuser", "ghost", "on"])).code).toBe(1);
  expect((await run(["users", "superuser", "root", "maybe"])).code).toBe(2);
  expect((await run(["users", "add", "root", "--password-stdin"], "pw2\n")).changed).toEqual(["root"]);
  expect((await run(["users", "remove", "root"])).changed).toEqual(["root"]);
});
