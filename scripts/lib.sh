#!/usr/bin/env bash
# Shared helpers for the scripts in this folder. Source it; do not run it.
#
# For the compose stack: env_value reads a setting, compose runs docker
# compose on the stack's project.
#
# For the edge scripts: it starts the kit's programs on loopback high ports
# the way the Go edge tests do (app/internal/edgetest): a throwaway
# redis-server, the app in production mode and our Caddy with the
# repository's Caddyfile and DOMAIN=localhost. Every process it starts is
# recorded and ended by stop_all, which the scripts call from an EXIT trap.

# REPO is the repository root; scripts cd there first.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO
# CACHE keeps built binaries and pinned tools between runs.
CACHE=${SITEKIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sitekit}
readonly CACHE

# ENV_FILE holds the stack's settings: .env, or SITEKIT_ENV_FILE (the
# end-to-end test uses its own). Relative to REPO.
ENV_FILE=${SITEKIT_ENV_FILE:-.env}

PIDS=()  # processes started by start_bg, ended by stop_all
WORK=""  # this run's scratch folder, removed by stop_all

log() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# env_value NAME: NAME from the environment, else its last value in
# ENV_FILE; empty when neither sets it.
env_value() {
  if [[ -n "${!1:-}" ]]; then
    printf '%s' "${!1}"
  elif [[ -f "$ENV_FILE" ]]; then
    sed -n "s/^$1=//p" "$ENV_FILE" | tail -n1
  fi
}

# step MESSAGE: a numbered step of a stack script, with the seconds since it
# started.
step() { printf '==> [%3ds] %s\n' "$SECONDS" "$*" >&2; }

# compose ARGS...: docker compose on the kit's project (COMPOSE_PROJECT_NAME,
# else compose.yaml's name) with ENV_FILE's settings. Run from REPO.
compose() {
  docker compose --env-file "$ENV_FILE" "$@"
}

# need CMD HINT: fail with the install hint when CMD is not on PATH.
need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is not installed; $2"
}

# make_work: a scratch folder for this run, removed by stop_all.
make_work() {
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/sitekit-edge.XXXXXX")
}

# start_bg LOGFILE CMD...: run CMD in the background with its output in
# LOGFILE and remember its pid for stop_all.
start_bg() {
  local logfile=$1
  shift
  "$@" >"$logfile" 2>&1 &
  PIDS+=("$!")
}

# stop_all: end what start_bg started (TERM, then KILL after 10 s), then
# remove the scratch folder. Safe to call twice.
stop_all() {
  local pid i
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
  if [[ -n "$WORK" ]]; then
    rm -rf "$WORK"
    WORK=""
  fi
}

# free_port: a port that no TCP or UDP socket uses, between 20000 and the
# kernel's range for outgoing connections (whose local ports would collide).
# Another process could take it before ours binds it; the start then fails
# loudly.
free_port() {
  local port i low
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range
  ((low > 21000)) || die "the ephemeral port range starts at $low; free_port needs ports 20000-21000 free of it"
  for ((i = 0; i < 50; i++)); do
    port=$((20000 + RANDOM % (low - 20000)))
    if ! ss -Htuan "sport = :$port" | grep -q .; then
      echo "$port"
      return
    fi
  done
  die "no free port found in 50 tries"
}

# wait_until SECONDS CMD...: retry CMD every 0.2 s until it succeeds.
wait_until() {
  local seconds=$1 i
  shift
  for ((i = 0; i < seconds * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

# build_caddy: our Caddy, static, into $CACHE/bin/caddy (the Go build cache
# makes a rebuild quick). Prints the path.
build_caddy() {
  mkdir -p "$CACHE/bin"
  (cd "$REPO" && CGO_ENABLED=0 go build -o "$CACHE/bin/caddy" ./caddy)
  echo "$CACHE/bin/caddy"
}

build_app() {
  mkdir -p "$CACHE/bin"
  (cd "$REPO" && CGO_ENABLED=0 go build -o "$CACHE/bin/app" ./app)
  echo "$CACHE/bin/app"
}

# start_backend APP: Redis and the app on loopback high ports. Sets
# APP_PORT. The app's rate limits are raised so that load tools measure the
# stack, not the limiter.
start_backend() {
  local app=$1 redis_port password
  need redis-server "install it with: apt-get install -y redis-server"

  redis_port=$(free_port)
  password="edge-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  mkdir -p "$WORK/redis"
  start_bg "$WORK/redis.log" redis-server --port "$redis_port" --bind 127.0.0.1 \
    --dir "$WORK/redis" --save '' --appendonly no --requirepass "$password"
  wait_until 10 redis-cli -p "$redis_port" -a "$password" --no-auth-warning ping ||
    die "redis-server did not start:
$(tail -n 20 "$WORK/redis.log")"

  APP_PORT=$(free_port)
  start_bg "$WORK/app.log" env -i PATH="$PATH" \
    APP_ENV=production \
    APP_LISTEN="127.0.0.1:$APP_PORT" \
    APP_INTERNAL_LISTEN="127.0.0.1:$(free_port)" \
    REDIS_URL="redis://:$password@127.0.0.1:$redis_port/0" \
    TRUSTED_PROXIES=127.0.0.1 \
    APP_DRAIN_DELAY=0 \
    RATE_LIMIT_GLOBAL=1000000/s RATE_LIMIT_GLOBAL_BURST=1000000 \
    "$app"
  wait_until 15 curl -fsS "http://127.0.0.1:$APP_PORT/readyz" ||
    die "the app did not become ready:
$(tail -n 20 "$WORK/app.log")"
}

# start_caddy CADDY CADDYFILE NAME: Caddy with CADDYFILE, DOMAIN=localhost,
# in front of the app of start_backend, with its data under $WORK/NAME.
# Sets HTTP_PORT, HTTPS_PORT and ROOT_CA (its local root certificate).
# Every client here is this host, a scanner or a load generator opening many
# connections from one address, so loopback is a shared peer, limited only
# by the total (EDGE_SHARED_PEERS, the Caddyfile's limit_conns).
start_caddy() {
  local caddy=$1 caddyfile=$2 name=$3
  HTTP_PORT=$(free_port)
  HTTPS_PORT=$(free_port)
  mkdir -p "$WORK/$name"
  start_bg "$WORK/$name.log" env -i PATH="$PATH" \
    HOME="$WORK/$name" XDG_DATA_HOME="$WORK/$name/data" XDG_CONFIG_HOME="$WORK/$name/config" \
    DOMAIN=localhost HTTP_PORT="$HTTP_PORT" HTTPS_PORT="$HTTPS_PORT" \
    APP_UPSTREAM_HOST=127.0.0.1 APP_UPSTREAM_PORT="$APP_PORT" \
    CADDY_ADMIN="127.0.0.1:$(free_port)" EDGE_METRICS_PORT="$(free_port)" \
    EDGE_GRACE_PERIOD=1s EDGE_SHARED_PEERS=127.0.0.0/8 \
    "$caddy" run --config "$caddyfile" --adapter caddyfile
  ROOT_CA="$WORK/$name/data/caddy/pki/authorities/local/root.crt"
  wait_until 30 test -s "$ROOT_CA" || die "caddy ($name) made no local CA:
$(tail -n 20 "$WORK/$name.log")"
  wait_until 30 curl -fsS --cacert "$ROOT_CA" --resolve "localhost:$HTTPS_PORT:127.0.0.1" \
    "https://localhost:$HTTPS_PORT/about" ||
    die "no 200 through caddy ($name):
$(tail -n 20 "$WORK/$name.log")"
  log "caddy ($name) up: https://localhost:$HTTPS_PORT → app 127.0.0.1:$APP_PORT"
}
