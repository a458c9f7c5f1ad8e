package edgetest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestComposeEdgeSettings checks that the stack hands every setting of the
// Caddyfile to Caddy, or fixes it on purpose. A setting compose.yaml does not
// pass is silently ignored in the stack. One it passes as ${NAME:-} breaks
// Caddy when .env leaves it empty: Caddy reads a variable that is set but
// empty as empty, not as unset, and most directives then lack their
// argument. So each must carry the Caddyfile's own default, be required
// (${NAME:?…}), or have no default in the Caddyfile either.
func TestComposeEdgeSettings(t *testing.T) {
	caddyfile, err := os.ReadFile(filepath.Join(binaries.root, "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(binaries.root, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	env := compose.Services["caddy"].Environment
	// What compose.yaml fixes: the container's ports, the upstream (the app
	// service), the admin and metrics listeners Prometheus and the health
	// check use, and the grace period, which stop_grace_period must outlast.
	fixed := map[string]bool{
		"HTTP_PORT": true, "HTTPS_PORT": true, "APP_UPSTREAM_HOST": true, "APP_UPSTREAM_PORT": true,
		"CADDY_ADMIN": true, "EDGE_METRICS_PORT": true, "EDGE_GRACE_PERIOD": true,
	}
	// What compose.yaml derives from another setting.
	derived := map[string]string{"EDGE_SHARED_PEERS": "${EDGE_GATEWAY:-10.203.80.1}"}

	placeholder := regexp.MustCompile(`\{\$([A-Z0-9_]+)(:[^}]*)?\}`)
	seen := map[string]bool{}
	for line := range strings.Lines(string(caddyfile)) {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, m := range placeholder.FindAllStringSubmatch(line, -1) {
			name, def := m[1], strings.TrimPrefix(m[2], ":")
			if seen[name] {
				continue
			}
			seen[name] = true
			got, passed := env[name]
			switch {
			case fixed[name]:
				if passed {
					t.Errorf("compose.yaml passes %s to Caddy, which this test says it fixes", name)
				}
			case derived[name] != "":
				if got != derived[name] {
					t.Errorf("compose.yaml passes %s to Caddy as %q; want %q", name, got, derived[name])
				}
			case !passed:
				t.Errorf("compose.yaml does not pass %s to Caddy: setting it in .env would do nothing", name)
			case strings.HasPrefix(got, "${"+name+":?"):
				// Required: compose refuses to start without it.
			case got != "${"+name+":-"+def+"}":
				t.Errorf("compose.yaml passes %s to Caddy as %q; want %q, the Caddyfile's default", name, got, "${"+name+":-"+def+"}")
			}
		}
	}
	if len(seen) < 10 {
		t.Fatalf("found only %d settings in the Caddyfile: %v", len(seen), seen)
	}
}

// composeRedisUser returns the redis-server arguments that compose.yaml gives
// Redis for the ACL user name ("--user", name, "on", ">password", rules...),
// with password in place of the one from .env.
func composeRedisUser(t testing.TB, name, password string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(binaries.root, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Command []string `yaml:"command"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	var out []string
	cmd := compose.Services["redis"].Command
	for i := 0; i < len(cmd); i++ {
		if cmd[i] != "--user" || i+1 >= len(cmd) || cmd[i+1] != name {
			continue
		}
		out = append(out, "--user", name)
		for i += 2; i < len(cmd) && cmd[i] != "--user"; i++ {
			if strings.HasPrefix(cmd[i], ">") {
				out = append(out, ">"+password)
				continue
			}
			out = append(out, cmd[i])
		}
		break
	}
	if len(out) < 6 {
		t.Fatalf("compose.yaml gives Redis no user %q: %v", name, cmd)
	}
	return out
}
