package redisdb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"sitekit/app/internal/redistest"
)

func TestUnavailable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{redis.Nil, false},
		{errors.New("ERR wrong number of arguments"), false},
		{fmt.Errorf("get user: %w", context.DeadlineExceeded), true},
		{fmt.Errorf("get user: %w", redis.ErrPoolTimeout), true},
		{redis.ErrClosed, true},
		{proto("LOADING Redis is loading the dataset in memory"), true},
		{proto("BUSY Redis is busy running a script"), true},
		{proto("BUSYGROUP Consumer Group name already exists"), false},
		{proto("WRONGPASS invalid username-password pair"), true},
	}
	for _, tt := range tests {
		if got := Unavailable(tt.err); got != tt.want {
			t.Errorf("Unavailable(%v) = %v; want %v", tt.err, got, tt.want)
		}
	}
}

// replyError is an error reply from Redis, as go-redis's redis.Error sees it.
type replyError string

func (e replyError) Error() string { return string(e) }
func (replyError) RedisError()     {}

func proto(msg string) error { return fmt.Errorf("some command: %w", replyError(msg)) }

// Against a real server that stops: commands fail fast as Unavailable, the
// failures are counted, and the client works again once the server is back.
func TestOutageAndRecovery(t *testing.T) {
	SetLogger(zap.NewNop())
	rs := redistest.Start(t)
	c, err := New(rs.URL(), Options{Timeout: 250 * time.Millisecond, PoolSize: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reg := prometheus.NewRegistry()
	Instrument(c, reg)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}

	rs.Stop()
	for range 10 {
		start := time.Now()
		err := c.Get(ctx, "k").Err()
		if !Unavailable(err) || time.Since(start) > time.Second {
			t.Fatalf("GET with Redis down = %v after %v; want an Unavailable error in under 1s", err, time.Since(start))
		}
	}
	want := "\n# HELP redis_command_errors_total Redis commands that failed, by command; a missing key (redis.Nil) and NOSCRIPT are not failures.\n" +
		"# TYPE redis_command_errors_total counter\nredis_command_errors_total{command=\"get\"} 10\n"
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "redis_command_errors_total"); err != nil {
		t.Errorf("error metric: %v", err)
	}
	rs.Start()
	deadline := time.Now().Add(5 * time.Second)
	for c.Get(ctx, "k").Err() != redis.Nil { // a fresh server: the key is gone
		if time.Now().After(deadline) {
			t.Fatal("client did not recover within 5s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := testutil.CollectAndCount(reg, "redis_pool_connections"); n != 2 {
		t.Errorf("redis_pool_connections has %d series; want idle and in_use", n)
	}
}
