// Package prometheus holds no Go code: this test checks the Prometheus
// configuration in this folder with Debian's promtool, as part of
// `go test ./...`.
package prometheus

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func promtool(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed: apt-get install -y prometheus")
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestConfig: prometheus.yml is valid and its rule files load.
func TestConfig(t *testing.T) {
	out := promtool(t, "check", "config", "prometheus.yml")
	if !strings.Contains(out, "SUCCESS: 2 rule files found") {
		t.Errorf("promtool check config found other rule files than recording.yml and alerts.yml:\n%s", out)
	}
}

// TestRules: the rules pass promtool's checks (syntax, and lint: no
// duplicate rules).
func TestRules(t *testing.T) {
	files, err := filepath.Glob("rules/*.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no rule files in rules/: %v", err)
	}
	promtool(t, append([]string{"check", "rules", "--lint=all", "--lint-fatal"}, files...)...)
}

// TestAlerts runs the alerts' unit tests in tests/: each alert fires when it
// should and stays quiet when it should not.
func TestAlerts(t *testing.T) {
	files, err := filepath.Glob("tests/*.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no rule tests in tests/: %v", err)
	}
	out := promtool(t, append([]string{"test", "rules"}, files...)...)
	if !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool test rules:\n%s", out)
	}
}
