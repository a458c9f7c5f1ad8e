#!/usr/bin/env bash
# up.sh: run the kit on this machine with one command.
#
#   1. installs Docker Compose v2 when `docker compose version` fails
#      (scripts/install-compose.sh: built from the Go module proxy, pinned);
#   2. writes .env with fresh secrets when there is none (scripts/init-env.sh);
#   3. builds the images: SITEKIT_BUILD=local (from the environment or .env)
#      stages binaries on this host first, for machines with no registry
#      (installing Debian's redis-tools when missing);
#   4. docker compose up -d --wait, then prints the URL.
#
# docker compose stays the real interface: this is steps you could type.
# COMPOSE_PROFILES=ops (in the environment or .env) adds the monitoring.
# SITEKIT_ENV_FILE names another env file than .env (the end-to-end test uses
# one, with COMPOSE_PROJECT_NAME, to keep away from your own stack).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO"

SECONDS=0

step() { printf '\n==> [%3ds] %s\n' "$SECONDS" "$*" >&2; }
die() {
  printf 'up: %s\n' "$*" >&2
  exit 1
}

# debian_package SERVICE: the Debian package whose program SERVICE's image
# holds (compose.yaml names the same for the release build), if any.
debian_package() {
  case $1 in
  redis) echo redis-tools ;;
  prometheus) echo prometheus ;;
  redis-exporter) echo prometheus-redis-exporter ;;
  blackbox) echo prometheus-blackbox-exporter ;;
  alertmanager) echo prometheus-alertmanager ;;
  esac
}

# need_local_tools SERVICE...: what SITEKIT_BUILD=local stages these images
# with: Go, and the Debian packages of their programs (installed here when
# missing, on Debian as root).
need_local_tools() {
  command -v go >/dev/null || die "SITEKIT_BUILD=local builds the images' Go programs: install Go 1.26 (https://go.dev/dl/)"
  local svc pkg missing=()
  for svc in "$@"; do
    pkg=$(debian_package "$svc")
    if [[ -n "$pkg" ]] && ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$pkg")
    fi
  done
  ((${#missing[@]})) || return 0
  if [[ $EUID != 0 ]] || ! command -v apt-get >/dev/null; then
    die "SITEKIT_BUILD=local copies programs from Debian's packages: apt-get install -y ${missing[*]}"
  fi
  step "installing Debian's ${missing[*]} (images are built from them)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

main() {
  command -v docker >/dev/null || die "Docker is not installed (https://docs.docker.com/engine/install/)"
  docker info >/dev/null 2>&1 || die "the Docker engine does not answer: start it (systemctl start docker) or run as a user in the docker group"

  step "Docker Compose v2"
  bash scripts/install-compose.sh
  local t_install=$SECONDS

  step "settings: $ENV_FILE"
  SITEKIT_ENV_FILE=$ENV_FILE bash scripts/init-env.sh
  local compose=(docker compose --env-file "$ENV_FILE")

  local build domain
  build=$(env_value SITEKIT_BUILD)
  build=${build:-release}
  domain=$(env_value DOMAIN)
  export SITEKIT_BUILD=$build

  step "building images (SITEKIT_BUILD=$build)"
  case $build in
  local)
    # The services of the active profiles (COMPOSE_PROFILES), each built
    # from ops/: stage what each image holds.
    local services
    mapfile -t services < <("${compose[@]}" config --services)
    need_local_tools "${services[@]}"
    local svc
    for svc in "${services[@]}"; do
      bash scripts/stage-image.sh "$svc" ".build/$svc"
    done
    "${compose[@]}" build
    ;;
  release)
    "${compose[@]}" build
    ;;
  *)
    die "SITEKIT_BUILD is '$build'; use release or local"
    ;;
  esac

  local t_build=$SECONDS
  step "starting the stack and waiting until every service is healthy"
  "${compose[@]}" up -d --wait --wait-timeout 180 || {
    "${compose[@]}" ps -a >&2
    "${compose[@]}" logs --tail 30 >&2
    die "the stack did not become healthy; the logs above say why"
  }
  "${compose[@]}" ps >&2

  printf 'up: timings: install %ds, settings and image build %ds, up to healthy %ds\n' \
    "$t_install" "$((t_build - t_install))" "$((SECONDS - t_build))" >&2
  step "up in ${SECONDS}s: open https://${domain:-localhost}/"
  if [[ "$domain" == localhost || -z "$domain" ]]; then
    cat >&2 <<EOF
The certificate comes from Caddy's own local CA. To trust it in a browser
on this machine, copy its root out and import it (Chrome, Firefox: Settings,
Certificates, Authorities, Import; or certutil -d sql:\$HOME/.pki/nssdb -A -t C,, -n sitekit -i root.crt):
  ${compose[*]} cp caddy:/data/caddy/pki/authorities/local/root.crt root.crt
  curl --cacert root.crt https://localhost/
EOF
  fi
}

main "$@"
