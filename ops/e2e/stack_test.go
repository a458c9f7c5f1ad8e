//go:build e2e

// Package e2e tests the compose stack the way its users meet it: the real
// images on the real Docker engine, brought up by scripts/up.sh, reached over
// HTTPS on localhost by plain clients and by a headless Chromium.
//
//	go test -tags e2e -count=1 -timeout 30m ./ops/e2e
//
// It runs as its own compose project (sitekit-e2e), with the ops profile's
// monitoring, its own env file and
// subnet, and removes its containers, networks and volumes at the end, also
// when a step fails. It needs ports 80 and 443 of this host, Docker Compose
// v2 (scripts/up.sh installs it) and Debian's chromium and libnss3-tools.
// The images are built with SITEKIT_BUILD=local unless the environment sets
// SITEKIT_BUILD.
// Screenshots go to $E2E_ARTIFACTS (default .artifacts/e2e).
package e2e

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const project = "sitekit-e2e"

// settings of the test's env file, on top of .env.example and the secrets
// scripts/init-env.sh generates. Every host client reaches Caddy from the
// same address (the edge network's gateway, through Docker's port proxy),
// so per-IP limits are raised; they stay on, so their headers can be read.
var settings = []string{
	"DOMAIN=localhost",
	"ADMIN_EMAILS=admin@example.com",
	"EDGE_SUBNET=10.203.81.0/24",
	"EDGE_DYNAMIC_RANGE=10.203.81.128/25",
	"CADDY_ADDR=10.203.81.2",
	"EDGE_GATEWAY=10.203.81.1",
	"RATE_LIMIT_GLOBAL=1000/s",
	"RATE_LIMIT_GLOBAL_BURST=2000",
	"RATE_LIMIT_SIGNUP=1000/h",
	"RATE_LIMIT_LOGIN_IP=1000/h",
	"RATE_LIMIT_LOGIN_EMAIL=1000/h",
	"RATE_LIMIT_LOGIN_ACCOUNT=1000/h",
	// The operations proofs post contact messages under load, tens of
	// thousands of them: past the inbox's default cap (10,000).
	"RATE_LIMIT_CONTACT=1000000/h",
	"CONTACT_MAX_MESSAGES=10000000",
}

// profiles are the compose profiles the test runs: the base stack and the
// monitoring.
const profiles = "ops"

// stack is the running compose project.
type stack struct {
	root      string // repository root
	envFile   string
	env       map[string]string // the env file's settings
	rootCA    *x509.CertPool
	rootPEM   string // path of Caddy's local root certificate
	client    *http.Client
	artifacts string
	alerts    *alertReceiver // where Alertmanager sends (alerts_test.go)
	registry  string         // host:port of the registry the images came from, once they do
}

func TestMain(m *testing.M) {
	if os.Getenv("SITEKIT_ABUSE") != "" { // the abuse run's attacker (abuse_test.go)
		os.Exit(abuseMain())
	}
	if err := os.MkdirAll(artifactsDir(), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func artifactsDir() string {
	if d := os.Getenv("E2E_ARTIFACTS"); d != "" {
		return d
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		panic(err)
	}
	return filepath.Join(root, ".artifacts", "e2e")
}

// startStack brings the stack up with the one command, scripts/up.sh, with
// the test's settings and more (NAME=value), and registers its removal
// (down -v) with t.Cleanup.
func startStack(t *testing.T, more ...string) *stack {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{root: root, envFile: filepath.Join(t.TempDir(), "e2e.env"), artifacts: artifactsDir()}

	// Remove what a run killed before its cleanup left behind.
	s.composeQuiet(t, "down", "-v", "--remove-orphans", "--timeout", "5")
	t.Cleanup(func() { s.down(t) })

	// The images are built from this checkout, staged on this host (Go and
	// redis-tools, which the other tests need too), unless SITEKIT_BUILD
	// says otherwise.
	build := cmp.Or(os.Getenv("SITEKIT_BUILD"), "local")
	s.run(t, 30*time.Second, append(append([]string{"bash", "scripts/init-env.sh", "SITEKIT_BUILD=" + build}, settings...), more...)...)
	s.env = readEnv(t, s.envFile)
	os.Remove(filepath.Join(s.artifacts, "report.txt"))
	start := time.Now()
	out := s.run(t, 20*time.Minute, "bash", "scripts/up.sh")
	if err := os.WriteFile(filepath.Join(s.artifacts, "up.log"), out, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "up: timings:") {
			s.report(t, "scripts/up.sh %s", strings.TrimPrefix(line, "up: "))
		}
	}
	s.report(t, "scripts/up.sh: the stack was healthy %s after the start", time.Since(start).Round(time.Second))

	s.rootPEM = filepath.Join(t.TempDir(), "root.crt")
	s.compose(t, "cp", "caddy:/data/caddy/pki/authorities/local/root.crt", s.rootPEM)
	pem, err := os.ReadFile(s.rootPEM)
	if err != nil {
		t.Fatal(err)
	}
	s.rootCA = x509.NewCertPool()
	if !s.rootCA.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no PEM certificate", s.rootPEM)
	}
	s.client = &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: s.rootCA},
			ForceAttemptHTTP2: true,
		},
		// The tests look at redirects themselves.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return s
}

// down removes the project's containers, networks and volumes, and checks
// that none is left.
func (s *stack) down(t *testing.T) {
	if t.Failed() {
		// The services' last logs, to see why.
		out, _ := s.composeCmd("logs", "--no-color", "--tail", "40").CombinedOutput()
		t.Logf("docker compose logs (last 40 lines each):\n%s", out)
	}
	s.compose(t, "down", "-v", "--remove-orphans", "--timeout", "20")
	for _, kind := range []string{"container", "network", "volume"} {
		args := []string{kind, "ls", "-q", "--filter", "label=com.docker.compose.project=" + project}
		if kind == "container" {
			args = []string{"ps", "-aq", "--filter", "label=com.docker.compose.project=" + project}
		}
		out, err := exec.Command("docker", args...).CombinedOutput()
		if err != nil {
			t.Errorf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		if left := strings.TrimSpace(string(out)); left != "" {
			t.Errorf("after down -v, %ss of %s are left: %s", kind, project, left)
		}
	}
}

func (s *stack) composeCmd(args ...string) *exec.Cmd {
	cmd := exec.Command("docker", append([]string{"compose", "--project-name", project, "--env-file", s.envFile}, args...)...)
	cmd.Dir = s.root
	cmd.Env = append(os.Environ(), "COMPOSE_PROFILES="+profiles)
	return cmd
}

// compose runs docker compose with args on the test's project and returns
// its output; a failure fails the test.
func (s *stack) compose(t *testing.T, args ...string) string {
	t.Helper()
	out, err := s.composeCmd(args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// composeQuiet runs docker compose and ignores a failure.
func (s *stack) composeQuiet(t *testing.T, args ...string) {
	t.Helper()
	// The env file may not exist yet: compose would refuse the required
	// variables without them.
	cmd := exec.Command("docker", append([]string{"compose", "--project-name", project}, args...)...)
	cmd.Dir = s.root
	cmd.Env = append(os.Environ(), "REDIS_APP_PASSWORD=unused", "REDIS_EXPORTER_PASSWORD=unused", "GRAFANA_ADMIN_PASSWORD=unused", "DOMAIN=localhost", "COMPOSE_PROFILES="+profiles)
	_ = cmd.Run()
}

// report logs a figure and appends it to report.txt among the artifacts,
// which .ci/run prints.
func (s *stack) report(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf(format, args...)
	t.Log(line)
	f, err := os.OpenFile(filepath.Join(s.artifacts, "report.txt"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "%s: %s\n", t.Name(), line); err != nil {
		t.Fatal(err)
	}
}

// run runs a command in the repository root with the test's project and env
// file in its environment, logs its output and returns it; a failure fails
// the test.
func (s *stack) run(t *testing.T, timeout time.Duration, args ...string) []byte {
	t.Helper()
	out, err := s.tryRun(t, timeout, args...)
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	return out
}

func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(k, "#") {
			env[k] = v
		}
	}
	return env
}

// containers maps each service to its container's `docker inspect`.
func (s *stack) containers(t *testing.T) map[string]inspect {
	t.Helper()
	ids := strings.Fields(s.compose(t, "ps", "-q"))
	if len(ids) == 0 {
		t.Fatal("docker compose ps: no containers")
	}
	out, err := exec.Command("docker", append([]string{"inspect"}, ids...)...).Output()
	if err != nil {
		t.Fatalf("docker inspect: %v", err)
	}
	var list []inspect
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatal(err)
	}
	m := map[string]inspect{}
	for _, c := range list {
		m[c.Config.Labels["com.docker.compose.service"]] = c
	}
	return m
}

// inspect is the part of `docker inspect` the tests read.
type inspect struct {
	Name         string
	RestartCount int
	Config       struct {
		Image  string
		User   string
		Labels map[string]string
	}
	HostConfig struct {
		ReadonlyRootfs bool
		CapDrop        []string
		CapAdd         []string
		SecurityOpt    []string
		Privileged     bool
		Memory         int64
		NanoCpus       int64
		PidsLimit      *int64
		PortBindings   map[string][]struct{ HostIP, HostPort string }
		LogConfig      struct {
			Type   string
			Config map[string]string
		}
		RestartPolicy struct{ Name string }
	}
	State struct {
		Status    string
		StartedAt string
		Health    *struct{ Status string }
	}
}

// get fetches url with the stack's client and returns the response with its
// body read.
func (s *stack) get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	return s.do(t, mustRequest(t, http.MethodGet, url, ""))
}

func (s *stack) do(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := io.Copy(&b, resp.Body); err != nil {
		t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL, err)
	}
	return resp, b.String()
}

func mustRequest(t *testing.T, method, url, jsonBody string) *http.Request {
	t.Helper()
	var req *http.Request
	var err error
	if jsonBody == "" {
		req, err = http.NewRequest(method, url, nil)
	} else {
		req, err = http.NewRequest(method, url, strings.NewReader(jsonBody))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// waitFor polls cond every 250 ms until it returns nil or timeout passes,
// and returns how long it took.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < timeout {
		if err = cond(); err == nil {
			return time.Since(start)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s: not after %s: %v", what, timeout, err)
	return 0
}
