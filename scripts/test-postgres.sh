#!/usr/bin/env bash
# Starts (once) a private PostgreSQL server for the tests on 127.0.0.1 and
# prints its URL. Installs Debian's `postgresql` package if the machine has
# no server. Idempotent: a server already answering on the port is reused.
#
#   BRAID_TEST_PG_PORT   port to use (default 25432). The tests' servers
#                        listen below 32768, outside Linux's ephemeral
#                        range (ip_local_port_range, 32768-60999): a port in
#                        it can be held as the local end of any outgoing
#                        connection, and the server then fails to start
#                        ("Address already in use").
#   BRAID_TEST_PG_FSYNC  `on` to flush every commit to disk like a real
#                        server (default `off`: tests need no durability)
#
#   scripts/test-postgres.sh restart   restarts that server (fast shutdown:
#                                      open connections are cut), for the
#                                      tests of connection loss
#   scripts/test-postgres.sh stop      stops it (fast); run the script
#                                      without arguments to start it again
#   scripts/test-postgres.sh ca        prints the path of the CA certificate
#                                      the server's TLS certificate is
#                                      signed by (for the TLS tests)
#
# TLS: the server offers TLS with a certificate for localhost and 127.0.0.1
# signed by a CA made for it (openssl, in /tmp/braid-test-pg-PORT/tls);
# the role `braid_tls` may only connect over TLS.
#
# The cluster lives in /tmp/braid-test-pg-PORT (the `postgres` user must be
# able to reach it when this runs as root); trust authentication on loopback
# only, so it is for tests, never for data.
set -euo pipefail
port=${BRAID_TEST_PG_PORT:-25432}
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
  ca)
    [ -s "$dir/tls/ca.pem" ] || { echo "error: no test CA in $dir/tls: start the server first" >&2; exit 1; }
    echo "$dir/tls/ca.pem"; exit 0 ;;
esac

if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
  # Not ours answering: say who holds the port rather than fail obscurely.
  # (Only a listener: the TIME-WAIT leftovers of a server just stopped do
  # not keep it from listening again.)
  if command -v ss >/dev/null && ss -Htln "( sport = :$port )" | grep -q .; then
    echo "error: port $port is in use by another program (not a PostgreSQL that answers); set BRAID_TEST_PG_PORT to a free port below 32768" >&2
    ss -Htlnp "( sport = :$port )" >&2 || true
    exit 1
  fi
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

# TLS, set up once per cluster (ssl settings take effect on reload).
psql_pg() { "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"; }
tls=$dir/tls
if [ ! -s "$tls/server.crt" ]; then
  command -v openssl >/dev/null || { echo "error: openssl is needed for the test server's TLS certificate" >&2; exit 1; }
  as_pg mkdir -p "$tls"
  as_pg sh -c "cd '$tls' && umask 077 &&
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj '/CN=braid test CA' \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
      -keyout ca.key -out ca.pem 2>/dev/null &&
    openssl req -newkey rsa:2048 -nodes -subj '/CN=localhost' -keyout server.key -out server.csr 2>/dev/null &&
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' > server.ext &&
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.crt 2>/dev/null &&
    chmod 644 ca.pem server.crt" \
    || { echo "error: could not make the test server's TLS certificate" >&2; exit 1; }
fi
reload=""
if ! grep -q braid_tls "$dir/pg_hba.conf"; then
  reload=yes
  as_pg sh -c "{ printf 'hostnossl all braid_tls 0.0.0.0/0 reject\nhostnossl all braid_tls ::/0 reject\n'; cat '$dir/pg_hba.conf'; } > '$dir/pg_hba.new' && mv '$dir/pg_hba.new' '$dir/pg_hba.conf'"
fi
if [ "$(psql_pg -tAc 'SHOW ssl')" != on ]; then
  psql_pg -c "ALTER SYSTEM SET ssl = on" -c "ALTER SYSTEM SET ssl_cert_file = '$tls/server.crt'" \
    -c "ALTER SYSTEM SET ssl_key_file = '$tls/server.key'" -c "SELECT pg_reload_conf()" >/dev/null
  for _ in $(seq 50); do [ "$(psql_pg -tAc 'SHOW ssl')" = on ] && break; sleep 0.1; done
elif [ -n "$reload" ]; then
  psql_pg -c "SELECT pg_reload_conf()" >/dev/null
fi
psql_pg -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'braid_tls'" | grep -q 1 \
  || psql_pg -c "CREATE ROLE braid_tls LOGIN SUPERUSER" >/dev/null
echo "$url"
