package edgetest

import (
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// The headers Caddy puts on every HTTPS response, exactly once each.
const (
	csp              = "default-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
	hstsDefault      = "max-age=31536000"
	hstsPreload      = "max-age=63072000; includeSubDomains; preload"
	permissionsPol   = "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()"
	staticCacheValue = "public, max-age=31536000, immutable"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// checkSecurityHeaders reports every security header that is missing,
// doubled or wrong, and any banner header.
func checkSecurityHeaders(t *testing.T, resp *http.Response, hsts string) {
	t.Helper()
	want := map[string]string{
		"Strict-Transport-Security":  hsts,
		"Content-Security-Policy":    csp,
		"X-Content-Type-Options":     "nosniff",
		"X-Frame-Options":            "DENY",
		"Referrer-Policy":            "strict-origin-when-cross-origin",
		"Permissions-Policy":         permissionsPol,
		"Cross-Origin-Opener-Policy": "same-origin",
	}
	where := resp.Request.Method + " " + resp.Request.URL.Path + " → " + resp.Status
	for name, value := range want {
		if got := resp.Header.Values(name); len(got) != 1 || got[0] != value {
			t.Errorf("%s: %s = %q, want exactly [%q]", where, name, got, value)
		}
	}
	for _, banner := range []string{"Server", "Via", "X-Powered-By"} {
		if got := resp.Header.Values(banner); len(got) > 0 {
			t.Errorf("%s: %s = %q, want none", where, banner, got)
		}
	}
	if id := resp.Header.Values("X-Request-ID"); len(id) != 1 || !uuidRE.MatchString(id[0]) {
		t.Errorf("%s: X-Request-ID = %q, want one UUID from Caddy", where, id)
	}
}

// do sends req and returns the response with its body read.
func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return resp, body
}

func newRequest(t *testing.T, method, url string, body []byte) *http.Request {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

// apiError is the app's JSON error shape, which Caddy's own errors copy.
type apiError struct {
	Code      string            `json:"code"`
	Message   string            `json:"message"`
	Details   []json.RawMessage `json:"details"`
	RequestID string            `json:"request_id"`
}

// checkAPIError checks that body is the error contract's shape with code and
// the response's request id.
func checkAPIError(t *testing.T, resp *http.Response, body []byte, code string) {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var e apiError
	if err := dec.Decode(&e); err != nil {
		t.Errorf("body is not the JSON error shape: %v\n%s", err, body)
		return
	}
	if e.Code != code || e.Message == "" || e.Details == nil || len(e.Details) != 0 {
		t.Errorf("error = %+v, want code %q, a message and details []", e, code)
	}
	if id := resp.Header.Get("X-Request-ID"); e.RequestID != id {
		t.Errorf("request_id = %q, X-Request-ID = %q; want the same", e.RequestID, id)
	}
}

// TestEdge runs one stack and checks, in order, what a client sees through
// Caddy. The last two subtests stop the app, so they come last.
func TestEdge(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackConfig{
		app: map[string]string{
			"RATE_LIMIT_CONTACT": "3/h", // exhausted on purpose below
			// Below Caddy's EDGE_BODY_LIMIT (64 KiB, by default the same),
			// so that a body between the two meets the app's limit.
			"APP_BODY_LIMIT": "32768",
		},
	})
	h1, h2 := s.client("h1"), s.client("h2")

	t.Run("http redirects to https with 308, keeping path and query", func(t *testing.T) {
		url := "http://localhost:" + strconv.Itoa(s.httpPort) + "/contact/thanks?x=1&y=a%20b"
		resp, _ := do(t, h1, newRequest(t, http.MethodGet, url, nil))
		want := "https://localhost:" + strconv.Itoa(s.httpsPort) + "/contact/thanks?x=1&y=a%20b"
		if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
			t.Errorf("GET %s = %d, Location %q; want 308 to %q", url, resp.StatusCode, resp.Header.Get("Location"), want)
		}
		if v := resp.Header.Values("Server"); len(v) > 0 {
			t.Errorf("redirect has Server: %q", v)
		}
	})

	t.Run("TLS 1.2 and 1.3 only", func(t *testing.T) {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.httpsPort))
		for _, tc := range []struct {
			name     string
			min, max uint16
			ok       bool
		}{
			{"TLS 1.0", tls.VersionTLS10, tls.VersionTLS10, false},
			{"TLS 1.1", tls.VersionTLS11, tls.VersionTLS11, false},
			{"TLS 1.2", tls.VersionTLS12, tls.VersionTLS12, true},
			{"TLS 1.3", tls.VersionTLS13, tls.VersionTLS13, true},
		} {
			conf := &tls.Config{RootCAs: s.roots, ServerName: "localhost", MinVersion: tc.min, MaxVersion: tc.max}
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, conf)
			if tc.ok {
				if err != nil {
					t.Errorf("%s client: %v, want a connection", tc.name, err)
					continue
				}
				if v := conn.ConnectionState().Version; v != tc.min {
					t.Errorf("%s client: negotiated %s", tc.name, tls.VersionName(v))
				}
				conn.Close()
				continue
			}
			if err == nil {
				conn.Close()
				t.Errorf("%s client: handshake succeeded, want it refused", tc.name)
			}
		}
	})

	t.Run("HTTP/2 negotiated and HTTP/3 advertised", func(t *testing.T) {
		resp, _ := do(t, h2, newRequest(t, http.MethodGet, s.url("/"), nil))
		if resp.ProtoMajor != 2 || resp.TLS == nil || resp.TLS.NegotiatedProtocol != "h2" {
			t.Errorf("proto = %s, ALPN %q; want HTTP/2 over h2", resp.Proto, resp.TLS.NegotiatedProtocol)
		}
		want := `h3=":` + strconv.Itoa(s.httpsPort) + `"`
		if alt := resp.Header.Get("Alt-Svc"); !strings.Contains(alt, want) {
			t.Errorf("Alt-Svc = %q, want it to offer %s", alt, want)
		}
	})

	t.Run("HTTP/3 works", func(t *testing.T) {
		resp, body := do(t, s.h3Client(), newRequest(t, http.MethodGet, s.url("/about"), nil))
		if resp.ProtoMajor != 3 || resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("</html>")) {
			t.Errorf("GET /about over QUIC = %s %d, %d bytes; want HTTP/3 200 with the page", resp.Proto, resp.StatusCode, len(body))
		}
		checkSecurityHeaders(t, resp, hstsDefault)
	})

	t.Run("security headers on every response", func(t *testing.T) {
		// Not to /api/contact: that would spend the contact limit tested below.
		large := []byte(`{"email":"edge@example.com","password":"` + strings.Repeat("x", 40<<10) + `","name":"Edge"}`)
		tooLarge := bytes.Repeat([]byte("x"), 200<<10) // over EDGE_BODY_LIMIT (64 KiB)
		for _, tc := range []struct {
			name   string
			client *http.Client
			req    *http.Request
			status int
			code   string // the JSON error code, for API errors
		}{
			{"page 200", h2, newRequest(t, http.MethodGet, s.url("/"), nil), 200, ""},
			{"page 200 over HTTP/1.1", h1, newRequest(t, http.MethodGet, s.url("/about"), nil), 200, ""},
			{"api 401 from the app", h2, newRequest(t, http.MethodGet, s.url("/api/me"), nil), 401, "unauthorized"},
			{"probe 404 at the edge", h2, newRequest(t, http.MethodGet, s.url("/readyz"), nil), 404, "not_found"},
			{"probe 404 at the edge over HTTP/1.1", h1, newRequest(t, http.MethodGet, s.url("/healthz"), nil), 404, "not_found"},
			{"page 404 from the app", h2, newRequest(t, http.MethodGet, s.url("/no/such/page"), nil), 404, ""},
			{"api 404 from the app", h2, newRequest(t, http.MethodGet, s.url("/api/nothing"), nil), 404, "not_found"},
			{"api 413 from the app (over APP_BODY_LIMIT)", h1, newRequest(t, http.MethodPost, s.url("/api/users"), large), 413, "payload_too_large"},
			// Expect: 100-continue, so the client does not race Caddy's
			// early answer with 200 KiB of body. (Go's server still
			// reads some of the body before it answers, so the client
			// sends it after ExpectContinueTimeout.)
			{"api 413 from Caddy (over EDGE_BODY_LIMIT)", h1, expectContinue(newRequest(t, http.MethodPost, s.url("/api/users"), tooLarge)), 413, "payload_too_large"},
			{"page 413 from Caddy over HTTP/2", h2, newRequest(t, http.MethodPost, s.url("/contact"), tooLarge), 413, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, err := tc.client.Do(tc.req)
				if err != nil {
					t.Fatalf("%s %s: %v", tc.req.Method, tc.req.URL.Path, err)
				}
				// An HTTP/2 server may reset the stream of a body it refused
				// after the answer: the headers are what this checks.
				body, readErr := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.status {
					t.Fatalf("%s %s = %d, want %d\n%s", tc.req.Method, tc.req.URL.Path, resp.StatusCode, tc.status, body)
				}
				checkSecurityHeaders(t, resp, hstsDefault)
				if tc.code != "" {
					if readErr != nil {
						t.Fatalf("read body: %v", readErr)
					}
					checkAPIError(t, resp, body, tc.code)
				}
			})
		}
	})

	t.Run("compression: zstd and gzip, but not for cross-site requests", func(t *testing.T) {
		for _, enc := range []string{"zstd", "gzip"} {
			req := newRequest(t, http.MethodGet, s.url("/"), nil)
			req.Header.Set("Accept-Encoding", enc)
			resp, body := do(t, h2, req)
			if got := resp.Header.Get("Content-Encoding"); got != enc {
				t.Errorf("Accept-Encoding %s: Content-Encoding = %q", enc, got)
				continue
			}
			var r io.Reader
			var err error
			switch enc {
			case "gzip":
				r, err = gzip.NewReader(bytes.NewReader(body))
			case "zstd":
				var d *zstd.Decoder
				d, err = zstd.NewReader(bytes.NewReader(body))
				if err == nil {
					defer d.Close()
					r = d
				}
			}
			if err != nil {
				t.Fatalf("%s: %v", enc, err)
			}
			plain, err := io.ReadAll(r)
			if err != nil || !bytes.Contains(plain, []byte("</html>")) {
				t.Errorf("%s body does not decode to the page: %v", enc, err)
			}
		}
		// A request another site made the browser send is not compressed
		// (BREACH needs those).
		req := newRequest(t, http.MethodGet, s.url("/"), nil)
		req.Header.Set("Accept-Encoding", "zstd, gzip")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		if resp, _ := do(t, h2, req); resp.Header.Get("Content-Encoding") != "" {
			t.Errorf("cross-site request: Content-Encoding = %q, want none", resp.Header.Get("Content-Encoding"))
		}
	})

	t.Run("static files keep the app's long cache, and a 404 is not cached", func(t *testing.T) {
		_, home := do(t, h2, newRequest(t, http.MethodGet, s.url("/"), nil))
		css := regexp.MustCompile(`/static/style\.[0-9a-f]+\.css`).Find(home)
		if css == nil {
			t.Fatalf("home page links no hashed stylesheet:\n%s", home)
		}
		resp, _ := do(t, h2, newRequest(t, http.MethodGet, s.url(string(css)), nil))
		if got := resp.Header.Values("Cache-Control"); resp.StatusCode != 200 || len(got) != 1 || got[0] != staticCacheValue {
			t.Errorf("GET %s = %d, Cache-Control %q; want 200 and %q", css, resp.StatusCode, got, staticCacheValue)
		}
		resp, _ = do(t, h2, newRequest(t, http.MethodGet, s.url("/static/style.000000000000.css"), nil))
		if got := resp.Header.Get("Cache-Control"); resp.StatusCode != 404 || strings.Contains(got, "immutable") {
			t.Errorf("unknown static file = %d, Cache-Control %q; want 404 and not immutable", resp.StatusCode, got)
		}
	})

	t.Run("forged X-Forwarded-For changes neither client IP nor rate-limit bucket", func(t *testing.T) {
		body := []byte(`{"name":"Edge","email":"edge@example.com","message":"hello from the edge test"}`)
		post := func(xff string) (*http.Response, string) {
			req := newRequest(t, http.MethodPost, s.url("/api/contact"), body)
			if xff != "" {
				req.Header.Set("X-Forwarded-For", xff)
			}
			resp, _ := do(t, h2, req)
			return resp, resp.Header.Get("X-Request-ID")
		}
		for i := range 3 { // RATE_LIMIT_CONTACT=3/h
			if resp, _ := post(""); resp.StatusCode != http.StatusAccepted {
				t.Fatalf("contact #%d = %d, want 202", i+1, resp.StatusCode)
			}
		}
		if resp, _ := post(""); resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("contact #4 = %d, want 429 (limit 3/h)", resp.StatusCode)
		}
		for _, forged := range []string{"203.0.113.7", "198.51.100.1, 203.0.113.8", "127.0.0.1"} {
			resp, id := post(forged)
			if resp.StatusCode != http.StatusTooManyRequests {
				t.Errorf("with X-Forwarded-For %q: %d, want 429: a forged header must not open a new bucket", forged, resp.StatusCode)
			}
			line := s.appLog.waitLine(t, "request_id "+id, func(l map[string]any) bool {
				return l["msg"] == "handled request" && l["request_id"] == id
			})
			if line["remote_ip"] != "127.0.0.1" {
				t.Errorf("with X-Forwarded-For %q the app logged remote_ip %v, want 127.0.0.1 (the real peer)", forged, line["remote_ip"])
			}
		}
	})

	t.Run("client X-Request-ID is replaced; the same id is in both logs", func(t *testing.T) {
		const forged = "client-chose-this-id"
		req := newRequest(t, http.MethodGet, s.url("/about"), nil)
		req.Header.Set("X-Request-ID", forged)
		resp, body := do(t, h2, req)
		id := resp.Header.Get("X-Request-ID")
		if resp.StatusCode != 200 || id == forged || !uuidRE.MatchString(id) {
			t.Fatalf("GET /about = %d, X-Request-ID %q; want 200 and a UUID of Caddy's", resp.StatusCode, id)
		}
		if bytes.Contains(body, []byte(forged)) {
			t.Errorf("the page shows the client's request id")
		}
		app := s.appLog.waitLine(t, "request_id "+id, func(l map[string]any) bool {
			return l["msg"] == "handled request" && l["request_id"] == id
		})
		if app["path"] != "/about" {
			t.Errorf("app log line for %s is for %v", id, app["path"])
		}
		caddy := s.caddy.stdout.waitLine(t, "request_id "+id, func(l map[string]any) bool {
			return l["msg"] == "handled request" && l["request_id"] == id
		})
		if caddy["uuid"] != id {
			t.Errorf("caddy log: uuid %v, request_id %v; want both %s", caddy["uuid"], caddy["request_id"], id)
		}
		for _, l := range s.appLog.jsonLines() {
			if l["request_id"] == forged {
				t.Errorf("the app logged the client's id: %v", l)
			}
		}
	})

	t.Run("caddy's log does not hold the session cookie", func(t *testing.T) {
		const email, password = "edge-cookie@example.com", "correct horse battery staple"
		resp, body := do(t, h2, newRequest(t, http.MethodPost, s.url("/api/users"),
			[]byte(`{"email":"`+email+`","password":"`+password+`","name":"Edge"}`)))
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST /api/users = %d: %s", resp.StatusCode, body)
		}
		resp, body = do(t, h2, newRequest(t, http.MethodPost, s.url("/api/sessions"),
			[]byte(`{"email":"`+email+`","password":"`+password+`"}`)))
		var session, device *http.Cookie
		for _, c := range resp.Cookies() {
			switch c.Name {
			case "__Host-session":
				session = c
			case "__Host-device":
				device = c
			}
		}
		if resp.StatusCode != http.StatusOK || session == nil || len(session.Value) < 32 || device == nil {
			t.Fatalf("POST /api/sessions = %d, cookie %v, device cookie %v: %s", resp.StatusCode, session, device, body)
		}
		// Again, from the browser that signed in (its device cookie): the
		// sign-in limits look the device up in Redis, as the app's user.
		req := newRequest(t, http.MethodPost, s.url("/api/sessions"), []byte(`{"email":"`+email+`","password":"`+password+`"}`))
		req.AddCookie(device)
		if resp, body = do(t, h2, req); resp.StatusCode != http.StatusOK {
			t.Fatalf("POST /api/sessions with the device cookie = %d: %s", resp.StatusCode, body)
		}
		for _, c := range resp.Cookies() {
			if c.Name == "__Host-session" {
				session = c
			}
		}
		req = newRequest(t, http.MethodGet, s.url("/api/me"), nil)
		req.AddCookie(session)
		req.Header.Set("Authorization", "Bearer edge-test-secret-token")
		resp, body = do(t, h2, req)
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(email)) {
			t.Fatalf("GET /api/me with the cookie = %d: %s", resp.StatusCode, body)
		}
		id := resp.Header.Get("X-Request-ID")
		line := s.caddy.stdout.waitLine(t, "request_id "+id, func(l map[string]any) bool {
			return l["request_id"] == id
		})
		// Caddy logs each credential header's values as ["REDACTED"].
		redacted := func(v any) bool {
			list, ok := v.([]any)
			return ok && len(list) == 1 && list[0] == "REDACTED"
		}
		headers, _ := line["request"].(map[string]any)["headers"].(map[string]any)
		for _, name := range []string{"Cookie", "Authorization"} {
			if got := headers[name]; !redacted(got) {
				t.Errorf("caddy logged %s as %v, want [REDACTED]", name, got)
			}
		}
		respHeaders, _ := line["resp_headers"].(map[string]any)
		if got := respHeaders["Set-Cookie"]; got != nil && !redacted(got) {
			t.Errorf("caddy logged Set-Cookie as %v, want [REDACTED]", got)
		}
		log := s.caddy.stdout.String() + s.caddy.stderr.String()
		for _, secret := range []string{session.Value, device.Value, "edge-test-secret-token", password} {
			if strings.Contains(log, secret) {
				t.Errorf("caddy's log contains a secret (%.8s…)", secret)
			}
		}
		// The app writes its lines in batches: wait for this request's.
		s.appLog.waitLine(t, "request_id "+id, func(l map[string]any) bool { return l["request_id"] == id })
		if strings.Contains(s.appLog.String(), session.Value) {
			t.Errorf("the app's log contains the session id")
		}
	})

	t.Run("metrics and admin API are not reachable through the public site", func(t *testing.T) {
		// They exist on their own ports (else this test would prove nothing)...
		resp, body := do(t, http.DefaultClient, newRequest(t, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(s.metricsPort)+"/metrics", nil))
		if resp.StatusCode != 200 || !bytes.Contains(body, []byte("caddy_http_requests_total")) {
			t.Fatalf("metrics port: %d, want 200 with caddy_http_requests_total", resp.StatusCode)
		}
		resp, body = do(t, http.DefaultClient, newRequest(t, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(s.adminPort)+"/config/", nil))
		if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"apps"`)) {
			t.Fatalf("admin API: %d, want 200 with the config", resp.StatusCode)
		}
		// ...but the public site reaches neither, whatever Host it is sent.
		for _, host := range []string{"", "localhost:" + strconv.Itoa(s.metricsPort), "localhost:" + strconv.Itoa(s.adminPort), "localhost:2019"} {
			for _, path := range []string{"/metrics", "/config/", "/load", "/debug/pprof/"} {
				req := newRequest(t, http.MethodGet, s.url(path), nil)
				if host != "" {
					req.Host = host
				}
				resp, body := do(t, h2, req)
				if resp.StatusCode != http.StatusNotFound ||
					bytes.Contains(body, []byte("caddy_")) || bytes.Contains(body, []byte(`"apps"`)) || bytes.Contains(body, []byte("goroutine")) {
					t.Errorf("GET %s (Host %q) through the public site = %d; want the app's 404", path, host, resp.StatusCode)
				}
			}
		}
	})

	t.Run("a request during an app restart waits and succeeds", func(t *testing.T) {
		s.app.stop(t, syscall.SIGTERM) // drains 200ms (APP_DRAIN_DELAY), then exits
		type result struct {
			resp *http.Response
			err  error
		}
		done := make(chan result, 1)
		req := newRequest(t, http.MethodGet, s.url("/about"), nil)
		start := time.Now()
		go func() {
			resp, err := h2.Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			done <- result{resp, err}
		}()
		time.Sleep(time.Second) // the request is now waiting in Caddy
		s.startApp()
		r := <-done
		if r.err != nil || r.resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /about during the restart: %v %v; want 200 (EDGE_LB_TRY_DURATION=8s)", r.resp, r.err)
		}
		if waited := time.Since(start); waited < time.Second {
			t.Errorf("answered after %v, before the app was back: the test did not test a restart", waited)
		}
	})

	t.Run("app stopped: JSON error for the API, HTML page for pages", func(t *testing.T) {
		s.app.stop(t, syscall.SIGTERM)
		checkAppDown(t, h2, s, hstsDefault, http.StatusBadGateway, http.StatusServiceUnavailable)
	})
}

// TestEdgeAppCrash kills the app the way a crash does and checks Caddy's own
// error once its retries run out: the JSON shape for the API, an HTML page
// otherwise, every header. Caddy learns of the crash by failing to connect:
// a 502, or a 503 when that failure still marks the app down ("no
// upstream"). It also opts into HSTS preload.
func TestEdgeAppCrash(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackConfig{caddy: map[string]string{
		"EDGE_LB_TRY_DURATION": "2s",
		"EDGE_HSTS_PRELOAD":    "true",
	}})
	h2 := s.client("h2")
	resp, _ := do(t, h2, newRequest(t, http.MethodGet, s.url("/"), nil))
	checkSecurityHeaders(t, resp, hstsPreload)

	s.app.stop(t, syscall.SIGKILL)
	checkAppDown(t, h2, s, hstsPreload, http.StatusBadGateway, http.StatusServiceUnavailable)
}

// TestAccessLogOnStop: Caddy writes its access lines in batches
// (caddy/bufferedlog.go); a line held when it stops must still be written.
// (The app's batches: TestRun checks its last line, "stopped".)
func TestAccessLogOnStop(t *testing.T) {
	t.Parallel()
	// Held for an hour: only the writing out on exit can write it.
	s := startStack(t, stackConfig{caddy: map[string]string{"EDGE_LOG_FLUSH": "1h"}})
	c := s.client("h2")
	resp, _ := do(t, c, newRequest(t, http.MethodGet, s.url("/about"), nil))
	id := resp.Header.Get("X-Request-ID")
	if resp.StatusCode != http.StatusOK || id == "" {
		t.Fatalf("GET /about = %d, X-Request-ID %q", resp.StatusCode, id)
	}
	// With no connection open Caddy exits at once, not after its grace
	// period.
	c.CloseIdleConnections()
	s.caddy.stop(t, syscall.SIGTERM)
	for _, l := range s.caddy.stdout.jsonLines() {
		if l["request_id"] == id {
			return
		}
	}
	t.Errorf("after SIGTERM, Caddy's log lacks the line of request %s:\n%s", id, tail(s.caddy.stdout.String(), 10))
}

// checkAppDown asks for an API route and a page at once while the app is
// down and checks Caddy's error answers.
func checkAppDown(t *testing.T, c *http.Client, s *stack, hsts string, statuses ...int) {
	t.Helper()
	var wg sync.WaitGroup
	for _, path := range []string{"/api/me", "/about"} {
		req := newRequest(t, http.MethodGet, s.url(path), nil)
		wg.Go(func() {
			resp, err := c.Do(req)
			if err != nil {
				t.Errorf("GET %s: %v", path, err)
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Errorf("GET %s: read body: %v", path, err)
				return
			}
			if !slices.Contains(statuses, resp.StatusCode) {
				t.Errorf("GET %s with the app down = %d, want one of %v\n%s", path, resp.StatusCode, statuses, body)
				return
			}
			checkSecurityHeaders(t, resp, hsts)
			id := resp.Header.Get("X-Request-ID")
			if path == "/api/me" {
				checkAPIError(t, resp, body, "unavailable")
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
				t.Errorf("GET %s: Content-Type %q, want text/html", path, ct)
			}
			page := string(body)
			if !strings.HasPrefix(page, "<!doctype html>") || !strings.Contains(page, "<h1>"+strconv.Itoa(resp.StatusCode)) || !strings.Contains(page, id) {
				t.Errorf("GET %s: not an HTML error page with the status and request id %s:\n%s", path, id, page)
			}
		})
	}
	wg.Wait()
}

// expectContinue makes req wait for the server's 100 Continue before its
// body goes out.
func expectContinue(req *http.Request) *http.Request {
	req.Header.Set("Expect", "100-continue")
	return req
}
