#!/usr/bin/env bash
# init-env.sh [NAME=value ...]: write .env (or $SITEKIT_ENV_FILE) from
# .env.example with freshly generated secrets, and the settings given as
# arguments. It never overwrites an existing file: it only adds a secret the
# file lacks or leaves empty (one that a newer compose.yaml requires, like
# REDIS_BACKUP_PASSWORD), and changes nothing else.
#
#   scripts/init-env.sh DOMAIN=example.com ACME_EMAIL=ops@example.com
set -euo pipefail
cd "$(dirname "$0")/.."

file=${SITEKIT_ENV_FILE:-.env}
# The secrets compose.yaml requires, each generated here.
readonly SECRETS=(REDIS_APP_PASSWORD REDIS_EXPORTER_PASSWORD REDIS_BACKUP_PASSWORD GRAFANA_ADMIN_PASSWORD)

secret() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }

# set_var NAME VALUE: replace NAME's line (commented out or not), or add one.
# VALUE is written as it is: awk takes it from the environment, so no
# character in it (& | \ /, as in a webhook URL's query) means anything.
set_var() {
  [[ "$1" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { echo "init-env: $1 is not a variable name" >&2; exit 1; }
  if grep -q "^#\?$1=" "$file"; then
    local tmp
    tmp=$(mktemp "$file.XXXXXX")
    NAME=$1 VALUE=$2 awk '{ if ($0 ~ "^#?" ENVIRON["NAME"] "=") print ENVIRON["NAME"] "=" ENVIRON["VALUE"]; else print }' "$file" >"$tmp"
    mv "$tmp" "$file"
  else
    printf '%s=%s\n' "$1" "$2" >>"$file"
  fi
}

umask 077 # it holds secrets: readable by this user only
if [[ -e "$file" ]]; then
  added=()
  for name in "${SECRETS[@]}"; do
    if [[ -z "$(sed -n "s/^$name=//p" "$file" | tail -n1)" ]]; then
      set_var "$name" "$(secret)"
      added+=("$name")
    fi
  done
  if ((${#added[@]})); then
    echo "init-env: $file exists; added the missing ${added[*]} and kept the rest" >&2
  else
    echo "init-env: $file exists; keeping it (delete it to start over)" >&2
  fi
  exit 0
fi
cp .env.example "$file"
for name in "${SECRETS[@]}"; do
  set_var "$name" "$(secret)"
done
for arg in "$@"; do
  [[ "$arg" == *=* ]] || { echo "init-env: $arg is not NAME=value" >&2; exit 1; }
  set_var "${arg%%=*}" "${arg#*=}"
done
echo "init-env: wrote $file with fresh secrets" >&2
