#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL server and EXHOOK_TEST_PG_URL pointing at it (plus
# EXHOOK_TEST_PG_BIN and, as root, EXHOOK_TEST_PG_RUNAS for tests that run a cluster of their own):
#   scripts/with-postgres.sh npx jest test/usecases-
# Uses the PostgreSQL binaries already installed (pg_config, or the newest /usr/lib/postgresql/*/bin);
# when there are none and apt-get works as root, installs Debian's `postgresql` package first.
# initdb refuses to run as root, so as root the cluster is owned by the `postgres` system user.
# The cluster lives in a temp dir, listens on a free port on 127.0.0.1 only (trust auth, no
# network exposure) and is stopped and deleted when the command ends. When PostgreSQL cannot be
# had, it says so loudly and runs the command anyway (the tests then skip PostgreSQL, visibly).
set -uo pipefail

if [ "$#" -eq 0 ]; then echo "usage: $0 <command> [args...]" >&2; exit 2; fi

say() { echo "with-postgres: $*" >&2; }

find_bindir() {
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then pg_config --bindir; return; fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; fi
}

BIN=$(find_bindir)
if [ -z "$BIN" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  say "no PostgreSQL found; installing Debian's postgresql package"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) || say "apt-get install postgresql failed"
  BIN=$(find_bindir)
fi
if [ -z "$BIN" ]; then
  say "*** PostgreSQL is not available: PostgreSQL tests will be SKIPPED ***"
  exec "$@"
fi

DIR=$(mktemp -d /tmp/exhook-pg.XXXXXX)
RUN=()
if [ "$(id -u)" = 0 ]; then
  if ! id postgres >/dev/null 2>&1; then useradd --system --no-create-home --shell /usr/sbin/nologin postgres || true; fi
  chown postgres "$DIR"
  RUN=(runuser -u postgres --)
fi
PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')

cleanup() {
  "${RUN[@]}" "$BIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

if ! "${RUN[@]}" "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust --encoding=UTF8 --no-sync >"$DIR/initdb.log" 2>&1; then
  cat "$DIR/initdb.log" >&2
  say "*** initdb failed: PostgreSQL tests will be SKIPPED ***"
  "$@"; exit $?
fi
if ! "${RUN[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=off -c full_page_writes=off" start >/dev/null; then
  cat "$DIR/server.log" >&2
  say "*** PostgreSQL did not start: PostgreSQL tests will be SKIPPED ***"
  "$@"; exit $?
fi

export EXHOOK_TEST_PG_URL="postgres://postgres@127.0.0.1:$PORT/postgres"
# For tests that stop and start a PostgreSQL of their own (test/helpers/pg-cluster.ts): the binaries,
# and the user to run them as (initdb and postgres refuse root).
export EXHOOK_TEST_PG_BIN="$BIN"
if [ "$(id -u)" = 0 ]; then export EXHOOK_TEST_PG_RUNAS=postgres; fi
say "PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on $EXHOOK_TEST_PG_URL"
"$@"
