#!/usr/bin/env bash
# Side-by-side figure of what the edge costs, on loopback only: requests/s
# and p50/p99 latency of GET / (a small page) from the app directly and
# through our Caddy over HTTP/1.1 and HTTP/2, in one run, with the ratio to
# the app. Uses h2load (Debian's nghttp2-client). A figure, not a test: it
# asserts nothing but that every request got a 200.
#
# Usage: scripts/edge-bench.sh
#   BENCH_REQUESTS (default 5000) and BENCH_CLIENTS (default 16) change the
#   size of each run; each run is also cut off after BENCH_TIME_LIMIT seconds.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

readonly REQUESTS=${BENCH_REQUESTS:-5000}
readonly CLIENTS=${BENCH_CLIENTS:-16}
readonly WARMUP=500
readonly TIME_LIMIT=${BENCH_TIME_LIMIT:-120}

# measure NAME LABEL URL [H2LOAD_ARGS...]: one bounded h2load run, its
# files named NAME; prints "LABEL<TAB>req/s<TAB>p50 ms<TAB>p99 ms".
measure() {
  local name=$1 label=$2 url=$3
  shift 3
  # Warm up connections, TLS session and the app's caches first.
  timeout "$TIME_LIMIT" h2load -n "$WARMUP" -c "$CLIENTS" -m 1 "$@" "$url" >/dev/null
  # -m 1: one request in flight per connection, so every row has the
  # same concurrency (CLIENTS) whatever the protocol.
  timeout "$TIME_LIMIT" h2load -n "$REQUESTS" -c "$CLIENTS" -m 1 "$@" \
    --log-file "$WORK/$name.tsv" "$url" >"$WORK/$name.out"
  local ok rps
  ok=$(awk '/^status codes:/{print $3}' "$WORK/$name.out")
  [[ "$ok" == "$REQUESTS" ]] || die "$name: $ok of $REQUESTS requests got 2xx:
$(cat "$WORK/$name.out")"
  rps=$(awk '/^finished in/{print $4}' "$WORK/$name.out")
  # The log's third column is each request's time in microseconds.
  cut -f3 "$WORK/$name.tsv" | sort -n | awk -v label="$label" -v rps="$rps" '
    { v[NR] = $1 }
    END {
      p50 = v[int(NR * 0.50 + 0.999999)]; p99 = v[int(NR * 0.99 + 0.999999)]
      printf "%s\t%.0f\t%.2f\t%.2f\n", label, rps, p50 / 1000, p99 / 1000
    }'
}

main() {
  need go "install Go from go.dev (go.mod says which version)"
  need curl "install it with: apt-get install -y curl"
  need h2load "install it with: apt-get install -y nghttp2-client"
  make_work
  trap stop_all EXIT

  local caddy app
  caddy=$(build_caddy)
  app=$(build_app)
  start_backend "$app"
  start_caddy "$caddy" "$REPO/Caddyfile" ours

  log "GET / x $REQUESTS with $CLIENTS connections, each run cut off after ${TIME_LIMIT}s"
  {
    measure direct "app direct, HTTP/1.1" "http://127.0.0.1:$APP_PORT/" --h1
    measure caddy-h1 "caddy, HTTP/1.1 + TLS" "https://localhost:$HTTPS_PORT/" --h1
    measure caddy-h2 "caddy, HTTP/2 + TLS" "https://localhost:$HTTPS_PORT/"
  } >"$WORK/results.tsv"

  echo
  echo "GET / ($REQUESTS requests, $CLIENTS connections, one request in flight each; $(nproc) cores shared by client and servers)"
  awk -F'\t' '
    NR == 1 { base = $2 }
    { rows[NR] = $0; ratio[NR] = $2 / base }
    END {
      printf "%-24s %10s %9s %9s %12s\n", "target", "req/s", "p50 ms", "p99 ms", "req/s ratio"
      for (i = 1; i <= NR; i++) {
        split(rows[i], f, "\t")
        printf "%-24s %10d %9.2f %9.2f %11.2fx\n", f[1], f[2], f[3], f[4], ratio[i]
      }
    }' "$WORK/results.tsv"
}

main "$@"
