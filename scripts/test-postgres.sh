#!/usr/bin/env bash
# Starts (once) a private PostgreSQL server for the tests on 127.0.0.1 and
# prints its URL. Installs Debian's `postgresql` package if the machine has
# no server. Idempotent: a server already answering on the port is reused.
#
#   BRAID_TEST_PG_PORT   port to use (default 55432)
#   BRAID_TEST_PG_FSYNC  `on` to flush every commit to disk like a real
#                        server (default `off`: tests need no durability)
#
#   scripts/test-postgres.sh restart   restarts that server (fast shutdown:
#                                      open connections are cut), for the
#                                      tests of connection loss
#   scripts/test-postgres.sh stop      stops it (fast); run the script
#                                      without arguments to start it again
#
# The cluster lives in /tmp/braid-test-pg-PORT (the `postgres` user must be
# able to reach it when this runs as root); trust authentication on loopback
# only, so it is for tests, never for data.
set -euo pipefail
port=${BRAID_TEST_PG_PORT:-55432}
dir=/tmp/braid-test-pg-$port
url="postgres://postgres@127.0.0.1:$port/braid_test"
fsync=${BRAID_TEST_PG_FSYNC:-off}

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "installing PostgreSQL (Debian package postgresql)" >&2
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  install() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
  # A post-install step that cannot start Debian's own cluster (no init
  # system here) is not fatal: only the binaries are needed.
  install || { $sudo apt-get update -q >&2 && install; } || true
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "error: PostgreSQL could not be installed (apt-get install postgresql); the PostgreSQL tests need a server" >&2
    exit 1
  fi
fi

# Run the server's tools as `postgres` when root (initdb refuses root).
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "${1:-}" in
  restart)
    as_pg "$bin/pg_ctl" -D "$dir" -w -t 30 -m fast restart >/dev/null \
      || { cat "$dir/server.log" >&2; exit 1; }
    echo "$url"; exit 0 ;;
  stop)
    as_pg "$bin/pg_ctl" -D "$dir" -w -t 30 -m fast stop >/dev/null; exit 0 ;;
esac

if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
  if [ ! -s "$dir/PG_VERSION" ]; then
    rm -rf "$dir"; mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    as_pg "$bin/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 30 \
    -o "-p $port -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=$fsync" start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
fi
"$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname = 'braid_test'" | grep -q 1 \
  || "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "CREATE DATABASE braid_test" >/dev/null
echo "$url"
