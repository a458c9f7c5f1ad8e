package edgetest

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestGrafanaSiteOptIn adapts ops/caddy/grafana.caddy (the Caddyfile plus
// Grafana's site, which compose.yaml uses when GRAFANA_DOMAIN is set) with
// our Caddy: Grafana's host name is proxied to grafana:3000 with HSTS, and
// the main site is still there. Grafana itself needs a registry, so this
// checks the config, not a running Grafana.
func TestGrafanaSiteOptIn(t *testing.T) {
	t.Parallel()
	// As in the caddy image: /etc/caddy/Caddyfile and Caddyfile.grafana.
	dir := t.TempDir()
	for src, dst := range map[string]string{"Caddyfile": "Caddyfile", "ops/caddy/grafana.caddy": "Caddyfile.grafana"} {
		b, err := os.ReadFile(filepath.Join(binaries.root, src))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(binaries.caddy, "adapt", "--config", "Caddyfile.grafana", "--adapter", "caddyfile")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GRAFANA_DOMAIN=grafana.example.com", "DOMAIN=example.com")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("caddy adapt Caddyfile.grafana: %v", err)
	}
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Match  []struct{ Host []string }
						Handle json.RawMessage
					}
				}
			}
		}
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	handlers := map[string]string{} // host → its route's handlers, as JSON
	for _, srv := range cfg.Apps.HTTP.Servers {
		for _, r := range srv.Routes {
			for _, m := range r.Match {
				for _, h := range m.Host {
					handlers[h] += string(r.Handle)
				}
			}
		}
	}
	g := handlers["grafana.example.com"]
	for _, want := range []string{`"dial":"grafana:3000"`, `"Strict-Transport-Security"`, `"X-Request-Id"`} {
		if !strings.Contains(g, want) {
			t.Errorf("grafana.example.com's route lacks %s:\n%s", want, g)
		}
	}
	if strings.Contains(g, "Content-Security-Policy") {
		t.Errorf("grafana.example.com's route sends the kit's CSP, which Grafana's UI does not meet")
	}
	hosts := make([]string, 0, len(handlers))
	for h := range handlers {
		hosts = append(hosts, h)
	}
	if !slices.Contains(hosts, "example.com") || !strings.Contains(handlers["example.com"], `"dynamic_upstreams":{"name":"app","port":"3000"`) {
		t.Errorf("with Grafana's site, the main site example.com is gone or no longer proxies to the app's replicas (app:3000); hosts %v", hosts)
	}
}
