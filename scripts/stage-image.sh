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
# It needs Go for every image, and Debian's package of the program for
# redis (redis-tools), prometheus, redis-exporter (prometheus-redis-exporter),
# blackbox (prometheus-blackbox-exporter) and alertmanager
# (prometheus-alertmanager). Run it from the repository root.
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

# record_debian FILE DEST [PACKAGE]: note in rootfs/var/lib/dpkg/status.d which Debian
# package the copied FILE (now rootfs/DEST) came from, as distroless images
# do: <package> holds its dpkg status entry (name, version), and
# <package>.md5sums the files copied from it. Scanners read it to know the
# image's packages; the end-to-end test, to tell why two builds differ.
# PACKAGE names the package of a file that its scripts generate.
record_debian() {
  local file=$1 dest=${2#/} pkg=${3:-} path dir=$out/rootfs/var/lib/dpkg/status.d
  # dpkg knows each file by the path its package ships (with or without
  # the /usr that merged-/usr systems add).
  for path in "$file" "$(readlink -f "$file")" "${file#/usr}" "/usr${file}"; do
    [[ -z "$pkg" ]] || break
    pkg=$(dpkg-query -S "$path" 2>/dev/null | head -n1 | sed 's/[:,].*//') || true
  done
  [[ -n "$pkg" ]] || die "$file belongs to no Debian package"
  mkdir -p "$dir"
  [[ -f "$dir/$pkg" ]] || dpkg-query -s "$pkg" | grep -E '^(Package|Version|Architecture|Source|Status):' >"$dir/$pkg"
  grep -qsF "  $dest" "$dir/$pkg.md5sums" || (cd "$out/rootfs" && md5sum "$dest") >>"$dir/$pkg.md5sums"
}

# copy_with_libs SRC DEST: the program SRC (looked up on PATH) as
# rootfs/DEST, with exactly the shared libraries ldd says it loads, at the
# same paths (the dynamic loader included).
copy_with_libs() {
  local src lib lib_file
  src=$(command -v "$1") || die "$1 is not installed: install its Debian package (redis-tools, prometheus, prometheus-redis-exporter, prometheus-blackbox-exporter, prometheus-alertmanager)"
  install -D -m 0755 "$(readlink -f "$src")" "$out/rootfs/$2"
  record_debian "$src" "$2"
  for lib in $(ldd "$src" | grep -o '/[^ ]*'); do
    lib_file=$(readlink -f "$lib")
    # Keep the mode: the kernel runs the loader only if it is executable.
    install -D -m "$(stat -c %a "$lib_file")" "$lib_file" "$out/rootfs$lib"
    record_debian "$lib" "$lib"
  done
}

# copy_ca_bundle: Debian's bundle of public root certificates, which
# update-ca-certificates (package ca-certificates) writes.
copy_ca_bundle() {
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$out/rootfs/etc/ssl/certs/ca-certificates.crt"
  record_debian /etc/ssl/certs/ca-certificates.crt etc/ssl/certs/ca-certificates.crt ca-certificates
}

case $svc in
app)
  gobuild ./app "$out/rootfs/app"
  ;;
caddy)
  gobuild ./caddy "$out/rootfs/caddy"
  # For ACME over HTTPS: Debian's bundle of public root certificates.
  copy_ca_bundle
  install -D -m 0644 Caddyfile "$out/rootfs/etc/caddy/Caddyfile"
  install -D -m 0644 ops/caddy/grafana.caddy "$out/rootfs/etc/caddy/Caddyfile.grafana"
  ;;
redis)
  # Debian's redis-tools holds the server binary as redis-check-rdb (the
  # redis-server package adds only a symlink to it, a config and a system
  # service); run under the name redis-server, it is the server.
  copy_with_libs redis-check-rdb redis-server
  copy_with_libs redis-cli redis-cli
  install -D -m 0644 ops/redis/redis.conf "$out/rootfs/etc/redis/redis.conf"
  ;;
prometheus)
  copy_with_libs prometheus usr/bin/prometheus
  # Renders the blackbox probe's target from DOMAIN at start.
  gobuild ./ops/envtemplate "$out/rootfs/envtemplate"
  # Debian's build serves its web UI from these files. Some are symlinks
  # into Debian's JavaScript packages: copy what they point at, but of
  # moment-timezone (214 MB with its data folder) only the one file the UI
  # loads.
  mkdir -p "$out/rootfs/usr/share/prometheus/web/static"
  cp -r /usr/share/prometheus/web/templates "$out/rootfs/usr/share/prometheus/web/"
  for dir in /usr/share/prometheus/web/static/*; do
    [[ "$dir" == */moment-timezone ]] && continue
    cp -rL "$dir" "$out/rootfs/usr/share/prometheus/web/static/"
  done
  install -D -m 0644 /usr/share/prometheus/web/static/moment-timezone/moment-timezone-with-data.min.js \
    "$out/rootfs/usr/share/prometheus/web/static/moment-timezone/moment-timezone-with-data.min.js"
  gobuild ./ops/httpcheck/cmd "$out/rootfs/httpcheck"
  ;;
redis-exporter)
  copy_with_libs prometheus-redis-exporter usr/bin/prometheus-redis-exporter
  gobuild ./ops/httpcheck/cmd "$out/rootfs/httpcheck"
  ;;
blackbox)
  copy_with_libs prometheus-blackbox-exporter usr/bin/prometheus-blackbox-exporter
  gobuild ./ops/httpcheck/cmd "$out/rootfs/httpcheck"
  # To verify a real domain's certificate: Debian's public roots.
  copy_ca_bundle
  ;;
alertmanager)
  copy_with_libs prometheus-alertmanager usr/bin/prometheus-alertmanager
  # Its notification templates (Debian's build ships no web UI).
  mkdir -p "$out/rootfs/usr/share/prometheus"
  cp -r /usr/share/prometheus/alertmanager "$out/rootfs/usr/share/prometheus/"
  gobuild ./ops/httpcheck/cmd "$out/rootfs/httpcheck"
  # Renders alertmanager.yml.tmpl with the environment at start.
  gobuild ./ops/envtemplate "$out/rootfs/envtemplate"
  ;;
*)
  die "unknown service $svc (app, caddy, redis, prometheus, redis-exporter, blackbox or alertmanager)"
  ;;
esac
printf 'stage-image: %s staged in %s (%s)\n' "$svc" "$out" "$(du -sh "$out/rootfs" | cut -f1)" >&2
