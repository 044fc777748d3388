#!/bin/bash
# The mariadb image's health check, for the tests compose files use:
#   healthcheck.sh [--su-mysql] [--connect] [--innodb_initialized] [--innodb_buffer_pool_loaded]
# Each test named must pass; with none, --connect. --connect reaches the server
# over TCP, so it fails while the entrypoint's temporary server (no network)
# runs. It connects as the healthcheck user the entrypoint created.
set -eo pipefail

datadir=/var/lib/mysql
tests=()
for arg in "$@"; do
  case "$arg" in
    --su-mysql | --su=* | --no-defaults) ;;
    --datadir=*) datadir=${arg#*=} ;;
    --connect | --innodb_initialized | --innodb_buffer_pool_loaded) tests+=("${arg#--}") ;;
    *) echo "healthcheck.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done
[ "${#tests[@]}" -gt 0 ] || tests=(connect)

query() {
  mariadb --defaults-extra-file="$datadir/.my-healthcheck.cnf" --protocol=tcp -h 127.0.0.1 \
    --skip-column-names --batch -e "$1"
}

for test in "${tests[@]}"; do
  case "$test" in
    connect)
      query 'SELECT 1' >/dev/null ;;
    innodb_initialized)
      [ "$(query "SELECT 1 FROM information_schema.ENGINES WHERE engine = 'InnoDB' AND support IN ('YES', 'DEFAULT', 'ENABLED')")" = 1 ] ;;
    innodb_buffer_pool_loaded)
      query "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'INNODB_BUFFER_POOL_LOAD_STATUS'" | grep -q '^Buffer pool(s) load completed' ;;
  esac
done
