#!/usr/bin/env bash
# Protocol and TLS conformance of the edge, on loopback only.
#
# Starts Redis, the app and our Caddy with the repository's Caddyfile on high
# ports (DOMAIN=localhost, Caddy's local CA), then:
#   1. h2spec (pinned, built from the Go module proxy) against our Caddy and
#      against the same binary with a bare `reverse_proxy` config. It fails
#      if our config fails any h2spec test that the bare one passes.
#   2. testssl (Debian's testssl.sh) with Caddy's local root trusted. It fails
#      on any finding of severity MEDIUM or above, except those listed in
#      ACCEPTED below, each with its reason.
#
# Usage: scripts/edge-conformance.sh
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

# h2spec has no go.mod, so its dependencies are pinned here too.
readonly H2SPEC_MODULE=github.com/summerwind/h2spec
readonly H2SPEC_VERSION=v2.2.1+incompatible
readonly H2SPEC_DEPS=(
  golang.org/x/net@v0.60.0
  github.com/spf13/cobra@v1.10.2
  github.com/spf13/pflag@v1.0.10
  github.com/fatih/color@v1.19.0
  github.com/mattn/go-colorable@v0.1.15
  github.com/mattn/go-isatty@v0.0.24
)
readonly H2SPEC_TEST_TIMEOUT=5 # seconds h2spec waits for each answer
readonly H2SPEC_TIME_LIMIT=300 # seconds for a whole h2spec run
readonly TESTSSL_TIME_LIMIT=900

# testssl findings of MEDIUM or above that are accepted, as "id|reason".
# The first three come from Caddy's local test CA, not from the config: a
# real domain gets a 90-day ACME certificate with a CRL URL.
readonly ACCEPTED=(
  "cert_expirationStatus|the local CA issues 12-hour certificates, which Caddy renews; an ACME certificate lasts weeks"
  "cert_notAfter|the same 12-hour local certificate"
  "cert_revocation|the local CA publishes no OCSP or CRL URL; Let's Encrypt certificates carry a CRL URL"
  "BREACH|compression is wanted for text; the pages carry no CSRF token or other secret to guess, cross-site state changes are refused, and Caddy does not compress responses to requests with Sec-Fetch-Site: cross-site, through which BREACH works"
)

# The same binary with nothing but a reverse proxy: h2spec's baseline.
# shellcheck disable=SC2016 # Caddy expands {$VAR} in it, not the shell.
readonly BARE_CADDYFILE='{
	admin {$CADDY_ADMIN}
	http_port {$HTTP_PORT}
	https_port {$HTTPS_PORT}
	skip_install_trust
}

{$DOMAIN} {
	reverse_proxy {$APP_UPSTREAM_HOST}:{$APP_UPSTREAM_PORT}
}'

# install_h2spec: build the pinned h2spec once into $CACHE; print its path.
install_h2spec() {
  local dir="$CACHE/h2spec-$H2SPEC_VERSION"
  if [[ ! -x "$dir/h2spec" ]]; then
    log "building h2spec $H2SPEC_VERSION (once)"
    rm -rf "$dir/src"
    mkdir -p "$dir/src"
    (
      cd "$dir/src"
      go mod init sitekit-tools/h2spec >/dev/null 2>&1
      go get "$H2SPEC_MODULE@$H2SPEC_VERSION" "${H2SPEC_DEPS[@]}" >/dev/null 2>&1
      CGO_ENABLED=0 go build -o "$dir/h2spec" "$H2SPEC_MODULE/cmd/h2spec"
    ) || die "could not build h2spec $H2SPEC_VERSION from the Go module proxy"
  fi
  echo "$dir/h2spec"
}

# run_h2spec H2SPEC NAME PORT: run every h2spec test against
# https://localhost:PORT; write the failing tests' ids to $WORK/h2spec-NAME.failed
# and print the summary line.
run_h2spec() {
  local h2spec=$1 name=$2 port=$3
  # h2spec exits non-zero when a test fails; the failures are compared below.
  timeout "$H2SPEC_TIME_LIMIT" "$h2spec" -h localhost -p "$port" -t -k -o "$H2SPEC_TEST_TIMEOUT" \
    -j "$WORK/h2spec-$name.xml" >"$WORK/h2spec-$name.txt" 2>&1 || true
  [[ -s "$WORK/h2spec-$name.xml" ]] || die "h2spec ($name) wrote no report:
$(tail -n 20 "$WORK/h2spec-$name.txt")"
  # A failing <testcase package="http2/4.2" classname="..."> holds an
  # <error> or <failure> element.
  awk -F'"' '/<testcase /{id = $2 " " $4; gsub(/&#34;/, "\"", id); gsub(/&amp;/, "\\&", id)}
    /<(error|failure)[ >]/{print id}' \
    "$WORK/h2spec-$name.xml" | sort -u >"$WORK/h2spec-$name.failed"
  printf '  %-6s %s\n' "$name:" "$(grep -E '^[0-9]+ tests,' "$WORK/h2spec-$name.txt")"
}

# check_h2spec CADDY OURS_PORT: h2spec against our Caddy on OURS_PORT and
# against CADDY with the bare config.
check_h2spec() {
  local caddy=$1 ours_port=$2 h2spec extra
  h2spec=$(install_h2spec)

  printf '%s\n' "$BARE_CADDYFILE" >"$WORK/Caddyfile.bare"
  start_caddy "$caddy" "$WORK/Caddyfile.bare" bare

  log "h2spec $H2SPEC_VERSION: our Caddyfile, then the bare reverse_proxy on the same binary"
  echo "h2spec summary:"
  run_h2spec "$h2spec" ours "$ours_port"
  run_h2spec "$h2spec" bare "$HTTPS_PORT"
  echo "failing in both (Caddy's HTTP/2 server, not our config):"
  comm -12 "$WORK/h2spec-ours.failed" "$WORK/h2spec-bare.failed" | sed 's/^/    /'
  extra=$(comm -23 "$WORK/h2spec-ours.failed" "$WORK/h2spec-bare.failed")
  if [[ -n "$extra" ]]; then
    echo "failing only with our Caddyfile:"
    awk '{print "    " $0}' <<<"$extra"
    return 1
  fi
  echo "h2spec: no failure beyond the bare config's"
}

# accepted_reason ID: the reason ID is accepted, or nothing.
accepted_reason() {
  local entry
  for entry in "${ACCEPTED[@]}"; do
    if [[ "${entry%%|*}" == "$1" ]]; then
      echo "${entry#*|}"
      return
    fi
  done
}

# check_testssl PORT ROOT_CA: testssl against our Caddy on PORT, with its
# local root ROOT_CA trusted.
check_testssl() {
  log "testssl against our Caddy at https://localhost:$1 (127.0.0.1 only, no DNS)"
  # testssl's exit status counts findings of every level, so judge the
  # JSON instead. --nodns none and --ip keep every probe on loopback.
  timeout "$TESTSSL_TIME_LIMIT" testssl --quiet --color 0 --warnings off --nodns none \
    --ip 127.0.0.1 --add-ca "$2" --jsonfile "$WORK/testssl.json" \
    "https://localhost:$1/" >"$WORK/testssl.txt" 2>&1 || true
  [[ -s "$WORK/testssl.json" ]] || die "testssl wrote no report:
$(tail -n 20 "$WORK/testssl.txt")"

  echo "testssl summary (findings by severity):"
  jq -r 'group_by(.severity) | map("  \(.[0].severity): \(length)") | .[]' "$WORK/testssl.json"
  local failed=0 id severity finding reason
  while IFS=$'\t' read -r severity id finding; do
    reason=$(accepted_reason "$id")
    if [[ -n "$reason" ]]; then
      printf '  accepted %-8s %s: %s\n    (%s)\n' "$severity" "$id" "$finding" "$reason"
    else
      printf '  FAILED   %-8s %s: %s\n' "$severity" "$id" "$finding"
      failed=1
    fi
  done < <(jq -r '.[] | select(.severity == "MEDIUM" or .severity == "HIGH" or .severity == "CRITICAL")
    | [.severity, .id, .finding] | @tsv' "$WORK/testssl.json")
  if ((failed)); then
    echo "testssl: findings of severity MEDIUM or above (full report: $WORK/testssl.txt)"
    return 1
  fi
  echo "testssl: no finding of severity MEDIUM or above beyond the accepted ones"
}

main() {
  # Every tool up front, so a missing one fails before the slow parts.
  need go "install Go from go.dev (go.mod says which version)"
  need curl "install it with: apt-get install -y curl"
  need testssl "install it with: apt-get install -y testssl.sh"
  need jq "install it with: apt-get install -y jq"
  make_work
  trap stop_all EXIT

  local caddy app ours_port ours_ca status=0
  caddy=$(build_caddy)
  app=$(build_app)
  log "caddy $("$caddy" version)"
  start_backend "$app"
  start_caddy "$caddy" "$REPO/Caddyfile" ours
  ours_port=$HTTPS_PORT
  ours_ca=$ROOT_CA

  check_h2spec "$caddy" "$ours_port" || status=1
  check_testssl "$ours_port" "$ours_ca" || status=1
  if ((status)); then
    # Keep the reports for a look: stop the processes, leave the folder.
    local keep=$WORK
    WORK=""
    echo "edge conformance: FAILED (reports in $keep)" >&2
    return 1
  fi
  echo "edge conformance: passed"
}

main "$@"
