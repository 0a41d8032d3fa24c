/** The linear glob matcher used for client-id and username patterns. */
import { compileClientIdPatterns, compileGlob, compileGlobs } from "../src/usecases/index";

/** Reference semantics: a RegExp, on inputs small enough that its backtracking does not matter. */
const reference = (pattern: string, input: string) =>
  new RegExp(
    `^${pattern
      .split("*")
      .map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
      .join(".*")}$`,
    "s",
  ).test(input);

test("matches exactly like the regular-expression reading of * on every small pattern and input", () => {
  const alphabet = ["a", "b", "*"];
  const patterns: string[] = [""];
  for (let len = 1; len <= 5; len++) {
    for (let n = 0; n < alphabet.length ** len; n++) {
      let p = "";
      for (let k = 0, v = n; k < len; k++, v = Math.floor(v / 3)) p += alphabet[v % 3];
      patterns.push(p);
    }
  }
  const inputs: string[] = [""];
  for (let len = 1; len <= 6; len++) {
    for (let n = 0; n < 2 ** len; n++) {
      let s = "";
      for (let k = 0; k < len; k++) s += (n >> k) & 1 ? "b" : "a";
      inputs.push(s);
    }
  }
  let checked = 0;
  for (const p of patterns) {
    const m = compileGlob(p);
    for (const s of inputs) {
      if (m(s) !== reference(p, s)) throw new Error(`pattern ${JSON.stringify(p)} on ${JSON.stringify(s)}: got ${m(s)}`);
      checked++;
    }
  }
  expect(checked).toBe(patterns.length * inputs.length);
});

test("literals, special characters and lists", () => {
  expect(compileGlob("sensor-*")("sensor-17")).toBe(true);
  expect(compileGlob("sensor-*")("sensor")).toBe(false);
  expect(compileGlob("a.b")("axb")).toBe(false);
  expect(compileGlob("(x)+[y]$")("(x)+[y]$")).toBe(true);
  expect(compileGlob("*-sensor-*-prod")("eu-sensor-7-prod")).toBe(true);
  expect(compileGlob("ab*ba")("aba")).toBe(false); // prefix and suffix must not overlap
  expect(compileGlob("**")("anything\nat all")).toBe(true);
  expect(compileGlobs([])("x")).toBe(true);
  expect(compileGlobs(["a*", "gw"])("gw")).toBe(true);
  expect(compileGlobs(["a*", "gw"])("gw2")).toBe(false);
  expect(compileClientIdPatterns(["dev-*"])("dev-1")).toBe(true);
});

test("inputs that make a backtracking regex explode are answered at once (64 KiB ids, many stars)", () => {
  // `^.*a.*a.*a.*b$` took 61 s on a 1,000-character id; this runs 200 checks on 64 KiB ids.
  const many = compileGlob("*a*a*a*b");
  const tenant = compileGlob("*-sensor-*-prod");
  const long = "a".repeat(65_535);
  const dashes = "-sensor-".repeat(8191);
  const start = process.hrtime.bigint();
  for (let i = 0; i < 100; i++) {
    expect(many(long)).toBe(false);
    expect(tenant(dashes)).toBe(false);
  }
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  // A bound a thousand times above what a linear matcher needs: it holds on a loaded machine and
  // fails by orders of magnitude for a backtracking one.
  expect(ms).toBeLessThan(5000);
  expect(many(long + "b")).toBe(true);
});
