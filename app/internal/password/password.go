// Package password hashes and checks passwords with argon2id, and bounds how
// many hashes run at once: each takes about 19 MiB and a core for tens of
// milliseconds, so an unbounded burst of signups or logins could exhaust the
// container's memory.
package password

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/alexedwards/argon2id"
	"golang.org/x/sync/semaphore"
)

// Params is OWASP's first argon2id choice (m=19 MiB, t=2, p=1). The result is
// a PHC string, so the parameters travel with each hash and can be raised
// later without breaking existing accounts.
var Params = argon2id.Params{Memory: 19456, Iterations: 2, Parallelism: 1, SaltLength: 16, KeyLength: 32}

// ErrBusy means every hashing slot stayed taken for the whole wait.
var ErrBusy = errors.New("password hashing is at capacity")

// Hasher hashes and verifies passwords, at most a fixed number at once.
type Hasher struct {
	params argon2id.Params
	slots  *semaphore.Weighted
	wait   time.Duration
	dummy  string // a hash to verify against when there is no user
}

// NewHasher returns a Hasher that runs at most concurrency hashes at once (one
// per CPU when concurrency is 0) and makes a caller wait at most wait for a slot.
func NewHasher(params argon2id.Params, concurrency int, wait time.Duration) *Hasher {
	if concurrency <= 0 {
		concurrency = runtime.GOMAXPROCS(0)
	}
	// The dummy hash is made now, with the same parameters, so the first
	// sign-in attempt on an unknown email costs no more than any other.
	dummy, err := argon2id.CreateHash("no user has this password", &params)
	if err != nil {
		panic(fmt.Sprintf("argon2id with params %+v: %v", params, err)) // bad parameters: a programming error
	}
	return &Hasher{params: params, slots: semaphore.NewWeighted(int64(concurrency)), wait: wait, dummy: dummy}
}

// Hash returns the PHC string of password's argon2id hash.
func (h *Hasher) Hash(ctx context.Context, password string) (string, error) {
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.slots.Release(1)
	return argon2id.CreateHash(password, &h.params)
}

// Verify reports whether password matches the PHC string hash. With an
// empty hash (no such user) it does the same work against a dummy hash and
// reports false, so the time taken does not tell whether a user exists.
func (h *Hasher) Verify(ctx context.Context, password, hash string) (bool, error) {
	if err := h.acquire(ctx); err != nil {
		return false, err
	}
	defer h.slots.Release(1)
	if hash == "" {
		_, err := argon2id.ComparePasswordAndHash(password, h.dummy)
		return false, err
	}
	return argon2id.ComparePasswordAndHash(password, hash)
}

func (h *Hasher) acquire(ctx context.Context) error {
	waitCtx, cancel := context.WithTimeout(ctx, h.wait)
	defer cancel()
	if err := h.slots.Acquire(waitCtx, 1); err != nil {
		if ctx.Err() != nil {
			return ctx.Err() // the caller gave up first: not a capacity problem
		}
		return fmt.Errorf("wait for a hashing slot: %w", ErrBusy)
	}
	return nil
}
