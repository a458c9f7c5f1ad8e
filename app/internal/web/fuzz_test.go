package web

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"sitekit/app/internal/clientip"
)

// FuzzDecodeJSON feeds the one JSON decoder arbitrary bodies: it must never
// panic, and every failure must be a client error (400 or 413) in the error
// contract, never a 500.
func FuzzDecodeJSON(f *testing.F) {
	for _, seed := range []string{
		validUser, `{}`, `[]`, `null`, `{"email":5}`, `{"a":1}`, `{} {}`, `{}x`, `{"email":"\u0000"}`,
		`{"email":"a@b.co","password":"` + strings.Repeat("x", 200) + `"}`, `{"name":{"nested":[1,2,3]}}`, "\xff\xfe",
	} {
		f.Add([]byte(seed))
	}
	const limit = 1 << 10
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("POST", "/api/users", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		var in createUserRequest
		err := decodeJSON(httptest.NewRecorder(), req, limit, &in)
		if err == nil {
			if len(body) > limit {
				t.Fatalf("accepted a %d-byte body over the %d-byte limit", len(body), limit)
			}
			return
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("error %v is not an *Error", err)
		}
		if e.Status != http.StatusBadRequest && e.Status != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d for body %q; want 400 or 413", e.Status, body)
		}
		if e.Message == "" || !utf8.ValidString(e.Message) {
			t.Fatalf("message %q", e.Message)
		}
	})
}

// FuzzRequestID checks that whatever a client sends as X-Request-ID, the id
// the app uses is short and of safe characters, and is kept only when the
// incoming one already was.
func FuzzRequestID(f *testing.F) {
	for _, seed := range []string{"", "abc", "0f8fad5b-d9cb-469f-a165-70867728950e", "a\nb", strings.Repeat("z", 65), "é"} {
		f.Add(seed)
	}
	var got string
	s := &Server{clientIPs: clientip.NewResolver(nil)}
	h := s.withRequestInfo(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = requestID(r.Context()) }))
	f.Fuzz(func(t *testing.T, in string) {
		req := httptest.NewRequest("GET", "/", nil)
		req.Header["X-Request-Id"] = []string{in}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if !validRequestID(got) || len(got) > 64 {
			t.Fatalf("request id %q from %q is not safe", got, in)
		}
		for _, c := range got {
			if !strings.ContainsRune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.", c) {
				t.Fatalf("request id %q has %q", got, c)
			}
		}
		if w.Header().Get("X-Request-ID") != got {
			t.Fatalf("echoed %q, used %q", w.Header().Get("X-Request-ID"), got)
		}
		if validRequestID(in) != (got == in) {
			t.Fatalf("in %q, got %q", in, got)
		}
	})
}
