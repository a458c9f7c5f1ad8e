// Package account stores user accounts in Redis.
//
// Keys: user:{id} is a hash with the account's fields; user:email:{email}
// maps a normalised email to its id and is what makes an email unique;
// users:by_created is a sorted set of "{sequence, 16 digits}:{id}" members,
// all at score 0, so that lexical order is creation order (the sequence,
// users:seq, is counted in the same atomic step as the account is written,
// so even accounts made in the same millisecond keep their order) and a
// member is an exact cursor for paging.
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
// Admin is set only for an account made with CreateAdmin (app useradd), never
// by public sign-up: admin rights need it and the email in ADMIN_EMAILS, so
// whoever signed up with an address before an operator listed it gets none.
type User struct {
	ID           string
	Email        string
	Name         string
	PasswordHash string
	Admin        bool
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
redis.call('HSET', KEYS[2], 'id', ARGV[1], 'email', ARGV[2], 'name', ARGV[3], 'password_hash', ARGV[4], 'created_at', ARGV[5], 'admin', ARGV[6])
local seq = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[3], 0, string.format('%016d:%s', seq, ARGV[1]))
return 1
`)

// Create stores a new account for email (already normalised), name and
// passwordHash. It returns ErrEmailTaken when the email has an account.
func (s *Store) Create(ctx context.Context, email, name, passwordHash string) (User, error) {
	return s.create(ctx, User{Email: email, Name: name, PasswordHash: passwordHash})
}

// CreateAdmin is Create for an account with the admin flag: app useradd's,
// the operator's, never public sign-up's.
func (s *Store) CreateAdmin(ctx context.Context, email, name, passwordHash string) (User, error) {
	return s.create(ctx, User{Email: email, Name: name, PasswordHash: passwordHash, Admin: true})
}

func (s *Store) create(ctx context.Context, u User) (User, error) {
	u.ID = NewID()
	u.CreatedAt = s.now().UTC().Truncate(time.Millisecond)
	admin := "0"
	if u.Admin {
		admin = "1"
	}
	ok, err := createScript.Run(ctx, s.rdb,
		[]string{emailKey(u.Email), userKey(u.ID), byCreatedKey, seqKey},
		u.ID, u.Email, u.Name, u.PasswordHash, u.CreatedAt.UnixMilli(), admin).Int()
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
	return fromHash(vals)
}

// ByEmail returns the account with email (already normalised), or ErrNotFound.
func (s *Store) ByEmail(ctx context.Context, email string) (User, error) {
	id, err := s.rdb.Get(ctx, emailKey(email)).Result()
	if errors.Is(err, redis.Nil) {
		return User{}, ErrNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("find user by email: %w", err)
	}
	return s.Get(ctx, id)
}

// List returns up to limit accounts, newest first, after cursor (empty for
// the first page), and the cursor of the next page (empty on the last).
// Accounts created while a client pages are never repeated or skipped
// below the cursor.
func (s *Store) List(ctx context.Context, cursor string, limit int) ([]User, string, error) {
	start := "+"
	if cursor != "" {
		if !validMember(cursor) {
			return nil, "", ErrBadCursor
		}
		start = "(" + cursor
	}
	members, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: byCreatedKey, Start: start, Stop: "-", ByLex: true, Rev: true, Count: int64(limit + 1),
	}).Result()
	if err != nil {
		return nil, "", fmt.Errorf("list users: %w", err)
	}
	next := ""
	if len(members) > limit {
		members = members[:limit]
		next = members[limit-1]
	}
	cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, m := range members {
			p.HGetAll(ctx, userKey(m[memberPrefix:]))
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("list users: %w", err)
	}
	users := make([]User, 0, len(cmds))
	for _, c := range cmds {
		u, err := fromHash(c.(*redis.MapStringStringCmd).Val())
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		users = append(users, u)
	}
	return users, next, nil
}

// ErrBadCursor means a paging cursor is not one List handed out.
var ErrBadCursor = errors.New("invalid cursor")

func fromHash(vals map[string]string) (User, error) {
	if len(vals) == 0 {
		return User{}, ErrNotFound
	}
	ms, err := strconv.ParseInt(vals["created_at"], 10, 64)
	if err != nil {
		return User{}, fmt.Errorf("user %s: bad created_at: %w", vals["id"], err)
	}
	return User{
		ID:           vals["id"],
		Email:        vals["email"],
		Name:         vals["name"],
		PasswordHash: vals["password_hash"],
		Admin:        vals["admin"] == "1",
		CreatedAt:    time.UnixMilli(ms).UTC(),
	}, nil
}

const (
	byCreatedKey = "users:by_created"
	seqKey       = "users:seq"
	memberPrefix = 17 // "{16 digits}:"
)

func validMember(m string) bool {
	if len(m) != memberPrefix+26 || m[memberPrefix-1] != ':' || !ValidID(m[memberPrefix:]) {
		return false
	}
	for _, c := range m[:memberPrefix-1] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func userKey(id string) string     { return "user:" + id }
func emailKey(email string) string { return "user:email:" + email }
