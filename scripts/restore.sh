#!/usr/bin/env bash
# restore.sh FILE: replace the stack's Redis data with a backup that
# scripts/backup.sh wrote (FILE is its redis-<time>.rdb).
#
#   docker compose stop app redis
#   scripts/restore.sh backups/redis-20261129T201500Z.rdb
#   docker compose up -d --wait
#
# It refuses a file whose checksum (redis-<time>.sha256) does not match, and
# refuses while the app or Redis runs (nothing may write meanwhile). Then:
#   1. it copies everything in the redis_data volume to the host,
#      SITEKIT_BACKUP_DIR/pre-restore-<UTC time>/ (default backups/), as a
#      safety copy of the data it replaces;
#   2. puts FILE into the volume as dump.rdb;
#   3. runs a temporary Redis from the stack's own redis image on the volume,
#      with no network and no TCP port (a unix socket in a tmpfs), the AOF
#      off, so that it loads FILE; then turns the AOF on (CONFIG SET
#      appendonly yes), which writes a new append-only file from that data
#      and retires the old one, and shuts it down once the rewrite is done.
# Redis runs with appendonly yes, and then loads only the AOF
# (appendonlydir/, whose manifest now names the restored data) and never
# dump.rdb: putting FILE in place alone would change nothing. Until step 3
# has finished, the volume still starts with its old data.
#
# Like scripts/up.sh it reads SITEKIT_ENV_FILE (another env file than .env)
# and COMPOSE_PROJECT_NAME from the environment; SITEKIT_BACKUP_DIR from the
# environment or the env file. The redis container and its volume are
# created when missing.
set -euo pipefail
# FILE may be relative to the caller's folder: make it absolute before the cd.
if (($# == 1)); then set -- "$(realpath -m -- "$1")"; fi
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO"

# How long loading FILE and rewriting the AOF may each take, in seconds.
readonly TIMEOUT=600
SECONDS=0

warn() { printf 'restore: warning: %s\n' "$*" >&2; }
die() {
  printf 'restore: %s\n' "$*" >&2
  exit 1
}

# What to type to reach this stack, for the messages.
hint="docker compose"
[[ "$ENV_FILE" == .env ]] || hint+=" --env-file $ENV_FILE"

TEMP_REDIS="" # the temporary Redis container, removed on exit
WORK=""       # scratch folder, removed on exit
cleanup() {
  if [[ -n "$TEMP_REDIS" ]]; then
    docker rm -f "$TEMP_REDIS" >/dev/null 2>&1 || true
  fi
  if [[ -n "$WORK" ]]; then
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

# cli ARGS...: redis-cli in the temporary Redis (no password: it has no
# config file, so its default user is the only one, and only this container
# reaches its socket). An error reply fails (-e).
cli() {
  docker exec "$TEMP_REDIS" /redis-cli -s /run/redis/redis.sock -e "$@" | tr -d '\r'
}

# info_field SECTION NAME: one field of INFO SECTION.
info_field() {
  cli info "$1" | sed -n "s/^$2://p"
}

# meta NAME: NAME from the backup's .meta file, if any.
meta() {
  [[ -f "$META" ]] && sed -n "s/^$1=//p" "$META" | tail -n1
}

main() {
  (($# == 1)) || die "usage: restore.sh FILE (a backups/redis-<time>.rdb that scripts/backup.sh wrote)"
  local file=$1
  command -v docker >/dev/null || die "Docker is not installed"
  [[ -f "$ENV_FILE" ]] || die "$ENV_FILE not found: run it from the stack's folder, or set SITEKIT_ENV_FILE"

  step "checking $file"
  [[ -f "$file" && -r "$file" ]] || die "$file: no such file"
  [[ "$file" == *.rdb ]] || die "$file: give the .rdb file of a backup"
  local base dir sums
  base=$(basename "$file")
  dir=$(dirname "$file")
  sums=${file%.rdb}.sha256
  META=${file%.rdb}.meta
  [[ -f "$sums" ]] || die "$sums not found: without it the file cannot be checked, so it is not restored"
  grep -qF "  $base" "$sums" || die "$sums has no checksum for $base"
  if ! (cd "$dir" && sha256sum --check --strict --quiet "$(basename "$sums")") >&2; then
    die "checksum mismatch: $file (or its .meta) is not what scripts/backup.sh wrote: it was damaged or changed. Refusing to restore it; use another backup"
  fi
  [[ "$(head -c 5 "$file")" == REDIS ]] || die "$file is not an RDB file"
  local version created
  version=$(meta redis_version) || true
  created=$(meta created) || true
  [[ -n "$version" ]] || warn "$META not found or holds no redis_version: cannot compare Redis versions"
  printf 'restore: checksum ok; written %s by Redis %s, %s keys\n' \
    "${created:-at an unknown time}" "${version:-(unknown)}" "$(meta keys || echo '?')" >&2

  step "checking that the app and Redis are stopped"
  local running
  running=$(compose ps --format '{{.Service}}' --status running --status restarting --status paused app redis) ||
    die "docker compose ps failed (see above)"
  if [[ -n "$running" ]]; then
    die "still running: $(sort -u <<<"$running" | paste -sd' '). Stop the app and Redis first, so that nothing writes to Redis while its data is replaced:
  $hint stop app redis      (Caddy stays up and answers 503 meanwhile)
or
  $hint down"
  fi

  step "the stack's redis container and its volume"
  local cid
  cid=$(compose ps -a -q redis)
  if [[ -z "$cid" ]]; then
    # Creates the volume too when it is missing; starts nothing.
    compose create --no-build --pull never redis >&2 ||
      die "could not create the redis container: build the images first (scripts/up.sh, or $hint build)"
    cid=$(compose ps -a -q redis)
    [[ -n "$cid" ]] || die "$hint create redis made no container"
  fi
  local image user volume project
  image=$(docker inspect -f '{{.Image}}' "$cid")
  user=$(docker inspect -f '{{.Config.User}}' "$cid")
  project=$(docker inspect -f '{{index .Config.Labels "com.docker.compose.project"}}' "$cid")
  volume=$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/data"}}{{.Type}} {{.Name}}{{end}}{{end}}' "$cid")
  [[ "$volume" == "volume "* ]] || die "redis's /data is not a Docker volume ($volume); this script restores into the redis_data volume only"
  volume=${volume#volume }
  [[ "$user" =~ ^[0-9]+:[0-9]+$ ]] || die "redis runs as '$user'; expected uid:gid (compose.yaml's user)"
  printf 'restore: container %s, volume %s, image %s, user %s\n' "${cid:0:12}" "$volume" "${image:7:12}" "$user" >&2
  # One restore at a time from this checkout. The lock is the repository's
  # folder itself, opened for reading: a lock file at a predictable name in
  # a shared /tmp would let any local user plant a symlink there, which
  # root's restore would then truncate.
  exec 9<"$REPO"
  flock -n 9 || die "another restore is running from $REPO"

  local image_version
  image_version=$(docker run --rm --network none --entrypoint /redis-server "$image" --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')
  if [[ -n "$version" && -n "$image_version" && "$version" != "$image_version" ]] &&
    [[ "$(printf '%s\n%s\n' "$version" "$image_version" | sort -V | tail -n1)" == "$version" ]]; then
    warn "the backup was written by Redis $version, newer than the image's $image_version, which may not read its RDB format. If loading fails below, restore with an image of Redis $version or newer."
  fi

  local stamp backups safety
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  backups=$(env_value SITEKIT_BACKUP_DIR)
  backups=${backups:-backups}
  safety=$backups/pre-restore-$stamp
  step "safety copy of the volume's data: $safety/"
  umask 077 # it holds password hashes: this user only
  mkdir -p "$safety"
  docker cp "$cid:/data/." "$safety/" || die "could not copy the volume's data out to $safety/; nothing was changed"
  if [[ -z "$(find "$safety" -mindepth 1 -maxdepth 1)" ]]; then
    rmdir "$safety"
    safety=""
    printf 'restore: the volume holds no data yet\n' >&2
  else
    printf 'restore: saved %s (%s)\n' "$(find "$safety" -mindepth 1 -maxdepth 1 -printf '%f ')" "$(du -sh "$safety" | cut -f1)" >&2
  fi

  step "putting $base into the volume as dump.rdb"
  # As Redis's user (compose.yaml), with the mode Redis gives its own files.
  WORK=$(mktemp -d)
  cp "$file" "$WORK/dump.rdb"
  tar -C "$WORK" --owner="${user%:*}" --group="${user#*:}" --numeric-owner --mode=0644 -cf - dump.rdb |
    docker cp - "$cid:/data" || die "could not copy $file into the volume"

  step "loading it into a temporary Redis (no network, AOF off)"
  local name=$project-redis-restore
  # The same image, user and hardening as the stack's Redis, but no config
  # file: its default user is the only one, and nothing but this container
  # reaches it.
  docker run -d --name "$name" --network none --user "$user" --read-only \
    --cap-drop ALL --security-opt no-new-privileges \
    --tmpfs "/run/redis:size=1m,uid=${user%:*},gid=${user#*:},mode=0700" \
    --mount "type=volume,src=$volume,dst=/data" \
    --entrypoint /redis-server "$image" \
    --port 0 --unixsocket /run/redis/redis.sock --unixsocketperm 700 \
    --dir /data --dbfilename dump.rdb --appendonly no --save '' >/dev/null ||
    die "could not start the temporary Redis (left over from a restore that was killed? docker rm -f $name)"
  TEMP_REDIS=$name
  local deadline=$((SECONDS + TIMEOUT)) reply
  until reply=$(cli ping 2>&1) && [[ "$reply" == PONG ]]; do
    if [[ "$(docker inspect -f '{{.State.Running}}' "$TEMP_REDIS")" != true ]]; then
      docker logs --tail 20 "$TEMP_REDIS" >&2
      die "the temporary Redis stopped while loading $base (its log is above). The volume still starts with its old data."
    fi
    ((SECONDS < deadline)) || die "loading $base took over ${TIMEOUT}s"
    sleep 0.2
  done
  local keys loaded
  keys=$(cli info keyspace | awk -F'[:=,]' '/^db[0-9]+:keys=/ { n += $3 } END { print n + 0 }')
  loaded=$(info_field persistence rdb_last_load_keys_loaded)
  printf 'restore: loaded %s keys (%s expired since the backup were dropped)\n' \
    "${keys:-0}" "$(info_field persistence rdb_last_load_keys_expired)" >&2
  [[ "${keys:-0}" == "${loaded:-0}" ]] || warn "INFO keyspace counts ${keys:-0} keys, the load ${loaded:-0}"

  step "writing the append-only file from it (CONFIG SET appendonly yes)"
  cli config set appendonly yes >/dev/null
  deadline=$((SECONDS + TIMEOUT))
  local persistence
  while :; do
    persistence=$(cli info persistence)
    if grep -qx 'aof_rewrite_in_progress:0' <<<"$persistence" &&
      grep -qx 'aof_rewrite_scheduled:0' <<<"$persistence" &&
      ! grep -qx 'aof_rewrites:0' <<<"$persistence"; then
      break
    fi
    ((SECONDS < deadline)) || die "the AOF rewrite took over ${TIMEOUT}s. The volume still starts with its old data."
    sleep 0.2
  done
  if ! grep -qx 'aof_last_bgrewrite_status:ok' <<<"$persistence" || ! grep -qx 'aof_last_write_status:ok' <<<"$persistence"; then
    docker logs --tail 20 "$TEMP_REDIS" >&2
    die "the AOF rewrite failed (its log is above). The volume still starts with its old data."
  fi
  # SHUTDOWN fsyncs the AOF; with no save points it writes no RDB, so
  # dump.rdb stays the backup. The reply is the closed connection.
  cli shutdown >/dev/null 2>&1 || true
  local code
  code=$(docker wait "$TEMP_REDIS")
  if [[ "$code" != 0 ]]; then
    docker logs --tail 20 "$TEMP_REDIS" >&2
    die "the temporary Redis exited with status $code (its log is above)"
  fi
  docker rm "$TEMP_REDIS" >/dev/null
  TEMP_REDIS=""

  step "checking the volume's append-only file"
  # Listed straight from the tar stream: nothing is written to this host.
  local manifest files
  manifest=$(docker cp "$cid:/data/appendonlydir/appendonly.aof.manifest" - | tar -xOf -) ||
    die "the volume has no appendonlydir/appendonly.aof.manifest after the rewrite"
  files=$(docker cp "$cid:/data/appendonlydir" - | tar -tf - | sed -n 's|^appendonlydir/\(..*\)$|\1|p')
  printf 'restore: appendonlydir: %s\n' "$(echo "$files" | tr '\n' ' ')" >&2
  local f named
  named=$(sed -n 's/^file \([^ ]*\) .*/\1/p' <<<"$manifest")
  for f in $named; do
    grep -qx "$f" <<<"$files" || die "the manifest names $f, which is missing"
  done
  for f in $files; do
    [[ "$f" == appendonly.aof.manifest ]] || grep -qx "$f" <<<"$named" ||
      warn "appendonlydir/$f is not in the manifest (Redis ignores it)"
  done

  step "restored $base (${keys:-0} keys) in ${SECONDS}s"
  [[ -z "$safety" ]] || printf 'The data it replaced is in %s/ (delete it once you are happy).\n' "$safety" >&2
  printf 'Next: start the stack:\n  %s up -d --wait\n' "$hint" >&2
}

main "$@"
