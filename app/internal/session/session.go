// Package session keeps signed-in sessions in Redis.
//
// A session id is 256 random bits and lives only in the client's cookie;
// Redis holds the session under the SHA-256 of the id, so a dump of Redis
// hands out no live session. Expiry follows the injected clock: a session
// ends after IdleTimeout without use (sliding) or Lifetime after it began,
// whichever comes first. Redis's own TTL only collects the garbage.
//
// The session carries a snapshot of the user's public fields, taken at
// sign-in, so that an authenticated request costs one Redis round trip for
// the session and none for the user.
package session

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// ErrNotFound means there is no live session for the id: never created,
// logged out, or expired.
var ErrNotFound = errors.New("no such session")

// User is the snapshot of a user that a session carries. Admin is the
// account's flag (account.User.Admin), not yet the right: that also needs the
// email in ADMIN_EMAILS, which the app checks on every request.
type User struct {
	ID        string
	Email     string
	Name      string
	Admin     bool
	CreatedAt time.Time
}

// Session is a live session. ID is the secret the cookie holds.
type Session struct {
	ID        string
	User      User
	CreatedAt time.Time
}

// Store creates, loads and deletes sessions.
type Store struct {
	rdb      *redis.Client
	now      func() time.Time
	idle     time.Duration
	lifetime time.Duration
	ops      *prometheus.CounterVec
}

// NewStore returns a Store whose sessions end after idle without use or
// lifetime after they began, by the clock now.
func NewStore(rdb *redis.Client, now func() time.Time, idle, lifetime time.Duration, reg prometheus.Registerer) *Store {
	ops := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "session_operations_total",
		Help: "Session operations by operation (create, load, delete) and outcome (ok, missing, expired, error).",
	}, []string{"operation", "outcome"})
	reg.MustRegister(ops)
	return &Store{rdb: rdb, now: now, idle: idle, lifetime: lifetime, ops: ops}
}

// Lifetime is the absolute lifetime, for the cookie's Max-Age.
func (s *Store) Lifetime() time.Duration { return s.lifetime }

func key(id string) string { return "session:" + digest(id) }

// digest is what Redis holds in place of a secret token: its SHA-256, hex.
func digest(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// newToken is 256 random bits in base64url (43 characters): a session id
// or a device token.
func newToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(b)
}

// Create starts a session for u. When replace names a current session (the
// id from the request's cookie), it is deleted in the same round trip: a
// sign-in always gets a fresh id, so an id planted before sign-in is useless.
func (s *Store) Create(ctx context.Context, u User, replace string) (Session, error) {
	sess := Session{ID: newToken(), User: u, CreatedAt: s.now()}
	now := strconv.FormatInt(sess.CreatedAt.UnixMilli(), 10)
	admin := "0"
	if u.Admin {
		admin = "1"
	}
	k := key(sess.ID)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		if replace != "" {
			p.Del(ctx, key(replace))
		}
		p.HSet(ctx, k,
			"user_id", u.ID, "email", u.Email, "name", u.Name,
			"user_created_at", strconv.FormatInt(u.CreatedAt.UnixMilli(), 10),
			"admin", admin, "created_at", now, "last_seen", now)
		p.PExpire(ctx, k, min(s.idle, s.lifetime))
		return nil
	})
	if err != nil {
		s.ops.WithLabelValues("create", "error").Inc()
		return Session{}, fmt.Errorf("create session: %w", err)
	}
	s.ops.WithLabelValues("create", "ok").Inc()
	return sess, nil
}

// loadScript checks the session against the caller's clock, slides its idle
// timeout and returns it, in one round trip. It returns nil for a missing
// session and {0} for one that just expired (and deletes it). A session made
// before sessions carried the admin flag has none: it is no admin's until
// its user signs in again.
var loadScript = redis.NewScript(`
local s = redis.call('HMGET', KEYS[1], 'user_id', 'email', 'name', 'user_created_at', 'created_at', 'last_seen', 'admin')
if not s[1] then return false end
local now, idle, lifetime = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local created, last = tonumber(s[5]), tonumber(s[6])
if now - last >= idle or now - created >= lifetime then
  redis.call('DEL', KEYS[1])
  return {0}
end
redis.call('HSET', KEYS[1], 'last_seen', ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.min(idle, created + lifetime - now))
return {1, s[1], s[2], s[3], s[4], s[5], s[7] or '0'}
`)

// Load returns the live session with id and marks it used, or ErrNotFound.
func (s *Store) Load(ctx context.Context, id string) (Session, error) {
	if len(id) != 43 { // base64 of 32 bytes; anything else was never ours
		s.ops.WithLabelValues("load", "missing").Inc()
		return Session{}, ErrNotFound
	}
	v, err := loadScript.Run(ctx, s.rdb, []string{key(id)},
		s.now().UnixMilli(), s.idle.Milliseconds(), s.lifetime.Milliseconds()).Slice()
	switch {
	case errors.Is(err, redis.Nil):
		s.ops.WithLabelValues("load", "missing").Inc()
		return Session{}, ErrNotFound
	case err != nil:
		s.ops.WithLabelValues("load", "error").Inc()
		return Session{}, fmt.Errorf("load session: %w", err)
	case len(v) == 1:
		s.ops.WithLabelValues("load", "expired").Inc()
		return Session{}, ErrNotFound
	case len(v) != 7:
		s.ops.WithLabelValues("load", "error").Inc()
		return Session{}, fmt.Errorf("load session: unexpected reply %v", v)
	}
	str := func(i int) string { x, _ := v[i].(string); return x }
	ms := func(i int) time.Time { n, _ := strconv.ParseInt(str(i), 10, 64); return time.UnixMilli(n).UTC() }
	s.ops.WithLabelValues("load", "ok").Inc()
	return Session{
		ID:        id,
		User:      User{ID: str(1), Email: str(2), Name: str(3), Admin: str(6) == "1", CreatedAt: ms(4)},
		CreatedAt: ms(5),
	}, nil
}

// Delete ends the session with id at once: a copy of its cookie is dead.
func (s *Store) Delete(ctx context.Context, id string) error {
	if err := s.rdb.Del(ctx, key(id)).Err(); err != nil {
		s.ops.WithLabelValues("delete", "error").Inc()
		return fmt.Errorf("delete session: %w", err)
	}
	s.ops.WithLabelValues("delete", "ok").Inc()
	return nil
}
