// Package account stores user accounts in Redis.
//
// Keys: user:{id} is a hash with the account's fields; user:email:{email}
// maps a normalised email to its id and is what makes an email unique;
// users:created is a sorted set of ids by creation time, for listing.
package account

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Errors callers tell apart.
var (
	ErrEmailTaken = errors.New("email already registered")
	ErrNotFound   = errors.New("user not found")
)

// User is an account. PasswordHash is a PHC string; it never leaves the app.
type User struct {
	ID           string
	Email        string
	Name         string
	PasswordHash string
	CreatedAt    time.Time
}

// Store keeps accounts in Redis.
type Store struct {
	rdb *redis.Client
	now func() time.Time
}

// NewStore returns a Store on rdb that stamps accounts with now.
func NewStore(rdb *redis.Client, now func() time.Time) *Store {
	return &Store{rdb: rdb, now: now}
}

// NormalizeEmail is the one form of an email that uniqueness and look-ups use.
func NormalizeEmail(email string) string {
	return strings.ToLower(strings.TrimSpace(email))
}

// NewID returns a random, opaque id: 130 bits as 26 base32 characters, so ids
// cannot be guessed or enumerated.
func NewID() string { return rand.Text() }

// ValidID reports whether id has NewID's form, so that garbage from a URL never
// reaches Redis as a key.
func ValidID(id string) bool {
	if len(id) != 26 {
		return false
	}
	for _, c := range id {
		if (c < 'A' || c > 'Z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

// createScript claims the email and writes the account in one atomic step, so
// two concurrent signups with one email cannot both succeed. Running it twice
// with the same id is harmless: when the email is already ours it reports
// success again and changes nothing.
var createScript = redis.NewScript(`
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
  return 0
end
redis.call('HSET', KEYS[2], 'id', ARGV[1], 'email', ARGV[2], 'name', ARGV[3], 'password_hash', ARGV[4], 'created_at', ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
return 1
`)

// Create stores a new account for email (already normalised), name and
// passwordHash. It returns ErrEmailTaken when the email has an account.
func (s *Store) Create(ctx context.Context, email, name, passwordHash string) (User, error) {
	u := User{
		ID:           NewID(),
		Email:        email,
		Name:         name,
		PasswordHash: passwordHash,
		CreatedAt:    s.now().UTC().Truncate(time.Millisecond),
	}
	ms := u.CreatedAt.UnixMilli()
	ok, err := createScript.Run(ctx, s.rdb,
		[]string{emailKey(email), userKey(u.ID), "users:created"},
		u.ID, u.Email, u.Name, u.PasswordHash, ms).Int()
	if err != nil {
		return User{}, fmt.Errorf("create user: %w", err)
	}
	if ok == 0 {
		return User{}, ErrEmailTaken
	}
	return u, nil
}

// Get returns the account with id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (User, error) {
	if !ValidID(id) {
		return User{}, ErrNotFound
	}
	vals, err := s.rdb.HGetAll(ctx, userKey(id)).Result()
	if err != nil {
		return User{}, fmt.Errorf("get user: %w", err)
	}
	if len(vals) == 0 {
		return User{}, ErrNotFound
	}
	ms, err := strconv.ParseInt(vals["created_at"], 10, 64)
	if err != nil {
		return User{}, fmt.Errorf("get user %s: bad created_at: %w", id, err)
	}
	return User{
		ID:           vals["id"],
		Email:        vals["email"],
		Name:         vals["name"],
		PasswordHash: vals["password_hash"],
		CreatedAt:    time.UnixMilli(ms).UTC(),
	}, nil
}

func userKey(id string) string     { return "user:" + id }
func emailKey(email string) string { return "user:email:" + email }
