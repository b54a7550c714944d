#!/usr/bin/env bash
# The test machine's services: Redis, PostgreSQL and PgBouncer where the tests look for them
# (127.0.0.1:6379, :5432, :6543), and the tools the tests run. For `make test`, `make sandbox` and
# `make bench` on a Debian or Ubuntu test machine or CI runner (root or sudo), never for `make dev`
# or a deploy (dev mode runs its own servers in ./.dev: app/laptop/devservers.py).
#
# Idempotent: a service that already answers is left alone, and so is one the environment points
# elsewhere (TEST_REDIS_URL, TEST_PG_ADMIN_URL, TEST_PGBOUNCER_URL, as tests/conftest.py reads them).
# Nothing global is edited: where PostgreSQL is not running, the tests get a cluster of their own in
# /var/lib/postgresql/seatwatch-test (trust on 127.0.0.1 only, in its own pg_hba.conf), never a line
# added to the machine's clusters. Where apt-get is missing (a macOS laptop), it says what to start.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

PG_PORT=${SERVICES_PG_PORT:-5432}    # another port only to try this script beside a running server
PGB_PORT=${SERVICES_PGB_PORT:-6543}
REDIS_PORT=${SERVICES_REDIS_PORT:-6379}

apt_updated=
need_pkg() {
  dpkg -s "$1" >/dev/null 2>&1 && return 0
  if ! command -v apt-get >/dev/null; then
    echo "services: '$1' is missing and this machine has no apt-get. Start Redis on 127.0.0.1:$REDIS_PORT," \
         "PostgreSQL on 127.0.0.1:$PG_PORT (user postgres, no password) and PgBouncer in transaction mode on" \
         "127.0.0.1:$PGB_PORT yourself (macOS: brew install redis postgresql@16 pgbouncer), or point" \
         "TEST_REDIS_URL, TEST_PG_ADMIN_URL and TEST_PGBOUNCER_URL at servers you run" >&2
    exit 1
  fi
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

redis_up() { [ -n "${TEST_REDIS_URL:-}" ] || redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }
pg_up() { [ -n "${TEST_PG_ADMIN_URL:-}" ] || pg_isready -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null; }

if ! redis_up; then
  command -v redis-server >/dev/null || need_pkg redis-server
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 50); do redis_up && break; sleep 0.1; done
  redis_up || { echo "services: Redis did not start on 127.0.0.1:$REDIS_PORT" >&2; exit 1; }
fi
echo "services: redis ok"

if ! pg_up; then
  command -v pg_ctlcluster >/dev/null || [ -n "$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null)" ] || need_pkg postgresql
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  data=/var/lib/postgresql/seatwatch-test${SERVICES_PG_PORT:+-$PG_PORT}
  # initdb refuses root: the cluster is the postgres user's, as the package's own are
  if ! as_root test -s "$data/PG_VERSION"; then
    as_root install -d -o postgres -g postgres -m 0700 "$data"
    # the tests connect over TCP as postgres without a password: initdb's host lines are the
    # loopback's alone (127.0.0.1/32, ::1/128), and the server listens on 127.0.0.1 only
    as_root runuser -u postgres -- "$bin/initdb" -D "$data" -U postgres --auth-local=peer --auth-host=trust \
      >/dev/null
  fi
  as_root runuser -u postgres -- "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k /tmp -c fsync=off" start >/dev/null
  for _ in $(seq 100); do pg_up && break; sleep 0.1; done
  pg_up || { echo "services: PostgreSQL did not start on 127.0.0.1:$PG_PORT (log: $data/server.log)" >&2; exit 1; }
fi
echo "services: postgresql ok"

# PgBouncer in transaction mode on 127.0.0.1:6543 (the port of Supabase's transaction pooler; not
# the packaged PgBouncer's 6432), behaving as that pooler does: consecutive transactions of one
# client may run on different server connections, so session state (advisory locks, SET, prepared
# statements) does not survive between them. A small server pool makes clients share connections.
PGB_DIR=/var/lib/postgresql/seatwatch-pgbouncer${SERVICES_PGB_PORT:+-$PGB_PORT}
pgb_up() { [ -n "${TEST_PGBOUNCER_URL:-}" ] || pg_isready -q -h 127.0.0.1 -p "$PGB_PORT" 2>/dev/null; }
if ! pgb_up; then
  command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || need_pkg pgbouncer
  as_root mkdir -p "$PGB_DIR"
  as_root tee "$PGB_DIR/userlist.txt" >/dev/null <<'USERS'
"postgres" ""
USERS
  as_root tee "$PGB_DIR/pgbouncer.ini" >/dev/null <<INI
[databases]
* = host=127.0.0.1 port=$PG_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $PGB_DIR/userlist.txt
pool_mode = transaction
default_pool_size = 4
max_client_conn = 500
ignore_startup_parameters = extra_float_digits
logfile = $PGB_DIR/pgbouncer.log
pidfile = $PGB_DIR/pgbouncer.pid
INI
  as_root chown -R postgres:postgres "$PGB_DIR"
  # PgBouncer refuses to run as root.
  as_root runuser -u postgres -- /usr/sbin/pgbouncer -d -q "$PGB_DIR/pgbouncer.ini"
  for _ in $(seq 50); do pgb_up && break; sleep 0.1; done
  pgb_up || { echo "services: PgBouncer did not start on 127.0.0.1:$PGB_PORT" >&2; exit 1; }
fi
echo "services: pgbouncer ok (transaction mode)"

# Tools the tests run themselves (not services): the firewall test loads the deploy's chain with
# iptables-restore inside a network namespace made with iproute2's `ip netns`.
command -v ip >/dev/null || need_pkg iproute2
command -v iptables-restore >/dev/null || need_pkg iptables
echo "services: test tools ok (iptables, iproute2)"

# Node.js 20.9+ (Next.js 16) with npm: tests/test_site_build.py and the Debian 13 deploy test build the site
# fixture here, as `make deploy` builds the site on the laptop. The archive's first; where its Node.js is older
# (Debian 12: 18), the npm registry's own Node.js build (the `node` package installs node-linux-<arch>).
node_ok() {
  command -v node >/dev/null && command -v npm >/dev/null &&
    node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 9) ? 0 : 1)'
}
if ! node_ok; then
  command -v npm >/dev/null || need_pkg npm
  command -v git >/dev/null || need_pkg git
  node_ok || as_root npm install -g --no-audit --no-fund node@22 >/dev/null
  hash -r
  node_ok || { echo "services: Node.js 20.9+ with npm is needed to build the site fixture" >&2; exit 1; }
fi
echo "services: node $(node --version) ok"
