/** jest globalSetup: compiles src/, gen/ and examples/ once for the tests that need plain JS (see compiled-tree.ts). */
import { rmSync } from "node:fs";
import { compileTree } from "./compile";
import { COMPILED_TREE } from "./compiled-tree";

export default function globalSetup(): void {
  rmSync(COMPILED_TREE, { recursive: true, force: true });
  compileTree("src", COMPILED_TREE);
  compileTree("gen", COMPILED_TREE);
  compileTree("examples", COMPILED_TREE);
}
