// Package scripts tests the shell scripts of this folder that need no running
// stack: preflight.sh, with env files that scripts/init-env.sh writes and the
// test then spoils one way at a time.
//
// It never checks ports 80 and 443 (the end-to-end test, which `go test ./...`
// runs in parallel, may hold them): PREFLIGHT_PORTS points preflight.sh at
// ports the test holds or has just freed, and COMPOSE_PROJECT_NAME at a
// project that does not exist.
package scripts

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// secrets are the secrets scripts/init-env.sh writes and compose.yaml requires.
var secrets = []string{"REDIS_APP_PASSWORD", "REDIS_EXPORTER_PASSWORD", "REDIS_BACKUP_PASSWORD", "GRAFANA_ADMIN_PASSWORD"}

// result is one run of preflight.sh.
type result struct {
	out  string
	code int
}

// line returns the output line that starts with status ("ok", "warn",
// "FAIL") and holds every one of parts, or "" when there is none.
func (r result) line(status string, parts ...string) string {
	for l := range strings.SplitSeq(r.out, "\n") {
		if !strings.HasPrefix(l, status+" ") {
			continue
		}
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			return l
		}
	}
	return ""
}

// fails are the FAIL lines.
func (r result) fails() []string {
	var fs []string
	for l := range strings.SplitSeq(r.out, "\n") {
		if strings.HasPrefix(l, "FAIL ") {
			fs = append(fs, l)
		}
	}
	return fs
}

// envFile writes a complete env file with scripts/init-env.sh (fresh secrets,
// DOMAIN=localhost), then edits it with changes.
func envFile(t *testing.T, changes ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.env")
	cmd := exec.Command("bash", "init-env.sh", "DOMAIN=localhost")
	cmd.Env = append(os.Environ(), "SITEKIT_ENV_FILE="+path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("init-env.sh: %v\n%s", err, out)
	}
	edit(t, path, changes...)
	return path
}

// edit changes the env file at path: NAME=value sets NAME's line (or adds
// one), and -NAME removes it.
func edit(t *testing.T, path string, changes ...string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for _, c := range changes {
		if name, ok := strings.CutPrefix(c, "-"); ok {
			lines = slices.DeleteFunc(lines, func(l string) bool { return strings.HasPrefix(l, name+"=") })
			continue
		}
		name, _, _ := strings.Cut(c, "=")
		found := false
		for i, l := range lines {
			if strings.HasPrefix(l, name+"=") {
				lines[i], found = c, true
			}
		}
		if !found {
			lines = append(lines, c)
		}
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
}

// value reads NAME from an env file.
func value(t *testing.T, path, name string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v := ""
	for l := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, name+"="); ok {
			v = rest
		}
	}
	return v
}

// freePort is a TCP and UDP port that nothing held a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// preflight runs preflight.sh with the env file at envPath and the ports
// given, on a compose project that does not exist, with extra NAME=value
// settings in its environment. Settings of the caller's environment that
// the script would read are left out.
func preflight(t *testing.T, envPath, ports string, extra ...string) result {
	t.Helper()
	if _, err := exec.LookPath("ss"); err != nil {
		t.Fatal("preflight.sh checks ports with ss: apt-get install -y iproute2")
	}
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "REDIS_"), strings.HasPrefix(name, "GRAFANA_"), strings.HasPrefix(name, "ACME_"),
			strings.HasPrefix(name, "SITEKIT_"), strings.HasPrefix(name, "PREFLIGHT_"), strings.HasPrefix(name, "COMPOSE_"),
			name == "DOMAIN":
			continue
		}
		env = append(env, kv)
	}
	cmd := exec.Command("bash", "preflight.sh")
	// The free space of this machine's disk is not the tests' to judge
	// (TestPreflightHost sets its own figures): a shared CI disk may be
	// nearly full.
	cmd.Env = append(env, "SITEKIT_ENV_FILE="+envPath, "COMPOSE_PROJECT_NAME=sitekit-preflight-test", "PREFLIGHT_PORTS="+ports, "PREFLIGHT_DISK_FREE_GIB=50")
	cmd.Env = append(cmd.Env, extra...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	code := 0
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("preflight.sh: %v", err)
	}
	t.Logf("preflight.sh (exit %d):\n%s", code, out.String())
	return result{out.String(), code}
}

// dockerFailure reports whether a FAIL line is about Docker itself, which
// this machine may lack; the settings and ports checks do not need it.
func dockerFailure(line string) bool {
	return strings.Contains(line, "Docker engine") || strings.Contains(line, "docker: not installed") ||
		strings.Contains(line, "docker compose (v2) is missing")
}

func TestPreflightCompleteSettingsPass(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	p := strconv.Itoa(port)
	r := preflight(t, envFile(t), p+"/tcp "+p+"/udp")
	for _, name := range secrets {
		if r.line("ok", name+" is set", "64 characters") == "" {
			t.Errorf("no 'ok' line for %s, which init-env.sh generated", name)
		}
	}
	if r.line("ok", "DOMAIN is set") == "" {
		t.Error("no 'ok' line for DOMAIN")
	}
	for _, spec := range []string{p + "/tcp", p + "/udp"} {
		if r.line("ok", spec+" is free") == "" {
			t.Errorf("no 'ok' line saying %s is free", spec)
		}
	}
	if r.line("warn", "DOMAIN=localhost", "local CA") == "" {
		t.Error("no warning that DOMAIN=localhost gets a certificate browsers do not trust")
	}
	for _, f := range r.fails() {
		if !dockerFailure(f) {
			t.Errorf("a complete env file failed a check: %s", f)
		}
	}
	if len(r.fails()) == 0 && r.code != 0 {
		t.Errorf("exit status %d with no FAIL line; want 0", r.code)
	}
	if len(r.fails()) == 0 && !strings.Contains(r.out, "all checks passed") {
		t.Error("no 'all checks passed' summary")
	}
}

func TestPreflightBadSecretsFail(t *testing.T) {
	t.Parallel()
	port := strconv.Itoa(freePort(t)) + "/tcp"
	tests := []struct {
		name   string
		change func(path string) []string // the env file's changes, given a complete one
		want   []string                   // parts of the FAIL line, the fix included
	}{
		{"empty", func(string) []string { return []string{"REDIS_BACKUP_PASSWORD="} },
			[]string{"REDIS_BACKUP_PASSWORD is empty", "Fix: bash scripts/init-env.sh", "openssl rand -hex 32"}},
		{"missing line", func(string) []string { return []string{"-REDIS_EXPORTER_PASSWORD"} },
			[]string{"REDIS_EXPORTER_PASSWORD is empty", "Fix:"}},
		{"placeholder", func(string) []string {
			return []string{"REDIS_APP_PASSWORD=ChangeMe0123456789abcdef0123456789"}
		}, []string{"REDIS_APP_PASSWORD looks like a placeholder", `"changeme"`, "Fix: set REDIS_APP_PASSWORD=$(openssl rand -hex 32)"}},
		{"the default of a template", func(string) []string {
			return []string{"GRAFANA_ADMIN_PASSWORD=default-grafana-admin-0123456789"}
		}, []string{"GRAFANA_ADMIN_PASSWORD looks like a placeholder", `"default"`, "Fix:"}},
		{"short", func(string) []string { return []string{"REDIS_EXPORTER_PASSWORD=a1b2c3d4e5f6"} },
			[]string{"REDIS_EXPORTER_PASSWORD is 12 characters long, under 16", "Fix: set REDIS_EXPORTER_PASSWORD=$(openssl rand -hex 32)"}},
		{"not for a URL", func(string) []string {
			return []string{"REDIS_APP_PASSWORD=0123456789abcdef0123456789abcdef@x"}
		}, []string{"REDIS_APP_PASSWORD has characters other than letters and digits", "Fix:"}},
		{"shared", func(path string) []string {
			return []string{"REDIS_BACKUP_PASSWORD=" + value(t, path, "REDIS_APP_PASSWORD")}
		}, []string{"REDIS_BACKUP_PASSWORD is the same as another secret", "Fix:"}},
		{"no domain", func(string) []string { return []string{"DOMAIN="} },
			[]string{"DOMAIN is empty", "Fix: set DOMAIN in"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := envFile(t)
			edit(t, path, tt.change(path)...)
			r := preflight(t, path, port)
			line := r.line("FAIL", tt.want...)
			if line == "" {
				t.Errorf("no FAIL line with %q", tt.want)
			}
			if r.code == 0 {
				t.Errorf("exit status 0; want non-zero")
			}
			if line != "" && !strings.Contains(r.out, "  - "+strings.TrimSpace(strings.TrimPrefix(line, "FAIL"))) {
				t.Errorf("the summary does not list %q", line)
			}
		})
	}
}

func TestPreflightEnvironmentOverridesFile(t *testing.T) {
	t.Parallel()
	// docker compose takes a variable from the environment before the env
	// file, so preflight.sh does too.
	path := envFile(t, "REDIS_BACKUP_PASSWORD=")
	r := preflight(t, path, strconv.Itoa(freePort(t))+"/tcp", "REDIS_BACKUP_PASSWORD=0123456789abcdef0123456789abcdef")
	if r.line("ok", "REDIS_BACKUP_PASSWORD is set", "32 characters") == "" {
		t.Error("REDIS_BACKUP_PASSWORD from the environment was not taken")
	}
}

func TestPreflightNoEnvFile(t *testing.T) {
	t.Parallel()
	r := preflight(t, filepath.Join(t.TempDir(), "missing.env"), strconv.Itoa(freePort(t))+"/tcp")
	if r.line("FAIL", "missing.env does not exist", "Fix: bash scripts/init-env.sh DOMAIN=") == "" {
		t.Error("no FAIL line for the missing env file with the init-env.sh fix")
	}
	if r.code == 0 {
		t.Error("exit status 0; want non-zero")
	}
}

func TestPreflightBusyPortsFail(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	u, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	tcp := strconv.Itoa(l.Addr().(*net.TCPAddr).Port) + "/tcp"
	udp := strconv.Itoa(u.LocalAddr().(*net.UDPAddr).Port) + "/udp"
	r := preflight(t, envFile(t), tcp+" "+udp)
	for _, spec := range []string{tcp, udp} {
		if r.line("FAIL", spec+" is in use", "Fix: stop and disable what listens there") == "" {
			t.Errorf("no FAIL line for the busy port %s", spec)
		}
	}
	if r.code == 0 {
		t.Error("exit status 0 with busy ports; want non-zero")
	}
}

func TestPreflightRealDomain(t *testing.T) {
	t.Parallel()
	// .invalid never resolves (RFC 2606).
	r := preflight(t, envFile(t, "DOMAIN=sitekit-preflight.invalid", "ACME_EMAIL="), strconv.Itoa(freePort(t))+"/tcp")
	if r.line("FAIL", "DOMAIN=sitekit-preflight.invalid does not resolve", "Fix: create its A (and AAAA) record") == "" {
		t.Error("no FAIL line for a DOMAIN that does not resolve")
	}
	if r.line("warn", "ACME_EMAIL is empty", "Fix: set ACME_EMAIL=") == "" {
		t.Error("no warning for a real domain without ACME_EMAIL")
	}
	if r.code == 0 {
		t.Error("exit status 0; want non-zero")
	}
}

// standIn puts an executable script named name, printing out, first on PATH
// and returns the PATH=... setting: for readings of the host that a test
// cannot change for real (whether NTP has synchronized the clock).
func standIn(t *testing.T, name, out string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\necho "+out+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return "PATH=" + dir + string(os.PathListSeparator) + os.Getenv("PATH")
}

// TestPreflightHost: the disk's free space and the clock's synchronization
// each fail, warn or pass, with the fix named.
func TestPreflightHost(t *testing.T) {
	t.Parallel()
	port := strconv.Itoa(freePort(t)) + "/tcp"
	env := envFile(t)
	if _, err := exec.Command("docker", "info").Output(); err != nil {
		t.Fatal("the disk check reads Docker's root folder: the Docker engine must answer")
	}
	for _, c := range []struct {
		name  string
		extra []string
		want  []string // level, then words of the line
	}{
		{"little disk", []string{"PREFLIGHT_DISK_FREE_GIB=2"}, []string{"FAIL", "2 GiB free, under 4 GiB", "docker builder prune"}},
		{"some disk", []string{"PREFLIGHT_DISK_FREE_GIB=6"}, []string{"warn", "6 GiB free, under 8 GiB"}},
		{"enough disk", []string{"PREFLIGHT_DISK_FREE_GIB=50"}, []string{"ok", "50 GiB free"}},
		{"clock not synchronized", []string{standIn(t, "timedatectl", "no")}, []string{"FAIL", "clock is not synchronized", "timedatectl set-ntp true"}},
		{"clock synchronized", []string{standIn(t, "timedatectl", "yes")}, []string{"ok", "clock is synchronized"}},
	} {
		r := preflight(t, env, port, c.extra...)
		if r.line(c.want[0], c.want[1:]...) == "" {
			t.Errorf("%s: no %q line with %q", c.name, c.want[0], c.want[1:])
		}
		if c.want[0] == "FAIL" && r.code != 1 {
			t.Errorf("%s: exit status %d; want 1", c.name, r.code)
		}
	}
}

// TestInitEnvWritesValuesVerbatim: init-env.sh writes each NAME=value as
// given, characters sed would read as its own (& | \ /) included, over the
// example's line (commented out or not), and keeps the file private.
func TestInitEnvWritesValuesVerbatim(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "test.env")
	const url = `https://hooks.example.com/services/T0?token=a&b=c|d\e/f`
	cmd := exec.Command("bash", "init-env.sh", "DOMAIN=example.com", "ALERT_WEBHOOK_URL="+url, "ALERT_GROUP_WAIT=10s")
	cmd.Env = append(os.Environ(), "SITEKIT_ENV_FILE="+path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("init-env.sh: %v\n%s", err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ALERT_WEBHOOK_URL=" + url, "ALERT_GROUP_WAIT=10s", "DOMAIN=example.com"} {
		if n := strings.Count("\n"+string(b), "\n"+want+"\n"); n != 1 {
			t.Errorf("the env file has %d lines %q; want 1", n, want)
		}
	}
	if strings.Contains(string(b), "#ALERT_GROUP_WAIT=") {
		t.Error("the commented-out ALERT_GROUP_WAIT line is still there beside the set one")
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the env file's mode is %v (%v); want 0600", fi.Mode().Perm(), err)
	}
}
