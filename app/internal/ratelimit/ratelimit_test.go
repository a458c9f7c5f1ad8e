package ratelimit

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"sitekit/app/internal/redisdb"
	"sitekit/app/internal/redistest"
)

func TestExactUnderConcurrency(t *testing.T) {
	rs := redistest.Start(t)
	l := New(rs.Client(), 5*time.Second, prometheus.NewRegistry())
	class := Class{Name: "test", Rate: 7, Period: time.Hour}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			d, err := l.Allow(t.Context(), class, "k")
			if err != nil {
				t.Error(err)
			}
			if d.Allowed {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if allowed.Load() != 7 {
		t.Errorf("%d of 100 allowed; want exactly 7", allowed.Load())
	}
	d, _ := l.Allow(t.Context(), class, "k")
	if d.Allowed || d.Remaining != 0 || d.RetryAfter <= 0 || d.RetryAfter > time.Hour/7+time.Second || d.Limit != 7 {
		t.Errorf("after the burst: %+v", d)
	}
	// Another key has its own budget; Reset gives one back whole.
	if d, _ := l.Allow(t.Context(), class, "other"); !d.Allowed || d.Remaining != 6 {
		t.Errorf("other key: %+v", d)
	}
	if err := l.Reset(t.Context(), class, "k"); err != nil {
		t.Fatal(err)
	}
	if d, _ := l.Allow(t.Context(), class, "k"); !d.Allowed || d.Remaining != 6 {
		t.Errorf("after Reset: %+v", d)
	}
}

func TestFailurePolicy(t *testing.T) {
	rs := redistest.Start(t)
	// The app's own client: it honours the decision's deadline.
	rdb, err := redisdb.New(rs.URL(), redisdb.Options{Timeout: 250 * time.Millisecond, PoolSize: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	l := New(rdb, 100*time.Millisecond, prometheus.NewRegistry())
	rs.Pause() // connections stay open, nothing answers: the timeout decides
	for _, c := range []Class{{Name: "open", Rate: 1, Period: time.Second, FailOpen: true}, {Name: "closed", Rate: 1, Period: time.Second}} {
		start := time.Now()
		d, err := l.Allow(t.Context(), c, "k")
		if err == nil || d.Allowed != c.FailOpen || time.Since(start) > 500*time.Millisecond {
			t.Errorf("%s with Redis stalled: %+v, %v after %v; want an error, Allowed=%v, within the timeout", c.Name, d, err, time.Since(start), c.FailOpen)
		}
		if n := testutil.ToFloat64(l.decisions.WithLabelValues(c.Name, "error")); n != 1 {
			t.Errorf("%s errors counted = %v", c.Name, n)
		}
	}
	rs.Resume()
}

func TestHashKey(t *testing.T) {
	a, b := HashKey("ann@example.com"), HashKey("bo@example.com")
	if a == b || len(a) != 32 || a != HashKey("ann@example.com") {
		t.Errorf("HashKey: %q %q", a, b)
	}
}
