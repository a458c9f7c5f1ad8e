package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"sitekit/app/internal/password"
	"sitekit/app/internal/ratelimit"
	"sitekit/app/internal/redisdb"
	"sitekit/app/internal/redistest"
)

func TestMain(m *testing.M) {
	// The outage tests make go-redis complain about every failed dial; the
	// tests assert on the app's own logs instead.
	redisdb.SetLogger(zap.NewNop())
	os.Exit(m.Run())
}

// cheapParams keep most tests fast; the tests that are about hashing use
// password.Params, the production ones.
var cheapParams = argon2id.Params{Memory: 64, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}

// testEnv is the app's real HTTP stack on a real Redis, with its logs kept in
// memory for assertions.
type testEnv struct {
	t     testing.TB
	redis *redistest.Server
	srv   *Server
	h     http.Handler
	logs  *observer.ObservedLogs
	reg   *prometheus.Registry
}

type envOption func(*envConfig)

type envConfig struct {
	hasher       *password.Hasher
	redisTimeout time.Duration // the client's dial, read, write and pool timeouts
	limitTimeout time.Duration // Deps.LimitTimeout
	deps         func(*Deps)   // changes to the defaults below, made last
	bodyLimit    int64
	before       func(*Server)     // runs before the chain is built, to add test-only routes
	log          *zap.Logger       // nil: logs are kept in memory for assertions
	redis        *redistest.Server // nil: a new one
}

func withHasher(h *password.Hasher) envOption { return func(c *envConfig) { c.hasher = h } }
func withDeps(f func(*Deps)) envOption        { return func(c *envConfig) { c.deps = f } }

// withProductionTimeouts uses the production defaults for the Redis client
// (250 ms) and rate-limit decisions (100 ms), for the tests about what a slow
// Redis does. The others get generous timeouts, so that a starved CPU under
// -race cannot turn a correctness test into a timing one.
func withProductionTimeouts() envOption {
	return func(c *envConfig) { c.redisTimeout, c.limitTimeout = 250*time.Millisecond, 100*time.Millisecond }
}

// unlimited is a rate-limit class no test reaches by accident; the tests of
// limits set their own.
func unlimited(name string, failOpen bool) ratelimit.Class {
	return ratelimit.Class{Name: name, Rate: 1_000_000, Period: time.Second, FailOpen: failOpen}
}
func withRoutes(f func(*Server)) envOption { return func(c *envConfig) { c.before = f } }

// withRedis runs the app on rs, another env's Redis: a restart with a new
// configuration on the same data.
func withRedis(rs *redistest.Server) envOption { return func(c *envConfig) { c.redis = rs } }

// withProductionLogs writes logs as production does, JSON at info, but to
// io.Discard: for benchmarks, where keeping every entry would skew memory.
func withProductionLogs() envOption {
	return func(c *envConfig) {
		c.log = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zapcore.InfoLevel))
	}
}

func newTestEnv(t testing.TB, opts ...envOption) *testEnv {
	t.Helper()
	cfg := envConfig{
		hasher:       password.NewHasher(cheapParams, 4, 5*time.Second),
		redisTimeout: 2 * time.Second,
		limitTimeout: 2 * time.Second,
		bodyLimit:    64 << 10,
	}
	for _, o := range opts {
		o(&cfg)
	}
	rs := cfg.redis
	if rs == nil {
		rs = redistest.Start(t)
	}
	rdb, err := redisdb.New(rs.URL(), redisdb.Options{Timeout: cfg.redisTimeout, PoolSize: 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	if cfg.log != nil {
		log = cfg.log
	}
	reg := prometheus.NewRegistry()
	redisdb.Instrument(rdb, reg)
	deps := Deps{
		Log:             log,
		Redis:           rdb,
		Registry:        reg,
		Hasher:          cfg.hasher,
		Now:             time.Now,
		BodyLimit:       cfg.bodyLimit,
		ContactMax:      1000,
		SessionIdle:     30 * time.Minute,
		SessionLifetime: 12 * time.Hour,
		LimitTimeout:    cfg.limitTimeout,
		Limits: Limits{
			Global:       unlimited("global", true),
			Signup:       unlimited("signup", false),
			LoginIP:      unlimited("login_ip", false),
			LoginEmail:   unlimited("login_email", false),
			LoginAccount: unlimited("login_account", false),
			Contact:      unlimited("contact", false),
		},
	}
	if cfg.deps != nil {
		cfg.deps(&deps)
	}
	srv, err := New(deps)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.before != nil {
		cfg.before(srv)
	}
	return &testEnv{t: t, redis: rs, srv: srv, h: srv.Handler(), logs: logs, reg: reg}
}

// do sends one request through the whole chain. A JSON body gets the JSON
// content type unless headers say otherwise; headers come in name, value pairs.
func (e *testEnv) do(method, path, body string, headers ...string) *http.Response {
	e.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, r)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, req)
	return w.Result()
}

func readBody(t testing.TB, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// logText is every logged message and field, for "never logged" assertions.
func (e *testEnv) logText() string {
	var sb strings.Builder
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	for _, entry := range e.logs.All() {
		buf, err := enc.EncodeEntry(entry.Entry, entry.Context)
		if err != nil {
			e.t.Fatal(err)
		}
		sb.Write(buf.Bytes())
		buf.Free()
	}
	return sb.String()
}

// metricSum adds up every series of the metric family name in reg.
func metricSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

// seriesCount is the number of series of the metric family name in reg.
func seriesCount(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return len(f.GetMetric())
		}
	}
	return 0
}
