#!/bin/sh
# The official redis image's entrypoint rules, for Debian's Redis:
# - arguments that start with "-" or name a .conf file are redis-server's;
# - redis-server started as root owns /data and drops to the redis user;
# - protected mode is off unless the arguments turn it on (the official image
#   builds Redis with that default: its container is reached over a network).
set -e

case "$1" in
  -* | *.conf) set -- redis-server "$@" ;;
esac

if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
  find . \! -user redis -exec chown redis '{}' +
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

if [ "$1" = redis-server ]; then
  shift
  if [ -f "${1:-}" ] && [ "${1#-}" = "$1" ]; then
    # A configuration file must come first; what follows overrides it.
    config=$1
    shift
    if grep -q '^[[:space:]]*protected-mode' "$config"; then
      set -- redis-server "$config" "$@"
    else
      set -- redis-server "$config" --protected-mode no "$@"
    fi
  else
    set -- redis-server --protected-mode no "$@"
  fi
fi

exec "$@"
