#!/usr/bin/env bash
# base-images.sh: make the two base images the release Dockerfile stages
# start from, on a machine that reaches no container registry, from their
# real contents:
#
#   debian:bookworm-slim   a Debian bookworm root filesystem from debootstrap
#                          (--variant=minbase), slimmed as the official image
#                          is (no docs, man pages or locales) and imported
#                          with docker import;
#   golang:1.26-bookworm   that, plus ca-certificates and netbase, and this
#                          machine's Go toolchain laid out as the official
#                          image lays it out (/usr/local/go, GOPATH=/go).
#
# An image of that name that this script did not make (one pulled from a
# registry) is never replaced. One it made is made again only when its
# inputs changed (this script, the Go version, the mirror): a second run
# takes no time. Needs root, debootstrap (Debian package) and Go.
#
# Environment:
#   DEBIAN_MIRROR   a mirror of deb.debian.org, which serves /debian (default
#                   http://deb.debian.org): as BUILD_DEBIAN_MIRROR in .env
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO"

readonly DEBIAN_IMAGE=debian:bookworm-slim
readonly GO_IMAGE=golang:1.26-bookworm
readonly SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org}/debian
readonly MIRROR
readonly LABEL=org.sitekit.base-inputs

# inputs_of IMAGE: the label this script left on IMAGE; "none" for an image
# it did not make; empty when there is no such image.
inputs_of() {
  docker image inspect --format "{{with index .Config.Labels \"$LABEL\"}}{{.}}{{else}}none{{end}}" "$1" 2>/dev/null || true
}

# fresh IMAGE INPUTS: whether IMAGE can stay as it is.
fresh() {
  local have
  have=$(inputs_of "$1")
  if [[ "$have" == none ]]; then
    log "$1: present and not made here (pulled): left alone"
    return 0
  fi
  [[ "$have" == "$2" ]] && log "$1: up to date"
}

make_debian() {
  local inputs=$1 root
  need debootstrap "apt-get install debootstrap"
  [[ $EUID == 0 ]] || die "debootstrap needs root"
  root=$(mktemp -d "${TMPDIR:-/tmp}/sitekit-rootfs.XXXXXX")
  # shellcheck disable=SC2064 # expand now: root is local
  trap "rm -rf '$root'" EXIT
  log "$DEBIAN_IMAGE: debootstrap --variant=minbase $SUITE from $MIRROR"
  debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 || {
    tail -n 20 "$root.log" >&2
    die "debootstrap failed (log above)"
  }
  rm -f "$root.log"
  # What the official slim image leaves out, and keeps out of later
  # installs: documentation, man pages, locales.
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
CFG
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
  find "$root/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
  rm -rf "$root"/usr/share/{man,groff,info,lintian,linda}/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/*.log
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  # The official image's sources, in deb822 form, on the public mirror
  # (the release Dockerfiles' DEBIAN_MIRROR build argument rewrites it).
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<'CFG'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
CFG
  : >"$root/etc/hostname"
  : >"$root/etc/resolv.conf"
  tar --numeric-owner -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    --change "LABEL $LABEL=$inputs" \
    - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$root"
  trap - EXIT
}

make_go() {
  local inputs=$1 ctx goroot version
  goroot=$(go env GOROOT)
  version=$(go env GOVERSION)
  ctx=$(mktemp -d "${TMPDIR:-/tmp}/sitekit-go.XXXXXX")
  # shellcheck disable=SC2064 # expand now: ctx is local
  trap "rm -rf '$ctx'" EXIT
  log "$GO_IMAGE: $DEBIAN_IMAGE with $version from $goroot"
  cp -al "$goroot" "$ctx/go" 2>/dev/null || cp -a "$goroot" "$ctx/go"
  # As the official image: its Go, GOPATH=/go with writable bin and src,
  # the toolchain it holds and no other (GOTOOLCHAIN=local).
  docker buildx build --quiet --load --tag "$GO_IMAGE" --label "$LABEL=$inputs" -f - "$ctx" >/dev/null <<DOCKERFILE
FROM $DEBIAN_IMAGE
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates netbase \\
    && rm -rf /var/lib/apt/lists/*
ENV GOLANG_VERSION=${version#go} GOTOOLCHAIN=local GOPATH=/go
ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY go /usr/local/go
RUN mkdir -p /go/src /go/bin && chmod -R 1777 /go
WORKDIR /go
DOCKERFILE
  rm -rf "$ctx"
  trap - EXIT
}

main() {
  need docker "https://docs.docker.com/engine/install/"
  need go "install Go 1.26 (https://go.dev/dl/)"
  local script_sum debian_inputs go_inputs
  script_sum=$(sha256sum "$0" | cut -c1-16)
  debian_inputs="$script_sum-$SUITE-$MIRROR"
  if ! fresh "$DEBIAN_IMAGE" "$debian_inputs"; then
    make_debian "$debian_inputs"
  fi
  go_inputs="$script_sum-$(go env GOVERSION)-$(docker image inspect --format '{{.Id}}' "$DEBIAN_IMAGE" | cut -c8-23)"
  if ! fresh "$GO_IMAGE" "$go_inputs"; then
    make_go "$go_inputs"
  fi
  docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$DEBIAN_IMAGE" >&2
  docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$GO_IMAGE" >&2
}

main "$@"
