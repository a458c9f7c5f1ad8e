#!/usr/bin/env bash
# deploy.sh [--pull | --no-build]: replace the running app containers with
# new ones from a new image, without failing a request.
# deploy.sh rollback: the same, back to the image the last deploy replaced.
#
#   1. the new image: built as `docker compose build app` would (the
#      default; SITEKIT_BUILD=local stages it on this host first), pulled
#      (--pull, for images from a registry: set SITEKIT_TAG in .env first),
#      or the one already tagged (--no-build);
#   2. as many new app containers as run now, started beside the old ones
#      (docker compose up --scale app=2N --no-recreate);
#   3. wait until each new one is healthy (its /readyz, by Docker's health
#      check) and has answered requests through Caddy, which finds replicas
#      by the service name (see the Caddyfile);
#   4. stop the old ones: SIGTERM, so each drains (readiness off, in-flight
#      requests finish, connections close) and exits; then remove them.
#
# If step 2 or 3 fails, it removes the new containers, points the image tag
# back at the old image (so a later `docker compose up` does not bring the
# failed one back), says "rolled back" and exits 1: the old containers
# never stopped serving. The replaced image stays tagged
# $SITEKIT_IMAGE_PREFIX/app:previous for `deploy.sh rollback`.
#
# `docker compose up -d` starts the stack the first time; this script only
# replaces app containers of a running stack. The project and env file are
# compose's own (COMPOSE_PROJECT_NAME; SITEKIT_ENV_FILE, default .env).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO"

# Seconds a new container gets to become healthy (Docker checks every 5 s;
# compose.yaml's app healthcheck) and then to serve through Caddy.
TIMEOUT=${DEPLOY_TIMEOUT:-90}
SECONDS=0


usage() {
  die "usage: deploy.sh [--pull | --no-build] | deploy.sh rollback"
}

# new_image MODE: make the image tag point at the image to deploy.
new_image() {
  local build
  case $1 in
  build)
    build=$(env_value SITEKIT_BUILD)
    step "building the app image (SITEKIT_BUILD=${build:-release})"
    if [[ "${build:-release}" == local ]]; then
      bash scripts/stage-image.sh app .build/app
      SITEKIT_BUILD=local compose build app
    else
      compose build app
    fi
    ;;
  pull)
    step "pulling the app image"
    compose pull app
    ;;
  none)
    step "deploying the image tagged $IMAGE as it is"
    ;;
  rollback)
    docker image inspect "$PREVIOUS" >/dev/null 2>&1 ||
      die "no $PREVIOUS image: no deploy has replaced an image on this host yet"
    step "rolling back: $IMAGE ← $PREVIOUS ($(short "$(image_id "$PREVIOUS")"))"
    docker tag "$PREVIOUS" "$IMAGE"
    ;;
  esac
}

image_id() { docker image inspect -f '{{.Id}}' "$1"; }
short() { local id=${1#sha256:}; printf '%s' "${id:0:12}"; }
# names IDS...: the containers' names, for messages.
names() { docker inspect -f '{{slice .Name 1}}' "$@" | paste -sd ' ' -; }

# app_containers: ids of the app's running containers, one per line.
app_containers() { compose ps -q app; }

# health ID: Docker's health status of container ID (or its state when it
# is not running).
health() {
  docker inspect -f '{{if .State.Running}}{{if .State.Health}}{{.State.Health.Status}}{{else}}running{{end}}{{else}}{{.State.Status}}{{end}}' "$1"
}

# served ID: how many requests the new container ID logged as handled (its
# access log; health probes are logged at debug level, so they do not count).
served() {
  docker logs "$1" 2>&1 | grep -c '"msg":"handled request"' || true
}

# probe: one request through Caddy, as a visitor would send it, so that a
# quiet site still shows the new containers taking traffic.
probe() {
  curl -fsS -o /dev/null --max-time 5 "${CURL_TLS[@]}" \
    --resolve "$DOMAIN:443:127.0.0.1" "https://$DOMAIN/about" 2>/dev/null || true
}

# remove IDS...: stop (SIGTERM, so each drains; compose.yaml's
# stop_grace_period) and remove containers.
remove() {
  docker stop --time 30 "$@" >/dev/null
  docker rm "$@" >/dev/null
}

# roll_back WHY: undo a deploy that has not stopped the old containers.
roll_back() {
  local why=$1
  printf 'deploy: FAILED: %s\n' "$why" >&2
  if ((${#NEW[@]})); then
    printf 'deploy: the new containers logged (last 20 lines each):\n' >&2
    local id
    for id in "${NEW[@]}"; do
      docker logs --tail 20 "$id" 2>&1 | sed "s/^/  $(short "$id") | /" >&2 || true
    done
    step "removing the new container(s): $(names "${NEW[@]}")"
    remove "${NEW[@]}" || true
  fi
  docker tag "$OLD_IMAGE" "$IMAGE"
  die "rolled back: the old container(s) ($(names "${OLD[@]}")) kept serving throughout, and $IMAGE is the old image $(short "$OLD_IMAGE") again"
}

main() {
  local mode=build
  case ${1:-} in
  "") ;;
  --pull) mode=pull ;;
  --no-build) mode=none ;;
  rollback) mode=rollback ;;
  *) usage ;;
  esac
  (($# <= 1)) || usage
  need docker "install Docker (https://docs.docker.com/engine/install/)"
  need curl "apt-get install -y curl"
  docker compose version >/dev/null 2>&1 || die "Docker Compose v2 is missing: run bash scripts/install-compose.sh"

  # The app service's image in compose's canonical YAML (services sit at
  # two spaces, their keys at four).
  IMAGE=$(compose config app | awk '/^  [^ ]/ { svc = $1 } svc == "app:" && /^    image: / { print $2; exit }')
  [[ -n "$IMAGE" ]] || die "docker compose config names no image for the app service"
  PREVIOUS="${IMAGE%:*}:previous"
  DOMAIN=$(env_value DOMAIN)
  DOMAIN=${DOMAIN:-localhost}

  mapfile -t OLD < <(app_containers)
  ((${#OLD[@]})) || die "no app container is running: start the stack first (docker compose up -d --wait)"
  OLD_IMAGE=$(docker inspect -f '{{.Image}}' "${OLD[0]}")
  step "running now: ${#OLD[@]} app container(s) of image $(short "$OLD_IMAGE")"

  # Caddy's local CA signs the certificate of localhost: trust it for the
  # probes. A real domain's certificate is checked against the system's CAs.
  CURL_TLS=()
  if [[ "$DOMAIN" == localhost ]]; then
    CA_FILE=$(mktemp)
    trap 'rm -f "$CA_FILE"' EXIT
    compose cp caddy:/data/caddy/pki/authorities/local/root.crt "$CA_FILE" >/dev/null 2>&1 ||
      die "could not copy Caddy's local root certificate: is caddy running? (docker compose ps)"
    CURL_TLS=(--cacert "$CA_FILE")
  fi

  new_image "$mode"
  local new_image_id
  new_image_id=$(image_id "$IMAGE")
  if [[ "$new_image_id" == "$OLD_IMAGE" ]]; then
    step "the image is unchanged ($(short "$new_image_id")): replacing the containers anyway"
  fi

  NEW=()
  local count=$((2 * ${#OLD[@]}))
  step "starting ${#OLD[@]} new app container(s) of image $(short "$new_image_id") beside the old"
  compose up -d --no-deps --no-recreate --scale "app=$count" app ||
    roll_back "docker compose could not start the new containers"
  local id old
  while read -r id; do
    for old in "${OLD[@]}"; do
      [[ "$id" == "$old" ]] && continue 2
    done
    NEW+=("$id")
  done < <(app_containers)
  ((${#NEW[@]} == ${#OLD[@]})) ||
    roll_back "expected ${#OLD[@]} new container(s), found ${#NEW[@]}"

  step "waiting until the new container(s) are healthy: $(names "${NEW[@]}")"
  local deadline=$((SECONDS + TIMEOUT)) state pending
  while :; do
    pending=0
    for id in "${NEW[@]}"; do
      state=$(health "$id")
      case $state in
      healthy) ;;
      starting | running) pending=1 ;;
      *) roll_back "new container $(short "$id") is $state" ;;
      esac
    done
    ((pending)) || break
    ((SECONDS < deadline)) || roll_back "new container(s) not healthy after ${TIMEOUT}s"
    sleep 1
  done

  step "waiting until Caddy sends them requests"
  if [[ "$(env_value LOG_LEVEL)" =~ ^(warn|error)$ ]]; then
    step "LOG_LEVEL hides the access log: health checked, traffic not"
  else
    while :; do
      pending=0
      for id in "${NEW[@]}"; do
        (($(served "$id") > 0)) || pending=1
      done
      ((pending)) || break
      ((SECONDS < deadline)) || roll_back "Caddy sent the new container(s) no request in ${TIMEOUT}s"
      probe
      sleep 0.5
    done
  fi

  step "draining and removing the old container(s): $(names "${OLD[@]}")"
  remove "${OLD[@]}"
  docker tag "$OLD_IMAGE" "$PREVIOUS"
  step "deployed image $(short "$new_image_id") in ${SECONDS}s; the replaced one is $PREVIOUS ($(short "$OLD_IMAGE"))"
  printf 'deploy: ok %s → %s in %ds\n' "$(short "$OLD_IMAGE")" "$(short "$new_image_id")" "$SECONDS"
}

main "$@"
