// Command app is the kit's web back end: pages and a JSON API on APP_LISTEN,
// metrics (and pprof in development) on APP_INTERNAL_LISTEN, data in Redis.
//
//	app                        serve until SIGTERM or SIGINT, then drain and stop
//	app healthcheck            exit 0 when the running server's /readyz answers 200
//	app useradd EMAIL NAME     create an account (an admin's), the password on stdin
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"sitekit/app/internal/account"
	"sitekit/app/internal/config"
	"sitekit/app/internal/password"
	"sitekit/app/internal/ratelimit"
	"sitekit/app/internal/redisdb"
	"sitekit/app/internal/web"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal during the drain kills the process at once
	}()
	err := run(ctx, os.Args, os.Getenv, os.Stdin, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "app:", err)
		os.Exit(1)
	}
}

// run is the whole program: config, logger, Redis, metrics, handler, servers,
// then wait for ctx to end, drain and shut down. It returns nil after a clean
// shutdown.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout io.Writer) error {
	if len(args) > 1 {
		switch args[1] {
		case "healthcheck":
			return healthcheck(ctx, getenv)
		case "useradd":
			return useradd(ctx, args[2:], getenv, stdin, stdout)
		default:
			return fmt.Errorf("unknown command %q (want no argument, healthcheck or useradd)", args[1])
		}
	}

	cfg, err := config.Load(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	log, flushLog := newLogger(cfg, stdout)
	defer flushLog()
	log.Info("starting", zap.Any("config", cfg.Fields()))

	redisdb.SetLogger(log.Named("redis"))
	rdb, err := redisdb.New(cfg.RedisURL, redisdb.Options{Timeout: cfg.RedisTimeout, PoolSize: cfg.RedisPoolSize})
	if err != nil {
		return err
	}
	defer func() { _ = rdb.Close() }()
	if err := redisdb.Ping(ctx, rdb, time.Second); err != nil {
		// Not fatal: /readyz says 503 until Redis answers, and the client
		// reconnects by itself, so the app may start before Redis does.
		log.Warn("redis not reachable yet", zap.Error(err))
	} else {
		warnSquattedAdmins(ctx, log, account.NewStore(rdb, time.Now), cfg.AdminEmails)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)
	redisdb.Instrument(rdb, reg)

	srv, err := web.New(web.Deps{
		Log:        log,
		Redis:      rdb,
		Registry:   reg,
		Hasher:     password.NewHasher(password.Params, cfg.HashConcurrency, cfg.HashWait),
		Now:        time.Now,
		BodyLimit:  cfg.BodyLimit,
		ContactMax: cfg.ContactMax,

		Production:      cfg.Production(),
		SessionIdle:     cfg.SessionIdleTimeout,
		SessionLifetime: cfg.SessionLifetime,
		Admins:          cfg.AdminEmails,
		TrustedProxies:  cfg.TrustedProxies,
		LimitTimeout:    cfg.RateLimitTimeout,
		Limits: web.Limits{
			Global:       ratelimit.Class{Name: "global", Rate: cfg.RateGlobal.N, Period: cfg.RateGlobal.Per, Burst: cfg.RateGlobalBurst, FailOpen: true},
			Signup:       ratelimit.Class{Name: "signup", Rate: cfg.RateSignup.N, Period: cfg.RateSignup.Per},
			LoginIP:      ratelimit.Class{Name: "login_ip", Rate: cfg.RateLoginIP.N, Period: cfg.RateLoginIP.Per},
			LoginEmail:   ratelimit.Class{Name: "login_email", Rate: cfg.RateLoginEmail.N, Period: cfg.RateLoginEmail.Per},
			LoginAccount: ratelimit.Class{Name: "login_account", Rate: cfg.RateLoginAccount.N, Period: cfg.RateLoginAccount.Per},
			Contact:      ratelimit.Class{Name: "contact", Rate: cfg.RateContact.N, Period: cfg.RateContact.Per},
		},
	})
	if err != nil {
		return err
	}

	// net/http's own complaints (bad requests it rejects before any handler,
	// failed handshakes) go through zap at warn.
	httpErrors, err := zap.NewStdLogAt(log.Named("http"), zap.WarnLevel)
	if err != nil {
		return err
	}
	public := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          httpErrors,
	}
	internal := &http.Server{
		Handler:           internalHandler(reg, cfg.Production()),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
	}

	publicLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on APP_LISTEN: %w", err)
	}
	internalLn, err := net.Listen("tcp", cfg.InternalListen)
	if err != nil {
		_ = publicLn.Close()
		return fmt.Errorf("listen on APP_INTERNAL_LISTEN: %w", err)
	}
	log.Info("listening", zap.String("addr", publicLn.Addr().String()), zap.String("internal_addr", internalLn.Addr().String()))

	serveErr := make(chan error, 2)
	go func() { serveErr <- public.Serve(publicLn) }()
	go func() { serveErr <- internal.Serve(internalLn) }()

	select {
	case err := <-serveErr:
		_ = public.Close()
		_ = internal.Close()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	// Drain. The public listener closes at once: the proxy's next attempt
	// to connect is refused, which it can always retry on another replica
	// (and it skips this one for a while). Requests on connections already
	// open are still served, each answered with Connection: close, so the
	// proxy's pooled connections close one by one after a response, never
	// under a request it could not retry (a POST). /readyz says 503. After
	// DrainDelay, few connections are left to close.
	log.Info("draining", zap.Duration("delay", cfg.DrainDelay))
	srv.Drain()
	_ = publicLn.Close()
	time.Sleep(cfg.DrainDelay)

	// Then close the idle connections left and give in-flight requests
	// ShutdownTimeout to finish.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	err = errors.Join(public.Shutdown(shutdownCtx), internal.Shutdown(shutdownCtx))
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}

// warnSquattedAdmins warns of each ADMIN_EMAILS address whose account came
// from public sign-up (before the address was listed) rather than from app
// useradd: it has no admin rights, and its owner is not necessarily the
// admin. The log names the entry's position, not the address.
func warnSquattedAdmins(ctx context.Context, log *zap.Logger, accounts *account.Store, admins []string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for i, email := range admins {
		u, err := accounts.ByEmail(ctx, email)
		switch {
		case errors.Is(err, account.ErrNotFound):
		case err != nil:
			log.Warn("could not check the ADMIN_EMAILS accounts", zap.Error(err))
			return
		case !u.Admin:
			log.Warn("an ADMIN_EMAILS address belongs to an account made by public sign-up, not app useradd; it has no admin rights. "+
				"Unlist the address, or give the admin another one and make that account with app useradd",
				zap.Int("admin_emails_entry", i+1), zap.String("user_id", u.ID))
		}
	}
}

// newLogger returns the one root logger, and a function that writes out what
// it still holds: JSON in production (the keys match Caddy's, so one
// pipeline reads both), readable console lines in development.
//
// In production the lines go out in batches, at least every logFlush: in the
// stack every write crosses a pipe into Docker's log path. One write per
// access line cost the app a quarter of its CPU per request, and Docker's
// engine almost as much again (scripts/bench: 98 and 59 µs against 72 and 6).
func newLogger(cfg config.Config, out io.Writer) (*zap.Logger, func()) {
	enc := zap.NewProductionEncoderConfig()
	if !cfg.Production() {
		enc.EncodeTime = zapcore.ISO8601TimeEncoder
		enc.EncodeLevel = zapcore.CapitalColorLevelEncoder
		core := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.Lock(zapcore.AddSync(out)), cfg.LogLevel)
		log := zap.New(core, zap.AddCaller())
		return log, func() { _ = log.Sync() }
	}
	ws := &zapcore.BufferedWriteSyncer{WS: zapcore.AddSync(out), Size: logBuffer, FlushInterval: logFlush}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), ws, cfg.LogLevel), zap.AddCaller())
	return log, func() { _ = ws.Stop() }
}

// The production log's batches: at most logBuffer bytes, held at most
// logFlush. A crash loses what is held; a shutdown writes it out.
const (
	logBuffer = 64 << 10
	logFlush  = 200 * time.Millisecond
)

// internalHandler serves what only operators may see: /metrics, and pprof in
// development. Caddy never routes here; in the stack the port is not published.
func internalHandler(reg *prometheus.Registry, production bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if !production {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}
