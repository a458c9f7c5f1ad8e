// Package ratelimit decides, in Redis, whether a client may go on: GCRA
// (go-redis/redis_rate), one atomic script and one round trip per decision,
// so that concurrent requests against a limit of N let exactly N through.
//
// Each class states what happens when Redis cannot answer within the
// decision timeout: FailOpen lets the request go on (for the general limit,
// whose job is to shed floods, not to guard anything), otherwise the request
// is refused with 503 (for signup, login and contact, where an unlimited
// window is the attack). Every decision is counted by class and outcome.
package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Class is one kind of limit.
type Class struct {
	Name     string // metric label and key prefix: "global", "signup", ...
	Rate     int    // events per Period
	Period   time.Duration
	Burst    int  // events allowed at once; Rate when 0
	FailOpen bool // allow the request when Redis cannot decide
}

// Decision is the outcome of one check.
type Decision struct {
	Allowed    bool
	Limit      int           // the burst: requests allowed at once
	Remaining  int           // requests left now
	Reset      time.Duration // until the limit is whole again
	RetryAfter time.Duration // until the next request may go, when refused
}

// Limiter makes the decisions.
type Limiter struct {
	lim       *redis_rate.Limiter
	timeout   time.Duration
	decisions *prometheus.CounterVec
}

// New returns a Limiter on rdb whose every decision takes at most timeout.
func New(rdb *redis.Client, timeout time.Duration, reg prometheus.Registerer) *Limiter {
	d := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ratelimit_decisions_total",
		Help: "Rate-limit decisions by class and outcome (allowed, limited, error).",
	}, []string{"class", "outcome"})
	reg.MustRegister(d)
	return &Limiter{lim: redis_rate.NewLimiter(rdb), timeout: timeout, decisions: d}
}

// Allow spends one event of class for key. When Redis fails, it returns the
// error with a Decision that already applies the class's failure policy.
func (l *Limiter) Allow(ctx context.Context, c Class, key string) (Decision, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	limit := redis_rate.Limit{Rate: c.Rate, Period: c.Period, Burst: c.burst()}
	res, err := l.lim.Allow(ctx, c.Name+":"+key, limit)
	if err != nil {
		l.decisions.WithLabelValues(c.Name, "error").Inc()
		return Decision{Allowed: c.FailOpen, Limit: c.burst()}, fmt.Errorf("rate limit %s: %w", c.Name, err)
	}
	d := Decision{
		Allowed:    res.Allowed > 0,
		Limit:      c.burst(),
		Remaining:  res.Remaining,
		Reset:      max(res.ResetAfter, 0),
		RetryAfter: max(res.RetryAfter, 0),
	}
	outcome := "allowed"
	if !d.Allowed {
		outcome = "limited"
	}
	l.decisions.WithLabelValues(c.Name, outcome).Inc()
	return d, nil
}

// Reset forgets what key has spent of class: a successful sign-in clears the
// failures counted against its email.
func (l *Limiter) Reset(ctx context.Context, c Class, key string) error {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	if err := l.lim.Reset(ctx, c.Name+":"+key); err != nil {
		return fmt.Errorf("rate limit %s reset: %w", c.Name, err)
	}
	return nil
}

func (c Class) burst() int {
	if c.Burst > 0 {
		return c.Burst
	}
	return c.Rate
}

// HashKey turns an arbitrary string (an email someone typed) into a short
// key of fixed length and alphabet. It is no secret: a guessed email hashes
// to the same key.
func HashKey(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}
