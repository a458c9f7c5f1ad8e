// Package config loads the app's configuration from the environment into one
// typed struct, validates it, and describes it with secrets masked.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zapcore"

	"sitekit/app/internal/clientip"
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
	ContactMax        int           // CONTACT_MAX_MESSAGES: messages kept at most; more are refused until an admin deletes some
	DrainDelay        time.Duration // APP_DRAIN_DELAY: how long open connections are served after SIGTERM
	ShutdownTimeout   time.Duration // APP_SHUTDOWN_TIMEOUT: deadline for in-flight requests after the drain

	HashConcurrency int           // APP_HASH_CONCURRENCY: password hashes at once (0: one per CPU)
	HashWait        time.Duration // APP_HASH_WAIT: how long a request waits for a hashing slot before 503

	SessionIdleTimeout time.Duration  // SESSION_IDLE_TIMEOUT: a session unused this long ends
	SessionLifetime    time.Duration  // SESSION_LIFETIME: a session ends this long after sign-in, used or not
	AdminEmails        []string       // ADMIN_EMAILS: comma-separated, normalised
	TrustedProxies     []netip.Prefix // TRUSTED_PROXIES: peers whose X-Forwarded-For is believed

	RateGlobal       Rate          // RATE_LIMIT_GLOBAL: every request, per client IP
	RateGlobalBurst  int           // RATE_LIMIT_GLOBAL_BURST
	RateSignup       Rate          // RATE_LIMIT_SIGNUP: per client IP
	RateLoginIP      Rate          // RATE_LIMIT_LOGIN_IP: per client IP
	RateLoginEmail   Rate          // RATE_LIMIT_LOGIN_EMAIL: failed sign-ins per target email from one client, or one browser that signed in to it
	RateLoginAccount Rate          // RATE_LIMIT_LOGIN_ACCOUNT: sign-ins per target email from every client without its device cookie
	RateContact      Rate          // RATE_LIMIT_CONTACT: per client IP
	RateLimitTimeout time.Duration // RATE_LIMIT_TIMEOUT: the longest a decision may take
}

// Rate is N events per Per, written "20/s", "5/h" or "30/15m".
type Rate struct {
	N   int
	Per time.Duration
}

func (r Rate) String() string { return fmt.Sprintf("%d/%v", r.N, r.Per) }

// ParseRate parses "N/period", where period is a Go duration ("15m") or a
// bare unit ("s", "m", "h") meaning one of it.
func ParseRate(s string) (Rate, error) {
	n, per, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Rate{}, errors.New("missing /")
	}
	count, err := strconv.Atoi(n)
	if err != nil || count < 1 {
		return Rate{}, errors.New("the count must be a whole number of at least 1")
	}
	if per != "" && (per[0] < '0' || per[0] > '9') {
		per = "1" + per
	}
	d, err := time.ParseDuration(per)
	if err != nil || d < time.Second {
		return Rate{}, errors.New("the period must be a duration of at least 1s")
	}
	return Rate{N: count, Per: d}, nil
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
	env := l.str("APP_ENV", Development)
	// Every interface only in production, where the container's network
	// is what keeps the ports private; `go run ./app` on a laptop or a
	// server listens on loopback unless told otherwise.
	host := "127.0.0.1"
	if env == Production {
		host = ""
	}
	c := Config{
		Env:            env,
		Listen:         l.addr("APP_LISTEN", host+":3000"),
		InternalListen: l.addr("APP_INTERNAL_LISTEN", host+":9100"),
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
		ContactMax:        l.integer("CONTACT_MAX_MESSAGES", 10_000, 1, 10_000_000),
		DrainDelay:        l.duration("APP_DRAIN_DELAY", 5*time.Second, 0, 5*time.Minute),
		ShutdownTimeout:   l.duration("APP_SHUTDOWN_TIMEOUT", 10*time.Second, time.Second, 5*time.Minute),

		HashConcurrency: l.integer("APP_HASH_CONCURRENCY", 0, 0, 64),
		HashWait:        l.duration("APP_HASH_WAIT", time.Second, 0, time.Minute),

		SessionIdleTimeout: l.duration("SESSION_IDLE_TIMEOUT", 30*time.Minute, time.Minute, 24*time.Hour),
		SessionLifetime:    l.duration("SESSION_LIFETIME", 12*time.Hour, time.Minute, 30*24*time.Hour),
		AdminEmails:        l.emails("ADMIN_EMAILS"),
		TrustedProxies:     l.prefixes("TRUSTED_PROXIES"),

		RateGlobal:       l.rate("RATE_LIMIT_GLOBAL", "20/s"),
		RateGlobalBurst:  l.integer("RATE_LIMIT_GLOBAL_BURST", 40, 1, 1_000_000),
		RateSignup:       l.rate("RATE_LIMIT_SIGNUP", "5/h"),
		RateLoginIP:      l.rate("RATE_LIMIT_LOGIN_IP", "30/15m"),
		RateLoginEmail:   l.rate("RATE_LIMIT_LOGIN_EMAIL", "10/15m"),
		RateLoginAccount: l.rate("RATE_LIMIT_LOGIN_ACCOUNT", "100/h"),
		RateContact:      l.rate("RATE_LIMIT_CONTACT", "5/h"),
		RateLimitTimeout: l.duration("RATE_LIMIT_TIMEOUT", 250*time.Millisecond, 10*time.Millisecond, time.Second),
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
		"contact_max":         c.ContactMax,
		"drain_delay":         c.DrainDelay.String(),
		"shutdown_timeout":    c.ShutdownTimeout.String(),
		"hash_concurrency":    c.HashConcurrency,
		"hash_wait":           c.HashWait.String(),
		"session_idle":        c.SessionIdleTimeout.String(),
		"session_lifetime":    c.SessionLifetime.String(),
		"admin_emails":        len(c.AdminEmails), // a count: who the admins are is no one's business in a log
		"trusted_proxies":     fmt.Sprint(c.TrustedProxies),
		"rate_global":         fmt.Sprintf("%v burst %d", c.RateGlobal, c.RateGlobalBurst),
		"rate_signup":         c.RateSignup.String(),
		"rate_login_ip":       c.RateLoginIP.String(),
		"rate_login_email":    c.RateLoginEmail.String(),
		"rate_login_account":  c.RateLoginAccount.String(),
		"rate_contact":        c.RateContact.String(),
		"rate_limit_timeout":  c.RateLimitTimeout.String(),
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

func (l *loader) rate(name, def string) Rate {
	v := l.str(name, def)
	r, err := ParseRate(v)
	if err != nil {
		l.fail(name, v, err.Error()+`; write N/period, for example "20/s", "5/h" or "30/15m"`)
		r, _ = ParseRate(def)
	}
	return r
}

func (l *loader) prefixes(name string) []netip.Prefix {
	v := l.getenv(name)
	p, err := clientip.ParsePrefixes(v)
	if err != nil {
		l.fail(name, v, err.Error()+`; list CIDRs or addresses, for example "172.30.0.2/32" (only your proxy)`)
	}
	return p
}

func (l *loader) emails(name string) []string {
	var out []string
	for _, e := range strings.Split(l.getenv(name), ",") {
		e = strings.ToLower(strings.TrimSpace(e)) // as account.NormalizeEmail
		if e == "" {
			continue
		}
		if !strings.Contains(e, "@") {
			l.fail(name, e, "list email addresses separated by commas")
			continue
		}
		out = append(out, e)
	}
	return out
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
