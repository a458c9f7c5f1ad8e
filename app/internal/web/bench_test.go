package web

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
)

// roundTrips counts the commands (and pipelines) the client sends to Redis.
type roundTrips struct{ n atomic.Int64 }

func (c *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { c.n.Add(1); return next(ctx, cmd) }
}
func (c *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { c.n.Add(1); return next(ctx, cmds) }
}

// BenchmarkRequestPath measures a request through the whole middleware chain
// (request id, access log, metrics, recovery, router, handler) on a real
// Redis, and reports Redis round trips per request.
//
//	go test ./app/internal/web -run '^$' -bench RequestPath -benchmem
func BenchmarkRequestPath(b *testing.B) {
	// The production limits' shape (a global per-IP limit on every request),
	// with a rate no benchmark loop reaches.
	e := newTestEnv(b, withProductionLogs())
	user := decode[userJSON](b, e.do("POST", "/api/users", validUser))
	cookie := e.login("ann@example.com", "correct horse battery")
	rt := &roundTrips{}
	e.srv.redis.AddHook(rt)

	cases := []struct {
		name, method, path, body, contentType, cookie string
	}{
		{"anonymous page home", "GET", "/", "", "", ""},
		{"authenticated api me", "GET", "/api/me", "", "", cookie},
		{"authenticated page home", "GET", "/", "", "", cookie},
		{"api get user", "GET", "/api/users/" + user.ID, "", "", ""},
		{"api contact", "POST", "/api/contact", `{"name":"Bo","email":"bo@example.com","message":"Hello"}`, "application/json", ""},
		{"healthz", "GET", "/healthz", "", "", ""},
		{"unmatched", "GET", "/nope", "", "", ""},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			before := rt.n.Load()
			for b.Loop() {
				var body *strings.Reader
				if c.body != "" {
					body = strings.NewReader(c.body)
				}
				var req *http.Request
				if body != nil {
					req = httptest.NewRequest(c.method, c.path, body)
					req.Header.Set("Content-Type", c.contentType)
				} else {
					req = httptest.NewRequest(c.method, c.path, nil)
				}
				if c.cookie != "" {
					req.Header.Set("Cookie", c.cookie)
				}
				w := httptest.NewRecorder()
				e.h.ServeHTTP(w, req)
				if w.Code >= 400 && c.path != "/nope" {
					b.Fatalf("%s %s = %d", c.method, c.path, w.Code)
				}
			}
			b.ReportMetric(float64(rt.n.Load()-before)/float64(b.N), "redis-rtt/op")
		})
	}

	// The floor under the anonymous page: net/http with a handler that
	// writes the same bytes and nothing else. scripts/bench compares the two
	// over real connections.
	page := e.do("GET", "/", "")
	body, _ := io.ReadAll(page.Body)
	page.Body.Close()
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(body)
	})
	b.Run("bare net/http same page", func(b *testing.B) {
		for b.Loop() {
			w := httptest.NewRecorder()
			bare.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
			if w.Body.Len() != len(body) {
				b.Fatalf("wrote %d bytes, want %d", w.Body.Len(), len(body))
			}
		}
	})
}
