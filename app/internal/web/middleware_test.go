package web

import (
	"fmt"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestRequestID(t *testing.T) {
	e := newTestEnv(t)
	tests := []struct {
		name, in string
		kept     bool
	}{
		{"uuid", "0f8fad5b-d9cb-469f-a165-70867728950e", true},
		{"caddy style", "abc_DEF.123", true},
		{"empty", "", false},
		{"too long", strings.Repeat("a", 65), false},
		{"log injection", "abc\ndef", false},
		{"quotes", `abc"def`, false},
		{"spaces", "abc def", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.do("GET", "/api/nope", "", "X-Request-ID", tt.in)
			got := resp.Header.Get("X-Request-ID")
			body := readBody(t, resp)
			if tt.kept && got != tt.in {
				t.Errorf("id = %q; want the incoming %q", got, tt.in)
			}
			if !tt.kept && (got == tt.in || !validRequestID(got)) {
				t.Errorf("id = %q; want a fresh, valid one", got)
			}
			if !strings.Contains(body, `"request_id":"`+got+`"`) {
				t.Errorf("body %s does not carry id %q", body, got)
			}
		})
	}
}

func TestAccessLog(t *testing.T) {
	e := newTestEnv(t)
	const pw = "correct horse battery staple"
	resp := e.do("POST", "/api/users", `{"email":"log@example.com","password":"`+pw+`","name":"Log"}`,
		"X-Request-ID", "access-1", "User-Agent", "tester/1.0", "Cookie", "session=topsecretcookie")
	if resp.StatusCode != 201 {
		t.Fatalf("signup = %d", resp.StatusCode)
	}
	lines := e.logs.FilterMessage("handled request").FilterField(zap.String("request_id", "access-1")).All()
	if len(lines) != 1 {
		t.Fatalf("want one access line for the request, got %d", len(lines))
	}
	f := lines[0].ContextMap()
	want := map[string]any{"method": "POST", "route": "/api/users", "path": "/api/users", "status": int64(201), "user_agent": "tester/1.0", "remote_ip": "192.0.2.1"}
	for k, v := range want {
		if f[k] != v {
			t.Errorf("access log %s = %v (%T); want %v", k, f[k], f[k], v)
		}
	}
	if _, ok := f["duration"].(float64); !ok {
		t.Errorf("access log has no duration: %v", f)
	}
	if size, _ := f["size"].(int64); size <= 0 {
		t.Errorf("access log size = %v", f["size"])
	}
	// Neither the password, its hash, nor the cookie is ever logged.
	all := e.logText()
	for _, secret := range []string{pw, "argon2id", "topsecretcookie"} {
		if strings.Contains(all, secret) {
			t.Errorf("logs contain %q", secret)
		}
	}

	// Probes log at debug, everything else at info.
	e.do("GET", "/readyz", "", "X-Request-ID", "probe-1")
	probe := e.logs.FilterField(zap.String("request_id", "probe-1")).All()
	if len(probe) != 1 || probe[0].Level != zapcore.DebugLevel {
		t.Errorf("probe access lines = %v; want one at debug", probe)
	}
	if lines[0].Level != zapcore.InfoLevel {
		t.Errorf("access line level = %v", lines[0].Level)
	}
}

// Hitting many random paths must not add a series per path: unmatched
// requests share one route label.
func TestMetricsCardinality(t *testing.T) {
	e := newTestEnv(t)
	before := seriesCount(t, e.reg, "http_requests_total")
	for i := range 1000 {
		e.do("GET", fmt.Sprintf("/random/%d/path", i), "")
		e.do("GET", fmt.Sprintf("/api/random-%d", i), "")
	}
	e.do("BREW", "/coffee", "")
	after := seriesCount(t, e.reg, "http_requests_total")
	if after-before > 3 {
		t.Errorf("2001 unmatched requests added %d series; want at most 3", after-before)
	}
	if got := metricSum(t, e.reg, "http_requests_total"); got < 2001 {
		t.Errorf("counted %v requests; want 2001", got)
	}
	if n := seriesCount(t, e.reg, "http_request_duration_seconds"); n > 3 {
		t.Errorf("duration histogram has %d series", n)
	}
}

func TestReadyzDraining(t *testing.T) {
	e := newTestEnv(t)
	if r := e.do("GET", "/readyz", ""); r.StatusCode != 200 {
		t.Fatalf("readyz = %d", r.StatusCode)
	}
	if r := e.do("GET", "/", ""); r.Header.Get("Connection") != "" {
		t.Errorf("home before draining sends Connection: %q; want none (keep-alive)", r.Header.Get("Connection"))
	}
	if got := metricSum(t, e.reg, "app_ready"); got != 1 {
		t.Errorf("app_ready = %v before draining; want 1", got)
	}
	e.srv.Drain()
	if got := metricSum(t, e.reg, "app_ready"); got != 0 {
		t.Errorf("app_ready = %v while draining; want 0", got)
	}
	if r := e.do("GET", "/readyz", ""); r.StatusCode != 503 {
		t.Errorf("readyz while draining = %d; want 503", r.StatusCode)
	}
	// Draining stops new traffic from the proxy; requests that still come are served.
	if r := e.do("GET", "/healthz", ""); r.StatusCode != 200 {
		t.Errorf("healthz while draining = %d", r.StatusCode)
	}
	// ...and close their connection, so the proxy keeps none idle to this
	// replica when its listener closes.
	if r := e.do("GET", "/", ""); r.StatusCode != 200 || r.Header.Get("Connection") != "close" {
		t.Errorf("home while draining = %d, Connection: %q; want 200, close", r.StatusCode, r.Header.Get("Connection"))
	}
}
