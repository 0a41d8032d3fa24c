/**
 * `users add | list | remove | superuser | import | export`: the users of the authentication use
 * case, in the configured store. Passwords are never printed or logged; prefer `--password-stdin`
 * (`--password` shows up in shell history and `ps`).
 *
 * Import reads EMQX's built-in database exports (CSV with the header
 * `user_id,password_hash,salt,is_superuser`, or JSON: a list of objects with those keys; a
 * `password` column/key instead holds a plain-text password, hashed here with scrypt) and
 * `mosquitto_passwd` files (`user:hash` lines: `$7$`, `$6$`, and mosquitto-go-auth's bcrypt,
 * `PBKDF2$...` and Argon2id). EMQX keeps the algorithm in its authenticator settings, not in the
 * file: give it with `--algorithm` (and `--salt-position`, or `--mac-fun`/`--iterations` for pbkdf2);
 * bcrypt entries need nothing. Every entry is checked first; an entry that cannot be imported is
 * reported with its line, and then nothing is written unless `--skip-invalid`. Existing users are
 * skipped unless `--replace` (which replaces the hash and superuser flag, keeping client ids).
 *
 * Export writes the EMQX form of every user EMQX can verify (its built-in database needs one
 * algorithm per authenticator: the settings each group needs are printed on standard error).
 * Users with a hash EMQX cannot verify (scrypt, mosquitto, Argon2) are left out and listed, or with
 * `--all` written with the stored hash (which `users import` reads back, but EMQX cannot).
 *
 * Removals, password changes and superuser changes are reported to `CommandIo.onUserChanged` (the
 * invalidation seam a deployment wires to its running servers).
 */
import { readFileSync } from "node:fs";
import { addUser, usernameError } from "../usecases/auth.js";
import type { StackConfig } from "../usecases/config.js";
import {
  emqxPbkdf2Hash,
  emqxSimpleHash,
  hashFormatOf,
  hashPassword,
  importSelfDescribingHash,
  toEmqxHash,
  type EmqxSimpleAlgorithm,
  type SaltPosition,
} from "../usecases/password.js";
import { loadOptional } from "../usecases/optional-dependency.js";
import type { Store, UserRecord } from "../usecases/store.js";
import { announceChange } from "./acl.js";
import { stringOption, UsageError, type Command, type CommandIo, type OptionValues } from "./command.js";
import { commandConfig, openCommandStore, STORE_OPTIONS, withStore } from "./store-access.js";

/**
 * Announces a user's change (running servers drop what they cached for it: the invalidation hub,
 * see docs/usecases.md) and reports it to `io.onUserChanged`; a failing listener is a warning, not
 * a failed command.
 */
async function changed(io: CommandIo, cfg: StackConfig, store: Store, username: string): Promise<void> {
  await announceChange(cfg, store, { scope: "user", key: username });
  try {
    await io.onUserChanged?.(username);
  } catch (err) {
    io.stderr(`emqx-exhook: warning: could not report the change of ${username}: ${(err as Error).message}\n`);
  }
}

export const usersAdd: Command = {
  name: "users add",
  args: "<name>",
  maxArgs: 1,
  summary: "add a user, or replace its password (keeping its client ids and superuser flag unless given)",
  options: {
    "password-stdin": { type: "boolean", help: "read the password from standard input (recommended)" },
    password: { type: "string", value: "X", help: "the password (visible in shell history and process lists)" },
    clientid: {
      type: "string",
      value: "PATTERN",
      multiple: true,
      help: "a client id the user may connect with, * = any run of characters;\nnone = keep the user's (any for a new user)",
    },
    superuser: { type: "boolean", help: "the user is allowed everything, without ACL rules" },
    ...STORE_OPTIONS,
  },
  async run({ args, options }, io) {
    const name = args[0];
    if (name === undefined) throw new UsageError("users add takes one <name>");
    const uerr = usernameError(name);
    if (uerr) throw new UsageError(uerr);
    let password = stringOption(options, "password");
    if (options["password-stdin"] === true) {
      if (password !== undefined) throw new UsageError("give --password-stdin or --password, not both");
      password = (await io.readStdin()).replace(/\r?\n$/, "");
    } else if (password === undefined) throw new UsageError("users add needs --password-stdin (recommended) or --password X");
    else io.stderr("emqx-exhook: warning: --password is visible in shell history and process lists; prefer --password-stdin\n");
    if (password.length === 0) throw new UsageError("the password is empty");
    const cfg = commandConfig(options, io);
    return withStore(openCommandStore(cfg, options), async (store) => {
      const existed = (await store.getUser(name)) !== undefined;
      const ids = (options["clientid"] as string[] | undefined) ?? [];
      const user = await addUser(store, name, password as string, {
        ...(ids.length ? { clientIds: ids } : {}),
        ...(options["superuser"] === true ? { superuser: true } : {}),
        scrypt: cfg.auth.scrypt,
      });
      // Also for a new user: a server may have cached "unknown user" for the name.
      await changed(io, cfg, store, name);
      const details = [user.clientIds.length ? `client ids: ${user.clientIds.join(", ")}` : "", user.superuser ? "superuser" : ""].filter(
        Boolean,
      );
      io.stdout(`${existed ? "updated" : "added"} user ${user.username}${details.length ? ` (${details.join("; ")})` : ""}\n`);
      return 0;
    });
  },
};

export const usersList: Command = {
  name: "users list",
  summary: "list the users (name, client ids, superuser, hash format, last change)",
  options: STORE_OPTIONS,
  async run({ options }, io) {
    return withStore(openCommandStore(commandConfig(options, io), options), async (store) => {
      const users = await store.listUsers();
      for (const u of users) {
        const ids = u.clientIds.length ? u.clientIds.join(", ") : "any";
        io.stdout(
          `${u.username}\tclient ids: ${ids}\tsuperuser: ${u.superuser ? "yes" : "no"}\thash: ${u.hashFormat}\tupdated ${new Date(u.updatedAt).toISOString()}\n`,
        );
      }
      if (users.length === 0) io.stderr("no users\n");
      return 0;
    });
  },
};

export const usersRemove: Command = {
  name: "users remove",
  args: "<name>",
  maxArgs: 1,
  summary: "remove a user",
  options: STORE_OPTIONS,
  async run({ args, options }, io) {
    const name = args[0];
    if (name === undefined) throw new UsageError("users remove takes one <name>");
    const cfg = commandConfig(options, io);
    return withStore(openCommandStore(cfg, options), async (store) => {
      if (!(await store.removeUser(name))) {
        io.stderr(`emqx-exhook: no user ${JSON.stringify(name)}\n`);
        return 1;
      }
      await changed(io, cfg, store, name);
      io.stdout(`removed user ${name}\n`);
      return 0;
    });
  },
};

export const usersSuperuser: Command = {
  name: "users superuser",
  args: "<name> on|off",
  maxArgs: 2,
  summary: "make a user a superuser (allowed everything, without ACL rules), or not",
  options: STORE_OPTIONS,
  async run({ args, options }, io) {
    const [name, value] = args;
    if (name === undefined || (value !== "on" && value !== "off")) throw new UsageError("users superuser takes <name> on|off");
    const cfg = commandConfig(options, io);
    return withStore(openCommandStore(cfg, options), async (store) => {
      const user = await store.getUser(name);
      if (!user) {
        io.stderr(`emqx-exhook: no user ${JSON.stringify(name)}\n`);
        return 1;
      }
      await store.putUser({ ...user, superuser: value === "on", updatedAt: Date.now() });
      await changed(io, cfg, store, name);
      io.stdout(`user ${name} is ${value === "on" ? "now" : "no longer"} a superuser\n`);
      return 0;
    });
  },
};

export const usersImport: Command = {
  name: "users import",
  args: "FILE",
  maxArgs: 1,
  summary: "import users from an EMQX built-in database export (CSV/JSON) or a mosquitto_passwd file",
  details:
    "FILE - reads standard input. Every entry is checked first; invalid ones are reported by line and then\n" +
    "nothing is written unless --skip-invalid. Existing users are skipped unless --replace. See docs/migration.md.",
  options: {
    format: {
      type: "string",
      value: "F",
      help: "emqx-csv, emqx-json (EMQX built-in database) or mosquitto (user:hash lines);\ndefault from the file name (.csv, .json, else mosquitto)",
    },
    algorithm: { type: "string", value: "A", help: "EMQX's password_hash_algorithm name: plain, md5, sha, sha256, sha512, bcrypt, pbkdf2" },
    "salt-position": { type: "string", value: "P", help: "EMQX's salt_position: prefix (default), suffix, disable" },
    "mac-fun": { type: "string", value: "M", help: "pbkdf2: EMQX's mac_fun (e.g. sha256)" },
    iterations: { type: "string", value: "N", help: "pbkdf2: EMQX's iterations" },
    "salt-encoding": { type: "string", value: "E", help: "salt of mosquitto-go-auth PBKDF2$ hashes: base64 (default) or utf-8" },
    replace: { type: "boolean", help: "replace existing users' hashes and superuser flags (default: skip them)" },
    "skip-invalid": { type: "boolean", help: "import the valid entries even when others are invalid" },
    "dry-run": { type: "boolean", help: "check and count, write nothing" },
    ...STORE_OPTIONS,
  },
  async run({ args, options }, io) {
    const file = args[0];
    if (file === undefined) throw new UsageError("users import takes one FILE (- = standard input)");
    const cfg = commandConfig(options, io);
    return importUsers(file, options, cfg, io);
  },
};

export const usersExport: Command = {
  name: "users export",
  summary: "write the users in EMQX's built-in database format (CSV or JSON) to standard output",
  options: {
    format: { type: "string", value: "F", help: "emqx-csv (default) or emqx-json" },
    all: { type: "boolean", help: "also users EMQX cannot verify (scrypt, mosquitto, Argon2), with their stored hash" },
    ...STORE_OPTIONS,
  },
  async run({ options }, io) {
    const format = stringOption(options, "format") ?? "emqx-csv";
    if (format !== "emqx-csv" && format !== "emqx-json")
      throw new UsageError(`--format ${JSON.stringify(format)}: use emqx-csv or emqx-json`);
    return withStore(openCommandStore(commandConfig(options, io), options), (store) =>
      exportUsers(store, format, options["all"] === true, io),
    );
  },
};

/** One entry read from an import file. */
interface Entry {
  readonly where: string;
  readonly username: string;
  readonly superuser: boolean;
  /** The stored hash, or a plain-text password to hash. */
  readonly hash?: string;
  readonly plain?: string;
}

async function importUsers(file: string, options: OptionValues, cfg: StackConfig, io: CommandIo): Promise<number> {
  const flags = {
    one: (f: string) => stringOption(options, f),
    has: (f: string) => options[f] === true,
  };
  const format = flags.one("format") ?? (/\.csv$/i.test(file) ? "emqx-csv" : /\.json$/i.test(file) ? "emqx-json" : "mosquitto");
  if (format !== "emqx-csv" && format !== "emqx-json" && format !== "mosquitto")
    throw new UsageError(`--format ${JSON.stringify(format)}: use emqx-csv, emqx-json or mosquitto`);
  const saltEncoding = flags.one("salt-encoding") ?? "base64";
  if (saltEncoding !== "base64" && saltEncoding !== "utf-8") throw new UsageError("--salt-encoding must be base64 or utf-8");
  const emqxHash = emqxConverter(flags.one);
  const text = file === "-" ? await io.readStdin() : readFileSync(file, "utf8");
  const errors: string[] = [];
  let entries: Entry[];
  if (format === "mosquitto") entries = parseMosquitto(file, text, errors, saltEncoding);
  else
    entries = (format === "emqx-csv" ? parseEmqxCsv(file, text, errors) : parseEmqxJson(file, text, errors)).flatMap((e) => {
      if (e.plain !== undefined) return [e];
      try {
        return [{ ...e, hash: emqxHash(e.hash as string, e.salt) }];
      } catch (err) {
        errors.push(`${e.where}: ${(err as Error).message}`);
        return [];
      }
    });
  // Usernames: valid and not repeated.
  const seen = new Map<string, string>();
  entries = entries.filter((e) => {
    const uerr = usernameError(e.username);
    if (uerr) return (void errors.push(`${e.where}: ${uerr}`), false);
    const first = seen.get(e.username);
    if (first !== undefined) return (void errors.push(`${e.where}: user ${JSON.stringify(e.username)} already given at ${first}`), false);
    seen.set(e.username, e.where);
    return true;
  });
  for (const e of errors) io.stderr(`emqx-exhook: ${e}\n`);
  return withStore(openCommandStore(cfg, options), async (store) => {
    const existing = new Set((await store.listUsers()).map((u) => u.username));
    const replace = flags.has("replace");
    const toWrite = entries.filter((e) => replace || !existing.has(e.username));
    const counts = {
      added: toWrite.filter((e) => !existing.has(e.username)).length,
      replaced: toWrite.filter((e) => existing.has(e.username)).length,
      skipped: entries.length - toWrite.length,
      invalid: errors.length,
    };
    const formats = new Map<string, number>();
    for (const e of toWrite) {
      const f = e.hash !== undefined ? hashFormatOf(e.hash) : "scrypt (from plain text)";
      formats.set(f, (formats.get(f) ?? 0) + 1);
    }
    // bcrypt / Argon2 hashes are verified by optional packages: say so now rather than at the first login.
    for (const [fmt, pkg] of [
      ["bcrypt", "@node-rs/bcrypt"],
      ["argon2id", "@node-rs/argon2"],
      ["argon2i", "@node-rs/argon2"],
      ["argon2d", "@node-rs/argon2"],
    ] as const) {
      if (!formats.has(fmt)) continue;
      try {
        loadOptional(pkg, `verifying ${fmt} password hashes`);
      } catch (err) {
        io.stderr(`emqx-exhook: warning: ${(err as Error).message}\n`);
      }
    }
    const summary = `${counts.added} added, ${counts.replaced} replaced, ${counts.skipped} skipped (already exist${replace ? "" : "; --replace to overwrite"}), ${counts.invalid} invalid`;
    const byFormat = [...formats].map(([f, n]) => `${f}: ${n}`).join(", ");
    const dry = flags.has("dry-run");
    if (dry || (errors.length > 0 && !flags.has("skip-invalid"))) {
      const why = dry ? "dry run" : "invalid entries (fix them, or --skip-invalid to import the rest)";
      io.stdout(`nothing written (${why}): would be ${summary}${byFormat ? `; hash formats: ${byFormat}` : ""}\n`);
      return errors.length > 0 ? 1 : 0;
    }
    const now = Date.now();
    for (const e of toWrite) {
      const old = await store.getUser(e.username);
      const passwordHash = e.hash ?? (await hashPassword(e.plain as string, cfg.auth.scrypt));
      const user: UserRecord = {
        username: e.username,
        passwordHash,
        hashFormat: hashFormatOf(passwordHash),
        clientIds: old?.clientIds ?? [],
        superuser: e.superuser,
        createdAt: old?.createdAt ?? now,
        updatedAt: now,
      };
      await store.putUser(user);
      if (old) await changed(io, cfg, store, e.username);
    }
    // New users: one announcement for all (a server may have cached "unknown user" for their names).
    if (counts.added > 0) await announceChange(cfg, store, { scope: "all", key: "" });
    io.stdout(`imported: ${summary}${byFormat ? `; hash formats: ${byFormat}` : ""}\n`);
    return errors.length > 0 ? 1 : 0;
  });
}

/** Turns an EMQX `password_hash` + `salt` into the stored form, per the --algorithm flags. */
function emqxConverter(one: (flag: string) => string | undefined): (hash: string, salt: string) => string {
  const algorithm = one("algorithm");
  const position = (one("salt-position") ?? "prefix") as SaltPosition;
  if (!["prefix", "suffix", "disable"].includes(position)) throw new UsageError("--salt-position must be prefix, suffix or disable");
  if (algorithm !== undefined && !["plain", "md5", "sha", "sha256", "sha512", "bcrypt", "pbkdf2"].includes(algorithm)) {
    throw new UsageError(
      `--algorithm ${JSON.stringify(algorithm)}: use plain, md5, sha, sha256, sha512, bcrypt or pbkdf2 (EMQX's password_hash_algorithm name)`,
    );
  }
  let mac: string | undefined;
  let iterations = 0;
  if (algorithm === "pbkdf2") {
    mac = one("mac-fun");
    iterations = Number(one("iterations"));
    if (mac === undefined || !Number.isInteger(iterations) || iterations < 1)
      throw new UsageError("--algorithm pbkdf2 needs --mac-fun (e.g. sha256) and --iterations N, as in EMQX's settings");
  }
  return (hash, salt) => {
    // bcrypt hashes describe themselves, whatever the authenticator was set to.
    if (/^\$2[abxy]\$/.test(hash)) return importSelfDescribingHash(hash);
    if (algorithm === undefined)
      throw new Error("not a bcrypt hash: give --algorithm (and --salt-position or the pbkdf2 settings) as set in EMQX");
    if (algorithm === "bcrypt") throw new Error("not a bcrypt hash");
    if (algorithm === "pbkdf2") return emqxPbkdf2Hash(mac as string, iterations, salt, hash);
    return emqxSimpleHash(algorithm as EmqxSimpleAlgorithm, position, salt, hash);
  };
}

const truthy = (v: unknown) => v === true || v === "true" || v === "1" || v === 1;

type EmqxEntry = Entry & { readonly salt: string };

function emqxEntry(where: string, row: Record<string, unknown>, errors: string[]): EmqxEntry | undefined {
  const username = row["user_id"];
  if (typeof username !== "string") return (void errors.push(`${where}: user_id missing`), undefined);
  const superuser = truthy(row["is_superuser"]);
  if (typeof row["password"] === "string" && row["password_hash"] === undefined) {
    if (row["password"] === "") return (void errors.push(`${where}: empty password`), undefined);
    return { where, username, superuser, plain: row["password"], salt: "" };
  }
  const hash = row["password_hash"];
  if (typeof hash !== "string" || hash === "") return (void errors.push(`${where}: password_hash missing`), undefined);
  const salt = row["salt"];
  return { where, username, superuser, hash, salt: typeof salt === "string" ? salt : "" };
}

/** RFC 4180 CSV: quoted fields may hold commas, quotes ("") and line breaks. Rows with their first line number. */
export function parseCsv(text: string): Array<{ line: number; fields: string[] }> {
  const rows: Array<{ line: number; fields: string[] }> = [];
  let fields: string[] = [];
  let field = "";
  let quoted = false;
  let line = 1;
  let rowLine = 1;
  let any = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i] as string;
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') (field += '"'), i++;
        else quoted = false;
      } else {
        if (c === "\n") line++;
        field += c;
      }
    } else if (c === '"' && field === "") (quoted = true), (any = true);
    else if (c === ",") fields.push(field), (field = ""), (any = true);
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      if (any || field !== "") rows.push({ line: rowLine, fields: [...fields, field] });
      fields = [];
      field = "";
      any = false;
      line++;
      rowLine = line;
    } else (field += c), (any = true);
  }
  if (any || field !== "") rows.push({ line: rowLine, fields: [...fields, field] });
  return rows;
}

function parseEmqxCsv(file: string, text: string, errors: string[]): EmqxEntry[] {
  const rows = parseCsv(text.replace(/^\uFEFF/, ""));
  const header = rows.shift();
  if (!header) return [];
  const cols = header.fields.map((f) => f.trim());
  if (!cols.includes("user_id") || (!cols.includes("password_hash") && !cols.includes("password"))) {
    errors.push(
      `${file}:${header.line}: the header must name user_id and password_hash (or password), as EMQX writes it: user_id,password_hash,salt,is_superuser`,
    );
    return [];
  }
  const out: EmqxEntry[] = [];
  for (const r of rows) {
    if (r.fields.length !== cols.length) {
      errors.push(`${file}:${r.line}: ${r.fields.length} fields, the header has ${cols.length}`);
      continue;
    }
    const e = emqxEntry(`${file}:${r.line}`, Object.fromEntries(cols.map((c, i) => [c, r.fields[i]])), errors);
    if (e) out.push(e);
  }
  return out;
}

function parseEmqxJson(file: string, text: string, errors: string[]): EmqxEntry[] {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    errors.push(`${file}: not JSON: ${(err as Error).message}`);
    return [];
  }
  if (!Array.isArray(raw)) {
    errors.push(`${file}: expected a list of users ([{"user_id": ..., "password_hash": ..., "salt": ..., "is_superuser": ...}])`);
    return [];
  }
  const out: EmqxEntry[] = [];
  raw.forEach((r, i) => {
    const where = `${file}: entry #${i + 1}`;
    if (typeof r !== "object" || r === null || Array.isArray(r)) {
      errors.push(`${where}: not an object`);
      return;
    }
    const e = emqxEntry(
      typeof (r as { user_id?: unknown }).user_id === "string" ? `${where} (${(r as { user_id: string }).user_id})` : where,
      r as Record<string, unknown>,
      errors,
    );
    if (e) out.push(e);
  });
  return out;
}

function parseMosquitto(file: string, text: string, errors: string[], saltEncoding: "base64" | "utf-8"): Entry[] {
  const out: Entry[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const where = `${file}:${i + 1}`;
    const colon = line.indexOf(":");
    if (colon <= 0) {
      errors.push(`${where}: expected user:hash`);
      return;
    }
    try {
      out.push({
        where,
        username: line.slice(0, colon),
        superuser: false,
        hash: importSelfDescribingHash(line.slice(colon + 1), { saltEncoding }),
      });
    } catch (err) {
      errors.push(`${where}: ${(err as Error).message}`);
    }
  });
  return out;
}

const csvField = (s: string) => (/[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);

async function exportUsers(store: Store, format: "emqx-csv" | "emqx-json", all: boolean, io: CommandIo): Promise<number> {
  const rows: Array<{ user_id: string; password_hash: string; salt: string; is_superuser: boolean }> = [];
  const groups = new Map<string, number>();
  const left = new Map<string, string[]>();
  for (const u of await store.listUsers()) {
    const e = toEmqxHash(u.passwordHash);
    if (e) {
      rows.push({ user_id: u.username, password_hash: e.passwordHash, salt: e.salt, is_superuser: u.superuser });
      groups.set(e.settings, (groups.get(e.settings) ?? 0) + 1);
    } else {
      left.set(u.hashFormat, [...(left.get(u.hashFormat) ?? []), u.username]);
      if (all) rows.push({ user_id: u.username, password_hash: u.passwordHash, salt: "", is_superuser: u.superuser });
    }
  }
  if (format === "emqx-json") io.stdout(JSON.stringify(rows, null, 2) + "\n");
  else
    io.stdout(
      "user_id,password_hash,salt,is_superuser\n" +
        rows.map((r) => [r.user_id, r.password_hash, r.salt, String(r.is_superuser)].map(csvField).join(",") + "\n").join(""),
    );
  for (const [settings, n] of groups)
    io.stderr(
      `${n} user${n === 1 ? "" : "s"} need the EMQX built-in database authenticator with password_hash_algorithm { ${settings} }\n`,
    );
  if (groups.size > 1) io.stderr("EMQX uses one algorithm per authenticator: import each group into its own authenticator\n");
  for (const [fmt, names] of left) {
    io.stderr(
      `${names.length} user${names.length === 1 ? "" : "s"} with ${fmt} hashes EMQX cannot verify ${all ? "written with the stored hash (users import reads them back; EMQX cannot)" : "left out (--all to include)"}: ${names.slice(0, 10).join(", ")}${names.length > 10 ? ", ..." : ""}\n`,
    );
  }
  return 0;
}
