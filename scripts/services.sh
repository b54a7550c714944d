#!/usr/bin/env bash
# Make sure the local Redis and PostgreSQL the tests talk to are installed and running.
# Idempotent: does nothing when both already answer. Needs root (or sudo) to install.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=
need_pkg() {
  dpkg -s "$1" >/dev/null 2>&1 && return 0
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if ! redis_up; then
  command -v redis-server >/dev/null || need_pkg redis-server
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 50); do redis_up && break; sleep 0.1; done
  redis_up || { echo "services: Redis did not start on 127.0.0.1:6379" >&2; exit 1; }
fi
echo "services: redis ok"

if ! pg_up; then
  command -v pg_ctlcluster >/dev/null || need_pkg postgresql
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  conf=/etc/postgresql/$version/main
  # Tests connect over TCP as the postgres user without a password: trust local TCP only.
  if ! as_root grep -q '^host all all 127.0.0.1/32 trust' "$conf/pg_hba.conf"; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust' "$conf/pg_hba.conf"
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 100); do pg_up && break; sleep 0.1; done
  pg_up || { echo "services: PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
fi
echo "services: postgresql ok"

# PgBouncer in transaction mode on 127.0.0.1:6543 (the port of Supabase's transaction pooler; not
# the packaged PgBouncer's 6432), behaving as that pooler does: consecutive transactions of one
# client may run on different server connections, so session state (advisory locks, SET, prepared
# statements) does not survive between them. A small server pool makes clients share connections.
PGB_DIR=/var/lib/postgresql/seatwatch-pgbouncer
pgb_up() { pg_isready -q -h 127.0.0.1 -p 6543 2>/dev/null; }
if ! pgb_up; then
  command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || need_pkg pgbouncer
  as_root mkdir -p "$PGB_DIR"
  as_root tee "$PGB_DIR/userlist.txt" >/dev/null <<'USERS'
"postgres" ""
USERS
  as_root tee "$PGB_DIR/pgbouncer.ini" >/dev/null <<INI
[databases]
* = host=127.0.0.1 port=5432

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 6543
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
  pgb_up || { echo "services: PgBouncer did not start on 127.0.0.1:6543" >&2; exit 1; }
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
