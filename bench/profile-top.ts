/**
 * Prints the top self-time functions of a V8 `.cpuprofile` (from `node --cpu-prof`):
 * `node profile-top.js <file.cpuprofile> [n]`. Used to record where the hot path's time goes.
 */
import * as fs from "node:fs";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

/** Self-time share per function (name + file:line), largest first. */
export function topSelf(file: string, n = 25): Array<{ pct: number; fn: string }> {
  const prof = JSON.parse(fs.readFileSync(file, "utf8")) as { nodes: ProfileNode[]; samples: number[] };
  const byId = new Map(prof.nodes.map((nd) => [nd.id, nd]));
  const counts = new Map<number, number>();
  for (const s of prof.samples) counts.set(s, (counts.get(s) ?? 0) + 1);
  const agg = new Map<string, number>();
  for (const [id, c] of counts) {
    const nd = byId.get(id);
    if (!nd) continue;
    const f = nd.callFrame;
    const where = f.url ? `${f.url.replace(/^.*\/(node_modules|dist\/bench-build)\//, "")}:${f.lineNumber + 1}` : "";
    const key = `${f.functionName || "(anonymous)"} ${where}`.trim();
    agg.set(key, (agg.get(key) ?? 0) + c);
  }
  const total = prof.samples.length;
  return [...agg.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([fn, c]) => ({ pct: Math.round((c / total) * 1000) / 10, fn }));
}

if (require.main === module) {
  const [file, n] = process.argv.slice(2);
  if (!file) {
    process.stderr.write("usage: profile-top.js <file.cpuprofile> [n]\n");
    process.exit(2);
  }
  for (const row of topSelf(file, Number(n ?? 25))) process.stdout.write(`${row.pct.toFixed(1).padStart(5)}%  ${row.fn}\n`);
}
