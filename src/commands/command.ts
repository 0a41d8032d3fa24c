/**
 * What a CLI command is, and the one argument parser every command (and `serve`) goes through:
 * Node's `util.parseArgs` in strict mode, with our error messages, strict integers and a help text
 * generated from the same option table. A command is a {@link Command} object in its own module
 * under src/commands/, registered with one line in src/commands/index.ts.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";

/** Where a command reads and writes. */
export interface CommandIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  /** Reads all of standard input. */
  readonly readStdin: () => Promise<string>;
  readonly env: NodeJS.ProcessEnv;
  /**
   * Called after a command removed a user or changed its password or superuser flag (the seam a
   * deployment wires to invalidate running servers' caches). Optional.
   */
  readonly onUserChanged?: ((username: string) => void | Promise<void>) | undefined;
}

/** One option of a command. */
export interface CommandOption {
  readonly type: "string" | "boolean";
  /** The value's name in the help (`--config FILE`); string options only. */
  readonly value?: string;
  /** May be given several times (the values arrive as an array). */
  readonly multiple?: boolean;
  readonly short?: string;
  /** One line (or a few) for the help. */
  readonly help: string;
}

/** Parsed options: strings, booleans, or arrays of strings for `multiple` options. */
export type OptionValues = Readonly<Record<string, string | boolean | string[] | undefined>>;

/** What a command's `run` receives. */
export interface CommandInput {
  /** Positional arguments after the command's words. */
  readonly args: readonly string[];
  readonly options: OptionValues;
}

/** A CLI command, e.g. `users add`. */
export interface Command {
  /** The words that select it (`"users add"`). */
  readonly name: string;
  /** Positional arguments in the usage line (`"<name>"`); none when absent. */
  readonly args?: string;
  /** Most positional arguments accepted. Default 0. */
  readonly maxArgs?: number;
  /** One line for `emqx-exhook --help`. */
  readonly summary: string;
  /** More text for `emqx-exhook <command> --help`. */
  readonly details?: string;
  readonly options: Readonly<Record<string, CommandOption>>;
  /** Runs it; resolves with the exit code (0 ok, 1 failure, 2 usage error). Throw {@link UsageError} for a usage error. */
  run(input: CommandInput, io: CommandIo): Promise<number>;
}

/** A wrong command line: printed with the command's usage, exit code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

const HELP_OPTION: CommandOption = { type: "boolean", short: "h", help: "show this help" };

/**
 * Parses `argv` (the words after the command name) against `options` with `util.parseArgs`
 * (strict: unknown options and missing values are errors), adding `--help`. Throws
 * {@link UsageError} with a message naming the option.
 */
export function parseCommandLine(
  argv: readonly string[],
  options: Readonly<Record<string, CommandOption>>,
): { args: string[]; options: OptionValues } {
  const config: NonNullable<ParseArgsConfig["options"]> = {};
  for (const [name, o] of Object.entries({ ...options, help: HELP_OPTION })) {
    config[name] = { type: o.type, ...(o.multiple ? { multiple: true } : {}), ...(o.short ? { short: o.short } : {}) };
  }
  try {
    const r = parseArgs({ args: [...argv], options: config, strict: true, allowPositionals: true });
    return { args: r.positionals, options: r.values as OptionValues };
  } catch (err) {
    throw new UsageError(parseErrorMessage(err as Error & { code?: string }));
  }
}

/** Our wording of util.parseArgs errors (its own mention `-- "--x"` tricks that do not apply here). */
function parseErrorMessage(err: Error & { code?: string }): string {
  const name = /'(-{1,2}[^' ]+)/.exec(err.message)?.[1];
  if (err.code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") return `unknown option ${name ?? err.message}`;
  if (err.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
    if (/argument missing|ambiguous/.test(err.message)) return `${name ?? "an option"} needs a value`;
    if (/does not take an argument/.test(err.message)) return `${name ?? "an option"} takes no value`;
  }
  return err.message.split("\n")[0] as string;
}

/**
 * A strict non-negative integer from the command line or the environment: digits only (no `0x`,
 * `1e3`, `+`, spaces or fractions), within `[min, max]`. `what` names the flag (and variable) in
 * the error, e.g. `"port"`.
 */
export function parseInteger(text: string, min: number, max: number, what: string): number {
  const n = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new UsageError(`${what} must be an integer from ${min} to ${max}, got ${JSON.stringify(text)}`);
  return n;
}

/** The last value of a string option (a repeated single-value option: the last one wins). */
export function stringOption(values: OptionValues, name: string): string | undefined {
  const v = values[name];
  return typeof v === "string" ? v : Array.isArray(v) ? v.at(-1) : undefined;
}

/** The usage line and option table of a command, for `--help` and usage errors. */
export function commandHelp(program: string, command: Command): string {
  const lines = [`usage: ${program} ${command.name}${command.args ? ` ${command.args}` : ""} [options]`, "", command.summary];
  if (command.details) lines.push("", command.details);
  lines.push("", "options:", ...optionLines({ ...command.options, help: HELP_OPTION }));
  return lines.join("\n") + "\n";
}

/** Option table lines: `  --name VALUE   help` with the help column aligned. */
export function optionLines(options: Readonly<Record<string, CommandOption>>): string[] {
  const heads = Object.entries(options).map(
    ([name, o]) => [`${o.short ? `-${o.short}, ` : ""}--${name}${o.value ? ` ${o.value}` : ""}`, o] as const,
  );
  const width = Math.min(Math.max(...heads.map(([h]) => h.length)) + 2, 28);
  const out: string[] = [];
  for (const [head, o] of heads) {
    const help = (o.multiple ? "(repeatable) " : "") + o.help;
    const [first, ...rest] = help.split("\n");
    if (head.length + 2 > width) out.push(`  ${head}`, `  ${" ".repeat(width)}${first}`);
    else out.push(`  ${head.padEnd(width)}${first}`);
    for (const r of rest) out.push(`  ${" ".repeat(width)}${r}`);
  }
  return out;
}
