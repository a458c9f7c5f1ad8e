// Command caddy is the kit's edge: upstream Caddy with its standard modules,
// built from the version pinned in the root go.mod, and three modules of
// ours: the access log's buffered_stdout writer (bufferedlog.go), the
// limit_conns listener wrapper (limitconns.go) and the read_body handler
// (readbody.go); and one subcommand, healthcheck (healthcheck.go). It keeps the
// shape of upstream's cmd/caddy/main.go; add a module only when the
// Caddyfile cannot say what is needed.
//
// Because Caddy is a dependency of this module, `caddy version` reports the
// pinned module version (read from the binary's build info), not "unknown".
//
//	CGO_ENABLED=0 go build -o caddy ./caddy
//	./caddy run --config Caddyfile --adapter caddyfile
package main

import (
	_ "time/tzdata" // a scratch image has no zoneinfo; upstream embeds it too

	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Plug in Caddy modules here.
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() {
	caddycmd.Main()
}
