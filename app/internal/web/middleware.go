package web

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"go.uber.org/zap"

	"sitekit/app/internal/session"
)

// requestInfo is what the outer middleware learns about a request as it runs
// through the chain: the router fills in the route, the error adapter the
// error code. One pointer travels in the context, so the inner layers write
// and the outer ones read after next returns.
type requestInfo struct {
	id    string
	ip    netip.Addr // the client, from clientip: the one answer logs, metrics and limits use
	route string     // route template; "unmatched" for 404s and 405s
	code  string     // API error code, when the request failed

	// Set by loadSession on pages and API routes.
	session    *session.Session // nil when signed out
	sessionErr error            // Redis could not say who the user is
}

type infoKey struct{}

func infoOf(ctx context.Context) *requestInfo {
	if ri, ok := ctx.Value(infoKey{}).(*requestInfo); ok {
		return ri
	}
	return &requestInfo{route: routeUnmatched}
}

func requestID(ctx context.Context) string { return infoOf(ctx).id }
func routeOf(ctx context.Context) string   { return infoOf(ctx).route }

// routeUnmatched is the one route label of every path that matched no route,
// so random paths cannot add metric series.
const routeUnmatched = "unmatched"

// contentSecurityPolicy is strict: the site's pages load only their own
// stylesheet and icon, run no script, submit forms only to themselves and may
// not be framed. Caddy sends the same policy at the edge; the app sends it too
// so that the pages hold to it when reached directly, in development.
const contentSecurityPolicy = "default-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"

// securityHeaders sets the headers every response carries, errors included.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, r)
	})
}

// withRequestInfo starts the request's info. The request id comes from
// X-Request-ID when Caddy (or a client, when there is no Caddy) sent a safe
// one, and is made here otherwise; it is echoed in the response, so a user
// can quote it in a bug report. The client IP comes from clientip, once.
func (s *Server) withRequestInfo(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-ID")
		if !validRequestID(id) {
			id = rand.Text()
		}
		w.Header().Set("X-Request-ID", id)
		ri := &requestInfo{
			id:    id,
			ip:    s.clientIPs.ClientIP(r.RemoteAddr, r.Header.Values("X-Forwarded-For")),
			route: routeUnmatched,
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), infoKey{}, ri)))
	})
}

// validRequestID accepts 1 to 64 letters, digits, '-', '_' and '.': enough for
// UUIDs and Caddy's ids, too little for log injection or a flood of bytes.
func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// recordRoute is router middleware (mux runs it for matched routes only): it
// writes the route's template into the request's info for logs and metrics.
func recordRoute(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if route := mux.CurrentRoute(r); route != nil {
			if tmpl, err := route.GetPathTemplate(); err == nil {
				infoOf(r.Context()).route = tmpl
			}
		}
		next.ServeHTTP(w, r)
	})
}

// statusWriter remembers the status and the bytes written. Unwrap lets
// http.ResponseController reach the connection's Flush and deadlines.
type statusWriter struct {
	http.ResponseWriter
	status int
	size   int64
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.size += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// observe logs one access line per request when it ends and records its
// metrics. Health probes log at debug: they come every few seconds.
func (s *Server) observe(next http.Handler) http.Handler {
	access := s.log.Named("access")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		s.metrics.inFlight.Inc()
		defer s.metrics.inFlight.Dec()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK // the handler wrote nothing
		}
		elapsed := time.Since(start)
		ri := infoOf(r.Context())
		s.metrics.observe(r.Method, ri.route, sw.status, elapsed)

		level := zap.InfoLevel
		if isProbe(r) {
			level = zap.DebugLevel
		}
		if ce := access.Check(level, "handled request"); ce != nil {
			fields := []zap.Field{
				zap.String("request_id", ri.id),
				zap.String("method", r.Method),
				zap.String("route", ri.route),
				zap.String("path", r.URL.Path),
				zap.Int("status", sw.status),
				zap.Int64("size", sw.size),
				zap.Float64("duration", elapsed.Seconds()),
				zap.String("remote_ip", ri.ip.String()),
				zap.String("user_agent", r.UserAgent()),
			}
			if ri.code != "" {
				fields = append(fields, zap.String("code", ri.code))
			}
			ce.Write(fields...)
		}
	})
}

// recoverPanic turns a panic in any handler into the generic 500, logs the
// panic with its stack once, and lets the server go on serving.
func (s *Server) recoverPanic(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler { //nolint:errorlint // the sentinel is panicked as is
				panic(v) // net/http's way to abort a response: let it do so
			}
			err, ok := v.(error)
			if !ok {
				err = fmt.Errorf("%v", v)
			}
			sw, _ := w.(*statusWriter)
			written := sw != nil && sw.status != 0
			s.log.Error("panic in handler",
				zap.String("request_id", requestID(r.Context())),
				zap.String("method", r.Method),
				zap.String("route", routeOf(r.Context())),
				zap.Error(errors.New("panic: "+err.Error())),
				zap.ByteString("stack", debug.Stack()),
				zap.Bool("response_started", written),
			)
			if written {
				// Half an answer is out: a 500 now would corrupt it. Cut the
				// connection, so the client sees a failure, not a short page.
				panic(http.ErrAbortHandler)
			}
			s.respondError(w, r, errInternal)
		}()
		next.ServeHTTP(w, r)
	})
}

// isAPI reports whether r is for the JSON API or a health probe (and gets
// JSON errors) rather than for a page (which gets HTML errors).
func isAPI(r *http.Request) bool {
	p := r.URL.Path
	return p == "/api" || strings.HasPrefix(p, "/api/") || isProbe(r)
}

// isProbe reports whether r is a health probe, which logs at debug.
func isProbe(r *http.Request) bool {
	return r.URL.Path == "/healthz" || r.URL.Path == "/readyz"
}

// respondError answers e as JSON for the API and as an HTML page otherwise,
// for the requests no handler adapter saw: unmatched routes and panics.
func (s *Server) respondError(w http.ResponseWriter, r *http.Request, e *Error) {
	infoOf(r.Context()).code = e.Code
	if isAPI(r) {
		writeJSONError(w, r, e)
		return
	}
	s.renderError(w, r, e)
}

// unmatched answers every request that no route took. When the path exists
// under other methods it is a 405 with the Allow header that RFC 9110 asks
// for (gorilla/mux sends none); otherwise a 404.
//
// It probes the router itself rather than trusting mux's own 405 detection,
// which loses the method mismatch inside a path-prefix subrouter once a later
// route of that subrouter is tried.
func (s *Server) unmatched(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		probe := *r // a shallow copy: Match reads only the method and URL
		probe.Method = m
		var match mux.RouteMatch
		if s.router.Match(&probe, &match) && match.MatchErr == nil {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) == 0 {
		s.respondError(w, r, errorf(http.StatusNotFound, codeNotFound, "nothing here: check the path"))
		return
	}
	list := strings.Join(allowed, ", ")
	w.Header().Set("Allow", list)
	s.respondError(w, r, errorf(http.StatusMethodNotAllowed, codeMethodNotAllowed,
		"method "+strconv.Quote(r.Method)+" is not allowed here; use "+list))
}
