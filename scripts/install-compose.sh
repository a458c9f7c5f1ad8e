#!/usr/bin/env bash
# install-compose.sh: make `docker compose` (Compose v2) work on this machine.
# When it already does, print its version and stop. Otherwise build the
# pinned release from the Go module proxy (about 2-4 minutes on two cores)
# and install it as Docker's CLI plugin. With no Go, say how to install
# Docker's own package instead.
set -euo pipefail

# Compose v2 continues as github.com/docker/compose/v5; v5.0.2 is the newest
# that `go install` accepts with Go 1.26 (later ones carry exclude
# directives). It builds images with the engine's classic builder when
# DOCKER_BUILDKIT=0, so it needs no buildx plugin.
readonly COMPOSE_MODULE=github.com/docker/compose/v5
readonly COMPOSE_VERSION=v5.0.2
readonly PLUGIN_DIR=${DOCKER_CLI_PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins}

if docker compose version >/dev/null 2>&1; then
  docker compose version >&2
  exit 0
fi
command -v go >/dev/null || {
  echo "install-compose: Docker Compose v2 is missing and Go is not installed to build it; install Docker's docker-compose-plugin package (https://docs.docker.com/compose/install/linux/)" >&2
  exit 1
}
echo "install-compose: building Docker Compose $COMPOSE_VERSION from the Go module proxy" >&2
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOBIN=$bin go install -trimpath \
  -ldflags "-s -w -X $COMPOSE_MODULE/internal.Version=$COMPOSE_VERSION" \
  "$COMPOSE_MODULE/cmd@$COMPOSE_VERSION"
mkdir -p "$PLUGIN_DIR"
install -m 0755 "$bin/cmd" "$PLUGIN_DIR/docker-compose"
docker compose version >&2 || {
  echo "install-compose: installed $PLUGIN_DIR/docker-compose, but docker compose still fails" >&2
  exit 1
}
