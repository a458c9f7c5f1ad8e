package account

import (
	"errors"
	"fmt"
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
	// Only CreateAdmin's accounts carry the admin flag, and the email is
	// taken whichever made it.
	if u.Admin {
		t.Error("Create made an admin account")
	}
	if _, err := s.CreateAdmin(ctx, "ann@example.com", "Ann", "h"); !errors.Is(err, ErrEmailTaken) {
		t.Errorf("CreateAdmin on a taken email = %v; want ErrEmailTaken", err)
	}
	root, err := s.CreateAdmin(ctx, "root@example.com", "Root", "h")
	if got, _ := s.ByEmail(ctx, "root@example.com"); err != nil || !root.Admin || got != root {
		t.Errorf("CreateAdmin = %+v, %v; ByEmail = %+v; want the admin flag kept", root, err, got)
	}
	// The failed Create wrote nothing: one account, one index entry.
	if n, _ := rs.Client().ZCard(ctx, byCreatedKey).Result(); n != 2 {
		t.Errorf("users:by_created has %d members; want 2", n)
	}
	// A create that runs twice with one id (a retry) succeeds both times and
	// writes one account.
	id := NewID()
	keys := []string{emailKey("bo@example.com"), userKey(id), byCreatedKey, seqKey}
	for range 2 {
		if n, err := createScript.Run(ctx, rs.Client(), keys, id, "bo@example.com", "Bo", "h", 1, "0").Int(); n != 1 || err != nil {
			t.Fatalf("create script = %d, %v; want 1 both times", n, err)
		}
	}
	if n, _ := rs.Client().ZCard(ctx, byCreatedKey).Result(); n != 3 {
		t.Errorf("users:by_created has %d members after a repeated create; want 3", n)
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

func TestList(t *testing.T) {
	rs := redistest.Start(t)
	now := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	s := NewStore(rs.Client(), func() time.Time { return now })
	ctx := t.Context()
	var ids []string
	for i := range 7 {
		if i != 3 { // two accounts in one millisecond: ties must page exactly too
			now = now.Add(time.Second)
		}
		u, err := s.Create(ctx, fmt.Sprintf("u%d@example.com", i), "U", "h")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, u.ID)
	}
	var got []string
	cursor := ""
	pages := 0
	for {
		users, next, err := s.List(ctx, cursor, 3)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, u := range users {
			got = append(got, u.ID)
		}
		if next == "" {
			break
		}
		if pages == 1 { // a signup between pages is not seen on later pages
			now = now.Add(time.Second)
			if _, err := s.Create(ctx, "late@example.com", "L", "h"); err != nil {
				t.Fatal(err)
			}
		}
		cursor = next
	}
	if pages != 3 || len(got) != 7 {
		t.Fatalf("%d pages, %d users; want 3 pages, 7 users", pages, len(got))
	}
	for i, id := range got { // newest first, exactly, the same-millisecond pair included
		if id != ids[len(ids)-1-i] {
			t.Fatalf("order = %v; want the reverse of %v", got, ids)
		}
	}
	if _, _, err := s.List(ctx, "garbage", 3); !errors.Is(err, ErrBadCursor) {
		t.Errorf("bad cursor = %v", err)
	}
}

func TestByEmail(t *testing.T) {
	rs := redistest.Start(t)
	s := NewStore(rs.Client(), time.Now)
	u, _ := s.Create(t.Context(), "ann@example.com", "Ann", "h")
	if got, err := s.ByEmail(t.Context(), "ann@example.com"); err != nil || got.ID != u.ID {
		t.Errorf("ByEmail = %+v, %v", got, err)
	}
	if _, err := s.ByEmail(t.Context(), "nobody@example.com"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ByEmail unknown = %v", err)
	}
}
