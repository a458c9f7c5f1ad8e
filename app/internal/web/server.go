// Package web is the app's HTTP layer: the routes, the handlers for pages and
// the JSON API, the error contract and the middleware around them. It is the
// only package that knows about HTTP; the domain packages (account, contact,
// password) take a context and return values and errors.
package web

import (
	"context"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/go-playground/validator/v10"
	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"sitekit/app/internal/account"
	"sitekit/app/internal/clientip"
	"sitekit/app/internal/contact"
	"sitekit/app/internal/password"
	"sitekit/app/internal/ratelimit"
	"sitekit/app/internal/redisdb"
	"sitekit/app/internal/session"
)

// Deps are what the HTTP layer needs from the program.
type Deps struct {
	Log        *zap.Logger
	Redis      *redis.Client
	Registry   prometheus.Registerer
	Hasher     *password.Hasher
	Now        func() time.Time
	BodyLimit  int64 // largest JSON or form body, in bytes
	ContactMax int   // contact messages kept at most; then POST /contact answers 503

	Production      bool // cookies: __Host- and Secure in production only
	SessionIdle     time.Duration
	SessionLifetime time.Duration
	Admins          []string // normalised emails
	TrustedProxies  []netip.Prefix
	Limits          Limits
	LimitTimeout    time.Duration
}

// Limits are the rate-limit classes the routes use.
type Limits struct {
	Global       ratelimit.Class // every request, per client IP; fails open
	Signup       ratelimit.Class // per client IP; fails closed
	LoginIP      ratelimit.Class // per client IP; fails closed
	LoginEmail   ratelimit.Class // failed sign-ins per target email and client, or per browser that signed in to it; fails closed
	LoginAccount ratelimit.Class // sign-ins per target email from all clients without its device cookie; fails closed
	Contact      ratelimit.Class // per client IP; fails closed
}

// Server holds the handlers' dependencies and the router.
type Server struct {
	log          *zap.Logger
	redis        *redis.Client
	accounts     *account.Store
	contacts     *contact.Store
	sessions     *session.Store
	limiter      *ratelimit.Limiter
	limits       Limits
	clientIPs    *clientip.Resolver
	hasher       *password.Hasher
	metrics      *httpMetrics
	pages        *renderer
	validate     *validator.Validate
	csrf         *http.CrossOriginProtection
	admins       map[string]bool
	cookieName   string // the session's
	deviceCookie string // the browser's, for sign-in limits (authenticate)
	secure       bool
	bodyLimit    int64
	draining     atomic.Bool
	router       *mux.Router
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
		contacts:  contact.NewStore(d.Redis, d.ContactMax),
		sessions:  session.NewStore(d.Redis, d.Now, d.SessionIdle, d.SessionLifetime, d.Registry),
		limiter:   ratelimit.New(d.Redis, d.LimitTimeout, d.Registry),
		limits:    d.Limits,
		clientIPs: clientip.NewResolver(d.TrustedProxies),
		csrf:      http.NewCrossOriginProtection(),
		admins:    map[string]bool{},
		secure:    d.Production,
		hasher:    d.Hasher,
		metrics:   newHTTPMetrics(d.Registry),
		pages:     pages,
		validate:  newValidator(),
		bodyLimit: d.BodyLimit,
		router:    mux.NewRouter(),
	}
	for _, a := range d.Admins {
		s.admins[a] = true
	}
	// The __Host- prefix makes browsers refuse the cookie unless it is Secure,
	// has Path=/ and no Domain: no subdomain or plain-http page can set or
	// shadow it. Plain http on localhost in development cannot be Secure.
	s.cookieName, s.deviceCookie = "session", "device"
	if d.Production {
		s.cookieName, s.deviceCookie = "__Host-session", "__Host-device"
	}
	s.csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.respondError(w, r, errorf(http.StatusForbidden, codeForbidden, "cross-origin request refused"))
	}))
	// Readiness as a metric, for Prometheus: Caddy finds replicas by DNS and
	// does not probe /readyz, so the AppNotReady alert reads this instead.
	d.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "app_ready",
		Help: "1 when the app can serve (Redis answers and it is not draining), as /readyz says; 0 otherwise.",
	}, func() float64 {
		if s.ready(context.Background()) != nil {
			return 0
		}
		return 1
	}))
	s.routes()
	return s, nil
}

// Handler returns the whole chain. The order, from the outside in, and why:
//
//  1. securityHeaders: on every response, whatever answers it.
//  2. withRequestInfo: the request id and the client IP, which every later
//     layer, log line and error body uses.
//  3. observe: access log and metrics see every request, including 404s,
//     405s, panics and refusals, and measure the whole time.
//  4. recoverPanic: inside observe, so a panic is logged and counted as the
//     500 it becomes.
//  5. limitGlobal: the per-IP flood limit, before any other work is done.
//  6. s.csrf: cross-origin state-changing requests stop here, before any
//     handler or session lookup.
//  7. the router, whose own middleware (recordRoute, loadSession on pages and
//     API, per-route limits and auth) runs for matched routes only.
//
// gorilla/mux's Use does not run for unmatched routes, which is why 1–6 wrap
// the router from outside.
func (s *Server) Handler() http.Handler {
	return s.closeWhenDraining(securityHeaders(s.withRequestInfo(s.observe(s.recoverPanic(s.limitGlobal(s.csrf.Handler(s.router)))))))
}

// Drain makes /readyz answer 503 (and app_ready 0) from now on, and every
// response close its connection: the caller closes its listener, and the
// proxy's pooled connections to this replica then close cleanly, each after
// a response (see main's drain).
func (s *Server) Drain() { s.draining.Store(true) }

// closeWhenDraining asks the client to close the connection after the
// response once Drain was called (net/http closes it when a handler sets
// Connection: close).
func (s *Server) closeWhenDraining(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
}

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
