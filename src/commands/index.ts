/**
 * The management commands of the CLI (users, messages, presence, acl, ...), run against the
 * configured store with the same config file and environment as `serve`:
 *
 *   emqx-exhook users add <name> (--password-stdin | --password X) [--clientid PATTERN]... [--superuser]
 *   emqx-exhook users list | users remove <name> | users superuser <name> on|off
 *   emqx-exhook users import FILE [--algorithm A ...] [--dry-run] | users export [--format emqx-csv|emqx-json]
 *   emqx-exhook messages query [--topic FILTER] [--since T] [--until T] [--limit N] [--order asc|desc]
 *   emqx-exhook messages prune --older-than DURATION
 *   emqx-exhook presence list [--online | --offline] [--clientid ID]
 *   emqx-exhook acl list | acl set --file RULES | acl check --action A --topic T [--username U] [--clientid C] [--peerhost IP] ...
 *   emqx-exhook cache invalidate (--all | --user U | --client C)
 *   emqx-exhook outbox status | outbox list --sink S | outbox replay --sink S | outbox purge --sink S (--parked | --all)
 *
 * Each command is a {@link Command} in its own module; to add one, write it there and add it to
 * {@link COMMANDS} (one line). Parsing (util.parseArgs, strict), `--help` and usage errors are
 * handled here for all of them.
 */
import { aclCheck, aclList, aclSet, cacheInvalidate } from "./acl.js";
import { commandHelp, optionLines, parseCommandLine, UsageError, type Command, type CommandIo } from "./command.js";
import { messagesPrune, messagesQuery } from "./messages.js";
import { outboxList, outboxPurge, outboxReplay, outboxStatus } from "./outbox.js";
import { presenceList } from "./presence.js";
import { usersAdd, usersExport, usersImport, usersList, usersRemove, usersSuperuser } from "./users.js";

export type { Command, CommandIo, CommandInput, CommandOption, OptionValues } from "./command.js";
export { UsageError } from "./command.js";

/** Every management command, in the order `--help` lists them. Register a new command here. */
export const COMMANDS: readonly Command[] = [
  usersAdd,
  usersList,
  usersRemove,
  usersSuperuser,
  usersImport,
  usersExport,
  messagesQuery,
  messagesPrune,
  presenceList,
  aclList,
  aclSet,
  aclCheck,
  cacheInvalidate,
  outboxStatus,
  outboxList,
  outboxReplay,
  outboxPurge,
];

/** The first words of the commands (`users`, `messages`, ...): what the CLI hands to {@link runCommand}. */
export const SUBCOMMANDS: readonly string[] = [...new Set(COMMANDS.map((c) => c.name.split(" ")[0] as string))];

const PROGRAM = "emqx-exhook";

/** The lines listing the management commands, for the CLI's top-level help. */
export function commandSummaries(): Array<[string, string]> {
  return COMMANDS.map((c) => [`${c.name}${c.args ? ` ${c.args}` : ""}`, c.summary]);
}

/** The help of one command (`"users add"`), as `emqx-exhook users add --help` prints it. */
export function commandUsage(name: string): string {
  const c = COMMANDS.find((x) => x.name === name);
  if (!c) throw new Error(`no command ${JSON.stringify(name)}`);
  return commandHelp(PROGRAM, c);
}

/** The help of a group (`users`): its commands. */
function groupHelp(group: string): string {
  const cmds = COMMANDS.filter((c) => c.name.split(" ")[0] === group);
  const width = Math.max(...cmds.map((c) => c.name.length + (c.args ? c.args.length + 1 : 0))) + 2;
  return (
    `usage: ${PROGRAM} ${group} <command> [options]\n\ncommands:\n` +
    cmds.map((c) => `  ${`${c.name}${c.args ? ` ${c.args}` : ""}`.padEnd(width)}${c.summary}\n`).join("") +
    `\n${PROGRAM} ${group} <command> --help shows a command's options.\n`
  );
}

/**
 * Runs one management command (`argv` starts with its words, e.g. `["users", "list"]`); resolves
 * with the exit code: 0 ok, 1 failure, 2 usage error (printed with the command's usage).
 */
export async function runCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const [group = "", action] = argv;
  const command = COMMANDS.find((c) => c.name === `${group} ${action}`);
  if (!command) {
    if (!SUBCOMMANDS.includes(group)) {
      io.stderr(`${PROGRAM}: unknown command ${JSON.stringify(group)}; see ${PROGRAM} --help\n`);
      return 2;
    }
    if (action === undefined || action === "--help" || action === "-h") {
      (action === undefined ? io.stderr : io.stdout)(groupHelp(group));
      return action === undefined ? 2 : 0;
    }
    io.stderr(`${PROGRAM}: unknown command ${JSON.stringify(`${group} ${action}`)}\n\n${groupHelp(group)}`);
    return 2;
  }
  try {
    const parsed = parseCommandLine(argv.slice(2), command.options);
    if (parsed.options["help"] === true) {
      io.stdout(commandHelp(PROGRAM, command));
      return 0;
    }
    const max = command.maxArgs ?? 0;
    if (parsed.args.length > max) {
      throw new UsageError(
        max === 0 ? `${command.name} takes no positional arguments` : `${command.name} takes one ${command.args ?? "argument"}`,
      );
    }
    return await command.run({ args: parsed.args, options: parsed.options }, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr(`${PROGRAM}: ${err.message}\n\n${commandHelp(PROGRAM, command)}`);
      return 2;
    }
    io.stderr(`${PROGRAM}: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

/** Reads all of process.stdin as UTF-8. */
export function readProcessStdin(): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    process.stdin.on("data", (c: Buffer) => chunks.push(c));
    process.stdin.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    process.stdin.on("error", reject);
  });
}

export { optionLines };
