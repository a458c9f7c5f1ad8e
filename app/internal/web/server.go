// Package web is the app's HTTP layer: the routes, the handlers for pages and
// the JSON API, the error contract and the middleware around them. It is the
// only package that knows about HTTP; the domain packages (account, contact,
// password) take a context and return values and errors.
package web

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-playground/validator/v10"
	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"sitekit/app/internal/account"
	"sitekit/app/internal/contact"
	"sitekit/app/internal/password"
	"sitekit/app/internal/redisdb"
)

// Deps are what the HTTP layer needs from the program.
type Deps struct {
	Log       *zap.Logger
	Redis     *redis.Client
	Registry  prometheus.Registerer
	Hasher    *password.Hasher
	Now       func() time.Time
	BodyLimit int64 // largest JSON or form body, in bytes
}

// Server holds the handlers' dependencies and the router.
type Server struct {
	log       *zap.Logger
	redis     *redis.Client
	accounts  *account.Store
	contacts  *contact.Store
	hasher    *password.Hasher
	metrics   *httpMetrics
	pages     *renderer
	validate  *validator.Validate
	bodyLimit int64
	draining  atomic.Bool
	router    *mux.Router
}

// New returns a Server with every route installed.
func New(d Deps) (*Server, error) {
	pages, err := newRenderer()
	if err != nil {
		return nil, err
	}
	s := &Server{
		log:       d.Log.Named("web"),
		redis:     d.Redis,
		accounts:  account.NewStore(d.Redis, d.Now),
		contacts:  contact.NewStore(d.Redis),
		hasher:    d.Hasher,
		metrics:   newHTTPMetrics(d.Registry),
		pages:     pages,
		validate:  newValidator(),
		bodyLimit: d.BodyLimit,
		router:    mux.NewRouter(),
	}
	s.routes()
	return s, nil
}

// Handler returns the whole chain. The order, from the outside in, and why:
//
//  1. securityHeaders: on every response, whatever answers it.
//  2. withRequestID: every later layer, log line and error body needs the id.
//  3. observe: access log and metrics see every request, including 404s,
//     405s and panics, and measure the whole time.
//  4. recoverPanic: inside observe, so a panic is logged and counted as the
//     500 it becomes.
//  5. the router, whose own middleware (recordRoute, and per-subrouter
//     middleware such as auth) runs for matched routes only.
//
// gorilla/mux's Use does not run for unmatched routes, which is why 1–4 wrap
// the router from outside.
func (s *Server) Handler() http.Handler {
	return securityHeaders(withRequestID(s.observe(s.recoverPanic(s.router))))
}

// Drain makes /readyz answer 503 from now on, so the proxy stops sending new
// requests before the listener closes.
func (s *Server) Drain() { s.draining.Store(true) }

// readyTimeout bounds the readiness probe's Redis PING.
const readyTimeout = 500 * time.Millisecond

func (s *Server) ready(ctx context.Context) error {
	if s.draining.Load() {
		return errorf(http.StatusServiceUnavailable, codeUnavailable, "shutting down")
	}
	if err := redisdb.Ping(ctx, s.redis, readyTimeout); err != nil {
		return withCause(errUnavailable, err)
	}
	return nil
}
