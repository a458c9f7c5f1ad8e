// Package httpcheck is the kit's one container health probe: a GET that
// succeeds only on a 200 within two seconds. Scratch images have no curl,
// so the app (`app healthcheck`), our Caddy (`caddy healthcheck`) and the ops
// images (the httpcheck command in ./cmd) each run it.
package httpcheck

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// Timeout bounds the whole check, answer included.
const Timeout = 2 * time.Second

// Check GETs url and returns nil only if it answers 200 within Timeout.
func Check(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return nil
}
