// Package redisdb opens the app's Redis client with the timeouts that make its
// failure policy hold, classifies Redis failures, and exports the client's
// health as Prometheus metrics.
//
// The policy: when Redis is down or slow, every command fails within about
// two timeouts (a pool wait and a dial or read; under 600 ms with the default
// 250 ms), callers answer 503 instead of hanging, and the client reconnects by
// itself when Redis comes back, without a restart.
package redisdb

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"
)

// Options are the settings New needs besides the URL.
type Options struct {
	Timeout  time.Duration // dial, read, write and pool wait, each
	PoolSize int
}

// New returns a client for url (redis:// or rediss://, with an optional ACL
// user and password). It does not connect: the first command does.
func New(url string, o Options) (*redis.Client, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, errors.New("parse REDIS_URL: invalid URL") // the cause may quote the password
	}
	opts.DialTimeout = o.Timeout
	opts.ReadTimeout = o.Timeout
	opts.WriteTimeout = o.Timeout
	opts.PoolTimeout = o.Timeout
	opts.PoolSize = o.PoolSize
	// Connections dialled at start and kept: a replica that has just started
	// (a deploy, a restart after a crash) meets its first burst of requests
	// with connections already signed in, not with dozens of dials at once.
	opts.MinIdleConns = max(1, o.PoolSize/4)
	// No retries. go-redis retries a command whose reply timed out after it
	// was sent, and the app's writes (a signup, an XADD) must not run twice:
	// a request that meets a dead or stalled Redis fails once, fast, and the
	// client decides. The pool drops connections Redis closed before reuse,
	// so a Redis restart costs no failed request by itself.
	opts.MaxRetries = -1
	opts.DialerRetries = 1
	// A caller's deadline (a readiness probe's, a cancelled request's) cuts a
	// command short too.
	opts.ContextTimeoutEnabled = true
	// Skip the optional handshake commands (CLIENT SETINFO, CLIENT
	// MAINT_NOTIFICATIONS) that Redis 7.0, Debian's, answers with errors: they
	// would count as command errors on every new connection.
	opts.DisableIdentity = true
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return redis.NewClient(opts), nil
}

// Unavailable reports whether err means Redis could not be reached or did not
// answer in time, as opposed to a bug or a bad command. Callers answer 503 for
// these and 500 for the rest.
func Unavailable(err error) bool {
	var netErr net.Error
	switch {
	case err == nil:
		return false
	case errors.As(err, &netErr),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, redis.ErrPoolTimeout),
		errors.Is(err, redis.ErrClosed),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE):
		return true
	}
	// Redis answers these while it starts, fails over or runs out of memory,
	// and when the app's credentials are wrong: each leaves the app unable to
	// serve until an operator or Redis itself acts, which is what 503 says.
	for _, prefix := range []string{"LOADING", "MASTERDOWN", "BUSY ", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "OOM", "NOAUTH", "WRONGPASS", "NOPERM"} {
		if redis.HasErrorPrefix(err, prefix) {
			return true
		}
	}
	return false
}

// Instrument registers the client's pool gauges and counters on reg and adds
// a hook that counts failed commands by command name.
func Instrument(c *redis.Client, reg prometheus.Registerer) {
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "redis_command_errors_total",
		Help: "Redis commands that failed, by command; a missing key (redis.Nil) and NOSCRIPT are not failures.",
	}, []string{"command"})
	reg.MustRegister(errs, &poolCollector{client: c})
	c.AddHook(errorHook{errs: errs})
}

type errorHook struct{ errs *prometheus.CounterVec }

func (h errorHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h errorHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		// go-redis records a dial or pool failure on cmd only after the hooks
		// have returned, so count the error next returns.
		err := next(ctx, cmd)
		h.count(cmd, err)
		return err
	}
}

func (h errorHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			h.count(cmd, cmp.Or(cmd.Err(), err))
		}
		return err
	}
}

func (h errorHook) count(cmd redis.Cmder, err error) {
	// redis.Nil is a missing key, and NOSCRIPT is the cue for go-redis to send
	// a script body after its hash: neither is a failure.
	if err != nil && !errors.Is(err, redis.Nil) && !redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Command names come from our code, not from users: a small, fixed set.
		h.errs.WithLabelValues(cmd.Name()).Inc()
	}
}

var (
	poolConns = prometheus.NewDesc("redis_pool_connections",
		"Connections in the Redis pool, by state.", []string{"state"}, nil)
	poolHits = prometheus.NewDesc("redis_pool_hits_total",
		"Times a free connection was found in the pool.", nil, nil)
	poolMisses = prometheus.NewDesc("redis_pool_misses_total",
		"Times no free connection was in the pool and a new one was dialled.", nil, nil)
	poolTimeouts = prometheus.NewDesc("redis_pool_timeouts_total",
		"Times a command gave up waiting for a pool connection.", nil, nil)
	poolStale = prometheus.NewDesc("redis_pool_stale_connections_total",
		"Stale connections removed from the pool.", nil, nil)
)

// poolCollector reads the pool's own counters at scrape time, so nothing is
// counted twice and nothing runs between scrapes.
type poolCollector struct{ client *redis.Client }

func (p *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{poolConns, poolHits, poolMisses, poolTimeouts, poolStale} {
		ch <- d
	}
}

func (p *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := p.client.PoolStats()
	ch <- prometheus.MustNewConstMetric(poolConns, prometheus.GaugeValue, float64(s.IdleConns), "idle")
	ch <- prometheus.MustNewConstMetric(poolConns, prometheus.GaugeValue, max(0, float64(s.TotalConns)-float64(s.IdleConns)), "in_use")
	ch <- prometheus.MustNewConstMetric(poolHits, prometheus.CounterValue, float64(s.Hits))
	ch <- prometheus.MustNewConstMetric(poolMisses, prometheus.CounterValue, float64(s.Misses))
	ch <- prometheus.MustNewConstMetric(poolTimeouts, prometheus.CounterValue, float64(s.Timeouts))
	ch <- prometheus.MustNewConstMetric(poolStale, prometheus.CounterValue, float64(s.StaleConns))
}

// Ping checks that Redis answers within timeout.
func Ping(ctx context.Context, c *redis.Client, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis ping: %w", err)
	}
	return nil
}

// SetLogger sends go-redis's own messages (failed dials, pool trouble) to log
// at warn level instead of the standard logger on stderr. go-redis keeps its
// logger in a package variable, so this is process-wide: call it once, from
// main's run.
func SetLogger(log *zap.Logger) {
	redis.SetLogger(zapPrintf{log.Sugar()})
}

type zapPrintf struct{ log *zap.SugaredLogger }

func (z zapPrintf) Printf(_ context.Context, format string, v ...any) {
	z.log.Warnf(format, v...)
}
