/**
 * A CLI (or any Node script) as a child process, with its output collected and waits on what it
 * prints: the workers and CLI tests start `emqx-exhook serve` this way.
 */
import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";

export interface CliProcess {
  readonly child: ChildProcess;
  /** Everything printed on stdout / stderr so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves when the process has exited and its output is read to the end. */
  readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /**
   * Resolves with the matches once `pattern` (a /g regex) matched `count` times in stdout; rejects
   * after `timeoutMs` or when the process exits first, with what it printed.
   */
  waitFor(pattern: RegExp, count?: number, timeoutMs?: number): Promise<RegExpMatchArray[]>;
  /** Ends the process (or its process group, if started detached) with `signal` unless it already ended. */
  kill(signal?: NodeJS.Signals): void;
  /** Resolves with the exit once it comes; rejects after `timeoutMs`. */
  exited(timeoutMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `node <args>`; stdin ignored, stdout/stderr collected. */
export function spawnCli(args: readonly string[], options: Omit<SpawnOptions, "stdio"> = {}): CliProcess {
  const child = spawn(process.execPath, args, { ...options, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  const watchers = new Set<() => void>();
  child.stdout?.on("data", (c: Buffer) => {
    out += c.toString();
    for (const w of watchers) w();
  });
  child.stderr?.on("data", (c: Buffer) => (err += c.toString()));
  // "close", not "exit": by then stdout and stderr are read to the end.
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("close", (code, signal) => resolve({ code, signal })),
  );
  const printed = () => `stdout:\n${out}\nstderr:\n${err}`;
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exit,
    waitFor(pattern, count = 1, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const done = (fn: () => void) => {
          watchers.delete(check);
          clearTimeout(guard);
          fn();
        };
        const check = () => {
          const matches = [...out.matchAll(pattern)];
          if (matches.length >= count) done(() => resolve(matches));
        };
        const guard = setTimeout(
          () => done(() => reject(new Error(`${pattern} not printed ${count} time(s) in ${timeoutMs} ms; ${printed()}`))),
          timeoutMs,
        );
        void exit.then(({ code, signal }) =>
          done(() =>
            reject(new Error(`exited (${signal ?? `code ${code}`}) before ${pattern} was printed ${count} time(s); ${printed()}`)),
          ),
        );
        watchers.add(check);
        check();
      });
    },
    kill(signal = "SIGKILL") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      if (options.detached) process.kill(-(child.pid as number), signal);
      else child.kill(signal);
    },
    exited(timeoutMs = 15_000) {
      let guard: NodeJS.Timeout | undefined;
      return Promise.race([
        exit.finally(() => clearTimeout(guard)),
        new Promise<never>(
          (_, reject) => (guard = setTimeout(() => reject(new Error(`no exit within ${timeoutMs} ms; ${printed()}`)), timeoutMs)),
        ),
      ]);
    },
  };
}
