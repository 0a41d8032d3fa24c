/**
 * `outbox status | list | replay | purge`: the bridge outbox from the shell, against the configured
 * store (safe while servers run: every change is one transaction, and forwarders pick replayed
 * rows up at their next poll).
 */
import type { StackConfig } from "../usecases/config.js";
import type { Store } from "../usecases/store.js";
import { parseInteger, stringOption, UsageError, type Command, type CommandIo, type OptionValues } from "./command.js";
import { commandConfig, openCommandStore, STORE_OPTIONS, withStore } from "./store-access.js";

const SINK_OPTION = { sink: { type: "string", value: "NAME", help: "the sink (bridge.sinks[].name)" } } as const;

/** Runs `fn` with the store and the named sink, which must be configured or have rows. */
function withSink(
  options: OptionValues,
  io: CommandIo,
  action: string,
  fn: (store: Store, sink: string, cfg: StackConfig) => Promise<number>,
): Promise<number> {
  const sink = stringOption(options, "sink");
  if (sink === undefined || sink === "") throw new UsageError(`outbox ${action} needs --sink NAME`);
  const cfg = commandConfig(options, io);
  return withStore(openCommandStore(cfg, options), async (store) => {
    const known = new Set([...cfg.bridge.sinks.map((s) => s.name), ...(await store.outboxStats()).map((s) => s.sink)]);
    if (!known.has(sink)) {
      io.stderr(`emqx-exhook: no sink ${JSON.stringify(sink)} in the config or the outbox (known: ${[...known].join(", ") || "none"})\n`);
      return 1;
    }
    return fn(store, sink, cfg);
  });
}

export const outboxStatus: Command = {
  name: "outbox status",
  summary: "print the bridge outbox depth per sink (pending, parked, oldest pending) as JSON lines",
  options: { ...STORE_OPTIONS },
  async run({ options }, io) {
    const cfg = commandConfig(options, io);
    const kindOf = new Map(cfg.bridge.sinks.map((s) => [s.name, s.kind]));
    return withStore(openCommandStore(cfg, options), async (store) => {
      const stats = await store.outboxStats([...kindOf.keys()]);
      const now = Date.now();
      for (const s of stats) {
        io.stdout(
          JSON.stringify({
            sink: s.sink,
            kind: kindOf.get(s.sink) ?? null,
            configured: kindOf.has(s.sink),
            pending: s.pending,
            parked: s.parked,
            oldestPending: s.oldestCreatedAt === null ? null : new Date(s.oldestCreatedAt).toISOString(),
            oldestAgeSeconds: s.oldestCreatedAt === null ? 0 : Math.max(0, Math.round((now - s.oldestCreatedAt) / 1000)),
          }) + "\n",
        );
      }
      if (stats.length === 0)
        io.stderr(`no sinks configured and no outbox rows${cfg.bridge.enabled ? "" : " (bridge.enabled is false)"}\n`);
      return 0;
    });
  },
};

export const outboxList: Command = {
  name: "outbox list",
  summary: "print a sink's outbox rows (pending, or parked with --parked), oldest first, as JSON lines",
  options: {
    ...SINK_OPTION,
    parked: { type: "boolean", help: "parked rows (refused too often) instead of pending ones" },
    limit: { type: "string", value: "N", help: "at most N rows (1-100000, default 100)" },
    ...STORE_OPTIONS,
  },
  async run({ options }, io) {
    const given = stringOption(options, "limit");
    const limit = given === undefined ? 100 : parseInteger(given, 1, 100_000, "--limit");
    return withSink(options, io, "list", async (store, sink) => {
      for (const r of await store.outboxList(sink, { parked: options["parked"] === true, limit })) {
        io.stdout(
          JSON.stringify({
            seq: r.seq,
            id: r.id,
            key: r.key,
            dest: r.dest,
            createdAt: new Date(r.createdAt).toISOString(),
            attempts: r.attempts,
            parked: r.parked,
            lastError: r.lastError,
            bytes: r.payload.byteLength,
            headers: r.headers,
          }) + "\n",
        );
      }
      return 0;
    });
  },
};

export const outboxReplay: Command = {
  name: "outbox replay",
  summary: "put a sink's parked messages back in line (attempts reset)",
  options: { ...SINK_OPTION, ...STORE_OPTIONS },
  async run({ options }, io) {
    return withSink(options, io, "replay", async (store, sink) => {
      const n = await store.outboxReplay(sink);
      io.stdout(
        `${n} parked message${n === 1 ? "" : "s"} of sink ${sink} back in line; a running server forwards them within bridge.pollMs\n`,
      );
      return 0;
    });
  },
};

export const outboxPurge: Command = {
  name: "outbox purge",
  summary: "delete a sink's parked messages (--parked) or all its messages (--all) from the outbox",
  options: {
    ...SINK_OPTION,
    parked: { type: "boolean", help: "delete the parked rows only" },
    all: { type: "boolean", help: "delete every row of the sink (they are not bridged)" },
    ...STORE_OPTIONS,
  },
  async run({ options }, io) {
    if ((options["parked"] === true) === (options["all"] === true))
      throw new UsageError("outbox purge needs exactly one of --parked (parked rows only) or --all (every row of the sink)");
    return withSink(options, io, "purge", async (store, sink) => {
      const parkedOnly = options["parked"] === true;
      const n = await store.outboxPurge(sink, { parkedOnly });
      io.stdout(`deleted ${n} ${parkedOnly ? "parked " : ""}message${n === 1 ? "" : "s"} of sink ${sink} from the outbox (not bridged)\n`);
      return 0;
    });
  },
};
