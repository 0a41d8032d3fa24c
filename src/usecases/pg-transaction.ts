/**
 * One PostgreSQL transaction on a connection checked out of `pool`, for the store and the bridge's
 * outbox. A checked-out client has no listener of the pool's: without one, the server ending the
 * connection between two statements (a restart: 57P01) would be an unhandled 'error' event that
 * kills the process. A connection that failed (or whose transaction failed) is dropped, not
 * returned to the pool.
 */
import type pg from "pg";

/**
 * Runs `fn` between `begin` (BEGIN, or BEGIN with `SET LOCAL`s, sent as one round trip) and COMMIT
 * (ROLLBACK when it throws) and returns its result.
 */
export async function pgTransaction<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>, begin = "BEGIN"): Promise<T> {
  const c = await pool.connect();
  let failed: Error | undefined;
  const onError = (err: Error) => (failed ??= err);
  c.on("error", onError);
  try {
    await c.query(begin);
    const result = await fn(c);
    await c.query("COMMIT");
    return result;
  } catch (err) {
    failed ??= err as Error;
    await c.query("ROLLBACK").catch(() => {});
    throw err;
  } finally {
    c.off("error", onError);
    c.release(failed);
  }
}
