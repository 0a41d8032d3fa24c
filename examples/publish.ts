/**
 * Publishes through a running ExHook server the way EMQX would call it (the test kit's fake EMQX
 * over HTTP/2): connect (client.authenticate, client.connected ...), then PUBLISH messages
 * (client.authorize, message.publish). For trying the use cases and the bridge without an EMQX:
 *
 *   node dist/examples/publish.js --username alice --password secret --topic users/alice/temp --count 5
 *
 * Options: --url (default http://127.0.0.1:9000), --clientid (default publish-<pid>), --username,
 * --password, --topic (default t/1), --payload (default "hello <n>"), --count (default 1),
 * --qos (default 1). Prints the outcome of each step.
 */
import { parseArgs } from "node:util";
import { createFakeEmqx } from "../src/testing/index.js";

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      url: { type: "string", default: "http://127.0.0.1:9000" },
      clientid: { type: "string", default: `publish-${process.pid}` },
      username: { type: "string", default: "" },
      password: { type: "string", default: "" },
      topic: { type: "string", default: "t/1" },
      payload: { type: "string" },
      count: { type: "string", default: "1" },
      qos: { type: "string", default: "1" },
    },
  });
  const count = Number(values.count);
  const qos = Number(values.qos);
  if (!Number.isInteger(count) || count < 1) throw new Error(`--count must be a positive integer, got ${JSON.stringify(values.count)}`);
  if (qos !== 0 && qos !== 1 && qos !== 2) throw new Error(`--qos must be 0, 1 or 2, got ${JSON.stringify(values.qos)}`);
  const emqx = createFakeEmqx({ url: values.url });
  try {
    await emqx.start();
    const c = await emqx.connect({ clientid: values.clientid, username: values.username, password: values.password });
    process.stdout.write(`connect ${values.clientid}: ${c.reasonCode}\n`);
    if (!c.connected) {
      process.exitCode = 1;
      return;
    }
    for (let i = 1; i <= count; i++) {
      const r = await emqx.publish(values.clientid, { topic: values.topic, payload: values.payload ?? `hello ${i}`, qos });
      process.stdout.write(`publish ${i} to ${values.topic}: ${JSON.stringify(r)}\n`);
    }
    await emqx.disconnect(values.clientid);
  } finally {
    await emqx.stop().catch(() => {});
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`publish: ${(err as Error).message}\n`);
  process.exit(1);
});
