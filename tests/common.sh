# Shell helpers shared by tests/run.sh and tests/openapi/fuzz.sh; sourced,
# from the workspace root. The Rust helpers (wxlogin_testkit) and the
# mini-program client's test harness follow the same rules.

is_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# A port nothing listens on, below Linux's ephemeral range (32768 and up):
# there, the TIME_WAIT remains of the tests' own connections keep a port
# from being bound although nothing listens on it, and the kernel hands
# ports to other tests' `:0` binds, which could take it first.
free_port() {
  local port
  while :; do
    port=$((10000 + RANDOM % 22000))
    is_open 127.0.0.1 "$port" || { echo "$port"; return; }
  done
}

# Where cargo puts the workspace's builds: CARGO_TARGET_DIR when set
# (relative to the workspace root when relative), else target.
target_dir() {
  local dir=${CARGO_TARGET_DIR:-target}
  [[ $dir == /* ]] || dir="$PWD/$dir"
  echo "$dir"
}
