//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"
)

const site = "https://localhost"

// TestStack brings the stack up once and runs every check against it, in
// order: the later ones stop, restart and re-create services.
func TestStack(t *testing.T) {
	// On Docker's bridge, for the containers: a Go module proxy for the
	// release build and a receiver for Alertmanager's webhooks.
	gateway := bridgeGateway(t)
	goproxy := moduleProxy(t, "../..", gateway)
	alerts := startAlertReceiver(t, gateway)
	s := startStack(t,
		"ALERT_WEBHOOK_URL="+alerts.url,
		// Alertmanager sends a group's first alert after 1 s and its
		// changes every 5 s; the rules' own for: stay as they are.
		"ALERT_GROUP_WAIT=1s",
		"ALERT_GROUP_INTERVAL=5s",
	)
	s.alerts = alerts
	// First: the alert it waits for comes from Prometheus's and
	// Alertmanager's first, undisturbed run (Monitoring restarts them), and
	// the app it restarts then serves every later test, whose traffic the
	// dashboards' checks read.
	t.Run("AppDownAndBack", func(t *testing.T) { testAppDownAndBack(t, s) })
	t.Run("Browser", func(t *testing.T) { testBrowser(t, s) })
	t.Run("Edge", func(t *testing.T) { testEdge(t, s) })
	t.Run("ForgedForwardedFor", func(t *testing.T) { testForgedForwardedFor(t, s) })
	t.Run("NothingElsePublished", func(t *testing.T) { testNothingElsePublished(t, s) })
	t.Run("Hardening", func(t *testing.T) { testHardening(t, s) })
	t.Run("RedisACL", func(t *testing.T) { testRedisACL(t, s) })
	t.Run("Admin", func(t *testing.T) { testAdmin(t, s) })
	t.Run("Monitoring", func(t *testing.T) { testMonitoring(t, s) })
	t.Run("GrafanaConfig", func(t *testing.T) { testGrafanaConfig(t, s) })
	t.Run("Persistence", func(t *testing.T) { testPersistence(t, s) })
	// The production path's images, through a registry (release_test.go);
	// everything after runs on them.
	t.Run("ReleaseFromRegistry", func(t *testing.T) { testReleaseFromRegistry(t, s, goproxy) })

	// Operations under a constant load through Caddy (operations_test.go).
	l := newLoad(t, s)
	t.Run("DeployUnderLoad", func(t *testing.T) { testDeployUnderLoad(t, s, l) })
	t.Run("DeployRollback", func(t *testing.T) { testDeployRollback(t, s, l) })
	t.Run("AppCrashUnderLoad", func(t *testing.T) { testAppCrashUnderLoad(t, s, l) })
	t.Run("CaddyReloadUnderLoad", func(t *testing.T) { testCaddyReloadUnderLoad(t, s, l) })
	// Attacks on the edge under the same load (abuse_test.go).
	t.Run("Abuse", func(t *testing.T) { testAbuse(t, s, l) })
	t.Run("RedisCrashes", func(t *testing.T) { testRedisCrashes(t, s) })
	// It stops the stack and deletes Redis's volume (backup_test.go).
	t.Run("BackupRestore", func(t *testing.T) { testBackupRestore(t, s) })
	// Last: it moves the site to a name certified by Pebble (acme_test.go).
	t.Run("ACME", func(t *testing.T) { testACME(t, s, gateway) })
}

// testEdge: the redirect, the security headers, the API's error shape
// through Caddy, HTTP/2 and HTTP/3.
func testEdge(t *testing.T, s *stack) {
	resp, _ := s.get(t, "http://localhost/about?x=1")
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "https://localhost:443/about?x=1" {
		t.Errorf("http://localhost/about?x=1: %s, Location %q; want 308 to https://localhost:443/about?x=1", resp.Status, resp.Header.Get("Location"))
	}

	resp, body := s.get(t, site+"/")
	if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/2.0" {
		t.Errorf("GET /: %s over %s; want 200 over HTTP/2.0", resp.Status, resp.Proto)
	}
	if !strings.Contains(body, "<h1>Welcome</h1>") {
		t.Errorf("GET /: the home page's heading is missing:\n%s", body)
	}
	for name, want := range map[string]string{
		"Strict-Transport-Security":  "max-age=31536000",
		"Content-Security-Policy":    "default-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
		"X-Content-Type-Options":     "nosniff",
		"X-Frame-Options":            "DENY",
		"Referrer-Policy":            "strict-origin-when-cross-origin",
		"Cross-Origin-Opener-Policy": "same-origin",
	} {
		if got := resp.Header.Values(name); len(got) != 1 || got[0] != want {
			t.Errorf("GET / %s: %q; want exactly %q", name, got, want)
		}
	}
	for _, name := range []string{"Server", "Via"} {
		if v := resp.Header.Get(name); v != "" {
			t.Errorf("GET / sends %s: %q; want none", name, v)
		}
	}

	// The API's error shape, from the app (404, 400) and from Caddy (413).
	for _, c := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{http.MethodGet, "/api/nope", "", http.StatusNotFound, "not_found"},
		{http.MethodPost, "/api/users", `{"email":`, http.StatusBadRequest, "bad_request"},
		{http.MethodPost, "/api/contact", `{"message":"` + strings.Repeat("x", 2<<20) + `"}`, http.StatusRequestEntityTooLarge, "payload_too_large"},
		{http.MethodGet, "/readyz", "", http.StatusNotFound, "not_found"},
	} {
		resp, body := s.do(t, mustRequest(t, c.method, site+c.path, c.body))
		var e struct {
			Code      string
			Message   string
			RequestID string `json:"request_id"`
		}
		err := json.Unmarshal([]byte(body), &e)
		if resp.StatusCode != c.status || err != nil || e.Code != c.code || e.RequestID != resp.Header.Get("X-Request-ID") {
			t.Errorf("%s %s: %s %q; want %d with code %q and the X-Request-ID as request_id", c.method, c.path, resp.Status, trim(body), c.status, c.code)
		}
	}

	// HTTP/3 over QUIC, on the published UDP port.
	h3 := &http.Client{Timeout: 10 * time.Second, Transport: &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: s.rootCA}}}
	defer h3.Transport.(*http3.Transport).Close()
	resp3, err := h3.Get(site + "/about")
	if err != nil {
		t.Fatalf("HTTP/3 GET /about: %v", err)
	}
	resp3.Body.Close()
	if resp3.StatusCode != http.StatusOK || resp3.Proto != "HTTP/3.0" {
		t.Errorf("HTTP/3 GET /about: %s over %s; want 200 over HTTP/3.0", resp3.Status, resp3.Proto)
	}
}

// testForgedForwardedFor: a client that sends its own X-Forwarded-For to
// Caddy stays in its own rate-limit bucket. Each signup attempt spends one
// request of the per-IP signup limit (an empty body: 422, nothing made); a
// forged address that the app believed would start a fresh bucket.
func testForgedForwardedFor(t *testing.T, s *stack) {
	login := func(forged string) (limit, remaining int) {
		t.Helper()
		req := mustRequest(t, http.MethodPost, site+"/api/users", `{}`)
		if forged != "" {
			req.Header.Set("X-Forwarded-For", forged)
			req.Header.Set("X-Real-IP", forged)
		}
		resp, body := s.do(t, req)
		if resp.StatusCode != http.StatusUnprocessableEntity {
			t.Fatalf("POST /api/users with an empty body: %s %s; want 422", resp.Status, trim(body))
		}
		limit, err1 := strconv.Atoi(resp.Header.Get("RateLimit-Limit"))
		remaining, err2 := strconv.Atoi(resp.Header.Get("RateLimit-Remaining"))
		if err := errors.Join(err1, err2); err != nil {
			t.Fatalf("POST /api/users: RateLimit headers: %v", err)
		}
		return limit, remaining
	}
	for range 5 {
		login("")
	}
	limit, before := login("")
	for _, forged := range []string{"203.0.113.7", "198.51.100.1, 203.0.113.9", "2001:db8::1"} {
		_, remaining := login(forged)
		if remaining >= limit-1 || remaining > before {
			t.Errorf("with X-Forwarded-For: %s, RateLimit-Remaining is %d of %d (before: %d): the forged address got its own bucket", forged, remaining, limit, before)
		}
		before = remaining
	}
}

// testNothingElsePublished: from the host, only Caddy's 80 and 443 answer;
// the app, Redis, metrics and admin ports do not.
func testNothingElsePublished(t *testing.T, s *stack) {
	for _, port := range []string{"3000", "6379", "9100", "9180", "2019"} {
		for _, host := range []string{"127.0.0.1", "::1"} {
			addr := net.JoinHostPort(host, port)
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				t.Errorf("%s accepts connections; nothing but Caddy's 80 and 443 should be published", addr)
			}
		}
	}
	for svc, c := range s.containers(t) {
		var published []string
		for port, binds := range c.HostConfig.PortBindings {
			if len(binds) > 0 {
				published = append(published, port)
			}
		}
		slices.Sort(published)
		want := []string{}
		switch svc {
		case "caddy":
			want = []string{"443/tcp", "443/udp", "80/tcp"}
		case "prometheus":
			want = []string{"9090/tcp"}
		case "alertmanager":
			want = []string{"9093/tcp"}
		}
		// The UIs of the ops profile: on this host's loopback only.
		if svc != "caddy" {
			for _, port := range want {
				if b := c.HostConfig.PortBindings[port]; len(b) != 1 || b[0].HostIP != "127.0.0.1" {
					t.Errorf("%s publishes %s on %+v; want 127.0.0.1 only", svc, port, b)
				}
			}
		}
		if !slices.Equal(published, want) {
			t.Errorf("%s publishes %v; want %v", svc, published, want)
		}
	}
}

// testHardening: every container runs as a non-root user with a read-only
// root filesystem, no capabilities, no privilege gain, limits and rotated
// logs.
func testHardening(t *testing.T, s *stack) {
	cs := s.containers(t)
	for _, svc := range []string{"caddy", "app", "redis", "prometheus", "redis-exporter", "alertmanager"} {
		if _, ok := cs[svc]; !ok {
			t.Errorf("no %s container", svc)
		}
	}
	for svc, c := range cs {
		h := c.HostConfig
		user, _, _ := strings.Cut(c.Config.User, ":")
		checks := []struct {
			ok   bool
			what string
		}{
			{user != "" && user != "0" && user != "root", fmt.Sprintf("user %q is not a non-root user", c.Config.User)},
			{h.ReadonlyRootfs, "root filesystem is writable"},
			{slices.Equal(h.CapDrop, []string{"ALL"}) && len(h.CapAdd) == 0, fmt.Sprintf("capabilities: drop %v, add %v; want drop [ALL], add none", h.CapDrop, h.CapAdd)},
			{slices.Contains(h.SecurityOpt, "no-new-privileges:true"), fmt.Sprintf("security options %v lack no-new-privileges:true", h.SecurityOpt)},
			{!h.Privileged, "privileged"},
			{h.Memory > 0, "no memory limit"},
			{h.NanoCpus > 0, "no CPU limit"},
			{h.PidsLimit != nil && *h.PidsLimit > 0, "no pids limit"},
			{h.LogConfig.Type == "json-file" && h.LogConfig.Config["max-size"] != "" && h.LogConfig.Config["max-file"] != "", fmt.Sprintf("logs not rotated: %+v", h.LogConfig)},
			{h.RestartPolicy.Name == "unless-stopped", "restart policy " + h.RestartPolicy.Name},
			{c.State.Health != nil && c.State.Health.Status == "healthy", "not healthy"},
		}
		for _, ch := range checks {
			if !ch.ok {
				t.Errorf("%s: %s", svc, ch.what)
			}
		}
	}
}

// testRedisACL: the app's Redis user cannot run admin commands, and the
// default user is refused.
func testRedisACL(t *testing.T, s *stack) {
	cli := func(args ...string) string {
		t.Helper()
		cmd := s.composeCmd(append([]string{"exec", "-T", "redis", "/redis-cli", "--no-auth-warning", "-e"}, args...)...)
		out, _ := cmd.CombinedOutput() // -e: an error reply exits 1; the reply is what is checked
		return strings.TrimSpace(string(out))
	}
	app := []string{"--user", "app", "--pass", s.env["REDIS_APP_PASSWORD"]}
	if got := cli(append(app, "PING")...); got != "PONG" {
		t.Fatalf("PING as app: %q; want PONG", got)
	}
	for _, cmd := range [][]string{{"FLUSHALL"}, {"FLUSHDB"}, {"CONFIG", "GET", "*"}, {"KEYS", "*"}, {"SHUTDOWN"}, {"SCRIPT", "FLUSH"}, {"MODULE", "LIST"}, {"ACL", "LIST"}} {
		if got := cli(append(app, cmd...)...); !strings.Contains(got, "NOPERM") {
			t.Errorf("%s as app: %q; want a NOPERM error", strings.Join(cmd, " "), got)
		}
	}
	// Redis refuses DEBUG before it looks at the ACL (enable-debug-command).
	if got := cli(append(app, "DEBUG", "SLEEP", "0")...); !strings.Contains(got, "NOPERM") && !strings.Contains(got, "DEBUG command not allowed") {
		t.Errorf("DEBUG SLEEP 0 as app: %q; want it refused", got)
	}
	if got := cli("PING"); !strings.Contains(got, "NOAUTH") {
		t.Errorf("PING without a user: %q; want NOAUTH", got)
	}
	for _, pass := range []string{"", "-", s.env["REDIS_APP_PASSWORD"]} {
		if got := cli("--user", "default", "--pass", pass, "PING"); !strings.Contains(got, "WRONGPASS") {
			t.Errorf("PING as the default user with password %q: %q; want WRONGPASS (it has no password)", pass, got)
		}
	}
	if got := cli("--user", "healthcheck", "--pass", "-", "GET", "x"); !strings.Contains(got, "NOPERM") {
		t.Errorf("GET as healthcheck: %q; want NOPERM", got)
	}
	// The exporter reads statistics, not the arguments of logged commands.
	exporter := []string{"--user", "exporter", "--pass", s.env["REDIS_EXPORTER_PASSWORD"]}
	if got := cli(append(exporter, "SLOWLOG", "LEN")...); strings.Contains(got, "NOPERM") {
		t.Errorf("SLOWLOG LEN as exporter: %q; want a count", got)
	}
	if got := cli(append(exporter, "SLOWLOG", "GET")...); !strings.Contains(got, "NOPERM") {
		t.Errorf("SLOWLOG GET as exporter: %q; want NOPERM", got)
	}
}

// testAdmin: an admin created with `app useradd` inside the running app
// container signs in through the site and lists users and contact messages,
// which run the Redis commands of the admin pages under the app's ACL.
func testAdmin(t *testing.T, s *stack) {
	const email, password = "admin@example.com", "the admin's long password"
	cmd := s.composeCmd("exec", "-T", "app", "/app", "useradd", email, "Admin")
	cmd.Stdin = strings.NewReader(password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker compose exec app /app useradd: %v\n%s", err, out)
	}
	resp, body := s.do(t, mustRequest(t, http.MethodPost, site+"/api/sessions", `{"email":"`+email+`","password":"`+password+`"}`))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /api/sessions as the admin: %s %s", resp.Status, trim(body))
	}
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "__Host-session" {
			session = c
		}
	}
	if session == nil {
		t.Fatalf("POST /api/sessions: no __Host-session cookie in %q", resp.Header.Values("Set-Cookie"))
	}
	for _, path := range []string{"/api/users?limit=5", "/api/contact?limit=5", "/api/me"} {
		req := mustRequest(t, http.MethodGet, site+path, "")
		req.AddCookie(session)
		resp, body := s.do(t, req)
		if resp.StatusCode != http.StatusOK || !json.Valid([]byte(body)) {
			t.Errorf("GET %s as the admin: %s %s; want 200 with JSON", path, resp.Status, trim(body))
		}
	}
	// The browser test sent a contact message: the admin sees it.
	req := mustRequest(t, http.MethodGet, site+"/api/contact?limit=50", "")
	req.AddCookie(session)
	if _, body := s.do(t, req); !strings.Contains(body, "Hello from the end-to-end test.") {
		t.Errorf("GET /api/contact: the browser's message is not listed: %s", trim(body))
	}
}

// testAppDownAndBack: with the app stopped, Caddy answers the API in the
// JSON error shape and pages in HTML; started again, the stack heals.
func testAppDownAndBack(t *testing.T, s *stack) {
	s.compose(t, "stop", "app")
	start := time.Now()
	started := false
	// Whatever fails below, the later tests need the app.
	defer func() {
		if !started {
			s.compose(t, "start", "app")
		}
	}()
	resp, body := s.get(t, site+"/api/users/nobody")
	var e struct{ Code string }
	if (resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusServiceUnavailable) ||
		json.Unmarshal([]byte(body), &e) != nil || e.Code != "unavailable" || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("GET /api/users/nobody with the app stopped: %s %q; want 502 or 503 with code unavailable in JSON", resp.Status, trim(body))
	}
	s.report(t, "the API answered %s after %s with the app stopped (lb_try_duration)", resp.Status, time.Since(start).Round(time.Millisecond))
	resp, body = s.get(t, site+"/about")
	if resp.StatusCode < 500 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(body, "Request id") {
		t.Errorf("GET /about with the app stopped: %s %q; want a 5xx HTML page", resp.Status, trim(body))
	}

	// The page reaches the webhook receiver, with what on-call needs.
	a := s.alerts.wait(t, 5*time.Minute, "AppNotReady", "firing", start)
	s.report(t, "AppNotReady reached the webhook receiver %s after docker compose stop app returned", a.at.Sub(start).Round(time.Second))
	if a.Labels["severity"] != "page" || a.Annotations["summary"] == "" || a.Annotations["runbook"] == "" {
		t.Errorf("AppNotReady at the receiver: labels %v, annotations %v; want severity page, a summary and a runbook", a.Labels, a.Annotations)
	}

	restarted := time.Now()
	s.compose(t, "start", "app")
	started = true
	took := waitFor(t, 90*time.Second, "the site after starting the app again", func() error {
		resp, err := s.client.Get(site + "/api/users/nobody")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound { // the app's own answer
			return fmt.Errorf("GET /api/users/nobody: %s", resp.Status)
		}
		return nil
	})
	s.report(t, "the app answered through Caddy %s after docker compose start app", took.Round(time.Millisecond))
	a = s.alerts.wait(t, 3*time.Minute, "AppNotReady", "resolved", restarted)
	s.report(t, "AppNotReady's resolution reached the receiver %s after the app started", a.at.Sub(restarted).Round(time.Second))
}

// testPersistence: data written through the site survives a Redis restart
// and a down + up, and Caddy keeps its certificate.
func testPersistence(t *testing.T, s *stack) {
	email := fmt.Sprintf("persist-%d@example.com", time.Now().UnixNano())
	resp, body := s.do(t, mustRequest(t, http.MethodPost, site+"/api/users", `{"email":"`+email+`","name":"Persist","password":"a long enough password"}`))
	var u struct{ ID string }
	if resp.StatusCode != http.StatusCreated || json.Unmarshal([]byte(body), &u) != nil || u.ID == "" {
		t.Fatalf("POST /api/users: %s %q; want 201 with an id", resp.Status, trim(body))
	}
	userExists := func() error {
		resp, err := s.client.Get(site + "/api/users/" + u.ID)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /api/users/%s: %s", u.ID, resp.Status)
		}
		return nil
	}
	certBefore := s.certFingerprint(t)

	s.compose(t, "restart", "redis")
	took := waitFor(t, 60*time.Second, "the user after docker compose restart redis", userExists)
	s.report(t, "after docker compose restart redis, the user was readable again in %s", took.Round(time.Millisecond))

	start := time.Now()
	s.compose(t, "down")
	s.compose(t, "up", "-d", "--wait", "--wait-timeout", "180")
	s.report(t, "docker compose down + up --wait took %s", time.Since(start).Round(time.Second))
	waitFor(t, 60*time.Second, "the user after docker compose down and up", userExists)
	if after := s.certFingerprint(t); after != certBefore {
		t.Errorf("Caddy's certificate changed across down and up: %s, then %s; its /data volume should keep it", certBefore, after)
	}
}

// certFingerprint is the SHA-256 of the certificate Caddy serves for
// localhost.
func (s *stack) certFingerprint(t *testing.T) string {
	t.Helper()
	var fp string
	waitFor(t, 30*time.Second, "a TLS handshake with Caddy", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d := tls.Dialer{Config: &tls.Config{RootCAs: s.rootCA, ServerName: "localhost"}}
		c, err := d.DialContext(ctx, "tcp", "127.0.0.1:443")
		if err != nil {
			return err
		}
		defer c.Close()
		sum := sha256.Sum256(c.(*tls.Conn).ConnectionState().PeerCertificates[0].Raw)
		fp = hex.EncodeToString(sum[:])
		return nil
	})
	return fp
}

// trim shortens a body for a failure message.
func trim(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}
