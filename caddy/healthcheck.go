package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

// The container's health check: a scratch image has no curl, so Caddy
// asks itself. It GETs the internal metrics site (EDGE_METRICS_PORT), which
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
			if err := healthcheck(url); err != nil {
				return caddy.ExitCodeFailedStartup, err
			}
			return caddy.ExitCodeSuccess, nil
		},
	})
}

func healthcheck(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %s", url, resp.Status)
	}
	return nil
}
