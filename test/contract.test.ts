/**
 * The wire contract, field by field: the generated descriptors of all three packages are walked and
 * compared with the table in test/fixtures/wire-contract.json, which was generated from
 * the spec (../shared/spec/exhook-wire-contract.md). Any rename, renumbering, type change, extra or
 * missing field, message, rpc or enum value fails here.
 */
import { ScalarType, type DescEnum, type DescField, type DescFile, type DescMessage } from "@bufbuild/protobuf";
import * as v1 from "../gen/emqx/exhook/v1/exhook_pb.js";
import * as v2 from "../gen/emqx/exhook/v2/exhook_pb.js";
import * as v3 from "../gen/emqx/exhook/v3/exhook_pb.js";
import contract from "./fixtures/wire-contract.json";

type Pkg = "v1" | "v2" | "v3";

interface FieldRow {
  name: string;
  number: number;
  type: string;
  card: string;
}
interface MessageRow {
  fields: FieldRow[];
  reserved: { number: number; name: string } | null;
}
interface PackageRow {
  rpcs: { name: string; input: string; output: string }[];
  messages: Record<string, MessageRow>;
  enums: Record<string, Record<string, number>>;
}

const table = contract as unknown as Record<Pkg, PackageRow>;

const FILES: Record<Pkg, DescFile> = {
  v1: v1.file_emqx_exhook_v1_exhook,
  v2: v2.file_emqx_exhook_v2_exhook,
  v3: v3.file_emqx_exhook_v3_exhook,
};
const SERVICES = { v1: v1.HookProvider, v2: v2.HookProvider, v3: v3.HookProvider };

const SCALAR_NAMES: Record<number, string> = {
  [ScalarType.DOUBLE]: "double",
  [ScalarType.FLOAT]: "float",
  [ScalarType.INT64]: "int64",
  [ScalarType.UINT64]: "uint64",
  [ScalarType.INT32]: "int32",
  [ScalarType.FIXED64]: "fixed64",
  [ScalarType.FIXED32]: "fixed32",
  [ScalarType.BOOL]: "bool",
  [ScalarType.STRING]: "string",
  [ScalarType.BYTES]: "bytes",
  [ScalarType.UINT32]: "uint32",
  [ScalarType.SFIXED32]: "sfixed32",
  [ScalarType.SFIXED64]: "sfixed64",
  [ScalarType.SINT32]: "sint32",
  [ScalarType.SINT64]: "sint64",
};

/** The descriptor's type in the table's notation: scalar name, short message/enum name, `map<k,v>`. */
function typeOf(f: DescField): string {
  switch (f.fieldKind) {
    case "scalar":
      return SCALAR_NAMES[f.scalar] as string;
    case "enum":
      return f.enum.name;
    case "message":
      return f.message.name;
    case "list":
      if (f.listKind === "scalar") return SCALAR_NAMES[f.scalar] as string;
      if (f.listKind === "enum") return f.enum.name;
      return f.message.name;
    case "map": {
      const key = SCALAR_NAMES[f.mapKey] as string;
      const value = f.mapKind === "scalar" ? (SCALAR_NAMES[f.scalar] as string) : f.mapKind === "enum" ? f.enum.name : f.message.name;
      return `map<${key},${value}>`;
    }
  }
}

/** The descriptor's cardinality in the table's notation. */
function cardOf(f: DescField): string {
  if (f.fieldKind === "list") return "repeated";
  if (f.fieldKind === "map") return "map";
  if (f.oneof) return `oneof ${f.oneof.name}`;
  return "singular";
}

/** The table writes a oneof as "oneof `value`" (markdown quoting, sometimes cut); normalise. */
function normaliseCard(card: string): string {
  const m = /^oneof\s+`?([A-Za-z_][A-Za-z0-9_]*)`?$/.exec(card);
  return m ? `oneof ${m[1]}` : card;
}

function fieldsOf(m: DescMessage): FieldRow[] {
  return m.fields.map((f) => ({ name: f.name, number: f.number, type: typeOf(f), card: cardOf(f) }));
}

/** Reserved numbers and names as `proto` (the DescriptorProto) has them. */
function reservedOf(m: DescMessage): { numbers: number[]; names: string[] } {
  const numbers: number[] = [];
  for (const r of m.proto.reservedRange) {
    // Ranges are [start, end) in the descriptor.
    for (let n = r.start; n < r.end; n++) numbers.push(n);
  }
  return { numbers, names: [...m.proto.reservedName] };
}

/** Every enum in a file, keyed like the table: "Message.Enum" for nested ones. */
function enumsOf(file: DescFile): Map<string, DescEnum> {
  const out = new Map<string, DescEnum>();
  for (const e of file.enums) out.set(e.name, e);
  const walk = (m: DescMessage, prefix: string) => {
    for (const e of m.nestedEnums) out.set(`${prefix}${m.name}.${e.name}`, e);
    for (const n of m.nestedMessages) walk(n, `${prefix}${m.name}.`);
  };
  for (const m of file.messages) walk(m, "");
  return out;
}

/** Every message in a file by name, nested ones as "Outer.Inner". */
function messagesOf(file: DescFile): Map<string, DescMessage> {
  const out = new Map<string, DescMessage>();
  const walk = (m: DescMessage, prefix: string) => {
    out.set(prefix + m.name, m);
    for (const n of m.nestedMessages) walk(n, `${prefix}${m.name}.`);
  };
  for (const m of file.messages) walk(m, "");
  return out;
}

describe.each(["v1", "v2", "v3"] as const)("wire contract of emqx.exhook.%s", (pkg) => {
  const file = FILES[pkg];
  const want = table[pkg];
  const messages = messagesOf(file);

  test("the table is not empty (guards against a broken fixture)", () => {
    expect(want.rpcs.length).toBe(21);
    expect(Object.keys(want.messages).length).toBe(33);
    expect(Object.keys(want.enums).length).toBe(2);
  });

  test("file, package and the one service", () => {
    expect(file.proto.package).toBe(`emqx.exhook.${pkg}`);
    expect(file.proto.syntax).toBe("proto3");
    expect(file.services.map((s) => s.typeName)).toEqual([`emqx.exhook.${pkg}.HookProvider`]);
    expect(file.services[0]).toBe(SERVICES[pkg]);
  });

  test("rpcs: names, order, input and output types, all unary", () => {
    const got = SERVICES[pkg].methods.map((m) => ({ name: m.name, input: m.input.name, output: m.output.name }));
    expect(got).toEqual(want.rpcs);
    for (const m of SERVICES[pkg].methods) {
      expect(m.methodKind).toBe("unary");
      expect(m.input.typeName).toBe(`emqx.exhook.${pkg}.${m.input.name}`);
      expect(m.output.typeName).toBe(`emqx.exhook.${pkg}.${m.output.name}`);
    }
  });

  test("exactly the messages of the table, no more", () => {
    expect([...messages.keys()].sort()).toEqual(Object.keys(want.messages).sort());
  });

  describe.each(Object.keys(want.messages).sort())("message %s", (name) => {
    const row = want.messages[name] as MessageRow;

    test("every field: name, number, type, cardinality, in order, no extras", () => {
      const m = messages.get(name);
      expect(m).toBeDefined();
      const expected = row.fields.map((f) => ({ ...f, card: normaliseCard(f.card) }));
      expect(fieldsOf(m as DescMessage)).toEqual(expected);
      // Proto names as written (snake_case), which is what EMQX's JSON and reflection use.
      for (const f of (m as DescMessage).fields) expect(f.proto.name).toBe(f.name);
    });

    test("reserved numbers and names", () => {
      const m = messages.get(name) as DescMessage;
      const got = reservedOf(m);
      if (row.reserved === null) {
        expect(got).toEqual({ numbers: [], names: [] });
      } else {
        expect(got).toEqual({ numbers: [row.reserved.number], names: [row.reserved.name] });
        // A reserved number must not be in use.
        expect(m.fields.map((f) => f.number)).not.toContain(row.reserved.number);
      }
    });
  });

  test("enums: exactly the table's enums and values", () => {
    const enums = enumsOf(file);
    expect([...enums.keys()].sort()).toEqual(Object.keys(want.enums).sort());
    for (const [name, values] of Object.entries(want.enums)) {
      const e = enums.get(name) as DescEnum;
      const got = Object.fromEntries(e.values.map((v) => [v.name, v.number]));
      expect({ name, values: got }).toEqual({ name, values });
    }
  });

  test("the three decision rpcs answer ValuedResponse, the rest EmptySuccess or LoadedResponse", () => {
    const valued = want.rpcs.filter((r) => r.output === "ValuedResponse").map((r) => r.name);
    expect(valued).toEqual(["OnClientAuthenticate", pkg === "v1" ? "OnClientCheckAcl" : "OnClientAuthorize", "OnMessagePublish"]);
  });
});

test("v1 differs from v2 exactly where the spec says (uptime, TopicFilter.qos, SubOpts.share, renames)", () => {
  const uptime = (p: Pkg) => table[p].messages["BrokerInfo"]?.fields.find((f) => f.name === "uptime")?.type;
  expect([uptime("v1"), uptime("v2"), uptime("v3")]).toEqual(["string", "int64", "int64"]);
  expect(v1.BrokerInfoSchema.field["uptime"]?.fieldKind).toBe("scalar");
  expect(v1.BrokerInfoSchema.field["uptime"]?.scalar).toBe(ScalarType.STRING);
  expect(v3.BrokerInfoSchema.field["uptime"]?.scalar).toBe(ScalarType.INT64);
  expect(v1.TopicFilterSchema.fields.map((f) => [f.name, f.number])).toEqual([
    ["name", 1],
    ["qos", 2],
  ]);
  expect(v2.TopicFilterSchema.fields.map((f) => [f.name, f.number])).toEqual([
    ["name", 1],
    ["subopts", 3],
  ]);
  expect(v1.SubOptsSchema.fields.map((f) => f.number)).toEqual([1, 2, 3, 4, 5]);
  expect(v3.SubOptsSchema.fields.map((f) => f.number)).toEqual([1, 3, 4, 5]);
});
