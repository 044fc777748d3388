#!/usr/bin/env bash
# The test command: runs every test of the workspace against real MariaDB and
# Redis. It uses DATABASE_URL / REDIS_URL when they point at running servers;
# otherwise it starts private MariaDB and Redis instances on free ports from
# the binaries on this machine (installing Debian's packages when they are
# missing and it runs as root), and stops them afterwards.
#
# It runs the whole workspace's tests with MySQL + Redis, then the end-to-end
# suite once more on the single-process backends (SQLite + in-process
# sessions), so that neither rots, and once more on each of the other Redis
# topologies: a Redis Cluster and a Sentinel-managed primary, which it
# starts from the machine's redis-server. Extra arguments go to both `cargo test`
# runs, e.g. `tests/run.sh login`; with them, the last two steps (the
# mini-program client library's tests under Node, and the schemathesis run
# against the gateway's OpenAPI document) are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d "${TMPDIR:-/tmp}/wxlogin-test.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

log() { printf 'tests/run.sh: %s\n' "$*" >&2; }

# host and port of a URL such as mysql://root@127.0.0.1:3306/db
host_port() {
  local rest=${1#*://}
  rest=${rest##*@}
  rest=${rest%%/*}
  local host=${rest%:*} port=${rest##*:}
  [ "$host" = "$rest" ] && port=$2
  printf '%s %s\n' "${host:-127.0.0.1}" "$port"
}

# is_open and free_port (below Linux's ephemeral range), shared with fuzz.sh.
. tests/common.sh

wait_open() { # host port what logfile
  for _ in $(seq 1 300); do
    is_open "$1" "$2" && return 0
    sleep 0.1
  done
  log "$3 did not start; its log:"
  cat "$4" >&2 || true
  exit 1
}

# Whether the server of pid $1 came up on port $2: waits until the port is
# open or the process is gone (a port taken between the check and the bind
# makes a server exit at once).
started() { # pid port
  for _ in $(seq 1 300); do
    is_open 127.0.0.1 "$2" && return 0
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  is_open 127.0.0.1 "$2"
}

ensure_packages() { # binary package...
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${*:2} (Debian packages)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${@:2}" >/dev/null
  else
    log "$1 is missing: install ${*:2} (for MySQL and Redis, DATABASE_URL / REDIS_URL may name running servers instead)"
    exit 1
  fi
}

if [ -n "${DATABASE_URL:-}" ] && is_open $(host_port "$DATABASE_URL" 3306); then
  log "using the MySQL server of DATABASE_URL"
else
  ensure_packages mariadbd mariadb-server
  PATH="$PATH:/usr/sbin"
  port=$(free_port)
  user=$(id -un)
  mariadb-install-db --no-defaults --datadir="$work/mysql" --user="$user" \
    --auth-root-authentication-method=normal --skip-test-db >"$work/mysql-install.log" 2>&1 \
    || { cat "$work/mysql-install.log" >&2; exit 1; }
  # The free port may be taken between the check and the bind: then
  # MariaDB exits at once, and another port is tried.
  for attempt in 1 2 3; do
    log "starting a private MariaDB on 127.0.0.1:$port"
    mariadbd --no-defaults --datadir="$work/mysql" --user="$user" --port="$port" \
      --bind-address=127.0.0.1 --socket="$work/mysql.sock" --pid-file="$work/mysql.pid" \
      --skip-name-resolve --skip-log-bin --innodb-buffer-pool-size=128M \
      --innodb-log-file-size=16M \
      --max-connections=1000 >"$work/mysql.log" 2>&1 &
    mariadb_pid=$!
    if started "$mariadb_pid" "$port"; then break; fi
    wait "$mariadb_pid" 2>/dev/null || true
    [ "$attempt" = 3 ] && { log "MariaDB did not start; its log:"; cat "$work/mysql.log" >&2; exit 1; }
    port=$(free_port)
  done
  pids+=("$mariadb_pid")
  export DATABASE_URL="mysql://root@127.0.0.1:$port"
fi

# Redis servers of this run's own, on free ports: `redis_node NAME ARGS...`
# starts one and sets $port to its port. A cluster node's bus port (given
# with --cluster-port, else Redis takes port + 10000, which may be taken or
# past 65535) is chosen free too. A port taken between the check and the
# bind makes the server exit at once: then other ports are tried.
redis_node() {
  local name=$1 pid bus=() attempt
  shift
  for attempt in 1 2 3; do
    port=$(free_port)
    [ "$name" = cluster ] && bus=(--cluster-port "$(free_port)")
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      --repl-diskless-sync-delay 0 --dir "$work" --dbfilename "$name-$port.rdb" \
      "${bus[@]}" "$@" >"$work/$name-$port.log" 2>&1 &
    pid=$!
    if started "$pid" "$port"; then
      pids+=("$pid")
      return 0
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  log "Redis ($name) did not start; its log:"
  cat "$work/$name-$port.log" >&2
  exit 1
}

if [ -n "${REDIS_URL:-}" ] && is_open $(host_port "$REDIS_URL" 6379); then
  log "using the Redis server of REDIS_URL"
else
  ensure_packages redis-server redis-server
  redis_node private
  log "started a private Redis on 127.0.0.1:$port"
  export REDIS_URL="redis://127.0.0.1:$port"
fi

# The forward-authentication tests put a real nginx in front of the gateway.
ensure_packages nginx nginx-light

# The compose-environment test starts the service binaries themselves. One
# build of every target, tests included, so that the binaries share the test
# builds' feature set and nothing is compiled twice (CI's disk is small).
cargo build --workspace --all-targets --locked
log "the workspace on MySQL + Redis"
cargo test --workspace --locked --no-fail-fast -- "$@"
log "the end-to-end suite on SQLite + the in-process session store"
# --workspace, not -p: the same feature set as above, so nothing is rebuilt.
WXLOGIN_TEST_BACKEND=embedded cargo test --workspace --locked --no-fail-fast --test e2e -- "$@"

# Waits until the server on port $1 answers `redis-cli ARGS` with a line
# that matches $2.
wait_redis() {
  local port=$1 pattern=$2
  shift 2
  for _ in $(seq 1 300); do
    redis-cli -p "$port" "$@" 2>/dev/null | grep -q "$pattern" && return 0
    sleep 0.1
  done
  log "Redis on port $port never answered $* with $pattern"
  exit 1
}

ensure_packages redis-server redis-server
log "the end-to-end suite on a Redis Cluster (3 primaries, 3 replicas)"
nodes=()
for _ in 1 2 3 4 5 6; do
  redis_node cluster --cluster-enabled yes --cluster-node-timeout 1000 \
    --cluster-config-file "nodes-$RANDOM$RANDOM.conf"
  nodes+=("127.0.0.1:$port")
done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$work/cluster-create.log" \
  || { cat "$work/cluster-create.log" >&2; exit 1; }
for node in "${nodes[@]}"; do
  wait_redis "${node#*:}" cluster_state:ok cluster info
  wait_redis "${node#*:}" 'role:master\|master_link_status:up' info replication
done
REDIS_URL="redis+cluster://$(IFS=,; echo "${nodes[*]}")" \
  cargo test --workspace --locked --no-fail-fast --test e2e -- "$@"

log "the end-to-end suite on a Sentinel-managed primary (a replica, 3 sentinels)"
redis_node primary
primary=$port
redis_node replica --replicaof 127.0.0.1 "$primary"
replica=$port
wait_redis "$replica" master_link_status:up info replication
sentinels=()
for _ in 1 2 3; do
  port=$(free_port)
  printf '%s\n' "port $port" "bind 127.0.0.1" "dir $work" \
    "sentinel monitor wxlogin 127.0.0.1 $primary 2" \
    "sentinel down-after-milliseconds wxlogin 1000" \
    "sentinel failover-timeout wxlogin 5000" >"$work/sentinel-$port.conf"
  redis-server "$work/sentinel-$port.conf" --sentinel >"$work/sentinel-$port.log" 2>&1 &
  pids+=($!)
  wait_open 127.0.0.1 "$port" "Redis Sentinel" "$work/sentinel-$port.log"
  wait_redis "$port" "$replica" sentinel replicas wxlogin
  sentinels+=("127.0.0.1:$port")
done
REDIS_URL="redis+sentinel://$(IFS=,; echo "${sentinels[*]}")/wxlogin" \
  cargo test --workspace --locked --no-fail-fast --test e2e -- "$@"

[ "$#" -eq 0 ] || exit 0

# A database of its own on the MySQL server of DATABASE_URL, for a step that
# starts the wxlogin binary: `with_database NAME VAR command...` runs the
# command with VAR set to its URL (empty, which means SQLite, when no MySQL
# client is installed), then drops it.
with_database() {
  local name="$1_$$" var=$2
  shift 2
  local url=${DATABASE_URL%/} user=root password= host port
  local rest=${url#*://}
  if [[ $rest == *@* ]]; then
    local credentials=${rest%%@*}
    user=${credentials%%:*}
    [[ $credentials == *:* ]] && password=${credentials#*:}
  fi
  # The server's URL without a database name of its own.
  [[ ${rest#*@} == */* ]] && url=${url%/*}
  read -r host port < <(host_port "$DATABASE_URL" 3306)
  sql() { MYSQL_PWD=$password mariadb --protocol=tcp -h "$host" -P "$port" -u "$user" -e "$1"; }
  local database=
  if command -v mariadb >/dev/null 2>&1 && sql "CREATE DATABASE \`$name\`"; then
    database="$url/$name"
  fi
  local status=0
  env "$var=$database" "$@" || status=$?
  [ -z "$database" ] || sql "DROP DATABASE \`$name\`" || true
  return "$status"
}

ensure_packages node nodejs
log "the mini-program client library (Node) against the real service"
WXLOGIN_TEST_REDIS_URL=$REDIS_URL \
  with_database wxlogin_client WXLOGIN_TEST_DATABASE_URL node --test clients/miniprogram/test/*.test.js

log "schemathesis against the gateway, from its OpenAPI document"
WXLOGIN_FUZZ_REDIS_URL=$REDIS_URL \
  with_database wxlogin_fuzz WXLOGIN_FUZZ_DATABASE_URL tests/openapi/fuzz.sh
