package session

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sitekit/app/internal/redistest"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newStore(t *testing.T) (*Store, *fakeClock, *redistest.Server) {
	rs := redistest.Start(t)
	clock := &fakeClock{t: time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC)}
	return NewStore(rs.Client(), clock.Now, 30*time.Minute, 12*time.Hour, prometheus.NewRegistry()), clock, rs
}

var ann = User{ID: "USERID", Email: "ann@example.com", Name: "Ann", CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}

func TestCreateLoadDelete(t *testing.T) {
	s, _, rs := newStore(t)
	ctx := t.Context()
	sess, err := s.Create(ctx, ann, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(sess.ID) != 43 {
		t.Errorf("id %q is not 256 bits in base64url", sess.ID)
	}
	got, err := s.Load(ctx, sess.ID)
	if err != nil || got.User != ann {
		t.Fatalf("Load = %+v, %v; want %+v", got.User, err, ann)
	}
	// Redis holds the hash of the id, never the id.
	keys, _ := rs.Client().Keys(ctx, "*").Result()
	for _, k := range keys {
		if strings.Contains(k, sess.ID) {
			t.Errorf("Redis key %q holds the session id", k)
		}
	}
	if len(keys) != 1 || keys[0] != key(sess.ID) {
		t.Errorf("keys = %v", keys)
	}
	if err := s.Delete(ctx, sess.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, sess.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Load after Delete = %v; want ErrNotFound", err)
	}
	// The account's admin flag travels with the session.
	root := User{ID: "ROOTID", Email: "root@example.com", Name: "Root", Admin: true, CreatedAt: ann.CreatedAt}
	sess, err = s.Create(ctx, root, "")
	if got, _ := s.Load(ctx, sess.ID); err != nil || got.User != root {
		t.Errorf("Load = %+v, %v; want %+v", got.User, err, root)
	}
}

func TestRotation(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := t.Context()
	old, _ := s.Create(ctx, ann, "")
	fresh, err := s.Create(ctx, ann, old.ID)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.ID == old.ID {
		t.Fatal("sign-in kept the old id")
	}
	if _, err := s.Load(ctx, old.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("old session after rotation = %v; want ErrNotFound", err)
	}
	if _, err := s.Load(ctx, fresh.ID); err != nil {
		t.Errorf("new session: %v", err)
	}
}

func TestIdleTimeoutSlides(t *testing.T) {
	s, clock, _ := newStore(t)
	ctx := t.Context()
	sess, _ := s.Create(ctx, ann, "")
	// Used every 20 minutes, it stays alive well past 30 minutes.
	for range 5 {
		clock.Advance(20 * time.Minute)
		if _, err := s.Load(ctx, sess.ID); err != nil {
			t.Fatalf("session used within the idle timeout ended: %v", err)
		}
	}
	// Left alone for 30 minutes, it ends.
	clock.Advance(30 * time.Minute)
	if _, err := s.Load(ctx, sess.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("after 30 idle minutes = %v; want ErrNotFound", err)
	}
}

func TestAbsoluteLifetime(t *testing.T) {
	s, clock, _ := newStore(t)
	ctx := t.Context()
	sess, _ := s.Create(ctx, ann, "")
	// Used every 10 minutes, it still ends 12 hours after sign-in.
	var err error
	elapsed := time.Duration(0)
	for err == nil && elapsed <= 13*time.Hour {
		clock.Advance(10 * time.Minute)
		elapsed += 10 * time.Minute
		_, err = s.Load(ctx, sess.ID)
	}
	if !errors.Is(err, ErrNotFound) || elapsed != 12*time.Hour {
		t.Errorf("session ended after %v with %v; want exactly 12h, ErrNotFound", elapsed, err)
	}
}

func TestLoadRejectsForeignIDs(t *testing.T) {
	s, _, _ := newStore(t)
	for _, id := range []string{"", "short", strings.Repeat("A", 43)} {
		if _, err := s.Load(t.Context(), id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Load(%q) = %v", id, err)
		}
	}
}
