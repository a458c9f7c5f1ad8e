// Package contact stores the messages people send through the contact form and
// API, append-only, in the Redis stream contact:messages. A stream keeps every
// entry in order with a time-based id and is persisted like any other key, so
// nothing is trimmed or overwritten.
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

// Store appends and reads contact messages.
type Store struct {
	rdb *redis.Client
}

// NewStore returns a Store on rdb.
func NewStore(rdb *redis.Client) *Store { return &Store{rdb: rdb} }

// Add appends m and returns its id.
func (s *Store) Add(ctx context.Context, m Message) (string, error) {
	id, err := s.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: streamKey,
		Values: []string{"name", m.Name, "email", m.Email, "message", m.Message},
	}).Result()
	if err != nil {
		return "", fmt.Errorf("add contact message: %w", err)
	}
	return id, nil
}

// ErrBadCursor means a paging cursor is not a stream id.
var ErrBadCursor = errors.New("invalid cursor")

// List returns up to limit messages, newest first, older than cursor (a
// message id; empty for the first page), and the next page's cursor (empty
// on the last page).
func (s *Store) List(ctx context.Context, cursor string, limit int) ([]Message, string, error) {
	start := "+"
	if cursor != "" {
		var ms, seq uint64
		if n, err := fmt.Sscanf(cursor, "%d-%d", &ms, &seq); err != nil || n != 2 || fmt.Sprintf("%d-%d", ms, seq) != cursor {
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
