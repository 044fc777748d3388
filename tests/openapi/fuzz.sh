#!/usr/bin/env bash
# Fuzzes the running gateway from its own OpenAPI document with schemathesis
# (PyPI, pinned in requirements.txt, installed into target/schemathesis):
# every check, no 5xx but the documented 502/503, every answer matching its
# documented status, headers and schema.
#
# It starts the single-process binary (debug/wxlogin in cargo's target
# directory, CARGO_TARGET_DIR or target; or $WXLOGIN_BIN) on free ports with the WeChat simulator, on WXLOGIN_FUZZ_DATABASE_URL /
# WXLOGIN_FUZZ_REDIS_URL when set (tests/run.sh sets them to its MySQL and
# Redis), else on a temporary SQLite file and in-process sessions.
# Extra arguments go to `schemathesis run`.
set -euo pipefail
cd "$(dirname "$0")/../.."
# free_port (below Linux's ephemeral range) and target_dir, as tests/run.sh's.
. tests/common.sh

here=tests/openapi
bin=${WXLOGIN_BIN:-$(target_dir)/debug/wxlogin}
venv=target/schemathesis
work=$(mktemp -d "${TMPDIR:-/tmp}/wxlogin-fuzz.XXXXXX")
redis_url=${WXLOGIN_FUZZ_REDIS_URL:-memory://}
prefix="wxlogin-fuzz-$$:"
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; fi
  # The run's keys, when it used a Redis server.
  if [[ $redis_url == redis://* ]] && command -v redis-cli >/dev/null 2>&1; then
    redis-cli -u "$redis_url" --scan --pattern "$prefix*" 2>/dev/null \
      | xargs -r redis-cli -u "$redis_url" del >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

log() { printf 'tests/openapi/fuzz.sh: %s\n' "$*" >&2; }

[ -x "$bin" ] || { log "$bin is missing: run cargo build first"; exit 1; }

# The pinned fuzzer, installed once per requirements file.
if ! cmp -s "$here/requirements.txt" "$venv/requirements.txt" 2>/dev/null; then
  log "installing $(grep -v '^#' "$here/requirements.txt") into $venv"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian's python3 has no venv module without this package.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      log "installing python3-venv (Debian package)"
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    rm -rf "$venv"
    python3 -m venv "$venv" || { log "python3 -m venv failed: install python3-venv"; exit 1; }
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/requirements.txt"
fi

gateway_port=$(free_port)
sim_port=$(free_port)
export GATEWAY_ADDR="127.0.0.1:$gateway_port" SIM_ADDR="127.0.0.1:$sim_port"
export DATABASE_URL=${WXLOGIN_FUZZ_DATABASE_URL:-"sqlite://$work/wxlogin.sqlite3"}
export REDIS_URL=$redis_url REDIS_KEY_PREFIX=$prefix
# Test keys (on SQLite the binary would make its own; on MySQL it needs them).
export DATA_ENCRYPTION_KEYS=fuzz:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
export DATA_INDEX_KEY=ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=
export RUST_LOG=${RUST_LOG:-warn}
"$bin" >"$work/wxlogin.log" 2>&1 &
pid=$!

export WXLOGIN_FUZZ_GATEWAY="http://$GATEWAY_ADDR" WXLOGIN_FUZZ_SIMULATOR="http://$SIM_ADDR"
healthy() {
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
    "$WXLOGIN_FUZZ_GATEWAY/healthz" 2>/dev/null
}
for _ in $(seq 1 300); do
  healthy && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if ! healthy; then
  log "wxlogin did not start; its log:"
  cat "$work/wxlogin.log" >&2
  exit 1
fi

# A fixed seed unless one is given: CI's run is repeatable (a failure can be
# replayed); `tests/openapi/fuzz.sh --seed $RANDOM` explores further.
seed=()
[[ " $* " == *" --seed "* ]] || seed=(--seed 20261130)
log "fuzzing $WXLOGIN_FUZZ_GATEWAY from its /openapi.json"
status=0
SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$here" \
  "$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" run \
  "$WXLOGIN_FUZZ_GATEWAY/openapi.json" \
  --report junit --report-dir "target/schemathesis-report" \
  "${seed[@]}" "$@" || status=$?

# The service must have stayed up, and said nothing an operator must act on.
if ! kill -0 "$pid" 2>/dev/null; then
  log "wxlogin died during the run; its log:"
  cat "$work/wxlogin.log" >&2
  exit 1
fi
if grep -E ' ERROR |"level":"ERROR"|panicked' "$work/wxlogin.log" >&2; then
  log "wxlogin logged errors during the run (above)"
  exit 1
fi
exit "$status"
