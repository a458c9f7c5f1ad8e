#!/usr/bin/env bash
# preflight.sh: check a production host before the stack's first start, and
# say how to fix each failure.
#
#   scripts/preflight.sh     one line per check: ok, warn or FAIL, with the fix
#
# It checks: the Docker engine answers (20.10 or newer), Compose v2 (2.17 or
# newer) and buildx (0.17 or newer, for building) are there; Docker's disk
# has room (4 GiB at least, warns under 8) and the clock is synchronized
# (ACME needs it); ports
# 80/tcp, 443/tcp and 443/udp are free (or held by this stack's own caddy);
# .env (or SITEKIT_ENV_FILE) exists and sets every ${VAR:?} compose.yaml
# requires, with secrets that are not empty, not a placeholder, long enough
# and each its own; compose.yaml renders with it, and runs the app with
# APP_ENV=production; DOMAIN resolves to an address of this host (for a real
# domain), ACME_EMAIL is set, and whether Caddy's data volume exists (on a
# first start Caddy requests certificates: try ACME_CA=staging first). It
# changes nothing. It exits 0 when no check failed (warnings allowed), 1 with
# the failures listed otherwise.
#
# Environment:
#   SITEKIT_ENV_FILE     the env file (default .env); COMPOSE_PROJECT_NAME as
#                        for docker compose
#   PREFLIGHT_PUBLIC_IP  this host's public address(es), comma-separated,
#                        when NAT hides them (a cloud VM's public IP is not on
#                        any interface): DOMAIN may resolve to them
#   PREFLIGHT_PORTS      for tests only: the ports to check instead of
#                        "80/tcp 443/tcp 443/udp"
#   PREFLIGHT_DISK_FREE_GIB  for tests only: the free GiB to judge instead of
#                        what df says of Docker's disk
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO"

PORTS=${PREFLIGHT_PORTS:-80/tcp 443/tcp 443/udp}
# Secrets shorter than this fail, as the app refuses a shorter Redis password.
readonly MIN_SECRET_LENGTH=16
# Words that mark a password copied from an example (the app's list,
# app/internal/config).
readonly PLACEHOLDERS=(changeme change-me change_me replaceme replace-me replace_me
  placeholder example password passw0rd secret foobared default xxxxx)
readonly STAGING_CA=https://acme-staging-v02.api.letsencrypt.org/directory
# The oldest Docker Engine, Compose and buildx the kit runs on.
readonly MIN_ENGINE=20.10 MIN_COMPOSE=2.17 MIN_BUILDX=0.17
# Free GiB on Docker's disk below which preflight fails, and warns.
readonly MIN_DISK_GIB=4 WARN_DISK_GIB=8

FAILED=()
WARNINGS=0
step() { printf '\n==> %s\n' "$*"; }
ok() { printf 'ok    %s\n' "$*"; }
warn() {
  printf 'warn  %s\n' "$*"
  WARNINGS=$((WARNINGS + 1))
}
fail() {
  printf 'FAIL  %s\n' "$*"
  FAILED+=("$*")
}

HAVE_DOCKER=false
HAVE_COMPOSE=false

check_docker() {
  step "Docker"
  if ! command -v docker >/dev/null; then
    fail "docker: not installed. Fix: install Docker Engine (https://docs.docker.com/engine/install/)"
    return
  fi
  local version
  if version=$(docker info --format '{{.ServerVersion}}' 2>/dev/null) && [[ -n "$version" ]]; then
    HAVE_DOCKER=true
    if at_least "$version" "$MIN_ENGINE"; then
      ok "the Docker engine answers (version $version)"
    else
      fail "the Docker engine is $version, older than $MIN_ENGINE (the oldest this kit is tested on). Fix: upgrade Docker Engine (https://docs.docker.com/engine/install/)"
    fi
  else
    fail "the Docker engine does not answer. Fix: systemctl start docker (and enable it), or run as root or a user in the docker group"
  fi
  if version=$(docker compose version --short 2>/dev/null); then
    HAVE_COMPOSE=true
    if at_least "$version" "$MIN_COMPOSE"; then
      ok "Docker Compose v2 ($version)"
    else
      fail "Docker Compose is $version, older than $MIN_COMPOSE (up --wait-timeout, pull_policy). Fix: bash scripts/install-compose.sh after removing it, or upgrade docker-compose-plugin"
    fi
  else
    fail "docker compose (v2) is missing. Fix: bash scripts/install-compose.sh, or apt-get install docker-compose-plugin from Docker's repository"
  fi
  # Compose builds every image with BuildKit through buildx; a server that
  # only pulls (SITEKIT_PULL_POLICY=always, images from a registry) builds
  # nothing.
  local pulls=false
  [[ "$(env_value SITEKIT_PULL_POLICY)" == always ]] && pulls=true
  if version=$(docker buildx version 2>/dev/null | awk '{ print $2 }') && [[ -n "$version" ]]; then
    if at_least "${version#v}" "$MIN_BUILDX"; then
      ok "docker buildx ($version) for building the images"
    elif $pulls; then
      warn "docker buildx is $version, older than $MIN_BUILDX: this server can pull images but not build them. Fix: bash scripts/install-compose.sh after removing it, or upgrade docker-buildx-plugin"
    else
      fail "docker buildx is $version, older than $MIN_BUILDX, which Compose needs to build the images. Fix: upgrade docker-buildx-plugin, or bash scripts/install-compose.sh after removing it"
    fi
  elif $pulls; then
    warn "docker buildx is missing: this server can pull images (SITEKIT_PULL_POLICY=always) but not build them. Fix: bash scripts/install-compose.sh, or apt-get install docker-buildx-plugin"
  else
    fail "docker buildx is missing: Compose builds the images with it. Fix: bash scripts/install-compose.sh, or apt-get install docker-buildx-plugin from Docker's repository"
  fi
}

# at_least VERSION MIN: whether the dotted VERSION is MIN or newer.
at_least() {
  local v=${1%%[-+]*}
  [[ "$(printf '%s\n%s\n' "$2" "$v" | sort -V | head -n1)" == "$2" ]]
}

# check_host: what the images and Redis need of the disk, and what ACME
# needs of the clock.
check_host() {
  step "host"
  local root free
  if $HAVE_DOCKER; then
    root=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null) || root=""
    free=${PREFLIGHT_DISK_FREE_GIB:-}
    if [[ -z "$free" && -n "$root" ]]; then
      free=$(df -Pk "$root" 2>/dev/null | awk 'NR == 2 { printf "%d", $4 / 1048576 }') || free=""
    fi
    if [[ -z "$free" ]]; then
      warn "cannot tell the free space of Docker's disk. Fix: df -h $(docker info --format '{{.DockerRootDir}}' 2>/dev/null)"
    elif ((free < MIN_DISK_GIB)); then
      fail "Docker's disk ($root) has ${free} GiB free, under $MIN_DISK_GIB GiB: builds (about 2 GiB of build cache), images, Redis's AOF and snapshots and the logs need it. Fix: free space (docker system prune, docker builder prune) or grow the disk"
    elif ((free < WARN_DISK_GIB)); then
      warn "Docker's disk ($root) has ${free} GiB free, under $WARN_DISK_GIB GiB. Fix: docker builder prune, or grow the disk before Redis's data does"
    else
      ok "Docker's disk ($root) has ${free} GiB free"
    fi
  fi
  # ACME refuses requests from a clock that is off, and certificates look
  # not yet valid, or expired, to clients.
  local synced=""
  if command -v timedatectl >/dev/null; then
    synced=$(timedatectl show -p NTPSynchronized --value 2>/dev/null) || synced=""
  fi
  if [[ -z "$synced" ]] && command -v chronyc >/dev/null; then
    if chronyc tracking 2>/dev/null | grep -q '^Leap status *: Normal'; then synced=yes; else synced=no; fi
  fi
  case $synced in
  yes) ok "the clock is synchronized (NTP)" ;;
  no) fail "the clock is not synchronized: ACME CAs refuse a skewed clock and TLS clients reject certificates it makes look not yet valid. Fix: timedatectl set-ntp true (systemd-timesyncd), or apt-get install chrony" ;;
  *) warn "cannot tell whether the clock is synchronized (no timedatectl or chronyc answered). Fix: make sure NTP runs (timedatectl set-ntp true, or apt-get install chrony)" ;;
  esac
}

# is_secret NAME: whether compose's required NAME is a secret.
is_secret() { [[ "$1" == *PASSWORD* || "$1" == *SECRET* || "$1" == *TOKEN* ]]; }

check_settings() {
  step "settings: $ENV_FILE"
  if [[ ! -f "$ENV_FILE" ]]; then
    fail "$ENV_FILE does not exist. Fix: bash scripts/init-env.sh DOMAIN=example.com ACME_EMAIL=you@example.com (writes it with fresh secrets)"
    return
  fi
  local mode
  mode=$(stat -c %a "$ENV_FILE")
  if [[ "$mode" =~ [1-7]$ ]]; then
    warn "$ENV_FILE is readable by every user of this host (mode $mode). Fix: chmod 600 $ENV_FILE"
  fi

  # Every ${VAR:?...} of compose.yaml: compose refuses to start without it.
  local required name value word lower bad seen=() missing=false
  # shellcheck disable=SC2016 # a literal ${ in compose.yaml
  mapfile -t required < <(grep -o '\${[A-Za-z0-9_]*:?' compose.yaml | sed 's/^\${//; s/:?$//' | sort -u)
  for name in "${required[@]}"; do
    value=$(env_value "$name")
    if [[ -z "$value" ]]; then
      if is_secret "$name"; then
        fail "$name is empty. Fix: bash scripts/init-env.sh (adds the secrets $ENV_FILE lacks), or set $name=\$(openssl rand -hex 32)"
      else
        fail "$name is empty. Fix: set $name in $ENV_FILE (see .env.example)"
      fi
      missing=true
      continue
    fi
    is_secret "$name" || {
      ok "$name is set"
      continue
    }
    lower=${value,,}
    bad=""
    for word in "${PLACEHOLDERS[@]}"; do
      if [[ "$lower" == *"$word"* ]]; then
        bad=$word
        break
      fi
    done
    if [[ -n "$bad" ]]; then
      fail "$name looks like a placeholder (it contains \"$bad\"). Fix: set $name=\$(openssl rand -hex 32)"
    elif ((${#value} < MIN_SECRET_LENGTH)); then
      fail "$name is ${#value} characters long, under $MIN_SECRET_LENGTH. Fix: set $name=\$(openssl rand -hex 32)"
    elif [[ "$name" == REDIS_* && ! "$value" =~ ^[A-Za-z0-9]+$ ]]; then
      fail "$name has characters other than letters and digits (it goes into a redis:// URL and Redis's command line). Fix: set $name=\$(openssl rand -hex 32)"
    elif [[ " ${seen[*]} " == *" $value "* ]]; then
      fail "$name is the same as another secret: each user needs its own. Fix: set $name=\$(openssl rand -hex 32)"
    else
      ok "$name is set (${#value} characters, no placeholder)"
    fi
    seen+=("$value")
  done

  # With a required value missing, compose would only say so again.
  if ! $HAVE_COMPOSE || $missing; then
    return 0
  fi
  local out
  if out=$(compose config --quiet 2>&1); then
    ok "compose.yaml renders with $ENV_FILE"
  else
    fail "compose.yaml does not render with $ENV_FILE: $(tail -n1 <<<"$out"). Fix: set what it names in $ENV_FILE"
    return
  fi
  # The app's mode is fixed in compose.yaml, not taken from .env.
  if compose config app 2>/dev/null | grep -qE '^ +APP_ENV: "?production"?$'; then
    ok "the app runs with APP_ENV=production (compose.yaml sets it)"
  else
    fail "compose.yaml does not run the app with APP_ENV=production (pprof and console logs on). Fix: restore 'APP_ENV: production' in the app's environment in compose.yaml"
  fi
}

# local_addresses: this host's addresses, one a line, and PREFLIGHT_PUBLIC_IP's.
local_addresses() {
  ip -o addr show 2>/dev/null | awk '{ sub(/\/.*/, "", $4); print $4 }'
  tr -s ', ' '\n' <<<"${PREFLIGHT_PUBLIC_IP:-}" | sed '/^$/d'
}

check_domain() {
  step "domain and certificates"
  local domain email ca
  domain=$(env_value DOMAIN)
  email=$(env_value ACME_EMAIL)
  ca=$(env_value ACME_CA)
  [[ -n "$domain" ]] || return 0 # failed above
  local real=true
  if [[ "$domain" == localhost || "$domain" =~ ^[0-9.]+$ || "$domain" == *:* ]]; then
    real=false
    warn "DOMAIN=$domain: Caddy's own local CA signs the certificate, which browsers do not trust. Fix: for a public site, set DOMAIN to its name"
  else
    local resolved addr mine foreign=() loopback=()
    resolved=$(timeout 10 getent ahosts "$domain" | awk '{ print $1 }' | sort -u) || true
    if [[ -z "$resolved" ]]; then
      fail "DOMAIN=$domain does not resolve. Fix: create its A (and AAAA) record pointing at this host's public address; check with dig +short $domain"
    else
      mine=$(local_addresses)
      for addr in $resolved; do
        if [[ "$addr" == 127.* || "$addr" == ::1 ]]; then
          loopback+=("$addr")
        elif ! grep -qxF "$addr" <<<"$mine"; then
          foreign+=("$addr")
        fi
      done
      if ((${#loopback[@]})); then
        fail "DOMAIN=$domain resolves to loopback (${loopback[*]}) here, which the CA cannot reach. Fix: its A/AAAA records must point at this host's public address (and /etc/hosts must not map it to loopback)"
      elif ((${#foreign[@]})); then
        fail "DOMAIN=$domain resolves to ${foreign[*]}, not an address of this host ($(paste -sd' ' <<<"$mine")). Fix: point its A/AAAA records at this host. Behind NAT (a cloud VM's public IP) the public address is not visible here: if ${foreign[*]} is this host's, run again with PREFLIGHT_PUBLIC_IP=$(
          IFS=,
          echo "${foreign[*]}"
        )"
      else
        ok "DOMAIN=$domain resolves to $(paste -sd' ' <<<"$resolved"), this host"
      fi
    fi
    if [[ -z "$email" ]]; then
      warn "ACME_EMAIL is empty: the CA cannot warn you about expiring certificates or problems. Fix: set ACME_EMAIL=you@$domain"
    elif [[ "$email" != *@*.* ]]; then
      fail "ACME_EMAIL=$email is not an email address. Fix: set ACME_EMAIL=you@$domain"
    else
      ok "ACME_EMAIL=$email"
    fi
  fi

  $HAVE_DOCKER || return 0
  local project volume
  project=${COMPOSE_PROJECT_NAME:-}
  if [[ -z "$project" ]] && $HAVE_COMPOSE; then
    project=$(compose config --no-interpolate 2>/dev/null | sed -n 's/^name: //p' | head -n1) || true
  fi
  volume=$(docker volume ls -q --filter "label=com.docker.compose.project=${project:-sitekit}" \
    --filter label=com.docker.compose.volume=caddy_data 2>/dev/null | head -n1) || true
  if [[ -n "$volume" ]]; then
    ok "Caddy's data volume $volume exists: its certificates and keys are kept"
  elif ! $real; then
    ok "Caddy's data volume will be created at the first start, with its local CA"
  elif [[ "$ca" == "$STAGING_CA" ]]; then
    warn "first start (no caddy_data volume yet): Caddy will request a certificate from Let's Encrypt's staging CA, which browsers do not trust. Fix: once it works, empty ACME_CA and docker compose up -d"
  else
    local where="Let's Encrypt production"
    [[ -z "$ca" ]] || where=$ca
    warn "first start (no caddy_data volume yet): Caddy will request a certificate from $where, whose rate limits a misconfiguration can hit. Fix: try ACME_CA=$STAGING_CA first, then empty it"
  fi
}

# port_holder PORT PROTO: the program listening on PORT, as ss names it.
port_holder() {
  local flag=-t
  [[ "$2" == udp ]] && flag=-u
  ss -Hlnp "$flag" "sport = :$1" 2>/dev/null | grep -o 'users:(("[^"]*"' | sed 's/.*"\(.*\)"/\1/' | sort -u | paste -sd,
}

check_ports() {
  step "ports"
  local spec port proto project containers holder
  project=${COMPOSE_PROJECT_NAME:-}
  if [[ -z "$project" ]] && $HAVE_COMPOSE; then
    project=$(compose config --no-interpolate 2>/dev/null | sed -n 's/^name: //p' | head -n1) || true
  fi
  for spec in $PORTS; do
    port=${spec%/*}
    proto=${spec#*/}
    [[ "$port" =~ ^[0-9]+$ && ("$proto" == tcp || "$proto" == udp) ]] || {
      fail "PREFLIGHT_PORTS: $spec is not PORT/tcp or PORT/udp"
      continue
    }
    containers=""
    if $HAVE_DOCKER; then
      containers=$(docker ps --filter "publish=$port/$proto" \
        --format '{{.Names}} {{.Label "com.docker.compose.project"}} {{.Label "com.docker.compose.service"}}' 2>/dev/null) || true
    fi
    if [[ -n "$containers" ]]; then
      if [[ "$containers" == *" ${project:-sitekit} caddy" && $(wc -l <<<"$containers") == 1 ]]; then
        ok "$spec is held by this stack's caddy (${containers%% *})"
      else
        local name other_project
        read -r name other_project _ <<<"$containers"
        if [[ -n "$other_project" ]]; then
          fail "$spec is published by the container $name of the compose project $other_project. Fix: docker compose -p $other_project down (or stop)"
        else
          fail "$spec is published by the container $name. Fix: docker stop $name"
        fi
      fi
      continue
    fi
    if ! command -v ss >/dev/null; then
      warn "$spec: cannot tell whether it is free (no ss). Fix: apt-get install iproute2"
      continue
    fi
    if [[ -n "$(ss -Hln "-${proto:0:1}" "sport = :$port")" ]]; then
      holder=$(port_holder "$port" "$proto")
      fail "$spec is in use${holder:+ by $holder}. Fix: stop and disable what listens there (ss -lnp${proto:0:1} 'sport = :$port' names it; e.g. systemctl disable --now nginx)"
    else
      ok "$spec is free"
    fi
  done
}

main() {
  check_docker
  check_host
  check_settings
  check_domain
  check_ports

  step "summary"
  if ((${#FAILED[@]})); then
    printf 'preflight: %d check(s) failed, %d warning(s):\n' "${#FAILED[@]}" "$WARNINGS"
    printf '  - %s\n' "${FAILED[@]}"
    exit 1
  fi
  printf 'preflight: all checks passed (%d warning(s)). Start with: bash scripts/up.sh (or docker compose up -d --wait)\n' "$WARNINGS"
}

main "$@"
