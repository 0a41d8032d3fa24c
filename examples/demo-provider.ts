/**
 * The bundled example provider (`make start`): a small but real policy.
 *
 * - Authentication against a fixed user list (alice/alice-pass, bob/bob-pass, admin/admin-pass);
 *   unknown users and wrong passwords are refused.
 * - Authorization: admin may do anything; everyone else may publish and subscribe under
 *   `users/<own username>/#` and `chat/#`, subscribe to `public/#`, and nothing else.
 * - Publish: `legacy/<rest>` is moved to `v2/<rest>` at QoS 1, chat messages have banned words
 *   masked, anything on `blocked/#` is dropped. Other topics are not sent to us at all.
 */
import { timingSafeEqual } from "node:crypto";
import { allow, allowIf, AuthorizeType, defineProvider, deny, drop, keep, matchTopic, rewrite } from "../src/index.js";

const USERS: ReadonlyMap<string, string> = new Map([
  ["alice", "alice-pass"],
  ["bob", "bob-pass"],
  ["admin", "admin-pass"],
]);

const BANNED = /\b(darn|heck)\b/gi;

function passwordMatches(expected: string, given: string): boolean {
  const a = Buffer.from(expected);
  const b = Buffer.from(given);
  return a.length === b.length && timingSafeEqual(a, b);
}

export default defineProvider(
  {
    onClientAuthenticate: ({ clientinfo }) => {
      const expected = USERS.get(clientinfo?.username ?? "");
      return allowIf(expected !== undefined && passwordMatches(expected, clientinfo?.password ?? ""));
    },

    onClientAuthorize: ({ clientinfo, type, topic }) => {
      const user = clientinfo?.username ?? "";
      if (user === "admin") return allow();
      if (user === "" || user.includes("+") || user.includes("#")) return deny();
      if (matchTopic(`users/${user}/#`, topic) || matchTopic("chat/#", topic)) return allow();
      if (type === AuthorizeType.SUBSCRIBE && matchTopic("public/#", topic)) return allow();
      return deny();
    },

    onMessagePublish: {
      topics: ["legacy/#", "chat/#", "blocked/#"],
      handler: ({ message }) => {
        const topic = message?.topic ?? "";
        if (matchTopic("blocked/#", topic)) return drop();
        if (topic.startsWith("legacy/")) return rewrite({ topic: `v2/${topic.slice("legacy/".length)}`, qos: 1 });
        const text = new TextDecoder().decode(message?.payload);
        const masked = text.replace(BANNED, (w) => "*".repeat(w.length));
        return masked === text ? keep() : rewrite({ payload: masked });
      },
    },

    onClientConnected: ({ clientinfo }, ctx) => {
      console.log(`connected: ${clientinfo?.clientid} (${clientinfo?.username}) on ${ctx.broker?.node || "?"}`);
    },

    onClientDisconnected: ({ clientinfo, reason }) => {
      console.log(`disconnected: ${clientinfo?.clientid} (${reason})`);
    },
  },
  { name: "demo-provider" },
);
