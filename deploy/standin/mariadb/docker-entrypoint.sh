#!/bin/bash
# The official mysql and mariadb images' first-start rules, for Debian's MariaDB.
#
# On a data directory without a database, it applies (each MARIADB_X may also
# be given as MYSQL_X, and either as X_FILE naming a file that holds it):
#   MARIADB_ROOT_PASSWORD, MARIADB_ALLOW_EMPTY_ROOT_PASSWORD (MYSQL_ALLOW_EMPTY_PASSWORD),
#   MARIADB_RANDOM_ROOT_PASSWORD, MARIADB_ROOT_HOST (default %),
#   MARIADB_DATABASE, MARIADB_USER, MARIADB_PASSWORD,
# then runs /docker-entrypoint-initdb.d/*.sh, *.sql and *.sql.gz, with the
# server listening on no network meanwhile. Then, and on every later start, it
# runs the server as the mysql user. Arguments starting with "-" are the
# server's.
set -eo pipefail

log() { printf '%s [Note] [Entrypoint]: %s\n' "$(date -u +%FT%TZ)" "$*"; }
fail() { printf '%s [ERROR] [Entrypoint]: %s\n' "$(date -u +%FT%TZ)" "$*" >&2; exit 1; }

# setting NAME: MARIADB_NAME, MARIADB_NAME_FILE, MYSQL_NAME, MYSQL_NAME_FILE,
# in that order; prints the value (empty when none is set).
setting() {
  local name
  for name in "MARIADB_$1" "MYSQL_$1" ${2:+"MYSQL_$2"}; do
    local file_var="${name}_FILE"
    if [ -n "${!name:-}" ] && [ -n "${!file_var:-}" ]; then
      fail "both $name and $file_var are set (but are exclusive)"
    fi
    if [ -n "${!name:-}" ]; then
      printf '%s' "${!name}"
      return
    fi
    if [ -n "${!file_var:-}" ]; then
      cat "${!file_var}"
      return
    fi
  done
}

# 32 or more random letters and digits (no pipe cut short: pipefail is on).
random_password() { head -c 48 /dev/urandom | base64 -w 0 | tr -dc 'A-Za-z0-9'; }

# SQL string literal.
quote() {
  local value=${1//\\/\\\\}
  printf "'%s'" "${value//\'/\\\'}"
}

case "$1" in
  -*) set -- mariadbd "$@" ;;
esac

if [ "$1" != mariadbd ] && [ "$1" != mysqld ]; then
  exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
  set -- "$@" --user=mysql
fi

datadir=$("$@" --verbose --help 2>/dev/null | awk '$1 == "datadir" { print $2; exit }')
datadir=${datadir:-/var/lib/mysql/}
socket=/run/mysqld/mysqld.sock

if [ ! -d "$datadir/mysql" ]; then
  root_password=$(setting ROOT_PASSWORD)
  allow_empty=$(setting ALLOW_EMPTY_ROOT_PASSWORD ALLOW_EMPTY_PASSWORD)
  random_root=$(setting RANDOM_ROOT_PASSWORD)
  root_host=$(setting ROOT_HOST)
  root_host=${root_host:-%}
  database=$(setting DATABASE)
  user=$(setting USER)
  password=$(setting PASSWORD)
  if [ -z "$root_password" ] && [ -z "$allow_empty" ] && [ -z "$random_root" ]; then
    fail "Database is uninitialized and password option is not specified
	You need to specify one of MARIADB_ROOT_PASSWORD, MARIADB_ALLOW_EMPTY_ROOT_PASSWORD and MARIADB_RANDOM_ROOT_PASSWORD (or MYSQL_ROOT_PASSWORD, MYSQL_ALLOW_EMPTY_PASSWORD, MYSQL_RANDOM_ROOT_PASSWORD)"
  fi
  if [ "$user" = root ]; then
    fail "MARIADB_USER=root: root is created already; use MARIADB_ROOT_PASSWORD"
  fi
  if [ -n "$random_root" ]; then
    root_password=$(random_password)
    log "GENERATED ROOT PASSWORD: $root_password"
  fi

  log "Initializing database files"
  mkdir -p "$datadir"
  [ "$(id -u)" != 0 ] || chown mysql:mysql "$datadir"
  mariadb-install-db --user=mysql --datadir="$datadir" --skip-test-db \
    --auth-root-authentication-method=normal --skip-name-resolve >/dev/null
  log "Database files initialized"

  log "Starting temporary server"
  "$@" --skip-networking --socket="$socket" &
  temporary=$!
  for _ in $(seq 1 60); do
    mariadb-admin --socket="$socket" --user=root ping >/dev/null 2>&1 && break
    kill -0 "$temporary" 2>/dev/null || fail "the temporary server exited"
    sleep 0.5
  done
  mariadb-admin --socket="$socket" --user=root ping >/dev/null 2>&1 || fail "the temporary server did not start"
  log "Temporary server started."

  sql() { mariadb --protocol=socket --socket="$socket" --user=root --binary-mode "$@"; }

  # The health-check user of the mariadb image, and its client file.
  health_password=$(random_password)
  {
    echo "SET @@SESSION.SQL_LOG_BIN=0;"
    # Only root@localhost stays of what mariadb-install-db made, as in the
    # official images.
    echo "DELETE FROM mysql.global_priv WHERE user = '' OR (user = 'root' AND host <> 'localhost');"
    echo "DELETE FROM mysql.proxies_priv WHERE NOT (user = 'root' AND host = 'localhost');"
    echo "FLUSH PRIVILEGES;"
    echo "ALTER USER 'root'@'localhost' IDENTIFIED BY $(quote "$root_password");"
    if [ "$root_host" != localhost ]; then
      echo "CREATE USER 'root'@$(quote "$root_host") IDENTIFIED BY $(quote "$root_password");"
      echo "GRANT ALL ON *.* TO 'root'@$(quote "$root_host") WITH GRANT OPTION;"
    fi
    for host in 127.0.0.1 ::1 localhost; do
      echo "CREATE USER 'healthcheck'@'$host' IDENTIFIED BY '$health_password';"
      echo "GRANT USAGE ON *.* TO 'healthcheck'@'$host';"
    done
    if [ -n "$database" ]; then
      echo "CREATE DATABASE IF NOT EXISTS \`${database//\`/\`\`}\`;"
    fi
    if [ -n "$user" ] && [ -n "$password" ]; then
      echo "CREATE USER $(quote "$user")@'%' IDENTIFIED BY $(quote "$password");"
      if [ -n "$database" ]; then
        echo "GRANT ALL ON \`${database//\`/\`\`}\`.* TO $(quote "$user")@'%';"
      fi
    fi
    echo "FLUSH PRIVILEGES;"
  } | sql
  printf '[mariadb-client]\nport=3306\nsocket=%s\nuser=healthcheck\npassword=%s\nprotocol=tcp\n' \
    "$socket" "$health_password" >"$datadir/.my-healthcheck.cnf"
  [ "$(id -u)" != 0 ] || chown mysql:mysql "$datadir/.my-healthcheck.cnf"
  chmod 0600 "$datadir/.my-healthcheck.cnf"

  export MYSQL_PWD=$root_password
  for file in /docker-entrypoint-initdb.d/*; do
    # shellcheck disable=SC1090
    case "$file" in
      *.sh) log "running $file"; . "$file" ;;
      *.sql) log "running $file"; sql ${database:+"$database"} <"$file" ;;
      *.sql.gz) log "running $file"; gunzip -c "$file" | sql ${database:+"$database"} ;;
      *'/*') ;;
      *) log "ignoring $file" ;;
    esac
  done
  unset MYSQL_PWD

  log "Stopping temporary server"
  MYSQL_PWD=$root_password mariadb-admin --socket="$socket" --user=root shutdown
  wait "$temporary" || true
  log "Temporary server stopped"
  log "MariaDB init process done. Ready for start up."
fi

exec "$@"
