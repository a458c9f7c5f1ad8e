package edgetest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"sitekit/app/internal/redistest"
)

// binaries are the programs TestMain builds once per run, and the module
// root that holds the Caddyfile. Set before any test runs, then only read.
var binaries struct {
	caddy, app, root string
}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "edgetest:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "edgetest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "edgetest:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	binaries.root = root
	binaries.caddy = filepath.Join(dir, "caddy")
	binaries.app = filepath.Join(dir, "app")
	// The Go build cache makes the second and later runs quick; the first
	// build of Caddy takes a few minutes on two cores.
	for out, pkg := range map[string]string{binaries.caddy: "./caddy", binaries.app: "./app"} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "edgetest: go build %s: %v\n%s", pkg, err, b)
			return 1
		}
	}
	return m.Run()
}

// moduleRoot is the folder of the go.mod that holds ./caddy and ./app.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w (is Go on PATH?)", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside the sitekit module")
	}
	return filepath.Dir(gomod), nil
}

// logBuffer collects a process's output; safe for the process's writer and
// the test's readers at once.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// jsonLines returns the lines that are JSON objects.
func (b *logBuffer) jsonLines() []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// waitLine waits up to 5s for a JSON line for which match is true: a
// process logs a request after it has answered it.
func (b *logBuffer) waitLine(t testing.TB, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, l := range b.jsonLines() {
			if match(l) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %s within 5s; log:\n%s", what, tail(b.String(), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// process is one running program with its output captured.
type process struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr *logBuffer
	done           chan struct{} // closed when the process has exited
}

func startProcess(t testing.TB, name, dir string, env []string, stdout *logBuffer, bin string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	p := &process{name: name, cmd: cmd, stdout: stdout, stderr: &logBuffer{}, done: make(chan struct{})}
	cmd.Stdout = p.stdout
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(t, syscall.SIGKILL) })
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig and waits for the process to exit; after 20s it kills it.
func (p *process) stop(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Errorf("%s did not exit within 20s of %v; killing it", p.name, sig)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// stackConfig changes the environment of the app and Caddy from the
// defaults of startStack.
type stackConfig struct {
	app, caddy map[string]string
}

// stack is Redis, the app and Caddy, started for one test.
type stack struct {
	t       testing.TB
	redis   *redistest.Server
	appEnv  []string
	appAddr string
	appPort int
	appLog  *logBuffer // the app's stdout over all its runs
	app     *process

	caddy                  *process
	httpPort, httpsPort    int
	metricsPort, adminPort int
	roots                  *x509.CertPool
}

// startStack starts Redis, the app in production mode (JSON logs, real
// cookies) and our Caddy with the real Caddyfile on free ports, and waits
// until a request through Caddy reaches the app.
func startStack(t testing.TB, cfg stackConfig) *stack {
	t.Helper()
	// The app signs in as compose.yaml's app user, with its ACL: a command
	// the app sends that the stack's Redis would refuse fails here too.
	password := "edgetest-" + rand.Text() // production refuses a short or placeholder password
	appPassword := "edgetest-app-" + rand.Text()
	s := &stack{t: t, redis: redistest.Start(t, redistest.WithPassword(password),
		redistest.WithArgs(composeRedisUser(t, "app", appPassword)...)), appLog: &logBuffer{}}

	s.appPort = freePort(t, false)
	s.appAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.appPort))
	appEnv := map[string]string{
		"PATH":                 os.Getenv("PATH"),
		"APP_ENV":              "production",
		"APP_LISTEN":           s.appAddr,
		"APP_INTERNAL_LISTEN":  net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, false))),
		"REDIS_URL":            "redis://app:" + appPassword + "@" + s.redis.Addr() + "/0",
		"TRUSTED_PROXIES":      "127.0.0.1", // Caddy
		"APP_DRAIN_DELAY":      "200ms",
		"APP_SHUTDOWN_TIMEOUT": "5s",
		// Raised, so that the tests do not trip over limits they do not test.
		"RATE_LIMIT_GLOBAL":       "1000/s",
		"RATE_LIMIT_GLOBAL_BURST": "1000",
		"RATE_LIMIT_SIGNUP":       "100/h",
		"RATE_LIMIT_LOGIN_IP":     "100/15m",
		"RATE_LIMIT_CONTACT":      "100/h",
	}
	for k, v := range cfg.app {
		appEnv[k] = v
	}
	s.appEnv = envList(appEnv)
	s.startApp()

	dir := t.TempDir()
	s.httpPort = freePort(t, false)
	s.httpsPort = freePort(t, true) // HTTP/3 needs the same port on UDP
	s.metricsPort = freePort(t, false)
	s.adminPort = freePort(t, false)
	caddyEnv := map[string]string{
		"PATH": os.Getenv("PATH"),
		// The local CA and certificates land here, not in the user's home.
		"HOME":                 dir,
		"XDG_DATA_HOME":        filepath.Join(dir, "data"),
		"XDG_CONFIG_HOME":      filepath.Join(dir, "config"),
		"DOMAIN":               "localhost",
		"HTTP_PORT":            strconv.Itoa(s.httpPort),
		"HTTPS_PORT":           strconv.Itoa(s.httpsPort),
		"APP_UPSTREAM_HOST":    "127.0.0.1",
		"APP_UPSTREAM_PORT":    strconv.Itoa(s.appPort),
		"CADDY_ADMIN":          net.JoinHostPort("127.0.0.1", strconv.Itoa(s.adminPort)),
		"EDGE_METRICS_PORT":    strconv.Itoa(s.metricsPort),
		"EDGE_GRACE_PERIOD":    "2s",
		"EDGE_LB_TRY_DURATION": "8s",
	}
	for k, v := range cfg.caddy {
		caddyEnv[k] = v
	}
	s.caddy = startProcess(t, "caddy", dir, envList(caddyEnv), &logBuffer{}, binaries.caddy,
		"run", "--config", filepath.Join(binaries.root, "Caddyfile"), "--adapter", "caddyfile")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("caddy stderr:\n%s", tail(s.caddy.stderr.String(), 40))
			t.Logf("app stdout:\n%s", tail(s.appLog.String(), 40))
		}
	})
	s.roots = waitRootCA(t, s.caddy, filepath.Join(dir, "data", "caddy", "pki", "authorities", "local", "root.crt"))

	// Ready when a request goes through Caddy to the app.
	c := s.client("h2")
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := c.Get(s.url("/about")) // the probes are not public (see the Caddyfile)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if s.caddy.exited() || time.Now().After(deadline) {
			t.Fatalf("no 200 from /about through caddy within 30s (last: %v, %v); caddy stderr:\n%s",
				resp, err, tail(s.caddy.stderr.String(), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startApp starts the app (again) and waits until its /readyz answers 200.
func (s *stack) startApp() {
	t := s.t
	t.Helper()
	s.app = startProcess(t, "app", t.TempDir(), s.appEnv, s.appLog, binaries.app)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + s.appAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if s.app.exited() || time.Now().After(deadline) {
			t.Fatalf("app not ready within 15s: %v; stderr:\n%s\nstdout:\n%s", err,
				s.app.stderr.String(), tail(s.appLog.String(), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitRootCA waits for Caddy to create its local CA and returns a pool that
// trusts its root, as a browser would after `caddy trust`.
func waitRootCA(t testing.TB, caddy *process, path string) *x509.CertPool {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if pem, err := os.ReadFile(path); err == nil {
			pool := x509.NewCertPool()
			if pool.AppendCertsFromPEM(pem) {
				return pool
			}
		}
		if caddy.exited() || time.Now().After(deadline) {
			t.Fatalf("caddy made no local root CA at %s within 30s; stderr:\n%s", path, tail(caddy.stderr.String(), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// url is an https URL on the public site.
func (s *stack) url(path string) string {
	return "https://localhost:" + strconv.Itoa(s.httpsPort) + path
}

// dialLoopback dials 127.0.0.1 whatever host the URL names, so the client
// IP that Caddy and the app see is always 127.0.0.1.
func dialLoopback(ctx context.Context, network, addr string) (net.Conn, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
}

// client returns an HTTP client that trusts Caddy's local root, speaks only
// proto ("h1" or "h2"), does not follow redirects and does not ask for or
// undo compression by itself.
func (s *stack) client(proto string) *http.Client {
	var protos http.Protocols
	switch proto {
	case "h1":
		protos.SetHTTP1(true)
	case "h2":
		protos.SetHTTP2(true)
	default:
		s.t.Fatalf("unknown protocol %q", proto)
	}
	tr := &http.Transport{
		DialContext:           dialLoopback,
		TLSClientConfig:       &tls.Config{RootCAs: s.roots},
		Protocols:             &protos,
		DisableCompression:    true,
		ExpectContinueTimeout: time.Second,
	}
	s.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// h3Client returns an HTTP/3 (QUIC) client that trusts Caddy's local root.
func (s *stack) h3Client() *http.Client {
	tr := &http3.Transport{
		TLSClientConfig:    &tls.Config{RootCAs: s.roots, ServerName: "localhost"},
		DisableCompression: true,
		Dial: func(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return quic.DialAddrEarly(ctx, net.JoinHostPort("127.0.0.1", port), tlsCfg, cfg)
		},
	}
	s.t.Cleanup(func() { _ = tr.Close() })
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// handedOut holds every port freePort returned in this test process, so
// that parallel tests never get the same one.
var handedOut sync.Map

// freePort asks the kernel for a free TCP port (also free on UDP when udp
// is set). Another process could take it before ours binds it; then the
// process fails to start and the test says so.
func freePort(t testing.TB, udp bool) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if _, taken := handedOut.LoadOrStore(port, true); taken {
			// Closed since, but another parallel test's server is about to
			// bind it: an app on 127.0.0.1:port would take connections meant
			// for a Caddy on [::]:port.
			l.Close()
			continue
		}
		if !udp {
			l.Close()
			return port
		}
		u, err := net.ListenPacket("udp", ":"+strconv.Itoa(port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no port free on both TCP and UDP after 20 tries")
	return 0
}

func envList(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}
