// Package contact stores the messages people send through the contact form and
// API, append-only, in the Redis stream contact:messages. A stream keeps every
// entry in order with a time-based id and is persisted like any other key, so
// nothing is trimmed or overwritten: at its cap the stream refuses new
// messages (ErrFull) until an admin deletes some, rather than drop old ones
// or grow until Redis's maxmemory stops every other write of the app.
package contact

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

const streamKey = "contact:messages"

// Message is one contact message.
type Message struct {
	ID        string // the stream entry's id, set by Redis
	Name      string
	Email     string
	Message   string
	CreatedAt time.Time
}

// Errors callers tell apart.
var (
	ErrFull     = errors.New("the contact inbox is full")
	ErrNotFound = errors.New("contact message not found")
)

// Store appends and reads contact messages.
type Store struct {
	rdb *redis.Client
	max int
}

// NewStore returns a Store on rdb that holds at most max messages.
func NewStore(rdb *redis.Client, max int) *Store { return &Store{rdb: rdb, max: max} }

// addScript appends a message unless the stream holds ARGV[1] already, in
// one atomic step, so concurrent adds cannot pass the cap together.
var addScript = redis.NewScript(`
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', 'name', ARGV[2], 'email', ARGV[3], 'message', ARGV[4])
`)

// Add appends m and returns its id, or ErrFull at the cap.
func (s *Store) Add(ctx context.Context, m Message) (string, error) {
	id, err := addScript.Run(ctx, s.rdb, []string{streamKey}, s.max, m.Name, m.Email, m.Message).Text()
	if errors.Is(err, redis.Nil) {
		return "", ErrFull
	}
	if err != nil {
		return "", fmt.Errorf("add contact message: %w", err)
	}
	return id, nil
}

// Delete removes the message with id, or returns ErrNotFound.
func (s *Store) Delete(ctx context.Context, id string) error {
	if !validID(id) {
		return ErrNotFound
	}
	n, err := s.rdb.XDel(ctx, streamKey, id).Result()
	if err != nil {
		return fmt.Errorf("delete contact message: %w", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// validID reports whether id is a stream id as Redis writes them, ms-seq.
func validID(id string) bool {
	var ms, seq uint64
	n, err := fmt.Sscanf(id, "%d-%d", &ms, &seq)
	return err == nil && n == 2 && fmt.Sprintf("%d-%d", ms, seq) == id
}

// ErrBadCursor means a paging cursor is not a stream id.
var ErrBadCursor = errors.New("invalid cursor")

// List returns up to limit messages, newest first, older than cursor (a
// message id; empty for the first page), and the next page's cursor (empty
// on the last page).
func (s *Store) List(ctx context.Context, cursor string, limit int) ([]Message, string, error) {
	start := "+"
	if cursor != "" {
		if !validID(cursor) {
			return nil, "", ErrBadCursor
		}
		start = "(" + cursor
	}
	msgs, err := s.read(ctx, start, int64(limit+1))
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(msgs) > limit {
		msgs = msgs[:limit]
		next = msgs[limit-1].ID
	}
	return msgs, next, nil
}

func (s *Store) read(ctx context.Context, start string, n int64) ([]Message, error) {
	entries, err := s.rdb.XRevRangeN(ctx, streamKey, start, "-", n).Result()
	if err != nil {
		return nil, fmt.Errorf("read contact messages: %w", err)
	}
	out := make([]Message, 0, len(entries))
	for _, e := range entries {
		m := Message{ID: e.ID}
		m.Name, _ = e.Values["name"].(string)
		m.Email, _ = e.Values["email"].(string)
		m.Message, _ = e.Values["message"].(string)
		var ms, seq int64
		if _, err := fmt.Sscanf(e.ID, "%d-%d", &ms, &seq); err == nil {
			m.CreatedAt = time.UnixMilli(ms).UTC()
		}
		out = append(out, m)
	}
	return out, nil
}
