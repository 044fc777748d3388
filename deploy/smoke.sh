#!/usr/bin/env bash
# docker-compose.yml for real, in a Docker engine: the smoke test of the
# deployment files.
#
#   1. Makes the machine ready (deploy/standin/prepare.sh): Debian's docker.io
#      and dockerd started by hand when no engine answers, Compose v2, and the
#      base images, built as STAND-INS under the files' names when they cannot
#      be pulled (it says so loudly).
#   2. `docker compose up --build -d --wait` with the values of .env.example
#      and the "sim" profile, as project "wxlogin-smoke", the gateway published
#      on a loopback port the engine picks (and, for this test only, the
#      simulator too, so that it can mint codes).
#   3. GET /readyz; a login through the gateway with a code minted by the
#      simulator; GET /v1/me with its token.
#   4. Restarts the redis container: logins must work again within
#      $WXLOGIN_SMOKE_RECOVERY_SECS (default 60), and the token from before
#      must still be valid (Redis keeps an append-only file on its volume).
#   5. Restarts the mysql container: a new user's login must work again within
#      the same bound; then every service must be healthy again.
#   6. Tears everything down, containers and volumes, also on failure (after
#      printing the services' logs), and stops dockerd if it started it.
#
# Options (or their variables):
#   --host-binaries  WXLOGIN_SMOKE_HOST_BINARIES=1  build the services in release
#       mode on this host (cargo) and have deploy/Dockerfile take them from there
#       (its BINARIES argument), instead of compiling them in the engine: minutes
#       instead of a quarter of an hour on 2 cores. The runtime stage and the
#       compose file are the same; the host's glibc must not be newer than the
#       runtime image's (Debian bookworm). CI uses this.
#   --keep           WXLOGIN_SMOKE_KEEP=1  leave the stack running (and dockerd)
#       after a successful run; `docker compose -p wxlogin-smoke down -v` ends it.
# Without --host-binaries the whole Dockerfile is built, which on a machine
# without a registry needs the rust stand-in too (the host's toolchain).
#
# Needs root on a machine that lacks Docker (to install and start it), curl
# and jq. Exits non-zero on the first failed check.
set -euo pipefail
cd "$(dirname "$0")/.."

export LOG_PREFIX=deploy/smoke.sh
# shellcheck source=deploy/standin/prepare.sh
source deploy/standin/prepare.sh

host_binaries=${WXLOGIN_SMOKE_HOST_BINARIES:-0}
keep=${WXLOGIN_SMOKE_KEEP:-0}
for arg in "$@"; do
  case "$arg" in
    --host-binaries) host_binaries=1 ;;
    --keep) keep=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "deploy/smoke.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done
recovery_secs=${WXLOGIN_SMOKE_RECOVERY_SECS:-60}
wait_secs=${WXLOGIN_SMOKE_WAIT_SECS:-300}

PROJECT=wxlogin-smoke
BINARIES_IMAGE=wxlogin-binaries:host
started=$SECONDS
step="starting"
stack_up=0
work=$(mktemp -d "${TMPDIR:-/tmp}/wxlogin-smoke.XXXXXX")

# Checks passed, for the closing line "smoke: N passed, N failed".
passed=0
log() { printf 'deploy/smoke.sh: %s\n' "$*" >&2; }
ok() { passed=$((passed + 1)); log "    ok: $*"; }
fail() { log "FAILED: $*"; exit 1; }
phase() { step=$1; phase_started=$SECONDS; log "--- $1"; }
phase_done() { log "    ($((SECONDS - phase_started)) s)"; }

# The gateway and the simulator are published on ports the engine picks
# (known once they run: `docker compose port`).
GATEWAY="" SIM=""

# Compose with nothing from the caller's environment but what it needs to
# reach the engine: a variable exported in the shell would override
# .env.example and hide a mistake. (Without the buildx plugin, which Debian's
# docker.io lacks, Compose warns that it cannot use Bake and builds with its
# own BuildKit client.)
compose_files() { # the project as docker-compose.yml alone defines it
  env -i PATH="$PATH" HOME="$HOME" ${DOCKER_HOST:+DOCKER_HOST="$DOCKER_HOST"} \
    GATEWAY_PUBLISH=127.0.0.1:0 \
    docker compose --project-directory . --project-name "$PROJECT" --env-file .env.example \
    --profile sim -f docker-compose.yml "$@"
}
compose() { # and with this test's additions
  compose_files -f "$work/smoke.yml" "$@"
}

finish() {
  local status=$?
  trap - EXIT INT TERM
  if [ "$status" != 0 ] && [ "$stack_up" = 1 ]; then
    log "the services' state and logs:"
    compose ps -a >&2 || true
    compose logs --no-color --timestamps --tail 80 >&2 || true
  fi
  if [ "$stack_up" = 1 ] && { [ "$status" != 0 ] || [ "$keep" != 1 ]; }; then
    log "tearing down (containers, network, volumes)"
    compose down --volumes --remove-orphans --timeout 10 >"$work/down.log" 2>&1 \
      || { cat "$work/down.log" >&2; log "docker compose down failed"; }
  fi
  if [ "$status" = 0 ] && [ "$keep" = 1 ]; then
    log "left running (--keep): gateway at $GATEWAY; end it with: docker compose -p $PROJECT down -v"
  else
    stop_started_engine || true
  fi
  rm -rf "$work"
  if [ "$status" = 0 ]; then
    log "PASSED in $((SECONDS - started)) s"
    echo "smoke: $passed passed, 0 failed"
  else
    log "FAILED while $step (exit $status, after $((SECONDS - started)) s)"
    echo "smoke: $passed passed, 1 failed"
  fi
  exit "$status"
}
trap finish EXIT
trap 'exit 130' INT TERM

# --- 1. the machine ------------------------------------------------------------
phase "preparing the engine, Compose v2 and the base images"
command -v curl >/dev/null 2>&1 || apt_install curl
command -v jq >/dev/null 2>&1 || apt_install jq
ensure_engine
ensure_compose
mapfile -t images < <(required_images)
if [ "$host_binaries" = 1 ]; then
  # The Rust stages are skipped: their base image is not needed.
  mapfile -t images < <(printf '%s\n' "${images[@]}" | grep -v '^rust:')
fi
ensure_images "${images[@]}"
phase_done

# The services built from deploy/Dockerfile, as the compose file says.
mapfile -t built < <(compose_files config --format json | jq -r '.services | to_entries[] | select(.value.build != null) | .key')
[ "${#built[@]}" -gt 0 ] || fail "docker compose config names no service built from deploy/Dockerfile"

# What this test adds to the compose file: the simulator published on
# loopback (its control API mints codes), and with --host-binaries, where
# deploy/Dockerfile takes the binaries from.
{
  echo "services:"
  for service in $(printf '%s\n' wechat-sim "${built[@]}" | sort -u); do
    echo "  $service:"
    [ "$service" != wechat-sim ] || echo '    ports: ["127.0.0.1:0:8090"]'
    if [ "$host_binaries" = 1 ] && printf '%s\n' "${built[@]}" | grep -qx "$service"; then
      echo "    build: {args: {BINARIES: \"$BINARIES_IMAGE\"}}"
    fi
  done
} >"$work/smoke.yml"

# --- 1b. the host's release binaries ----------------------------------------
if [ "$host_binaries" = 1 ]; then
  phase "building the release binaries on the host (--host-binaries)"
  bins=$(sed -n 's/^ *&& for bin in \(.*\); do.*$/\1/p' deploy/Dockerfile)
  [ -n "$bins" ] || fail "deploy/Dockerfile's 'for bin in ...' line, which names the binaries, was not found"
  packages=()
  for bin in $bins; do packages+=(-p "$bin"); done
  cargo build --release --locked "${packages[@]}" --bins
  target_dir=${CARGO_TARGET_DIR:-target}
  mkdir -p "$work/binaries/out"
  for bin in $bins; do
    # As deploy/Dockerfile's builder does.
    objcopy --compress-debug-sections=zlib "$target_dir/release/$bin" "$work/binaries/out/$bin"
  done
  docker rmi "$BINARIES_IMAGE" >/dev/null 2>&1 || true
  tar -C "$work/binaries" --numeric-owner --owner=0 --group=0 -c out \
    | docker import -c "LABEL wxlogin.binaries=host" - "$BINARIES_IMAGE" >/dev/null
  phase_done
fi

# --- 2. up ----------------------------------------------------------------------
# A stack left by a run that was killed would keep its volumes.
compose down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true
phase "docker compose up --build -d --wait (project $PROJECT)"
stack_up=1
compose up --build -d --wait --wait-timeout "$wait_secs"
phase_done
compose ps >&2
GATEWAY=http://$(compose port gateway 8080)
SIM=http://$(compose port wechat-sim 8090)
log "gateway at $GATEWAY, simulator at $SIM"

# --- 3. readiness, login, /v1/me ----------------------------------------------
# http METHOD URL [JSON] [TOKEN]: leaves the answer in $status and $body
# (status 000 when there was none).
status="" body=""
http() {
  status=$(curl -sS -o "$work/body" -w '%{http_code}' -X "$1" \
    ${3:+-H 'content-type: application/json' --data "$3"} \
    ${4:+-H "authorization: Bearer $4"} "$2" 2>"$work/curl.err") || status=000
  body=$(cat "$work/body" 2>/dev/null || true)
}

# login: mints a code for a new user at the simulator and logs in with it
# through the gateway; leaves the answer in $login, its token in $token and
# the user's openid in $openid.
login="" token="" openid=""
login() {
  local code
  http POST "$SIM/sim/codes" '{}'
  [ "$status" = 200 ] || { log "minting a code: $status $body $(cat "$work/curl.err")"; return 1; }
  code=$(jq -r .code <<<"$body")
  openid=$(jq -r .openid <<<"$body")
  http POST "$GATEWAY/v1/login" "{\"code\":\"$code\"}"
  [ "$status" = 200 ] || { log "login: $status $body $(cat "$work/curl.err")"; return 1; }
  login=$body
  token=$(jq -r .token <<<"$login")
  [ "$(jq -r .user.openid <<<"$login")" = "$openid" ] || { log "login answered another openid: $login"; return 1; }
  [ -n "$token" ] && [ "$token" != null ]
}

me() { # token openid: GET /v1/me answers that user
  http GET "$GATEWAY/v1/me" "" "$1"
  [ "$status" = 200 ] || { log "GET /v1/me: $status $body"; return 1; }
  [ "$(jq -r .user.openid <<<"$body")" = "$2" ] || { log "GET /v1/me answered another user: $body"; return 1; }
}

# Every container healthy, but one-shot ones (migrate), which must have
# exited with 0. (Not `up --wait` again: it would recreate the containers.)
all_healthy() {
  compose ps --all --format json | jq -s -e 'length > 0 and all(.[];
    .Health == "healthy" or (.Health == "" and .State == "exited" and .ExitCode == 0))' >/dev/null
}

# until_ok SECONDS what command...: runs the command until it succeeds, at
# most SECONDS; prints how long it took.
until_ok() {
  local limit=$1 what=$2 t0=$SECONDS
  shift 2
  while :; do
    if "$@" 2>"$work/attempt.err"; then
      log "    $what after $((SECONDS - t0)) s"
      return 0
    fi
    if [ $((SECONDS - t0)) -ge "$limit" ]; then
      cat "$work/attempt.err" >&2
      fail "$what: not within $limit s"
    fi
    sleep 0.5
  done
}

phase "GET /readyz, POST /v1/login, GET /v1/me"
ok "every service healthy (docker compose up --wait)"
http GET "$GATEWAY/readyz"
[ "$status" = 200 ] || fail "/readyz answered $status: $body"
[ "$(jq -r .status <<<"$body")" = ready ] || fail "/readyz: $body"
ok "/readyz: $body"
login || fail "a login through the gateway"
[ "$(jq -r .created <<<"$login")" = true ] || fail "a new user's login did not register it: $login"
ok "logged in as $openid (a new user, id $(jq -r .user.id <<<"$login"))"
me "$token" "$openid" || fail "GET /v1/me"
ok "GET /v1/me answers that user"
first_token=$token first_openid=$openid
phase_done

# --- 4. Redis restarts -----------------------------------------------------------
phase "restarting redis"
compose restart redis
until_ok "$recovery_secs" "a login works again" login
ok "logins work again after the restart of Redis"
me "$first_token" "$first_openid" || fail "the session from before the restart of Redis is gone"
ok "the session from before the restart is still valid"
phase_done

# --- 5. MySQL restarts -----------------------------------------------------------
phase "restarting mysql"
compose restart mysql
until_ok "$recovery_secs" "a new user's login works again" login
ok "new users log in again after the restart of MySQL"
me "$first_token" "$first_openid" || fail "GET /v1/me after the restart of MySQL"
until_ok "$recovery_secs" "every service is healthy again" all_healthy
http GET "$GATEWAY/readyz"
[ "$status" = 200 ] || fail "/readyz answered $status after the restarts: $body"
ok "every service healthy again, /readyz ready"
phase_done

step="done"
