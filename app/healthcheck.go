package main

import (
	"context"
	"fmt"
	"net"

	"sitekit/app/internal/config"
	"sitekit/ops/httpcheck"
)

// healthcheck asks the running server's /readyz and succeeds only on a 200.
// It is the container's health check: a scratch image has no curl.
func healthcheck(ctx context.Context, getenv func(string) string) error {
	cfg, err := config.Load(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	host, port, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return fmt.Errorf("APP_LISTEN: %w", err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1" // the server listens on every address; ask it on loopback
	}
	url := "http://" + net.JoinHostPort(host, port) + "/readyz"
	if err := httpcheck.Check(ctx, url); err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	return nil
}
