package contact

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"sitekit/app/internal/redistest"
)

func TestAddAndList(t *testing.T) {
	rs := redistest.Start(t)
	s := NewStore(rs.Client(), 1000)
	ctx := t.Context()
	var ids []string
	for i := range 5 {
		id, err := s.Add(ctx, Message{Name: fmt.Sprint("n", i), Email: "e@example.com", Message: fmt.Sprint("m", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	got, _, err := s.List(ctx, "", 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].ID != ids[4] || got[2].ID != ids[2] || got[0].Message != "m4" || got[0].CreatedAt.IsZero() {
		t.Errorf("List(3) = %+v; want the last three, newest first", got)
	}
	// Append-only: every message is still there.
	if n, _ := rs.Client().XLen(ctx, streamKey).Result(); n != 5 {
		t.Errorf("stream has %d entries; want 5", n)
	}
}

func TestList(t *testing.T) {
	rs := redistest.Start(t)
	s := NewStore(rs.Client(), 1000)
	ctx := t.Context()
	for i := range 5 {
		if _, err := s.Add(ctx, Message{Name: "n", Email: "e@example.com", Message: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	cursor := ""
	for {
		msgs, next, err := s.List(ctx, cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			got = append(got, m.Message)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if fmt.Sprint(got) != "[4 3 2 1 0]" {
		t.Errorf("paged = %v; want all five, newest first", got)
	}
	for _, bad := range []string{"x", "1-", "1-2-3", "-1-2"} {
		if _, _, err := s.List(ctx, bad, 2); err != ErrBadCursor {
			t.Errorf("List(%q) = %v; want ErrBadCursor", bad, err)
		}
	}
}

// At its cap the stream refuses new messages, even 50 sent at once, and
// keeps every old one; a deleted message makes room for one more.
func TestCap(t *testing.T) {
	rs := redistest.Start(t)
	s := NewStore(rs.Client(), 5)
	ctx := t.Context()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ids []string
	full := 0
	for i := range 50 {
		wg.Go(func() {
			id, err := s.Add(ctx, Message{Name: "n", Email: "e@example.com", Message: fmt.Sprint(i)})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, ErrFull):
				full++
			case err != nil:
				t.Error(err)
			default:
				ids = append(ids, id)
			}
		})
	}
	wg.Wait()
	if len(ids) != 5 || full != 45 {
		t.Fatalf("50 adds at a cap of 5: %d kept, %d refused as full; want 5 and 45", len(ids), full)
	}
	for _, bad := range []string{"", "nope", "1-2-3", "99-0"} {
		if err := s.Delete(ctx, bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("Delete(%q) = %v; want ErrNotFound", bad, err)
		}
	}
	if err := s.Delete(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(ctx, Message{Name: "n", Email: "e@example.com", Message: "after"}); err != nil {
		t.Errorf("Add after a delete = %v; want room for one", err)
	}
	if _, err := s.Add(ctx, Message{Name: "n", Email: "e@example.com", Message: "one too many"}); !errors.Is(err, ErrFull) {
		t.Errorf("Add at the cap again = %v; want ErrFull", err)
	}
}
