/**
 * CPU priority of the calling thread (Linux, where nice is per thread): the store's scan thread
 * and the bridge's forwarding thread yield the CPU to the thread answering EMQX when it is short.
 */
import { readlinkSync } from "node:fs";
import { setPriority } from "node:os";

/** Sets the calling thread's nice value; returns false where that is not possible (not Linux, no /proc, not allowed). */
export function lowerThreadPriority(nice: number): boolean {
  try {
    const tid = Number(readlinkSync("/proc/thread-self").split("/").pop());
    if (!Number.isInteger(tid) || tid <= 0) return false;
    setPriority(tid, nice);
    return true;
  } catch {
    return false;
  }
}
