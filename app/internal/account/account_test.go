package account

import (
	"errors"
	"testing"
	"time"

	"sitekit/app/internal/redistest"
)

func TestStore(t *testing.T) {
	rs := redistest.Start(t)
	now := time.Date(2026, 11, 29, 10, 0, 0, 123456789, time.UTC)
	s := NewStore(rs.Client(), func() time.Time { return now })
	ctx := t.Context()

	u, err := s.Create(ctx, "ann@example.com", "Ann", "$argon2id$hash")
	if err != nil {
		t.Fatal(err)
	}
	if !ValidID(u.ID) || !u.CreatedAt.Equal(now.Truncate(time.Millisecond)) {
		t.Errorf("created = %+v", u)
	}
	got, err := s.Get(ctx, u.ID)
	if err != nil || got != u {
		t.Errorf("Get = %+v, %v; want %+v", got, err, u)
	}
	if _, err := s.Create(ctx, "ann@example.com", "Other", "$argon2id$other"); !errors.Is(err, ErrEmailTaken) {
		t.Errorf("second Create = %v; want ErrEmailTaken", err)
	}
	// The failed Create wrote nothing: one account, one index entry.
	if n, _ := rs.Client().ZCard(ctx, "users:created").Result(); n != 1 {
		t.Errorf("users:created has %d members", n)
	}
	// A create that runs twice with one id (a retry) succeeds both times and
	// writes one account.
	id := NewID()
	keys := []string{emailKey("bo@example.com"), userKey(id), "users:created"}
	for range 2 {
		if n, err := createScript.Run(ctx, rs.Client(), keys, id, "bo@example.com", "Bo", "h", 1).Int(); n != 1 || err != nil {
			t.Fatalf("create script = %d, %v; want 1 both times", n, err)
		}
	}
	if n, _ := rs.Client().ZCard(ctx, "users:created").Result(); n != 2 {
		t.Errorf("users:created has %d members after a repeated create; want 2", n)
	}

	for _, id := range []string{"", "nope", NewID()} {
		if _, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) = %v; want ErrNotFound", id, err)
		}
	}
}

func TestIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		if !ValidID(id) || seen[id] {
			t.Fatalf("id %q invalid or repeated", id)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "abc", "aaaaaaaaaaaaaaaaaaaaaaaaaa", "AAAAAAAAAAAAAAAAAAAAAAAAA1", "AAAAAAAAAAAAAAAAAAAAAAAAAAA"} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
}

func TestNormalizeEmail(t *testing.T) {
	if got := NormalizeEmail("  Ann@Example.COM \t"); got != "ann@example.com" {
		t.Errorf("NormalizeEmail = %q", got)
	}
}
