package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"sitekit/ops/httpcheck"
)

// The container's health check: a scratch image has no curl, so Caddy asks
// itself (package httpcheck). It GETs the internal metrics site (EDGE_METRICS_PORT), which
// answers only once Caddy's HTTP app has loaded the Caddyfile and is serving.
func init() {
	fs := flag.NewFlagSet("healthcheck", flag.ExitOnError)
	fs.String("url", "", "URL to GET (default: http://127.0.0.1:$EDGE_METRICS_PORT/metrics, port 9180)")
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "healthcheck",
		Usage: "[--url <url>]",
		Short: "Exits 0 when the running Caddy answers 200 on its internal metrics site",
		Flags: fs,
		Func: func(fl caddycmd.Flags) (int, error) {
			url := fl.String("url")
			if url == "" {
				port := os.Getenv("EDGE_METRICS_PORT")
				if port == "" {
					port = "9180"
				}
				url = "http://127.0.0.1:" + port + "/metrics"
			}
			if err := httpcheck.Check(context.Background(), url); err != nil {
				return caddy.ExitCodeFailedStartup, fmt.Errorf("healthcheck: %w", err)
			}
			return caddy.ExitCodeSuccess, nil
		},
	})
}
