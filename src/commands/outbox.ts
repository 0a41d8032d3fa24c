/**
 * `emqx-exhook outbox ...`: the bridge outbox from the shell, against the configured store (safe
 * while servers run: every change is one transaction, and forwarders pick replayed rows up at
 * their next poll).
 *
 *   outbox status                            depth per sink: pending, parked, oldest pending
 *   outbox list --sink NAME [--parked] [--limit N]
 *   outbox replay --sink NAME                parked rows back in line (attempts reset)
 *   outbox purge --sink NAME (--parked | --all)
 */
import type { StackConfig } from "../usecases/config.js";
import type { Store } from "../usecases/store.js";

/** Usage lines of the outbox commands (appended to the CLI's usage). */
export const OUTBOX_USAGE = `  emqx-exhook outbox status [--config FILE]
  emqx-exhook outbox list --sink NAME [--parked] [--limit N] [--config FILE]
  emqx-exhook outbox replay --sink NAME [--config FILE]
  emqx-exhook outbox purge --sink NAME (--parked | --all) [--config FILE]
`;

/** The actions of `outbox`. */
export const OUTBOX_ACTIONS: readonly string[] = ["status", "list", "replay", "purge"];

/** Parsed values of an outbox command. */
export interface OutboxCommandValues {
  readonly sink?: string | undefined;
  readonly parked?: boolean;
  readonly all?: boolean;
  readonly limit?: string | undefined;
}

/** What an outbox command writes. */
export interface OutboxCommandIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
}

/** A usage mistake (exit code 2). */
export class OutboxUsageError extends Error {}

/**
 * Runs `outbox <action>` on an open store; resolves with the exit code (0 ok, 1 nothing to act on).
 * Throws {@link OutboxUsageError} on a wrong combination of flags.
 */
export async function runOutboxCommand(action: string, values: OutboxCommandValues, cfg: StackConfig, store: Store, io: OutboxCommandIo): Promise<number> {
  const configured = cfg.bridge.sinks.map((s) => s.name);
  const kindOf = new Map(cfg.bridge.sinks.map((s) => [s.name, s.kind]));
  if (action === "status") {
    if (values.sink !== undefined || values.parked || values.all || values.limit !== undefined) throw new OutboxUsageError("outbox status takes no options but --config");
    const stats = await store.outboxStats(configured);
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
    if (stats.length === 0) io.stderr(`no sinks configured and no outbox rows${cfg.bridge.enabled ? "" : " (bridge.enabled is false)"}\n`);
    return 0;
  }
  if (!OUTBOX_ACTIONS.includes(action)) throw new OutboxUsageError(`unknown outbox action ${JSON.stringify(action)} (status, list, replay, purge)`);
  const sink = values.sink;
  if (sink === undefined || sink === "") throw new OutboxUsageError(`outbox ${action} needs --sink NAME`);
  const known = new Set([...configured, ...(await store.outboxStats()).map((s) => s.sink)]);
  if (!known.has(sink)) {
    io.stderr(`emqx-exhook: no sink ${JSON.stringify(sink)} in the config or the outbox (known: ${[...known].join(", ") || "none"})\n`);
    return 1;
  }
  if (action === "list") {
    if (values.all) throw new OutboxUsageError("outbox list takes --parked, not --all");
    const limit = values.limit === undefined ? 100 : Number(values.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 100_000) throw new OutboxUsageError(`--limit must be an integer from 1 to 100000, got ${JSON.stringify(values.limit)}`);
    const rows = await store.outboxList(sink, { parked: values.parked === true, limit });
    for (const r of rows) {
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
  }
  if (action === "replay") {
    if (values.parked || values.all || values.limit !== undefined) throw new OutboxUsageError("outbox replay takes only --sink");
    const n = await store.outboxReplay(sink);
    io.stdout(`${n} parked message${n === 1 ? "" : "s"} of sink ${sink} back in line; a running server forwards them within bridge.pollMs\n`);
    return 0;
  }
  if (values.parked === values.all) throw new OutboxUsageError("outbox purge needs exactly one of --parked (parked rows only) or --all (every row of the sink)");
  if (values.limit !== undefined) throw new OutboxUsageError("outbox purge takes no --limit");
  const n = await store.outboxPurge(sink, { parkedOnly: values.parked === true });
  io.stdout(`deleted ${n} ${values.parked ? "parked " : ""}message${n === 1 ? "" : "s"} of sink ${sink} from the outbox (not bridged)\n`);
  return 0;
}
