#!/usr/bin/env bash
# install-compose.sh: make `docker compose` (Compose v2) and `docker buildx`
# (BuildKit, which Compose builds every image with) work on this machine.
# Each that already works is left alone and its version printed. A missing
# one is built at its pinned release from the Go module proxy (Compose about
# 2 minutes on two cores, buildx about 1) and installed as Docker's CLI
# plugin. With no Go, say how to install Docker's own packages instead.
set -euo pipefail

# Compose v2 continues as github.com/docker/compose/v5; v5.0.2 is the newest
# that `go install` accepts with Go 1.26 (later ones carry exclude
# directives that newer Go refuses even from the main module).
readonly COMPOSE_MODULE=github.com/docker/compose/v5
readonly COMPOSE_VERSION=v5.0.2
# buildx drives the engine's built-in BuildKit (its "docker" driver, no
# extra container). Compose refuses a buildx that reports no version, so
# the version goes in with -ldflags, as buildx's own release build does.
# Its go.mod carries exclude directives, which `go install mod@version`
# refuses, so it is built as the main module from its downloaded source.
readonly BUILDX_MODULE=github.com/docker/buildx
readonly BUILDX_VERSION=v0.30.1
readonly PLUGIN_DIR=${DOCKER_CLI_PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins}

# install_plugin NAME MODULE VERSION PACKAGE LDFLAGS: build PACKAGE (a path
# inside MODULE at VERSION) as the main module and install it as
# PLUGIN_DIR/docker-NAME.
install_plugin() {
  local name=$1 module=$2 version=$3 pkg=$4 ldflags=$5 work src
  command -v go >/dev/null || {
    echo "install-compose: docker $name is missing and Go is not installed to build it; install Docker's docker-compose-plugin and docker-buildx-plugin packages (https://docs.docker.com/compose/install/linux/)" >&2
    exit 1
  }
  echo "install-compose: building docker $name ($module $version) from the Go module proxy" >&2
  work=$(mktemp -d)
  src=$(cd "$work" && GOFLAGS='' go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -d "$src" ]] || {
    echo "install-compose: go mod download $module@$version failed" >&2
    exit 1
  }
  cp -r "$src" "$work/src"
  chmod -R u+w "$work/src"
  (cd "$work/src" && GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w $ldflags" -o "$work/plugin" "./$pkg")
  mkdir -p "$PLUGIN_DIR"
  install -m 0755 "$work/plugin" "$PLUGIN_DIR/docker-$name"
  rm -rf "$work"
  docker "$name" version >&2 || {
    echo "install-compose: installed $PLUGIN_DIR/docker-$name, but docker $name version still fails" >&2
    exit 1
  }
}

if docker compose version >&2 2>/dev/null; then :; else
  install_plugin compose "$COMPOSE_MODULE" "$COMPOSE_VERSION" cmd "-X $COMPOSE_MODULE/internal.Version=$COMPOSE_VERSION"
fi
if docker buildx version >&2 2>/dev/null; then :; else
  install_plugin buildx "$BUILDX_MODULE" "$BUILDX_VERSION" cmd/buildx "-X $BUILDX_MODULE/version.Version=$BUILDX_VERSION -X $BUILDX_MODULE/version.Revision=$BUILDX_VERSION"
fi
