/**
 * Imported password formats, each checked against hashes made by the reference tools (the vectors
 * below were produced on Debian 12 with mosquitto_passwd 2.0.11, htpasswd 2.4 (bcrypt $2y$), Python
 * 3.11 hashlib (EMQX's salted digests and pbkdf2 as EMQX computes them: hex of digest(salt+password)
 * / digest(password+salt) / pbkdf2_hmac), python3-bcrypt ($2a$, $2b$) and python3-argon2
 * (argon2-cffi: $argon2id$), not by this code.
 */
import {
  emqxPbkdf2Hash,
  emqxSimpleHash,
  goAuthPbkdf2Hash,
  hashFormatOf,
  hashPassword,
  importSelfDescribingHash,
  isCheapHash,
  needsRehash,
  toEmqxHash,
  verifyPassword,
  DEFAULT_SCRYPT,
} from "../src/usecases/index";

const PW = "s3cret";
const SALT = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"; // EMQX makes 32 hex characters of salt text

const SIMPLE: Array<[algo: "md5" | "sha" | "sha256" | "sha512", pos: "prefix" | "suffix" | "disable", hex: string]> = [
  ["md5", "prefix", "a0de8fc873b227fa025aa848e7c04c78"],
  ["md5", "suffix", "9230ee662fbbad40cbe9f707a0abb277"],
  ["md5", "disable", "33e1b232a4e6fa0028a6670753749a17"],
  ["sha", "prefix", "d7182d0d5b925eda2f9dd402d641903215d949f5"],
  ["sha", "suffix", "f8c96fc6400fe89fb20f7ff44c6ff72593d08340"],
  ["sha", "disable", "fef341f85d87439e7d91a2d465b9871ef66b5e98"],
  ["sha256", "prefix", "1e54e9c9ad840db0666196407a9bf9c81c20ee9322643a2ddf8de1500406eadc"],
  ["sha256", "suffix", "290ea70db0b5c6f061d878b8b8477d174f484209e25128708ae4920e79a33372"],
  ["sha256", "disable", "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0"],
  [
    "sha512",
    "prefix",
    "82f9b320b584e145d221cc74381e7e97596e6d7908568286c40a6421d66617cf39f225836a4be9bed85e0d85d279388a38b168aa4d48d22b9e390f2e345898db",
  ],
  [
    "sha512",
    "suffix",
    "cf2004a463ac6d5e9c2c28e572c08bc2d9d073530e9e909589a1fe0ff627d872fa359b8c9428ed9d0e99915f88b4b57da68e433854c2294e41f8c8716f5c12d5",
  ],
  [
    "sha512",
    "disable",
    "95c89addde506357ec5efd0ee41ac241efd6fb1009a7680c1501ea8170342b8cbf0f2d938b56295490f19f1fc5fa28d09b1584eaa09c9a6b2f777623299cd521",
  ],
];

test.each(SIMPLE)("EMQX %s with salt %s", async (algo, pos, hex) => {
  const stored = emqxSimpleHash(algo, pos, pos === "disable" ? "" : SALT, hex.toUpperCase());
  expect(hashFormatOf(stored)).toBe(algo);
  expect(await verifyPassword(PW, stored)).toBe(true);
  expect(await verifyPassword("s3creT", stored)).toBe(false);
  expect(await verifyPassword(PW + "x", stored)).toBe(false);
  // The other salt position does not verify (the position is part of the format).
  if (pos !== "disable")
    expect(await verifyPassword(PW, emqxSimpleHash(algo, pos === "prefix" ? "suffix" : "prefix", SALT, hex))).toBe(false);
  expect(toEmqxHash(stored)).toEqual({
    algorithm: algo,
    settings: `name = ${algo}, salt_position = ${pos}`,
    passwordHash: hex,
    salt: pos === "disable" ? "" : SALT,
  });
  expect(isCheapHash(stored)).toBe(true);
});

test("EMQX plain, with and without salt", async () => {
  const plain = emqxSimpleHash("plain", "disable", "", "hunter2");
  expect(await verifyPassword("hunter2", plain)).toBe(true);
  expect(await verifyPassword("hunter3", plain)).toBe(false);
  // plain + prefix: EMQX stores salt followed by the password.
  const salted = emqxSimpleHash("plain", "prefix", "NaCl", "NaClhunter2");
  expect(await verifyPassword("hunter2", salted)).toBe(true);
  expect(await verifyPassword("NaClhunter2", salted)).toBe(false);
  expect(toEmqxHash(salted)).toEqual({
    algorithm: "plain",
    settings: "name = plain, salt_position = prefix",
    passwordHash: "NaClhunter2",
    salt: "NaCl",
  });
});

test.each([
  ["sha256", 4096, "64e9b965a1fd7b37946215876c62f164a7f34c96963bb725321ddd66c7857e4b"],
  [
    "sha512",
    1000,
    "547a3d80ca18bc8bca530831ff0b301216ffd2dce946238c6d58189edf33c954514968b37b17abf5c46ea2dcae3723eafb2f0b92078358a298bef4a6c4a8d41c",
  ],
  ["sha", 2, "55bb8186ef812eb921ad30700d2c9061b38ae8e0"],
] as const)("EMQX pbkdf2 mac_fun %s, %d iterations", async (mac, iterations, hex) => {
  const stored = emqxPbkdf2Hash(mac, iterations, SALT, hex);
  expect(hashFormatOf(stored)).toBe("pbkdf2");
  expect(await verifyPassword(PW, stored)).toBe(true);
  expect(await verifyPassword("wrong", stored)).toBe(false);
  expect(await verifyPassword(PW, emqxPbkdf2Hash(mac, iterations + 1, SALT, hex))).toBe(false);
  expect(toEmqxHash(stored)).toEqual({
    algorithm: "pbkdf2",
    settings: `name = pbkdf2, mac_fun = ${mac}, iterations = ${iterations}, dk_length = ${hex.length / 2}`,
    passwordHash: hex,
    salt: SALT,
  });
});

test.each([
  ["$2b$ (python3-bcrypt)", "$2b$04$G3us/Dj34oNjejo/jbWOIOI8xEyR8VWNRmv1elYTyDIax7VbFJV8W", PW],
  ["$2a$ (python3-bcrypt)", "$2a$05$VowLdpBgaPLMA/5hUjJH3OgjoRa8YuniSun/.LmxJ5QEFQM0QM78O", PW],
  ["$2y$ (htpasswd -B)", "$2y$05$rxOEFKp.JVAYkffyXKBgZuVd9yAaggp0wpVCHbv.YZV3x766MlJQa", "dave-pw"],
])("bcrypt %s", async (_label, hash, password) => {
  expect(hashFormatOf(hash)).toBe("bcrypt");
  expect(importSelfDescribingHash(hash)).toBe(hash);
  expect(await verifyPassword(password, hash)).toBe(true);
  expect(await verifyPassword(password + "!", hash)).toBe(false);
  expect(isCheapHash(hash)).toBe(false);
  expect(toEmqxHash(hash)).toEqual({ algorithm: "bcrypt", settings: "name = bcrypt", passwordHash: hash, salt: hash.slice(0, 29) });
});

test.each([
  // mosquitto_passwd -b (default -H sha512-pbkdf2): $7$<iterations>$<salt>$<hash>
  [
    "alice",
    "$7$101$vyCLKqoXlj7CikVS$EOYXA8MFfHPFzVjNbIN2ZJAI91i8VleSHLGcCTR1N2D9H04ayW7q/Fkkb7r/JZEtGUmywpRfuzn14Rvhqorf3A==",
    "alice-pw",
    "mosquitto-pbkdf2",
  ],
  [
    "bob",
    "$7$101$7Lg7pxkBcPPK2PtS$MGDurYGv3OqzjTBsALvj+OQOnyZlNk+Asju8dfm243378LTdfzz3CIn8IGos2Riqbd0cN6/jMAmksKyj3QCHOQ==",
    "b0b!pässwörd",
    "mosquitto-pbkdf2",
  ],
  // mosquitto_passwd -H sha512 (the 1.6 default): $6$<salt>$<sha512(password + salt)>
  [
    "carol",
    "$6$5wCfjpExECnQ6GGK$e5aRL95kyc9m+0fTovjaYzwSEow66gALCKYj7eUXvUtbdDh6h9KDzIqdMcYV/oc9pLex1LjREwkUK1dYYm3ztw==",
    "carol-pw",
    "mosquitto-sha512",
  ],
])("mosquitto_passwd: %s", async (_user, hash, password, format) => {
  expect(hashFormatOf(hash)).toBe(format);
  expect(importSelfDescribingHash(hash)).toBe(hash);
  expect(await verifyPassword(password, hash)).toBe(true);
  expect(await verifyPassword(password.toUpperCase(), hash)).toBe(false);
  expect(toEmqxHash(hash)).toBeUndefined();
  expect(isCheapHash(hash)).toBe(true); // 101 iterations: padded with the dummy scrypt
});

test("mosquitto-go-auth PBKDF2, base64 and utf-8 salt encodings", async () => {
  // pw-gen defaults: sha512, 100000 iterations, base64 salt (python: hashlib.pbkdf2_hmac over bytes(range(16))).
  const b64 =
    "PBKDF2$sha512$100000$AAECAwQFBgcICQoLDA0ODw==$W8hYHsNXhHH/D0KUSZwX3UTODDOtPuqfu+HhteofeEkMfAWqLSrDSEc2Z5tAaOWCphUnvKNNZ2JHPIA4m2VCug==";
  const stored = importSelfDescribingHash(b64);
  expect(hashFormatOf(stored)).toBe("pbkdf2");
  expect(await verifyPassword(PW, stored)).toBe(true);
  expect(await verifyPassword("nope", stored)).toBe(false);
  expect(isCheapHash(stored)).toBe(false);
  // A binary salt cannot live in EMQX's text salt column.
  expect(toEmqxHash(stored)).toBeUndefined();
  // The example of mosquitto-auth-plug's np tool (password "123"), whose salt is used as text.
  const np = "PBKDF2$sha256$901$x3RPLXFz3ateaMpJ$8eu+hGM+2XiqCUo3FzfaV7ck7RExX40s";
  expect(await verifyPassword("123", goAuthPbkdf2Hash(np, "utf-8"))).toBe(true);
  expect(await verifyPassword("123", goAuthPbkdf2Hash(np, "base64"))).toBe(false);
});

test("Argon2id (argon2-cffi, as mosquitto-go-auth writes it)", async () => {
  const hash = "$argon2id$v=19$m=4096,t=3,p=2$J07gT1bC5kUgzXXVWp0ssg$qTm+AwcjtsZdqRADN+m2Sw";
  expect(hashFormatOf(hash)).toBe("argon2id");
  expect(importSelfDescribingHash(hash)).toBe(hash);
  expect(await verifyPassword(PW, hash)).toBe(true);
  expect(await verifyPassword("s3cre", hash)).toBe(false);
  expect(await verifyPassword(PW, "$argon2id$v=19$m=4096,t=3,p=2$broken")).toBe(false);
});

test("malformed and unknown hashes never match and are refused on import with a reason", async () => {
  for (const bad of ["", "plain-text", "$scrypt$ln=1", "$1$abc$def", "$2b$04$short", "$7$101$a$b", "{SSHA}xyz"]) {
    expect(hashFormatOf(bad)).toBe("unknown");
    expect(await verifyPassword("x", bad)).toBe(false);
  }
  expect(() => importSelfDescribingHash("hunter2")).toThrow("not a hash (a plain-text password? hash it first, e.g. mosquitto_passwd -U)");
  expect(() => importSelfDescribingHash("$2b$04$short")).toThrow("malformed bcrypt hash");
  expect(() => importSelfDescribingHash("$1$abc$def")).toThrow('unsupported hash format "1"');
  expect(() => emqxSimpleHash("sha256", "suffix", "s", "abc")).toThrow("password_hash is not a sha256 hash (64 hex digits)");
  expect(() => emqxPbkdf2Hash("md4", 1, "s", "ab")).toThrow('pbkdf2 mac_fun "md4" is not supported');
});

test("only the project's scrypt with the current parameters needs no rehash", async () => {
  const fast = { N: 1024, r: 8, p: 1, keylen: 32 };
  const h = await hashPassword("pw", fast);
  expect(hashFormatOf(h)).toBe("scrypt");
  expect(needsRehash(h, fast)).toBe(false);
  expect(needsRehash(h, DEFAULT_SCRYPT)).toBe(true);
  expect(needsRehash("$2b$04$G3us/Dj34oNjejo/jbWOIOI8xEyR8VWNRmv1elYTyDIax7VbFJV8W", fast)).toBe(true);
  expect(toEmqxHash(h)).toBeUndefined();
});
