#!/usr/bin/env bash
# backup.sh: an online, consistent backup of the running stack's Redis.
#
#   scripts/backup.sh        writes backups/redis-<UTC time>.{rdb,meta,sha256}
#
# Redis goes on serving throughout. BGSAVE forks a child that writes the data
# as it was at that instant (a point-in-time snapshot, so every transaction is
# in it whole or not at all); the script waits until INFO persistence says
# that snapshot is on disk, then copies /data/dump.rdb out of the container
# with `docker compose cp`. It writes, in SITEKIT_BACKUP_DIR (relative to the
# repository root; default backups/, which git ignores; files 0600):
#   redis-<time>.rdb     the snapshot, which scripts/restore.sh loads
#   redis-<time>.meta    redis_version, created, keys, bytes (NAME=value lines)
#   redis-<time>.sha256  the checksums of both: sha256sum -c redis-<time>.sha256
# It signs in as the Redis user "backup" (compose.yaml), which may run BGSAVE
# and INFO and nothing else. Its password, REDIS_BACKUP_PASSWORD, reaches
# redis-cli in the environment of `docker exec` (REDISCLI_AUTH), never on a
# command line that ps would show.
#
# The files hold account data and password hashes: copy them off this host
# (rsync, restic, ...) to a place as private as .env. Like scripts/up.sh it
# reads SITEKIT_ENV_FILE (another env file than .env) and COMPOSE_PROJECT_NAME
# from the environment; SITEKIT_BACKUP_DIR from the environment or the env
# file.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO"

# How long the snapshot may take, in seconds: a fork, then a write of at most
# maxmemory (256 MB, redis.conf).
readonly SAVE_TIMEOUT=600
SECONDS=0

die() {
  printf 'backup: %s\n' "$*" >&2
  exit 1
}

# What to type to reach this stack, for the messages.
hint="docker compose"
[[ "$ENV_FILE" == .env ]] || hint+=" --env-file $ENV_FILE"
password=""
container="" # the stack's running redis container
WORK="" # scratch folder inside the backup folder, removed on exit
trap '[[ -z "$WORK" ]] || rm -rf "$WORK"' EXIT

# cli ARGS...: redis-cli in the redis container as the user "backup"; the
# reply on stdout without carriage returns. An error reply fails (-e). The
# password is in the environment of this one command only, and exec passes
# it on by name. docker exec rather than docker compose exec: the same
# container, without reading the project again on every poll.
cli() {
  REDISCLI_AUTH=$password docker exec -e REDISCLI_AUTH "$container" \
    /redis-cli --user backup -e "$@" | tr -d '\r'
}

# info SECTION: INFO SECTION as NAME=value lines, for `declare -A` below.
declare -A INFO
info() {
  local line
  INFO=()
  while IFS= read -r line; do
    if [[ "$line" == *:* && "$line" != '#'* ]]; then
      INFO[${line%%:*}]=${line#*:}
    fi
  done < <(cli info "$1")
}

main() {
  command -v docker >/dev/null || die "Docker is not installed"
  [[ -f "$ENV_FILE" ]] || die "$ENV_FILE not found: run it from the stack's folder, or set SITEKIT_ENV_FILE"

  step "checking the stack's Redis"
  password=$(env_value REDIS_BACKUP_PASSWORD)
  [[ -n "$password" ]] || die "REDIS_BACKUP_PASSWORD is not set in $ENV_FILE: bash scripts/init-env.sh adds it, then $hint up -d --wait gives Redis its user"
  local reply
  container=$(compose ps -q --status running redis) || die "docker compose ps failed (see above)"
  [[ -n "$container" ]] || die "redis is not running: start the stack first ($hint up -d --wait)"
  reply=$(cli ping 2>&1) || true
  [[ "$reply" == PONG ]] ||
    die "Redis refused the user \"backup\": $reply
If REDIS_BACKUP_PASSWORD was added or changed after Redis started, re-create it: $hint up -d --wait"
  info server
  local version=${INFO[redis_version]:?INFO server holds no redis_version}

  local dir created stamp
  dir=$(env_value SITEKIT_BACKUP_DIR)
  dir=${dir:-backups}
  umask 077 # the backups hold password hashes: this user only
  mkdir -p "$dir"
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local name="redis-$stamp"
  [[ ! -e "$dir/$name.rdb" ]] || die "$dir/$name.rdb exists already: try again in a second"

  step "BGSAVE: a snapshot of Redis $version as of now"
  # A snapshot that was already running when we asked holds older data:
  # wait for it, then ask again. SCHEDULE: while an AOF rewrite runs, the
  # snapshot starts right after it.
  local saves tries
  for ((tries = 0; ; tries++)); do
    info persistence
    saves=${INFO[rdb_saves]:?INFO persistence holds no rdb_saves}
    if reply=$(cli bgsave schedule 2>&1); then
      break
    fi
    [[ "$reply" == *"already in progress"* && $tries -lt $SAVE_TIMEOUT ]] || die "BGSAVE failed: $reply"
    sleep 1
  done
  printf 'backup: %s\n' "$reply" >&2
  # The keys as the snapshot starts (writes go on meanwhile, and keys that
  # expired are not loaded back: a restore may count a few fewer).
  local keys=0 db
  info keyspace
  for db in "${INFO[@]}"; do
    if [[ "$db" =~ ^keys=([0-9]+) ]]; then
      keys=$((keys + BASH_REMATCH[1]))
    fi
  done

  # Done when no snapshot runs and one more has finished than before ours.
  local deadline=$((SECONDS + SAVE_TIMEOUT))
  while :; do
    info persistence
    if [[ "${INFO[rdb_bgsave_in_progress]}" == 0 ]] && [[ "${INFO[rdb_saves]}" -gt "$saves" ]]; then
      break
    fi
    ((SECONDS < deadline)) || die "the snapshot did not finish within ${SAVE_TIMEOUT}s; see docker compose logs redis"
    sleep 0.5
  done
  [[ "${INFO[rdb_last_bgsave_status]}" == ok ]] ||
    die "the snapshot failed (rdb_last_bgsave_status:${INFO[rdb_last_bgsave_status]}); see docker compose logs redis"
  step "snapshot written in ${INFO[rdb_last_bgsave_time_sec]}s; copying it out"

  # Into a scratch folder first, so that a failure leaves no partial backup.
  WORK=$(mktemp -d "$dir/.backup.XXXXXX")
  # dump.rdb: Redis's default dbfilename, which redis.conf keeps. A newer
  # snapshot (redis.conf's save points) replaces it with a rename, so the copy
  # is always one whole snapshot.
  local err
  err=$(compose cp redis:/data/dump.rdb "$WORK/$name.rdb" 2>&1) ||
    die "docker compose cp redis:/data/dump.rdb failed: $err"
  chmod 0600 "$WORK/$name.rdb"
  [[ "$(head -c 5 "$WORK/$name.rdb")" == REDIS ]] || die "the copied /data/dump.rdb is not an RDB file"
  local bytes
  bytes=$(stat -c %s "$WORK/$name.rdb")
  cat >"$WORK/$name.meta" <<EOF
# scripts/backup.sh: a snapshot (BGSAVE) of the stack's Redis. keys is
# INFO keyspace as the snapshot started (writes went on meanwhile).
file=$name.rdb
created=$created
redis_version=$version
keys=$keys
bytes=$bytes
EOF
  (cd "$WORK" && sha256sum "$name.rdb" "$name.meta" >"$name.sha256")
  mv "$WORK/$name.rdb" "$WORK/$name.meta" "$WORK/$name.sha256" "$dir/"

  step "backup written in ${SECONDS}s: $dir/$name.rdb ($keys keys, $bytes bytes, Redis $version)"
  cat >&2 <<EOF
Check it:    (cd $dir && sha256sum -c $name.sha256)
Restore it:  $hint stop app redis && bash scripts/restore.sh $dir/$name.rdb
It holds account data and password hashes: copy $dir/ to another machine
(rsync, restic) and keep it as private as .env.
EOF
}

main "$@"
