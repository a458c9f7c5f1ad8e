package session

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// DeviceLifetime is how long a browser stays known to an account after its
// last sign-in to it: the device cookie's Max-Age and its record's TTL.
const DeviceLifetime = 180 * 24 * time.Hour

// Device records say which browsers have signed in to which accounts, as
// OWASP's device cookies do: a browser that signed in before is counted
// apart from everyone else, so that a stranger's wrong guesses cannot lock
// its owner out. A device token is 256 random bits held in the browser's
// cookie; Redis holds, under the SHA-256 of the token (as for sessions),
// one key per account it signed in to, and nothing else.

// NewDeviceToken returns a fresh token for a browser that has none.
func NewDeviceToken() string { return newToken() }

// ValidDeviceToken reports whether token has NewDeviceToken's form: anything
// else in a cookie was never ours and never reaches Redis.
func ValidDeviceToken(token string) bool {
	_, err := base64.RawURLEncoding.DecodeString(token)
	return len(token) == 43 && err == nil
}

func deviceKey(token, account string) string {
	return "device:" + digest(token) + ":" + account
}

// RememberDevice records that the browser holding token signed in to account (an
// opaque key, the hash of the email), for DeviceLifetime from now.
func (s *Store) RememberDevice(ctx context.Context, token, account string) error {
	if err := s.rdb.Set(ctx, deviceKey(token, account), "1", DeviceLifetime).Err(); err != nil {
		return fmt.Errorf("remember device: %w", err)
	}
	return nil
}

// KnownDevice reports whether the browser holding token has signed in to account
// within DeviceLifetime.
func (s *Store) KnownDevice(ctx context.Context, token, account string) (bool, error) {
	if !ValidDeviceToken(token) {
		return false, nil
	}
	// GET, not EXISTS: the app's Redis user may run only the commands the
	// app already needs (compose.yaml).
	err := s.rdb.Get(ctx, deviceKey(token, account)).Err()
	switch {
	case errors.Is(err, redis.Nil):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("look up device: %w", err)
	}
	return true, nil
}
