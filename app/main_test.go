package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"sitekit/app/internal/account"
	"sitekit/app/internal/redistest"
)

// logSink collects the program's JSON log lines and hands out the listening
// addresses once the program has logged them.
type logSink struct {
	mu    sync.Mutex
	lines []string
	addrs chan [2]string
	w     *io.PipeWriter
	done  chan struct{} // closed when every line written is in lines
}

func newLogSink(t *testing.T) (io.Writer, *logSink) {
	pr, pw := io.Pipe()
	s := &logSink{addrs: make(chan [2]string, 1), w: pw, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.lines = append(s.lines, line)
			s.mu.Unlock()
			var raw map[string]any
			if json.Unmarshal([]byte(line), &raw) == nil && raw["msg"] == "listening" {
				s.addrs <- [2]string{raw["addr"].(string), raw["internal_addr"].(string)}
			}
		}
	}()
	t.Cleanup(func() { _ = pw.Close() })
	return pw, s
}

// close ends the sink once the program has stopped writing, and waits
// until its last line is in lines: a write to the pipe returns when the
// scanner has read the bytes, before it has appended the line.
func (s *logSink) close() {
	_ = s.w.Close()
	<-s.done
}

func (s *logSink) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRun starts the whole program on port 0 in production mode, talks to it
// like a client and an operator would, and stops it the way Docker does.
func TestRun(t *testing.T) {
	const redisPassword = "t3st-0123456789abcdef-redis"
	rs := redistest.Start(t, redistest.WithPassword(redisPassword))
	env := map[string]string{
		"APP_ENV":             "production",
		"APP_LISTEN":          "127.0.0.1:0",
		"APP_INTERNAL_LISTEN": "127.0.0.1:0",
		"REDIS_URL":           rs.URL(),
		"APP_DRAIN_DELAY":     "300ms",
	}
	getenv := func(k string) string { return env[k] }
	out, logs := newLogSink(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"app"}, getenv, nil, out) }()

	var addr, internal string
	select {
	case a := <-logs.addrs:
		addr, internal = "http://"+a[0], "http://"+a[1]
	case err := <-done:
		t.Fatalf("run returned before listening: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no listening line within 10s")
	}

	// Readiness, polled as the WTF MustRunMain does.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if code, _ := get(t, addr+"/readyz"); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz not 200 within 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}

	const userPassword = "correct horse battery staple"
	resp, err := http.Post(addr+"/api/users", "application/json",
		strings.NewReader(`{"email":"run@example.com","password":"`+userPassword+`","name":"Run"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("signup = %d", resp.StatusCode)
	}
	if code, body := get(t, addr+"/"); code != 200 || !strings.Contains(body, "Welcome") {
		t.Errorf("home = %d", code)
	}

	// Sign in: production's cookie is __Host-session, Secure, HttpOnly.
	resp, err = http.Post(addr+"/api/sessions", "application/json",
		strings.NewReader(`{"email":"run@example.com","password":"`+userPassword+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "__Host-session" {
			cookie = c
		}
	}
	if resp.StatusCode != 200 || cookie == nil || !cookie.Secure || !cookie.HttpOnly {
		t.Fatalf("sign-in = %d, cookie %+v", resp.StatusCode, cookie)
	}
	req, _ := http.NewRequest("GET", addr+"/api/me", nil)
	req.AddCookie(cookie)
	if me, err := http.DefaultClient.Do(req); err != nil || me.StatusCode != 200 {
		t.Errorf("me with the cookie = %v, %v", me, err)
	} else {
		me.Body.Close()
	}
	// A cross-site form post is refused.
	req, _ = http.NewRequest("POST", addr+"/contact", strings.NewReader("name=x"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if r, err := http.DefaultClient.Do(req); err != nil || r.StatusCode != 403 {
		t.Errorf("cross-site post = %v, %v; want 403", r, err)
	} else {
		r.Body.Close()
	}

	// Metrics live on the internal listener, not on the public one.
	code, metrics := get(t, internal+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		`http_requests_total{code="201",method="POST",route="/api/users"} 1`,
		"go_goroutines", "process_resident_memory_bytes", "go_build_info", "redis_pool_connections", "http_requests_in_flight",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if code, _ := get(t, addr+"/metrics"); code != 404 {
		t.Errorf("public /metrics = %d; want 404", code)
	}
	if code, _ := get(t, internal+"/debug/pprof/"); code != 404 {
		t.Errorf("pprof in production = %d; want 404", code)
	}

	// The healthcheck subcommand, as the container runs it.
	hcEnv := func(k string) string {
		if k == "APP_LISTEN" {
			return strings.TrimPrefix(addr, "http://")
		}
		return getenv(k)
	}
	if err := run(ctx, []string{"app", "healthcheck"}, hcEnv, nil, io.Discard); err != nil {
		t.Errorf("healthcheck on a ready server: %v", err)
	}

	// A request in flight at SIGTERM: its headers are in, its body is not.
	bodyR, bodyW := io.Pipe()
	inflight := make(chan int, 1)
	go func() {
		resp, err := http.Post(addr+"/api/contact", "application/json", bodyR)
		if err != nil {
			t.Errorf("in-flight request: %v", err)
			inflight <- 0
			return
		}
		resp.Body.Close()
		inflight <- resp.StatusCode
	}()
	if _, err := bodyW.Write([]byte(`{"name":"Late","email":"late@example.com",`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)

	// A proxy's pooled connection, open before SIGTERM.
	pooled := &http.Client{Transport: &http.Transport{}}
	if resp, err := pooled.Get(addr + "/healthz"); err != nil {
		t.Fatal(err)
	} else {
		_, _ = io.Copy(io.Discard, resp.Body) // read to the end, so the connection is kept
		resp.Body.Close()
	}
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	// SIGTERM: the listener closes at once, so a new connection is refused
	// (a proxy retries that elsewhere)...
	cancel()
	deadline = time.Now().Add(250 * time.Millisecond)
	for {
		resp, err := fresh.Get(addr + "/healthz")
		if err != nil {
			break
		}
		resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatal("a new connection is still accepted 250ms after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// ...while a request on an open connection is served, says /readyz 503,
	// and closes the connection after its response.
	resp, err = pooled.Get(addr + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz on a connection opened before SIGTERM: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || !resp.Close {
		t.Errorf("/readyz while draining = %d, Connection: %q; want 503, close", resp.StatusCode, resp.Header.Get("Connection"))
	}
	if err := run(context.Background(), []string{"app", "healthcheck"}, hcEnv, nil, io.Discard); err == nil {
		t.Error("healthcheck passed on a draining server")
	}
	// Past the drain delay Shutdown waits for the in-flight request: its
	// body arrives now, and it still succeeds.
	time.Sleep(500 * time.Millisecond)
	if _, err := bodyW.Write([]byte(`"message":"sent during shutdown"}`)); err != nil {
		t.Fatal(err)
	}
	bodyW.Close()
	if code := <-inflight; code != http.StatusAccepted {
		t.Errorf("in-flight request across shutdown = %d; want 202", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return within 15s of cancel")
	}

	logs.close()
	all := logs.text()
	for _, secret := range []string{redisPassword, userPassword} {
		if strings.Contains(all, secret) {
			t.Errorf("logs contain the secret %q", secret)
		}
	}
	for _, want := range []string{`"msg":"starting"`, `"msg":"draining"`, `"msg":"stopped"`, `"msg":"handled request"`} {
		if !strings.Contains(all, want) {
			t.Errorf("logs lack %s", want)
		}
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"production without a Redis password", map[string]string{"APP_ENV": "production", "REDIS_URL": "redis://127.0.0.1:1/0"}, "REDIS_URL"},
		{"bad listen address", map[string]string{"APP_LISTEN": "nowhere"}, "APP_LISTEN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(t.Context(), []string{"app"}, func(k string) string { return tt.env[k] }, nil, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run = %v; want an error naming %s", err, tt.want)
			}
		})
	}
	if err := run(t.Context(), []string{"app", "bogus"}, func(string) string { return "" }, nil, io.Discard); err == nil {
		t.Error("an unknown subcommand was accepted")
	}
}

func TestHealthcheckFailsWithoutServer(t *testing.T) {
	env := map[string]string{"APP_LISTEN": "127.0.0.1:1"}
	if err := run(t.Context(), []string{"app", "healthcheck"}, func(k string) string { return env[k] }, nil, io.Discard); err == nil {
		t.Error("healthcheck passed with no server")
	}
}

// An admin's account comes from useradd; public sign-up refuses the email.
func TestUseraddAdmin(t *testing.T) {
	rs := redistest.Start(t)
	env := map[string]string{"REDIS_URL": rs.URL(), "ADMIN_EMAILS": "root@example.com"}
	getenv := func(k string) string { return env[k] }
	var out strings.Builder
	err := run(t.Context(), []string{"app", "useradd", "Root@Example.com", "Root"}, getenv,
		strings.NewReader("correct horse battery staple\n"), &out)
	if err != nil || !strings.Contains(out.String(), "created user") {
		t.Fatalf("useradd = %v, %q", err, out.String())
	}
	for _, bad := range []struct {
		args  []string
		stdin string
	}{
		{[]string{"app", "useradd", "x@example.com", "X"}, "short\n"},
		{[]string{"app", "useradd", "not-an-email", "X"}, "correct horse battery staple\n"},
		{[]string{"app", "useradd", "root@example.com", "Again"}, "correct horse battery staple\n"},
		{[]string{"app", "useradd", "y@example.com"}, "correct horse battery staple\n"},
	} {
		if err := run(t.Context(), bad.args, getenv, strings.NewReader(bad.stdin), io.Discard); err == nil {
			t.Errorf("useradd %v accepted", bad.args[2:])
		}
	}
}

// At start-up, an ADMIN_EMAILS address whose account came from public
// sign-up is named by its position, never by the address.
func TestWarnSquattedAdmins(t *testing.T) {
	rs := redistest.Start(t)
	accounts := account.NewStore(rs.Client(), time.Now)
	if _, err := accounts.CreateAdmin(t.Context(), "root@example.com", "Root", "h"); err != nil {
		t.Fatal(err)
	}
	if _, err := accounts.Create(t.Context(), "ops@example.com", "Mallory", "h"); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	warnSquattedAdmins(t.Context(), zap.New(core), accounts, []string{"root@example.com", "ops@example.com", "new@example.com"})
	all := logs.All()
	if len(all) != 1 || all[0].Level != zapcore.WarnLevel || all[0].ContextMap()["admin_emails_entry"] != int64(2) {
		t.Fatalf("warnings = %+v; want one, for entry 2", all)
	}
	if strings.Contains(fmt.Sprint(all[0].Message, all[0].ContextMap()), "ops@") {
		t.Errorf("the warning names the address: %+v", all[0])
	}
}
