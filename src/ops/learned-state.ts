/**
 * What the dispatcher learns from EMQX, kept the same in every worker of `serve --workers N` and
 * across restarts. Today that is what a v1 `OnProviderLoaded` says: EMQX 4.3.0–4.3.2 read
 * `ResponsedType` with another numbering, and 4.x sends `OnProviderLoaded` only once per
 * connection pool, so a worker that did not receive it (node:cluster spreads the pool over the
 * workers), or a server restarted under a running EMQX, would otherwise answer in the wrong
 * numbering.
 *
 * - Between workers: a sticky message on the cluster bus (src/ops/cluster-bus.ts); the primary
 *   replays it to workers started later.
 * - Across restarts: a small JSON file (`stateFile`), written atomically (temporary file + rename)
 *   when the learned state changes, read at start. A missing file is normal; an unreadable or
 *   invalid one is logged and ignored.
 * Newer knowledge wins (`learnedAt`), so a replayed or stale message never undoes a fresh load.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import type { Dispatcher, LearnedState } from "../dispatch.js";
import type { Logger } from "../provider.js";
import { clusterBus, type ClusterBus } from "./cluster-bus.js";

/** The bus channel. */
export const LEARNED_STATE_CHANNEL = "exhook.learned-state";

/** Options of {@link shareLearnedState}. */
export interface ShareLearnedStateOptions {
  /** JSON file to keep the state in across restarts. Default: none. */
  readonly file?: string | undefined;
  /** The bus to other workers. Default: this process's `clusterBus()`. */
  readonly bus?: ClusterBus;
  readonly logger?: Logger | undefined;
}

/** The sharing side; `publish` is what the dispatcher's `onLearned` calls. */
export interface LearnedStateSharing {
  /** Applies what the file says to `dispatcher` (call once it exists). */
  attach(dispatcher: Dispatcher): void;
  /** Sends a newly learned state to the other workers and writes it to the file. */
  publish(state: LearnedState): void;
  stop(): void;
}

/** Shares learned state between workers and runs. */
export function shareLearnedState(options: ShareLearnedStateOptions = {}): LearnedStateSharing {
  const bus = options.bus ?? clusterBus();
  const logger = options.logger;
  const file = options.file;
  let dispatcher: Dispatcher | undefined;
  let pending: LearnedState | undefined;
  const apply = (state: LearnedState) => {
    if (dispatcher) dispatcher.learn(state);
    else if (!pending || pending.learnedAt < state.learnedAt) pending = state;
  };
  const unsubscribe = bus.subscribe(LEARNED_STATE_CHANNEL, (data) => {
    const state = asLearnedState(data);
    if (state) apply(state);
  });
  if (file) {
    const state = readStateFile(file, logger);
    if (state) {
      apply(state);
      logger?.info(
        {
          file,
          legacyNumbering: state.v1.legacyNumbering,
          version: state.v1.broker.version,
          learnedAt: new Date(state.learnedAt).toISOString(),
        },
        "state learned from EMQX in an earlier run applied",
      );
    }
  }
  return {
    attach(d) {
      dispatcher = d;
      if (pending) d.learn(pending);
      pending = undefined;
    },
    publish(state) {
      bus.publish(LEARNED_STATE_CHANNEL, state, { sticky: true });
      if (file) writeStateFile(file, state, logger);
      logger?.info(
        { legacyNumbering: state.v1.legacyNumbering, version: state.v1.broker.version, file },
        "learned from EMQX (shared with the other workers)",
      );
    },
    stop: unsubscribe,
  };
}

interface StateFile {
  readonly format: 1;
  readonly learned: LearnedState;
}

function readStateFile(file: string, logger: Logger | undefined): LearnedState | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT")
      logger?.warn({ file, err: (err as Error).message }, "cannot read the state file; starting without it");
    return undefined;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    logger?.warn({ file, err: (err as Error).message }, "the state file is not JSON; starting without it");
    return undefined;
  }
  const state = (parsed as Partial<StateFile> | null)?.format === 1 ? asLearnedState((parsed as StateFile).learned) : undefined;
  if (!state) logger?.warn({ file }, "the state file has an unknown format; starting without it");
  return state;
}

function writeStateFile(file: string, state: LearnedState, logger: Logger | undefined): void {
  const body: StateFile = { format: 1, learned: state };
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(tmp, `${JSON.stringify(body, null, 2)}\n`);
    renameSync(tmp, file);
  } catch (err) {
    logger?.warn({ file, err: (err as Error).message }, "cannot write the state file; what was learned is kept in memory only");
  }
}

/** Validates plain data as a {@link LearnedState} (it comes from a file or another process). */
function asLearnedState(data: unknown): LearnedState | undefined {
  const d = data as { v1?: { legacyNumbering?: unknown; broker?: Record<string, unknown> }; learnedAt?: unknown } | null;
  const b = d?.v1?.broker;
  if (typeof d?.learnedAt !== "number" || typeof d.v1?.legacyNumbering !== "boolean" || typeof b !== "object" || b === null)
    return undefined;
  const str = (v: unknown) => (typeof v === "string" ? v : "");
  return {
    v1: {
      legacyNumbering: d.v1.legacyNumbering,
      broker: { node: str(b["node"]), version: str(b["version"]), sysdescr: str(b["sysdescr"]), clusterName: str(b["clusterName"]) },
    },
    learnedAt: d.learnedAt,
  };
}
