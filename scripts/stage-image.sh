#!/usr/bin/env bash
# stage-image.sh SERVICE OUT: put the files of SERVICE's scratch image in
# OUT/rootfs (root-owned, read-only at run time) and OUT/data (an empty
# folder the image gives to the non-root user, for its volume).
#
# Both build paths run this same script, so both images hold the same files:
#   SITEKIT_BUILD=release  inside the builder stage of ops/SERVICE/Dockerfile
#                          (official golang / debian images, from a registry);
#   SITEKIT_BUILD=local    on this host, before `docker compose build`, for a
#                          machine that reaches no registry (scripts/up.sh).
# It needs Go for app and caddy, and Debian's redis-tools for redis. Run it
# from the repository root.
set -euo pipefail

die() {
  printf 'stage-image: %s\n' "$*" >&2
  exit 1
}

(($# == 2)) || die "usage: stage-image.sh app|caddy|redis OUT"
svc=$1 out=$2
[[ -f go.mod && -d app ]] || die "run it from the repository root"

rm -rf "$out"
mkdir -p "$out/rootfs" "$out/data"

# gobuild PKG DEST: a static, stripped binary that names no build path.
gobuild() {
  command -v go >/dev/null || die "Go is not installed (https://go.dev/dl/)"
  CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$2" "$1"
}

# copy_with_libs SRC DEST: the program SRC (looked up on PATH) as
# rootfs/DEST, with exactly the shared libraries ldd says it loads, at the
# same paths (the dynamic loader included).
copy_with_libs() {
  local src lib lib_file
  src=$(command -v "$1") || die "$1 is not installed: apt-get install -y redis-tools"
  cp -L "$src" "$out/rootfs/$2"
  for lib in $(ldd "$src" | grep -o '/[^ ]*'); do
    lib_file=$(readlink -f "$lib")
    # Keep the mode: the kernel runs the loader only if it is executable.
    install -D -m "$(stat -c %a "$lib_file")" "$lib_file" "$out/rootfs$lib"
  done
}

case $svc in
app)
  gobuild ./app "$out/rootfs/app"
  ;;
caddy)
  gobuild ./caddy "$out/rootfs/caddy"
  # For ACME over HTTPS: Debian's bundle of public root certificates.
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$out/rootfs/etc/ssl/certs/ca-certificates.crt"
  install -D -m 0644 Caddyfile "$out/rootfs/etc/caddy/Caddyfile"
  ;;
redis)
  # Debian's redis-tools holds the server binary as redis-check-rdb (the
  # redis-server package adds only a symlink to it, a config and a system
  # service); run under the name redis-server, it is the server.
  copy_with_libs redis-check-rdb redis-server
  copy_with_libs redis-cli redis-cli
  install -D -m 0644 ops/redis/redis.conf "$out/rootfs/etc/redis/redis.conf"
  ;;
*)
  die "unknown service $svc (app, caddy or redis)"
  ;;
esac
printf 'stage-image: %s staged in %s (%s)\n' "$svc" "$out" "$(du -sh "$out/rootfs" | cut -f1)" >&2
