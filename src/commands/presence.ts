/** `presence list`: the stored presence of the presence use case, printed as JSON lines. */
import { presenceJson } from "../usecases/http.js";
import type { PresenceState } from "../usecases/store.js";
import { stringOption, UsageError, type Command } from "./command.js";
import { commandConfig, openCommandStore, STORE_OPTIONS, withStore } from "./store-access.js";

export const presenceList: Command = {
  name: "presence list",
  summary: "print the presence of clients as JSON lines",
  options: {
    online: { type: "boolean", help: "only online clients" },
    offline: { type: "boolean", help: "only offline clients" },
    clientid: { type: "string", value: "ID", help: "only this client id" },
    ...STORE_OPTIONS,
  },
  async run({ options }, io) {
    if (options["online"] === true && options["offline"] === true) throw new UsageError("give --online or --offline, not both");
    return withStore(openCommandStore(commandConfig(options, io), options), async (store) => {
      const id = stringOption(options, "clientid");
      let list: PresenceState[];
      if (id !== undefined) {
        const p = await store.getPresence(id);
        list = p ? [p] : [];
      } else {
        list = await store.listPresence(
          options["online"] === true ? { online: true } : options["offline"] === true ? { online: false } : {},
        );
      }
      for (const p of list) io.stdout(JSON.stringify(presenceJson(p)) + "\n");
      return 0;
    });
  },
};
