/**
 * Password hashing for the authentication use case.
 *
 * New and changed passwords are hashed with scrypt (RFC 7914) from node:crypto, on libuv's thread
 * pool so a login never blocks the event loop. Its hashes are PHC-style strings that carry their own
 * parameters and salt (`$scrypt$ln=15,r=8,p=1,k=32$<salt b64>$<hash b64>`), so the parameters can be
 * raised later: old hashes keep verifying and are rehashed on the next good login.
 *
 * Imported hashes (EMQX's built-in database, mosquitto_passwd, mosquitto-go-auth) are verified in
 * their own format, each kept as one self-describing string:
 *
 * | format | stored as | from |
 * |---|---|---|
 * | `plain`, `md5`, `sha`, `sha256`, `sha512` | `$emqx-<algo>$<prefix\|suffix\|disable>$<salt b64>$<hash hex>` | EMQX `password_hash_algorithm` (salt position) |
 * | `pbkdf2` | `$pbkdf2-<mac>$i=<iterations>$<salt b64>$<hash hex>` | EMQX pbkdf2 (`mac_fun`, `iterations`, `dk_length`), mosquitto-go-auth `PBKDF2$...` |
 * | `bcrypt` | `$2a$`, `$2b$`, `$2y$` (as written) | EMQX bcrypt, mosquitto-go-auth |
 * | `mosquitto-pbkdf2` | `$7$<iterations>$<salt b64>$<hash b64>` (as written) | mosquitto_passwd (PBKDF2-SHA512) |
 * | `mosquitto-sha512` | `$6$<salt b64>$<hash b64>` (as written) | mosquitto_passwd before 2.0 (SHA-512 of password + salt) |
 * | `argon2id` (also `argon2i`, `argon2d`) | `$argon2id$v=19$m=..,t=..,p=..$<salt>$<hash>` (PHC, as written) | mosquitto-go-auth |
 *
 * bcrypt and Argon2 run natively on libuv's thread pool (`@node-rs/bcrypt`, `@node-rs/argon2`:
 * prebuilt binaries, optional peer dependencies loaded on the first such hash; without them such a
 * check fails with an error that says what to install): a pure-JavaScript bcrypt would hold the event
 * loop for ~90 ms per check at cost 10, stalling every other hook. PBKDF2 runs on the thread pool
 * too (`crypto.pbkdf2`); the salted SHA/MD5 formats are single digests.
 */
import { createHash, pbkdf2, randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from "node:crypto";
import { loadOptional } from "./optional-dependency.js";

/** scrypt cost parameters. */
export interface ScryptParams {
  /** CPU/memory cost, a power of two. Default 2^15 (32 MiB per hash with r = 8). */
  readonly N: number;
  /** Block size. Default 8. */
  readonly r: number;
  /** Parallelism. Default 1. */
  readonly p: number;
  /** Derived key length in bytes. Default 32. */
  readonly keylen: number;
}

/**
 * Default parameters: N = 2^15, r = 8, p = 1 (about 30–60 ms and 32 MiB per hash on a current CPU).
 * OWASP asks for N = 2^17; we use less because every MQTT login pays it (the verified-login cache
 * of the authenticator absorbs reconnect storms). Raise it in the config if logins are rare.
 */
export const DEFAULT_SCRYPT: ScryptParams = Object.freeze({ N: 2 ** 15, r: 8, p: 1, keylen: 32 });

const SALT_BYTES = 16;

function scryptAsync(password: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
  const opts: ScryptOptions = { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r + 1024 * 1024 };
  return new Promise((resolve, reject) => scrypt(password, salt, params.keylen, opts, (err, key) => (err ? reject(err) : resolve(key))));
}

/** Hashes a password with a fresh random salt (the project's scrypt format). */
export async function hashPassword(password: string, params: ScryptParams = DEFAULT_SCRYPT): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const key = await scryptAsync(password, salt, params);
  return `$scrypt$ln=${Math.log2(params.N)},r=${params.r},p=${params.p},k=${params.keylen}$${salt.toString("base64")}$${key.toString("base64")}`;
}

/** A parsed scrypt hash. */
export interface ParsedHash {
  readonly params: ScryptParams;
  readonly salt: Buffer;
  readonly key: Buffer;
}

/** Parses a hash made by {@link hashPassword}; `undefined` when it is not one. */
export function parseHash(hash: string): ParsedHash | undefined {
  const m = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,3}),p=(\d{1,3}),k=(\d{1,3})\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(hash);
  if (!m) return undefined;
  const params = { N: 2 ** Number(m[1]), r: Number(m[2]), p: Number(m[3]), keylen: Number(m[4]) };
  const key = Buffer.from(m[6] as string, "base64");
  if (key.length !== params.keylen || params.N < 2 || params.r < 1 || params.p < 1) return undefined;
  return { params, salt: Buffer.from(m[5] as string, "base64"), key };
}

/** Whether a hash is not the project's scrypt with exactly `params` (so it should be rehashed). */
export function needsRehash(hash: string, params: ScryptParams): boolean {
  const parsed = parseHash(hash);
  return (
    !parsed ||
    parsed.params.N !== params.N ||
    parsed.params.r !== params.r ||
    parsed.params.p !== params.p ||
    parsed.params.keylen !== params.keylen
  );
}

// ---------------------------------------------------------------------------------------------
// Imported formats

/** The simple hash algorithms of EMQX's `password_hash_algorithm`. */
export type EmqxSimpleAlgorithm = "plain" | "md5" | "sha" | "sha256" | "sha512";
/** Where EMQX puts the salt: before the password, after it, or not at all. */
export type SaltPosition = "prefix" | "suffix" | "disable";
/** EMQX's pbkdf2 `mac_fun` values this runtime can compute (`md4` is not in OpenSSL 3's default provider). */
export type Pbkdf2Mac = "md5" | "sha" | "sha224" | "sha256" | "sha384" | "sha512" | "ripemd160";

/** Every format {@link hashFormatOf} names. */
export type HashFormat =
  | "scrypt"
  | EmqxSimpleAlgorithm
  | "pbkdf2"
  | "bcrypt"
  | "mosquitto-pbkdf2"
  | "mosquitto-sha512"
  | "argon2id"
  | "argon2i"
  | "argon2d"
  | "unknown";

const SIMPLE = new Set<string>(["plain", "md5", "sha", "sha256", "sha512"]);
const PBKDF2_MACS = new Set<string>(["md5", "sha", "sha224", "sha256", "sha384", "sha512", "ripemd160"]);
const nodeDigest = (algo: string) => (algo === "sha" ? "sha1" : algo);

const B64 = "[A-Za-z0-9+/]*={0,2}";
const EMQX_RE = new RegExp(`^\\$emqx-(plain|md5|sha|sha256|sha512)\\$(prefix|suffix|disable)\\$(${B64})\\$([0-9a-f]*)$`);
const PBKDF2_RE = new RegExp(`^\\$pbkdf2-(md5|sha|sha224|sha256|sha384|sha512|ripemd160)\\$i=(\\d{1,9})\\$(${B64})\\$([0-9a-f]{2,1024})$`);
// mosquitto: a non-empty base64 salt and the 64-byte SHA-512 output (88 base64 characters).
const MOSQ7_RE = /^\$7\$(\d{1,9})\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]{86}==)$/;
const MOSQ6_RE = /^\$6\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]{86}==)$/;
const BCRYPT_RE = /^\$2[abxy]\$\d\d\$[./A-Za-z0-9]{53}$/;
const ARGON_RE = /^\$(argon2id|argon2i|argon2d)\$/;

/** The format of a stored hash (`"unknown"` when no verifier knows it: such a hash never matches). */
export function hashFormatOf(hash: string): HashFormat {
  if (hash.startsWith("$scrypt$")) return parseHash(hash) ? "scrypt" : "unknown";
  const e = EMQX_RE.exec(hash);
  if (e) return e[1] as EmqxSimpleAlgorithm;
  if (PBKDF2_RE.test(hash)) return "pbkdf2";
  if (BCRYPT_RE.test(hash)) return "bcrypt";
  if (MOSQ7_RE.test(hash)) return "mosquitto-pbkdf2";
  if (MOSQ6_RE.test(hash)) return "mosquitto-sha512";
  const a = ARGON_RE.exec(hash);
  if (a) return a[1] as "argon2id" | "argon2i" | "argon2d";
  return "unknown";
}

/**
 * Whether verifying this hash costs much less than a scrypt with the default parameters (single
 * digests, PBKDF2 under 10,000 iterations): the authenticator then also runs the unknown-user
 * dummy hash, so such a user cannot be told from an unknown one by the answer's timing.
 */
export function isCheapHash(hash: string): boolean {
  const f = hashFormatOf(hash);
  if (SIMPLE.has(f) || f === "mosquitto-sha512" || f === "unknown") return true;
  if (f === "pbkdf2") return Number(PBKDF2_RE.exec(hash)?.[2]) < 10_000;
  if (f === "mosquitto-pbkdf2") return Number(MOSQ7_RE.exec(hash)?.[1]) < 10_000;
  return false;
}

/** The stored form of an EMQX built-in database entry with a simple algorithm. Throws on a malformed one. */
export function emqxSimpleHash(algorithm: EmqxSimpleAlgorithm, saltPosition: SaltPosition, salt: string, passwordHash: string): string {
  if (!SIMPLE.has(algorithm))
    throw new Error(`unknown EMQX hash algorithm ${JSON.stringify(algorithm)} (plain, md5, sha, sha256, sha512, bcrypt, pbkdf2)`);
  let hex: string;
  if (algorithm === "plain") hex = Buffer.from(passwordHash, "utf8").toString("hex");
  else {
    hex = passwordHash.toLowerCase();
    const bytes = { md5: 16, sha: 20, sha256: 32, sha512: 64 }[algorithm];
    if (!/^[0-9a-f]*$/.test(hex) || hex.length !== bytes * 2)
      throw new Error(`password_hash is not a ${algorithm} hash (${bytes * 2} hex digits)`);
  }
  const pos = salt === "" ? "disable" : saltPosition;
  return `$emqx-${algorithm}$${pos}$${Buffer.from(pos === "disable" ? "" : salt, "utf8").toString("base64")}$${hex}`;
}

/** The stored form of an EMQX pbkdf2 entry (salt as EMQX stores it: text). Throws on a malformed one. */
export function emqxPbkdf2Hash(mac: string, iterations: number, salt: string, passwordHash: string): string {
  if (!PBKDF2_MACS.has(mac))
    throw new Error(`pbkdf2 mac_fun ${JSON.stringify(mac)} is not supported (md5, sha, sha224, sha256, sha384, sha512, ripemd160)`);
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > 100_000_000)
    throw new Error(`pbkdf2 iterations must be a positive integer, got ${iterations}`);
  const hex = passwordHash.toLowerCase();
  if (!/^([0-9a-f]{2}){1,512}$/.test(hex)) throw new Error("password_hash is not a hex pbkdf2 hash");
  return `$pbkdf2-${mac}$i=${iterations}$${Buffer.from(salt, "utf8").toString("base64")}$${hex}`;
}

/**
 * The stored form of a mosquitto-go-auth `PBKDF2$<sha256|sha512>$<iterations>$<salt>$<hash b64>`
 * hash. `saltEncoding` is go-auth's `hasher_salt_encoding` (default `base64`; `utf-8` uses the salt
 * text as is). Throws on a malformed one.
 */
export function goAuthPbkdf2Hash(hash: string, saltEncoding: "base64" | "utf-8" = "base64"): string {
  const m = /^PBKDF2\$(sha256|sha512)\$(\d{1,9})\$([^$]*)\$([A-Za-z0-9+/]+={0,2})$/.exec(hash);
  if (!m) throw new Error("not a mosquitto-go-auth PBKDF2$<sha256|sha512>$<iterations>$<salt>$<hash> string");
  const salt = saltEncoding === "base64" ? Buffer.from(m[3] as string, "base64") : Buffer.from(m[3] as string, "utf8");
  const key = Buffer.from(m[4] as string, "base64");
  if (key.length === 0) throw new Error("empty PBKDF2 hash");
  return `$pbkdf2-${m[1]}$i=${Number(m[2])}$${salt.toString("base64")}$${key.toString("hex")}`;
}

/**
 * Turns a hash written by another tool into its stored form, or throws saying why it is not one:
 * the self-describing ones (bcrypt, Argon2, mosquitto_passwd `$7$`/`$6$`, this project's scrypt and
 * stored forms) are kept as written; mosquitto-go-auth's `PBKDF2$...` is converted.
 */
export function importSelfDescribingHash(hash: string, options: { readonly saltEncoding?: "base64" | "utf-8" } = {}): string {
  if (hash.startsWith("PBKDF2$")) return goAuthPbkdf2Hash(hash, options.saltEncoding);
  if (hashFormatOf(hash) !== "unknown") return hash;
  if (/^\$2[abxy]\$/.test(hash)) throw new Error("malformed bcrypt hash");
  if (/^\$[67]\$/.test(hash)) throw new Error("malformed mosquitto_passwd hash");
  if (/^\$argon2/.test(hash)) throw new Error("malformed Argon2 hash");
  if (hash.startsWith("$")) throw new Error(`unsupported hash format ${JSON.stringify(hash.split("$")[1] ?? "")}`);
  throw new Error("not a hash (a plain-text password? hash it first, e.g. mosquitto_passwd -U)");
}

/** How a stored hash is written in EMQX's built-in database, or `undefined` when EMQX cannot verify it. */
export interface EmqxExport {
  readonly algorithm: EmqxSimpleAlgorithm | "bcrypt" | "pbkdf2";
  /** The `password_hash_algorithm` settings the entry needs, e.g. `sha256, salt_position = suffix`. */
  readonly settings: string;
  readonly passwordHash: string;
  readonly salt: string;
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this finds
const hasControlCharacters = (s: string) => /[\u0000-\u001f\u007f]/.test(s);

/** The EMQX built-in database form of a stored hash (what `users export` writes). */
export function toEmqxHash(hash: string): EmqxExport | undefined {
  const e = EMQX_RE.exec(hash);
  if (e) {
    const algorithm = e[1] as EmqxSimpleAlgorithm;
    const salt = Buffer.from(e[3] as string, "base64").toString("utf8");
    const passwordHash = algorithm === "plain" ? Buffer.from(e[4] as string, "hex").toString("utf8") : (e[4] as string);
    return { algorithm, settings: `name = ${algorithm}, salt_position = ${e[2]}`, passwordHash, salt };
  }
  const p = PBKDF2_RE.exec(hash);
  if (p) {
    const saltBytes = Buffer.from(p[3] as string, "base64");
    const salt = saltBytes.toString("utf8");
    // EMQX keeps the salt as text: a binary salt (from mosquitto-go-auth) cannot be written there.
    if (!Buffer.from(salt, "utf8").equals(saltBytes) || hasControlCharacters(salt)) return undefined;
    const hex = p[4] as string;
    return {
      algorithm: "pbkdf2",
      settings: `name = pbkdf2, mac_fun = ${p[1]}, iterations = ${p[2]}, dk_length = ${hex.length / 2}`,
      passwordHash: hex,
      salt,
    };
  }
  if (BCRYPT_RE.test(hash) && !hash.startsWith("$2x$"))
    return { algorithm: "bcrypt", settings: "name = bcrypt", passwordHash: hash, salt: hash.slice(0, 29) };
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Verification

type BcryptModule = { verify(password: string, hash: string): Promise<boolean> };
type ArgonModule = { verify(hashed: string, password: string): Promise<boolean> };
let bcryptModule: BcryptModule | undefined;
let argonModule: ArgonModule | undefined;

const equalBytes = (a: Buffer, b: Buffer) => a.length === b.length && timingSafeEqual(a, b);

function pbkdf2Async(password: string, salt: Buffer, iterations: number, keylen: number, digest: string): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    pbkdf2(password, salt, iterations, keylen, digest, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

/**
 * Whether `password` matches `hash`, in any supported format (constant-time comparison). A malformed
 * or unknown hash never matches. Rejects only when the optional verifier of a bcrypt or Argon2 hash
 * is not installed (the error says what to install).
 */
export async function verifyPassword(password: string, hash: string): Promise<boolean> {
  if (hash.startsWith("$scrypt$")) {
    const parsed = parseHash(hash);
    if (!parsed) return false;
    return timingSafeEqual(await scryptAsync(password, parsed.salt, parsed.params), parsed.key);
  }
  let m = EMQX_RE.exec(hash);
  if (m) {
    const algo = m[1] as EmqxSimpleAlgorithm;
    const salt = Buffer.from(m[3] as string, "base64");
    const pw = Buffer.from(password, "utf8");
    const data = m[2] === "prefix" ? Buffer.concat([salt, pw]) : m[2] === "suffix" ? Buffer.concat([pw, salt]) : pw;
    const got = algo === "plain" ? data : createHash(nodeDigest(algo)).update(data).digest();
    return equalBytes(got, Buffer.from(m[4] as string, "hex"));
  }
  if ((m = PBKDF2_RE.exec(hash))) {
    const want = Buffer.from(m[4] as string, "hex");
    const got = await pbkdf2Async(password, Buffer.from(m[3] as string, "base64"), Number(m[2]), want.length, nodeDigest(m[1] as string));
    return equalBytes(got, want);
  }
  if ((m = MOSQ7_RE.exec(hash))) {
    const want = Buffer.from(m[3] as string, "base64");
    if (want.length === 0) return false;
    return equalBytes(await pbkdf2Async(password, Buffer.from(m[2] as string, "base64"), Number(m[1]), want.length, "sha512"), want);
  }
  if ((m = MOSQ6_RE.exec(hash))) {
    const got = createHash("sha512")
      .update(password, "utf8")
      .update(Buffer.from(m[1] as string, "base64"))
      .digest();
    return equalBytes(got, Buffer.from(m[2] as string, "base64"));
  }
  if (BCRYPT_RE.test(hash)) {
    const b = (bcryptModule ??= loadOptional<BcryptModule>("@node-rs/bcrypt", "verifying bcrypt password hashes"));
    return b.verify(password, hash);
  }
  if (ARGON_RE.test(hash)) {
    const a = (argonModule ??= loadOptional<ArgonModule>("@node-rs/argon2", "verifying Argon2 password hashes"));
    try {
      return await a.verify(hash, password);
    } catch {
      return false; // a malformed PHC string
    }
  }
  return false;
}
