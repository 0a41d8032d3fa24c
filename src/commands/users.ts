/**
 * `users add | list | remove`: the users of the authentication use case. Passwords are never
 * printed or logged; prefer `--password-stdin` (`--password` shows up in shell history and `ps`).
 */
import { addUser, usernameError } from "../usecases/auth.js";
import { announceChange } from "./acl.js";
import { stringOption, UsageError, type Command } from "./command.js";
import { commandConfig, openCommandStore, STORE_OPTIONS, withStore } from "./store-access.js";

export const usersAdd: Command = {
  name: "users add",
  args: "<name>",
  maxArgs: 1,
  summary: "add a user, or replace its password and client ids",
  options: {
    "password-stdin": { type: "boolean", help: "read the password from standard input (recommended)" },
    password: { type: "string", value: "X", help: "the password (visible in shell history and process lists)" },
    clientid: { type: "string", value: "PATTERN", multiple: true, help: "a client id the user may connect with, * = any run of characters;\nnone = any client id" },
    ...STORE_OPTIONS,
  },
  async run({ args, options }, io) {
    const name = args[0];
    if (name === undefined) throw new UsageError("users add takes one <name>");
    const uerr = usernameError(name);
    if (uerr) throw new UsageError(uerr);
    let password = stringOption(options, "password");
    if (options["password-stdin"] === true) {
      if (password !== undefined) throw new UsageError("give --password-stdin or --password, not both");
      password = (await io.readStdin()).replace(/\r?\n$/, "");
    } else if (password === undefined) throw new UsageError("users add needs --password-stdin (recommended) or --password X");
    else io.stderr("emqx-exhook: warning: --password is visible in shell history and process lists; prefer --password-stdin\n");
    if (password.length === 0) throw new UsageError("the password is empty");
    const cfg = commandConfig(options, io);
    return withStore(openCommandStore(cfg, options), async (store) => {
      const existed = (await store.getUser(name)) !== undefined;
      const clientIds = (options["clientid"] as string[] | undefined) ?? [];
      const user = await addUser(store, name, password as string, { clientIds, scrypt: cfg.auth.scrypt });
      await announceChange(cfg, store, { scope: "user", key: name });
      io.stdout(`${existed ? "updated" : "added"} user ${user.username}${user.clientIds.length ? ` (client ids: ${user.clientIds.join(", ")})` : ""}\n`);
      return 0;
    });
  },
};

export const usersList: Command = {
  name: "users list",
  summary: "list the users (name, client ids, last change)",
  options: STORE_OPTIONS,
  async run({ options }, io) {
    return withStore(openCommandStore(commandConfig(options, io), options), async (store) => {
      const users = await store.listUsers();
      for (const u of users) io.stdout(`${u.username}\tclient ids: ${u.clientIds.length ? u.clientIds.join(", ") : "any"}\tupdated ${new Date(u.updatedAt).toISOString()}\n`);
      if (users.length === 0) io.stderr("no users\n");
      return 0;
    });
  },
};

export const usersRemove: Command = {
  name: "users remove",
  args: "<name>",
  maxArgs: 1,
  summary: "remove a user",
  options: STORE_OPTIONS,
  async run({ args, options }, io) {
    const name = args[0];
    if (name === undefined) throw new UsageError("users remove takes one <name>");
    const cfg = commandConfig(options, io);
    return withStore(openCommandStore(cfg, options), async (store) => {
      if (!(await store.removeUser(name))) {
        io.stderr(`emqx-exhook: no user ${JSON.stringify(name)}\n`);
        return 1;
      }
      await announceChange(cfg, store, { scope: "user", key: name });
      io.stdout(`removed user ${name}\n`);
      return 0;
    });
  },
};
