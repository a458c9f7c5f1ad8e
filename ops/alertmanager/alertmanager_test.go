// Package alertmanager holds no Go code: this test renders the Alertmanager
// configuration in this folder as its container does (ops/envtemplate) and
// checks it with Debian's amtool, as part of `go test ./...`.
package alertmanager

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// render runs ops/envtemplate on the template with webhookURL as
// ALERT_WEBHOOK_URL (and env, NAME=value) and returns the rendered file's
// path and text.
func render(t *testing.T, webhookURL string, env ...string) (string, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "alertmanager.yml")
	cmd := exec.Command("go", "run", "sitekit/ops/envtemplate", "alertmanager.yml.tmpl", out)
	cmd.Env = append(os.Environ(), "ALERT_WEBHOOK_URL="+webhookURL, "ALERT_GROUP_WAIT=", "ALERT_GROUP_INTERVAL=")
	cmd.Env = append(cmd.Env, env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("envtemplate: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return out, string(b)
}

func amtool(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("amtool")
	if err != nil {
		t.Fatal("amtool is not installed: apt-get install -y prometheus-alertmanager")
	}
	var stderr strings.Builder
	cmd := exec.Command(bin, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("amtool %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// TestSilentWithoutWebhook: with ALERT_WEBHOOK_URL unset the config is
// valid, every alert goes to the default receiver, and it sends nothing.
func TestSilentWithoutWebhook(t *testing.T) {
	path, text := render(t, "")
	amtool(t, "check-config", path)
	if strings.Contains(text, "webhook_configs") {
		t.Errorf("without ALERT_WEBHOOK_URL the receiver has a webhook:\n%s", text)
	}
	for _, labels := range [][]string{{"severity=page", "alertname=RedisDown"}, {"severity=ticket", "alertname=TargetDown"}} {
		got := strings.TrimSpace(amtool(t, append([]string{"config", "routes", "test", "--config.file=" + path}, labels...)...))
		if got != "default" {
			t.Errorf("alert %v goes to %q; want default", labels, got)
		}
	}
}

// TestWebhook: a URL in ALERT_WEBHOOK_URL, with characters YAML would
// misread, becomes the receiver's webhook verbatim.
func TestWebhook(t *testing.T) {
	const url = `https://hooks.example.com/services/T0/B0?token=a#b&c="d": e`
	path, text := render(t, url)
	out := amtool(t, "check-config", path)
	if !strings.Contains(out, "1 receivers") {
		t.Errorf("amtool check-config:\n%s", out)
	}
	if !strings.Contains(text, `url: "https://hooks.example.com/services/T0/B0?token=a#b&c=\"d\": e"`) {
		t.Errorf("the webhook URL is not in the config verbatim:\n%s", text)
	}
}

// TestGroupTimings: group_wait and group_interval are 30s and 5m unless
// ALERT_GROUP_WAIT and ALERT_GROUP_INTERVAL say otherwise.
func TestGroupTimings(t *testing.T) {
	for _, c := range []struct {
		env        []string
		wait, intv string
	}{
		{nil, "30s", "5m"},
		{[]string{"ALERT_GROUP_WAIT=1s", "ALERT_GROUP_INTERVAL=10s"}, "1s", "10s"},
	} {
		path, text := render(t, "http://hooks.example.com/", c.env...)
		amtool(t, "check-config", path)
		if !strings.Contains(text, "group_wait: "+c.wait+"\n") || !strings.Contains(text, "group_interval: "+c.intv+"\n") {
			t.Errorf("with %q: want group_wait %s and group_interval %s:\n%s", c.env, c.wait, c.intv, text)
		}
	}
}
