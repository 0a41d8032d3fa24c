/**
 * Destination templates: how an MQTT topic (and client, hook, ...) becomes a NATS subject, an AMQP
 * routing key or a Redis stream key. `${name}` placeholders are replaced by the message's values,
 * escaped for the engine:
 *
 * - `nats`: subjects are `.`-separated tokens where `*`, `>` and whitespace are not allowed. The
 *   levels of `${topic}` become tokens (`a/b/c` → `a.b.c`); inside a token `%`, `.`, `*`, `>`,
 *   whitespace and control characters are percent-encoded (`%2E`...), and an empty level becomes
 *   `_`. `${hook}` keeps its dots (`client.connected` is two tokens); other values are one token
 *   each, escaped the same way.
 * - `amqp`: `${topic}` swaps `/` and `.` (`a/b.c` → `a.b/c`), as RabbitMQ's own MQTT plugin does, so
 *   topic-exchange bindings (`a.*`, `a.#`) work per MQTT level. A routing key longer than 255 bytes
 *   is refused (the message is counted as unroutable).
 * - `raw`: values as they are (Redis stream keys).
 */
import { ExHookConfigError } from "../../errors.js";

/** The values a template can use. */
export interface TemplateValues {
  /** MQTT topic ("" for client and session events, except `session.(un)subscribed`: the filter). */
  readonly topic: string;
  readonly clientid: string;
  readonly username: string;
  /** EMQX node. */
  readonly node: string;
  /** EMQX hook name, e.g. `message.publish`, `client.connected`. */
  readonly hook: string;
  /** QoS as text ("" for events). */
  readonly qos: string;
}

/** The placeholder names a template may use. */
export const TEMPLATE_VARIABLES: readonly (keyof TemplateValues)[] = ["topic", "clientid", "username", "node", "hook", "qos"];

/** How rendered values are escaped. */
export type TemplateStyle = "nats" | "amqp" | "raw";

/** A compiled template. */
export type Template = (values: TemplateValues) => string;

/** Characters a NATS token cannot carry as they are: `%` (the escape itself), `.`, `*`, `>`, whitespace, controls. */
const natsUnsafe = (code: number): boolean =>
  code <= 0x20 ||
  code === 0x7f ||
  code === 0x25 ||
  code === 0x2e ||
  code === 0x2a ||
  code === 0x3e ||
  (code > 0x7f && /\s/.test(String.fromCharCode(code)));
const natsToken = (s: string): string => {
  if (s === "") return "_";
  let out = "";
  for (const ch of s) {
    const code = ch.charCodeAt(0);
    out += ch.length === 1 && natsUnsafe(code) ? `%${code.toString(16).toUpperCase().padStart(2, "0")}` : ch;
  }
  return out;
};
const natsTopic = (topic: string): string => topic.split("/").map(natsToken).join(".");
const amqpTopic = (topic: string): string => topic.replace(/[./]/g, (c) => (c === "/" ? "." : "/"));

/**
 * Compiles `template`; throws ExHookConfigError (prefixed with `where`) on an unknown placeholder or
 * a template whose fixed parts can never make a valid destination.
 */
export function compileTemplate(template: string, style: TemplateStyle, where: string): Template {
  const parts: Array<string | keyof TemplateValues> = [];
  const vars = new Set<string>();
  let last = 0;
  for (const m of template.matchAll(/\$\{([^}]*)\}/g)) {
    const name = m[1] as string;
    if (!(TEMPLATE_VARIABLES as readonly string[]).includes(name)) {
      throw new ExHookConfigError(
        `${where}: unknown placeholder \${${name}} in ${JSON.stringify(template)} (allowed: ${TEMPLATE_VARIABLES.map((v) => `\${${v}}`).join(", ")})`,
      );
    }
    parts.push(template.slice(last, m.index));
    parts.push(name as keyof TemplateValues);
    vars.add(name);
    last = (m.index as number) + m[0].length;
  }
  parts.push(template.slice(last));
  // Even slots are literal text, odd slots placeholder names.
  const escapeValue = style === "nats" ? natsToken : (s: string) => s;
  const topicOf = style === "nats" ? natsTopic : style === "amqp" ? amqpTopic : (s: string) => s;
  const render: Template = (v) => {
    let out = parts[0] as string;
    for (let i = 1; i < parts.length; i += 2) {
      const name = parts[i] as keyof TemplateValues;
      // Hook names (`client.connected`) are known-safe dotted words: their dots stay separators.
      out += (name === "topic" ? topicOf(v.topic) : name === "hook" ? v.hook : escapeValue(v[name])) + (parts[i + 1] as string);
    }
    return out;
  };
  const sample = render({ topic: "t/1", clientid: "c", username: "u", node: "n", hook: "message.publish", qos: "1" });
  const err = destinationError(sample, style);
  if (err) throw new ExHookConfigError(`${where}: ${JSON.stringify(template)} cannot make a valid destination: ${err}`);
  return render;
}

/** Why `dest` is not a valid destination for `style`, or undefined. */
export function destinationError(dest: string, style: TemplateStyle): string | undefined {
  if (dest === "") return "it is empty";
  if (style === "nats") {
    if (/\s/.test(dest)) return "a NATS subject cannot contain whitespace";
    const tokens = dest.split(".");
    if (tokens.some((t) => t === "")) return "a NATS subject cannot have an empty token (.. or a leading/trailing .)";
    if (tokens.some((t) => t.includes("*") || t.includes(">"))) return "a NATS subject to publish to cannot contain the wildcards * or >";
  }
  if (style === "amqp" && Buffer.byteLength(dest) > 255)
    return `an AMQP routing key is at most 255 bytes (this one is ${Buffer.byteLength(dest)})`;
  if (style === "raw" && Buffer.byteLength(dest) > 65_536) return "a key longer than 64 KiB";
  return undefined;
}
