#!/usr/bin/env bash
# init-env.sh [NAME=value ...]: write .env (or $SITEKIT_ENV_FILE) from
# .env.example with freshly generated secrets, and the settings given as
# arguments. It never overwrites an existing file.
#
#   scripts/init-env.sh DOMAIN=example.com ACME_EMAIL=ops@example.com
set -euo pipefail
cd "$(dirname "$0")/.."

file=${SITEKIT_ENV_FILE:-.env}
if [[ -e "$file" ]]; then
  echo "init-env: $file exists; keeping it (delete it to start over)" >&2
  exit 0
fi

secret() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }

# set_var NAME VALUE: replace NAME's line (commented out or not), or add one.
set_var() {
  if grep -q "^#\?$1=" "$file"; then
    sed -i "s|^#\?$1=.*|$1=$2|" "$file"
  else
    printf '%s=%s\n' "$1" "$2" >>"$file"
  fi
}

umask 077 # it holds secrets: readable by this user only
cp .env.example "$file"
set_var REDIS_APP_PASSWORD "$(secret)"
set_var REDIS_EXPORTER_PASSWORD "$(secret)"
set_var GRAFANA_ADMIN_PASSWORD "$(secret)"
for arg in "$@"; do
  [[ "$arg" == *=* ]] || { echo "init-env: $arg is not NAME=value" >&2; exit 1; }
  set_var "${arg%%=*}" "${arg#*=}"
done
echo "init-env: wrote $file with fresh secrets" >&2
