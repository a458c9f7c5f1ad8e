// Package config loads the app's configuration from the environment into one
// typed struct, validates it, and describes it with secrets masked.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zapcore"
)

// The two environments. Production turns on JSON logs and refuses unsafe
// settings (a Redis URL without a real password); development allows them and
// serves pprof on the internal listener.
const (
	Development = "development"
	Production  = "production"
)

// Config is everything the app reads from its environment. Field comments name
// the variable; the README's configuration table lists the same.
type Config struct {
	Env            string        // APP_ENV
	Listen         string        // APP_LISTEN: the public listener, reached only by Caddy in the stack
	InternalListen string        // APP_INTERNAL_LISTEN: /metrics, and pprof in development
	RedisURL       string        // REDIS_URL
	RedisTimeout   time.Duration // REDIS_TIMEOUT: dial, read, write and pool wait, each
	RedisPoolSize  int           // REDIS_POOL_SIZE
	LogLevel       zapcore.Level // LOG_LEVEL

	ReadHeaderTimeout time.Duration // APP_READ_HEADER_TIMEOUT
	ReadTimeout       time.Duration // APP_READ_TIMEOUT
	WriteTimeout      time.Duration // APP_WRITE_TIMEOUT
	IdleTimeout       time.Duration // APP_IDLE_TIMEOUT: longer than Caddy's upstream keep-alive
	MaxHeaderBytes    int           // APP_MAX_HEADER_BYTES
	BodyLimit         int64         // APP_BODY_LIMIT: largest JSON or form body, in bytes
	DrainDelay        time.Duration // APP_DRAIN_DELAY: how long /readyz says 503 before the listener closes
	ShutdownTimeout   time.Duration // APP_SHUTDOWN_TIMEOUT: deadline for in-flight requests after the drain

	HashConcurrency int           // APP_HASH_CONCURRENCY: password hashes at once (0: one per CPU)
	HashWait        time.Duration // APP_HASH_WAIT: how long a request waits for a hashing slot before 503
}

// placeholderWords mark a password copied from an example or a template
// (".env.example" says "change-me-..."); in production such a password is as
// good as none, however long it is.
var placeholderWords = []string{
	"changeme", "change-me", "change_me", "replaceme", "replace-me", "replace_me",
	"placeholder", "example", "password", "passw0rd", "secret", "foobared", "default", "xxxxx",
}

// isPlaceholder reports whether pw looks like one of placeholderWords' sort.
func isPlaceholder(pw string) bool {
	lower := strings.ToLower(pw)
	for _, w := range placeholderWords {
		if strings.Contains(lower, w) {
			return true
		}
	}
	return false
}

// Load reads the configuration through getenv (os.Getenv in main, a map in
// tests) and validates it. The error names every bad variable and how to fix it.
func Load(getenv func(string) string) (Config, error) {
	l := loader{getenv: getenv}
	c := Config{
		Env:            l.str("APP_ENV", Development),
		Listen:         l.addr("APP_LISTEN", ":3000"),
		InternalListen: l.addr("APP_INTERNAL_LISTEN", ":9100"),
		RedisURL:       l.str("REDIS_URL", "redis://localhost:6379/0"),
		RedisTimeout:   l.duration("REDIS_TIMEOUT", 250*time.Millisecond, 10*time.Millisecond, 400*time.Millisecond),
		RedisPoolSize:  l.integer("REDIS_POOL_SIZE", 20, 1, 1000),
		LogLevel:       l.level("LOG_LEVEL", zapcore.InfoLevel),

		ReadHeaderTimeout: l.duration("APP_READ_HEADER_TIMEOUT", 5*time.Second, time.Second, time.Minute),
		ReadTimeout:       l.duration("APP_READ_TIMEOUT", 15*time.Second, time.Second, 10*time.Minute),
		WriteTimeout:      l.duration("APP_WRITE_TIMEOUT", 30*time.Second, time.Second, 10*time.Minute),
		IdleTimeout:       l.duration("APP_IDLE_TIMEOUT", 120*time.Second, time.Second, time.Hour),
		MaxHeaderBytes:    l.integer("APP_MAX_HEADER_BYTES", 32<<10, 4<<10, 1<<20),
		BodyLimit:         int64(l.integer("APP_BODY_LIMIT", 64<<10, 1<<10, 10<<20)),
		DrainDelay:        l.duration("APP_DRAIN_DELAY", 5*time.Second, 0, 5*time.Minute),
		ShutdownTimeout:   l.duration("APP_SHUTDOWN_TIMEOUT", 10*time.Second, time.Second, 5*time.Minute),

		HashConcurrency: l.integer("APP_HASH_CONCURRENCY", 0, 0, 64),
		HashWait:        l.duration("APP_HASH_WAIT", time.Second, 0, time.Minute),
	}
	if c.Env != Development && c.Env != Production {
		l.fail("APP_ENV", c.Env, `set it to "development" or "production"`)
	}
	l.checkRedisURL(c.RedisURL, c.Env == Production)
	return c, errors.Join(l.errs...)
}

// Production reports whether the app runs in production mode.
func (c Config) Production() bool { return c.Env == Production }

// Fields describes the configuration for the start-up log line. The Redis
// password is masked; nothing else here is secret.
func (c Config) Fields() map[string]any {
	return map[string]any{
		"env":                 c.Env,
		"listen":              c.Listen,
		"internal_listen":     c.InternalListen,
		"redis_url":           MaskURL(c.RedisURL),
		"redis_timeout":       c.RedisTimeout.String(),
		"redis_pool_size":     c.RedisPoolSize,
		"log_level":           c.LogLevel.String(),
		"read_header_timeout": c.ReadHeaderTimeout.String(),
		"read_timeout":        c.ReadTimeout.String(),
		"write_timeout":       c.WriteTimeout.String(),
		"idle_timeout":        c.IdleTimeout.String(),
		"max_header_bytes":    c.MaxHeaderBytes,
		"body_limit":          c.BodyLimit,
		"drain_delay":         c.DrainDelay.String(),
		"shutdown_timeout":    c.ShutdownTimeout.String(),
		"hash_concurrency":    c.HashConcurrency,
		"hash_wait":           c.HashWait.String(),
	}
}

// MaskURL returns u with its password replaced by "xxxxx", for logs and errors.
// A lone user name ("redis://s3cret@host", a password written without its
// colon) is masked too, since it may well be the secret.
func MaskURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	if p.User != nil {
		if _, hasPassword := p.User.Password(); !hasPassword {
			p.User = url.User("xxxxx")
		}
	}
	return p.Redacted()
}

// loader collects every problem, so one start-up reports all of them.
type loader struct {
	getenv func(string) string
	errs   []error
}

func (l *loader) fail(name, value, fix string) {
	l.errs = append(l.errs, fmt.Errorf("%s=%q is invalid: %s", name, value, fix))
}

func (l *loader) str(name, def string) string {
	if v := strings.TrimSpace(l.getenv(name)); v != "" {
		return v
	}
	return def
}

func (l *loader) addr(name, def string) string {
	v := l.str(name, def)
	if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
		l.fail(name, v, `use host:port, for example ":3000" or "127.0.0.1:3000"`)
	}
	return v
}

func (l *loader) duration(name string, def, lo, hi time.Duration) time.Duration {
	v := l.getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < lo || d > hi {
		l.fail(name, v, fmt.Sprintf("use a Go duration between %v and %v, for example %q", lo, hi, def.String()))
		return def
	}
	return d
}

func (l *loader) integer(name string, def, lo, hi int) int {
	v := l.getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		l.fail(name, v, fmt.Sprintf("use a whole number between %d and %d", lo, hi))
		return def
	}
	return n
}

func (l *loader) level(name string, def zapcore.Level) zapcore.Level {
	v := l.getenv(name)
	if v == "" {
		return def
	}
	lvl, err := zapcore.ParseLevel(v)
	if err != nil {
		l.fail(name, v, "use debug, info, warn or error")
		return def
	}
	return lvl
}

func (l *loader) checkRedisURL(u string, production bool) {
	opts, err := redis.ParseURL(u)
	if err != nil {
		// The parse error may quote the URL, password and all: say only what is wrong.
		l.fail("REDIS_URL", MaskURL(u), "use redis://[user:password@]host:port/db or rediss:// for TLS")
		return
	}
	if !production {
		return
	}
	const generate = "; generate one with: openssl rand -hex 32"
	switch {
	case opts.Password == "":
		l.fail("REDIS_URL", MaskURL(u), "production needs a Redis password: redis://user:PASSWORD@host:6379/0")
	case isPlaceholder(opts.Password):
		l.fail("REDIS_URL", MaskURL(u), "the Redis password is a placeholder from an example"+generate)
	case len(opts.Password) < 16:
		l.fail("REDIS_URL", MaskURL(u), "the Redis password is shorter than 16 characters"+generate)
	}
}
