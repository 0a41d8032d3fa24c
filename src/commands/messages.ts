/** `messages query | prune`: the messages stored by the persistence use case, printed as JSON lines. */
import { parseDuration } from "../usecases/config.js";
import { messageJson, messageQueryFrom } from "../usecases/http.js";
import { createMessageRetention } from "../usecases/persistence.js";
import type { MessageQuery } from "../usecases/store.js";
import { parseInteger, stringOption, UsageError, type Command } from "./command.js";
import { commandConfig, openCommandStore, STORE_OPTIONS, withStore } from "./store-access.js";

export const messagesQuery: Command = {
  name: "messages query",
  summary: "print stored messages as JSON lines, newest first",
  options: {
    topic: { type: "string", value: "FILTER", help: "MQTT topic filter the topic must match (default #)" },
    since: { type: "string", value: "TIME", help: "only messages received at or after TIME (ISO 8601 or ms since epoch)" },
    until: { type: "string", value: "TIME", help: "only messages received before TIME" },
    limit: { type: "string", value: "N", help: "at most N messages, 1 to 10000 (default 100)" },
    order: { type: "string", value: "asc|desc", help: "oldest or newest first (default desc)" },
    ...STORE_OPTIONS,
  },
  async run({ options }, io) {
    const limit = stringOption(options, "limit");
    if (limit !== undefined) parseInteger(limit, 1, 10_000, "--limit");
    let query: MessageQuery;
    try {
      query = messageQueryFrom({
        topic: stringOption(options, "topic"),
        since: stringOption(options, "since"),
        until: stringOption(options, "until"),
        limit,
        order: stringOption(options, "order"),
      });
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    return withStore(openCommandStore(commandConfig(options, io), options), async (store) => {
      for (const m of await store.queryMessages(query)) io.stdout(JSON.stringify(messageJson(m)) + "\n");
      return 0;
    });
  },
};

export const messagesPrune: Command = {
  name: "messages prune",
  summary: "delete stored messages older than a duration (persistence.retention does it on a timer)",
  options: {
    "older-than": { type: "string", value: "D", help: "delete messages whose EMQX timestamp is older than D: e.g. 7d, 12h, 30m, 45s" },
    ...STORE_OPTIONS,
  },
  async run({ options }, io) {
    const given = stringOption(options, "older-than");
    if (given === undefined) throw new UsageError("messages prune needs --older-than DURATION (e.g. 7d)");
    const maxAgeMs = parseDuration(given);
    if (maxAgeMs === undefined) throw new UsageError(`--older-than ${JSON.stringify(given)} is not a duration: use e.g. 7d, 12h, 30m, 45s`);
    return withStore(openCommandStore(commandConfig(options, io), options), async (store) => {
      const retention = createMessageRetention({ store, maxAgeMs, everyMs: 0 });
      const deleted = await retention.sweep();
      io.stdout(`deleted ${deleted} message${deleted === 1 ? "" : "s"} older than ${new Date(Date.now() - maxAgeMs).toISOString()}\n`);
      return 0;
    });
  },
};
