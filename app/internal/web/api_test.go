package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"sitekit/app/internal/password"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

const validUser = `{"email":"Ann@Example.com ","password":"correct horse battery","name":"Ann"}`

func decode[T any](t testing.TB, resp *http.Response) T {
	t.Helper()
	var v T
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("decode %T: %v", v, err)
	}
	return v
}

func TestAPIStatuses(t *testing.T) {
	e := newTestEnv(t)
	created := e.do("POST", "/api/users", validUser)
	if created.StatusCode != http.StatusCreated {
		t.Fatalf("create user: %d %s", created.StatusCode, readBody(t, created))
	}
	user := decode[userJSON](t, created)
	long := strings.Repeat("x", 129)

	tests := []struct {
		name, method, path, body string
		headers                  []string
		want                     int
		wantCode                 string
	}{
		{"create user", "POST", "/api/users", `{"email":"bo@example.com","password":"correct horse battery","name":"Bo"}`, nil, 201, ""},
		{"duplicate email, other case and spaces", "POST", "/api/users", `{"email":"  ANN@example.COM","password":"another long password","name":"A"}`, nil, 409, "conflict"},
		{"short password", "POST", "/api/users", `{"email":"c@example.com","password":"short","name":"C"}`, nil, 422, "validation_failed"},
		{"long password", "POST", "/api/users", `{"email":"c@example.com","password":"` + long + `","name":"C"}`, nil, 422, "validation_failed"},
		{"bad email", "POST", "/api/users", `{"email":"not-an-email","password":"correct horse battery","name":"C"}`, nil, 422, "validation_failed"},
		{"malformed JSON", "POST", "/api/users", `{"email":`, nil, 400, "bad_request"},
		{"empty body", "POST", "/api/users", ``, []string{"Content-Type", "application/json"}, 400, "bad_request"},
		{"unknown field", "POST", "/api/users", `{"email":"c@example.com","password":"correct horse battery","name":"C","admin":true}`, nil, 400, "bad_request"},
		{"trailing data", "POST", "/api/users", `{"email":"c@example.com","password":"correct horse battery","name":"C"} {}`, nil, 400, "bad_request"},
		{"wrong type", "POST", "/api/users", `{"email":5,"password":"correct horse battery","name":"C"}`, nil, 400, "bad_request"},
		{"array body", "POST", "/api/users", `[]`, nil, 400, "bad_request"},
		{"form body", "POST", "/api/users", `email=x`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"},
		{"no content type", "POST", "/api/contact", `{}`, []string{"Content-Type", ""}, 415, "unsupported_media_type"},
		{"json with latin1 charset", "POST", "/api/contact", `{}`, []string{"Content-Type", "application/json; charset=latin1"}, 415, "unsupported_media_type"},
		{"get user", "GET", "/api/users/" + user.ID, "", nil, 200, ""},
		{"head user", "HEAD", "/api/users/" + user.ID, "", nil, 200, ""},
		{"unknown user", "GET", "/api/users/AAAAAAAAAAAAAAAAAAAAAAAAAA", "", nil, 404, "not_found"},
		{"malformed user id", "GET", "/api/users/not-an-id", "", nil, 404, "not_found"},
		{"unknown API path", "GET", "/api/nope", "", nil, 404, "not_found"},
		{"unclean path", "POST", "/api//users", validUser, nil, 404, "not_found"},
		{"dot segments", "GET", "/api/users/../users", "", nil, 404, "not_found"},
		{"API root", "GET", "/api", "", nil, 404, "not_found"},
		{"wrong method on a collection", "DELETE", "/api/users", "", nil, 405, "method_not_allowed"},
		{"wrong method on an item", "PUT", "/api/users/" + user.ID, "", nil, 405, "method_not_allowed"},
		{"contact", "POST", "/api/contact", `{"name":"Bo","email":"bo@example.com","message":"Hello"}`, nil, 202, ""},
		{"contact, charset utf-8", "POST", "/api/contact", `{"name":"Bo","email":"bo@example.com","message":"Hello"}`, []string{"Content-Type", "application/json; charset=UTF-8"}, 202, ""},
		{"contact with NUL", "POST", "/api/contact", `{"name":"Bo\u0000","email":"bo@example.com","message":"Hi"}`, nil, 422, "validation_failed"},
		{"contact with bidi override", "POST", "/api/contact", `{"name":"Bo","email":"bo@example.com","message":"Hi \u202e there"}`, nil, 422, "validation_failed"},
		{"contact with line breaks", "POST", "/api/contact", `{"name":"Bo","email":"bo@example.com","message":"Hi\nthere\ttab"}`, nil, 202, ""},
		{"contact missing message", "POST", "/api/contact", `{"name":"Bo","email":"bo@example.com","message":"   "}`, nil, 422, "validation_failed"},
		{"contact too long", "POST", "/api/contact", `{"name":"Bo","email":"bo@example.com","message":"` + strings.Repeat("m", 5001) + `"}`, nil, 422, "validation_failed"},
		{"healthz", "GET", "/healthz", "", nil, 200, ""},
		{"readyz", "GET", "/readyz", "", nil, 200, ""},
		{"readyz wrong method", "POST", "/readyz", "", nil, 405, "method_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.do(tt.method, tt.path, tt.body, tt.headers...)
			body := readBody(t, resp)
			if resp.StatusCode != tt.want {
				t.Fatalf("%s %s = %d %s; want %d", tt.method, tt.path, resp.StatusCode, body, tt.want)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type = %q", ct)
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Content-Security-Policy") == "" {
				t.Errorf("security headers missing: %v", resp.Header)
			}
			if tt.wantCode == "" {
				return
			}
			var eb errorBody
			if err := json.Unmarshal([]byte(body), &eb); err != nil {
				t.Fatalf("error body %q: %v", body, err)
			}
			if eb.Code != tt.wantCode || eb.RequestID == "" || eb.RequestID != resp.Header.Get("X-Request-ID") || eb.Details == nil {
				t.Errorf("error body = %+v; want code %q, the response's request id and a details list", eb, tt.wantCode)
			}
		})
	}
}

func TestCreateUserResponse(t *testing.T) {
	e := newTestEnv(t)
	resp := e.do("POST", "/api/users", validUser)
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if got["email"] != "ann@example.com" || got["name"] != "Ann" {
		t.Errorf("user = %v; want the normalised email and the name", got)
	}
	for _, secret := range []string{"password", "password_hash", "correct horse", "argon2id"} {
		if strings.Contains(body, secret) {
			t.Errorf("response body holds %q: %s", secret, body)
		}
	}
	id, _ := got["id"].(string)
	if loc := resp.Header.Get("Location"); loc != "/api/users/"+id || len(id) != 26 {
		t.Errorf("Location = %q, id = %q", loc, id)
	}

	// The public view has no email.
	pub := e.do("GET", "/api/users/"+id, "")
	pubBody := readBody(t, pub)
	if strings.Contains(pubBody, "example.com") || !strings.Contains(pubBody, `"name":"Ann"`) {
		t.Errorf("public view = %s", pubBody)
	}

	// The stored hash is a PHC string with the parameters it was made with.
	hash, err := e.redis.Client().HGet(t.Context(), "user:"+id, "password_hash").Result()
	if err != nil || !strings.HasPrefix(hash, "$argon2id$v=19$") {
		t.Errorf("stored hash = %q, %v", hash, err)
	}
}

// Two signups with one email at once must give exactly one account: the
// claim on the email and the write of the account are one atomic step.
func TestConcurrentDuplicateSignup(t *testing.T) {
	e := newTestEnv(t, withHasher(password.NewHasher(password.Params, 0, time.Minute)))
	const n = 50
	statuses := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			body := fmt.Sprintf(`{"email":"race@example.com","password":"correct horse battery %d","name":"R%d"}`, i, i)
			statuses <- e.do("POST", "/api/users", body).StatusCode
		})
	}
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	if count[201] != 1 || count[409] != n-1 {
		t.Errorf("statuses = %v; want exactly one 201 and %d 409s", count, n-1)
	}
	if n, _ := e.redis.Client().ZCard(t.Context(), "users:by_created").Result(); n != 1 {
		t.Errorf("users:by_created has %d members; want 1", n)
	}
}

// When every hashing slot stays busy, a signup waits briefly and then gets
// 503 instead of queueing without bound.
func TestHashingAtCapacity(t *testing.T) {
	hasher := password.NewHasher(password.Params, 1, 10*time.Millisecond)
	e := newTestEnv(t, withHasher(hasher))
	const n = 8
	statuses := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			statuses <- e.do("POST", "/api/users", fmt.Sprintf(`{"email":"u%d@example.com","password":"correct horse battery","name":"U"}`, i)).StatusCode
		})
	}
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	if count[201] < 1 || count[503] < 1 || count[201]+count[503] != n {
		t.Errorf("statuses = %v; want some 201s, some 503s and nothing else", count)
	}
}

func TestBodyLimit(t *testing.T) {
	e := newTestEnv(t)
	big := `{"name":"Bo","email":"bo@example.com","message":"` + strings.Repeat("a", 70<<10) + `"}`
	resp := e.do("POST", "/api/contact", big)
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status = %d; want 413", resp.StatusCode)
	}
	if eb := decode[errorBody](t, resp); eb.Code != "payload_too_large" {
		t.Errorf("code = %q", eb.Code)
	}
	n, err := e.redis.Client().XLen(t.Context(), "contact:messages").Result()
	if err != nil || n != 0 {
		t.Errorf("stream length = %d, %v; want nothing stored", n, err)
	}
}

func TestContactStored(t *testing.T) {
	e := newTestEnv(t)
	resp := e.do("POST", "/api/contact", `{"name":" Bo ","email":"bo@example.com","message":"Hello there"}`)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status = %d", resp.StatusCode)
	}
	got := decode[struct{ ID string }](t, resp)
	msgs, _, err := e.srv.contacts.List(t.Context(), "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].ID != got.ID || msgs[0].Name != "Bo" || msgs[0].Message != "Hello there" {
		t.Errorf("stored = %+v; want the message with id %s", msgs, got.ID)
	}
}

// A full contact inbox refuses new messages with 503, on the API and the
// page, and nothing else: sign-up still works. An admin's delete makes room.
// Before the cap, the stream grew until Redis's maxmemory refused every
// write of the app, sign-ins and sessions included.
func TestContactInboxFull(t *testing.T) {
	e := newTestEnv(t, withDeps(func(d *Deps) { d.ContactMax = 2; d.Admins = []string{"root@example.com"} }))
	msg := `{"name":"Bo","email":"bo@example.com","message":"Hello"}`
	var ids []string
	for range 2 {
		resp := e.do("POST", "/api/contact", msg)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST /api/contact under the cap = %d", resp.StatusCode)
		}
		ids = append(ids, decode[struct{ ID string }](t, resp).ID)
	}
	if resp := e.do("POST", "/api/contact", msg, "X-Request-ID", "inbox-full"); resp.StatusCode != 503 ||
		!strings.Contains(readBody(t, resp), `"message":"the contact inbox is full; try again later"`) {
		t.Errorf("POST /api/contact at the cap = %d; want 503 saying the inbox is full", resp.StatusCode)
	}
	if resp := e.do("POST", "/contact", "name=Bo&email=bo%40example.com&message=Kept+words", "Content-Type", form); resp.StatusCode != 503 {
		t.Errorf("POST /contact at the cap = %d; want 503", resp.StatusCode)
	} else if body := readBody(t, resp); !strings.Contains(body, "the contact inbox is full") || !strings.Contains(body, "Kept words") {
		t.Errorf("POST /contact at the cap: the page does not say the inbox is full and keep the message:\n%s", body)
	}
	if logged := e.logs.FilterField(zap.String("request_id", "inbox-full")).FilterMessage("request failed").Len(); logged != 1 {
		t.Errorf("the refusal was logged %d times; want once, for the operator", logged)
	}
	e.signup("ann@example.com", pw, "Ann")

	hash, _ := e.srv.hasher.Hash(t.Context(), pw)
	if _, err := e.srv.accounts.CreateAdmin(t.Context(), "root@example.com", "Root", hash); err != nil {
		t.Fatal(err)
	}
	root, ann := e.login("root@example.com", pw), e.login("ann@example.com", pw)
	for _, c := range []struct {
		cookie, id string
		want       int
	}{
		{"", ids[0], 401}, {ann, ids[0], 403}, {root, "1-1", 404}, {root, "nope", 404}, {root, ids[0], 204}, {root, ids[0], 404},
	} {
		if r := e.do("DELETE", "/api/contact/"+c.id, "", "Cookie", c.cookie); r.StatusCode != c.want {
			t.Errorf("DELETE /api/contact/%s = %d; want %d", c.id, r.StatusCode, c.want)
		}
	}
	if resp := e.do("POST", "/api/contact", msg); resp.StatusCode != http.StatusAccepted {
		t.Errorf("POST /api/contact after a delete = %d; want 202", resp.StatusCode)
	}
}

func TestMethodNotAllowedAllowHeader(t *testing.T) {
	e := newTestEnv(t)
	tests := []struct{ method, path, allow string }{
		{"DELETE", "/api/users", "GET, HEAD, POST"},
		{"POST", "/api/users/AAAAAAAAAAAAAAAAAAAAAAAAAA", "GET, HEAD"},
		{"PUT", "/api/contact", "GET, HEAD, POST"},
		{"GET", "/api/sessions", "POST"},
		{"POST", "/api/me", "GET, HEAD"},
		{"DELETE", "/contact", "GET, HEAD, POST"},
		{"POST", "/about", "GET, HEAD"},
	}
	for _, tt := range tests {
		resp := e.do(tt.method, tt.path, "")
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != tt.allow {
			t.Errorf("%s %s = %d Allow %q; want 405 Allow %q", tt.method, tt.path, resp.StatusCode, resp.Header.Get("Allow"), tt.allow)
		}
	}
}

// The error shape of every code, compared with golden files under
// testdata/errors (refresh them with go test -update).
func TestErrorShapeGolden(t *testing.T) {
	e := newTestEnv(t, withRoutes(func(s *Server) {
		s.router.Handle("/api/test/panic", s.api(func(http.ResponseWriter, *http.Request) error { panic("boom") }))
		s.router.Handle("/api/test/error", s.api(func(http.ResponseWriter, *http.Request) error {
			return errors.New("database exploded at 10.0.0.7")
		}))
	}))
	if r := e.do("POST", "/api/users", validUser); r.StatusCode != 201 {
		t.Fatalf("create user: %d", r.StatusCode)
	}
	cases := []struct{ name, method, path, body, contentType string }{
		{"bad_request", "POST", "/api/users", `{"email":"a@b.co","password":"correct horse battery","name":"A","role":"admin"}`, ""},
		{"not_found", "GET", "/api/users/AAAAAAAAAAAAAAAAAAAAAAAAAA", "", ""},
		{"method_not_allowed", "PATCH", "/api/users", "", ""},
		{"conflict", "POST", "/api/users", validUser, ""},
		{"payload_too_large", "POST", "/api/contact", `{"message":"` + strings.Repeat("a", 65<<10) + `"}`, ""},
		{"unsupported_media_type", "POST", "/api/contact", `name=x`, "text/plain"},
		{"validation_failed", "POST", "/api/users", `{"email":"nope","password":"short","name":""}`, ""},
		{"internal_panic", "GET", "/api/test/panic", "", ""},
		{"internal_error", "GET", "/api/test/error", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			headers := []string{"X-Request-ID", "golden-" + c.name}
			if c.contentType != "" {
				headers = append(headers, "Content-Type", c.contentType)
			}
			resp := e.do(c.method, c.path, c.body, headers...)
			checkGolden(t, filepath.Join("testdata", "errors", c.name+".json"), resp)
		})
	}

	// The 500's cause and a stack are in the log, once, with the request id.
	logged := e.logs.FilterMessage("request failed").FilterField(zap.String("request_id", "golden-internal_error")).All()
	if len(logged) != 1 || !strings.Contains(fmt.Sprint(logged[0].ContextMap()["error"]), "database exploded") ||
		!strings.Contains(fmt.Sprint(logged[0].ContextMap()["stack"]), "(*Server).adapt") {
		t.Errorf("500 log lines = %v; want one with the cause and a stack", logged)
	}

	// Redis down: the last case, since it stops Redis.
	e.redis.Stop()
	resp := e.do("POST", "/api/contact", `{"name":"Bo","email":"bo@example.com","message":"Hi"}`, "X-Request-ID", "golden-unavailable")
	checkGolden(t, filepath.Join("testdata", "errors", "unavailable.json"), resp)
}

func checkGolden(t *testing.T, file string, resp *http.Response) {
	t.Helper()
	var v any
	raw := readBody(t, resp)
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		t.Fatalf("body %q is not JSON: %v", raw, err)
	}
	got, _ := json.MarshalIndent(struct {
		Status int    `json:"status"`
		Allow  string `json:"allow,omitempty"`
		Body   any    `json:"body"`
	}{resp.StatusCode, resp.Header.Get("Allow"), v}, "", "  ")
	got = append(got, '\n')
	if *update {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("read golden file (run go test -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\ngot:\n%s\nwant:\n%s", file, got, want)
	}
}

// A panic becomes the generic 500; its id is in the logged error, the cause
// is not in the body, and the server goes on serving.
func TestPanicRecovery(t *testing.T) {
	e := newTestEnv(t, withRoutes(func(s *Server) {
		s.router.Handle("/api/test/panic", s.api(func(http.ResponseWriter, *http.Request) error {
			panic("secret internal detail")
		}))
	}))
	resp := e.do("GET", "/api/test/panic", "")
	body := readBody(t, resp)
	if resp.StatusCode != 500 || strings.Contains(body, "secret") || strings.Contains(body, "goroutine") {
		t.Fatalf("panic answered %d %s", resp.StatusCode, body)
	}
	var eb errorBody
	if err := json.Unmarshal([]byte(body), &eb); err != nil || eb.Code != "internal" || eb.Message != "internal error" {
		t.Fatalf("body = %s", body)
	}
	logged := e.logs.FilterMessage("panic in handler").FilterField(zap.String("request_id", eb.RequestID)).All()
	if len(logged) != 1 {
		t.Fatalf("want one panic log line with request_id %s, got %d", eb.RequestID, len(logged))
	}
	if ctx := logged[0].ContextMap(); !strings.Contains(fmt.Sprint(ctx["error"]), "secret internal detail") || !strings.Contains(fmt.Sprint(ctx["stack"]), "api_test.go") {
		t.Errorf("panic log = %v; want the cause and the stack", ctx)
	}
	if r := e.do("GET", "/healthz", ""); r.StatusCode != 200 {
		t.Errorf("after a panic, /healthz = %d", r.StatusCode)
	}

	// A panic after the answer began cannot become a 500: the connection is cut.
	e3 := newTestEnv(t, withRoutes(func(s *Server) {
		s.router.Handle("/api/test/half", s.api(func(w http.ResponseWriter, _ *http.Request) error {
			w.WriteHeader(200)
			_, _ = w.Write([]byte("[1,2,"))
			panic("midway")
		}))
	}))
	func() {
		defer func() {
			if v := recover(); v != http.ErrAbortHandler { //nolint:errorlint // the sentinel is panicked as is
				t.Errorf("panic after a partial answer re-panicked with %v; want http.ErrAbortHandler", v)
			}
		}()
		e3.do("GET", "/api/test/half", "")
	}()
	// The same on a page: a generic HTML 500.
	e2 := newTestEnv(t, withRoutes(func(s *Server) {
		s.router.Handle("/boom", s.page(func(http.ResponseWriter, *http.Request) error { panic("secret") }))
	}))
	page := e2.do("GET", "/boom", "")
	pageBody := readBody(t, page)
	if page.StatusCode != 500 || !strings.Contains(page.Header.Get("Content-Type"), "text/html") || strings.Contains(pageBody, "secret") ||
		!strings.Contains(pageBody, page.Header.Get("X-Request-ID")) {
		t.Errorf("page panic = %d %s", page.StatusCode, pageBody)
	}
}

// Redis stalled (paused, connections open, no answers): calls that need it
// still answer 503 in under a second, and no write is applied twice.
func TestRedisStalled(t *testing.T) {
	e := newTestEnv(t, withProductionTimeouts())
	created := decode[userJSON](t, e.do("POST", "/api/users", validUser))
	e.redis.Pause()
	calls := []struct{ method, path, body string }{
		{"POST", "/api/contact", `{"name":"Bo","email":"bo@example.com","message":"Hi"}`},
		{"POST", "/api/users", `{"email":"stall@example.com","password":"correct horse battery","name":"S"}`},
		{"GET", "/api/users/" + created.ID, ""},
		{"GET", "/readyz", ""},
	}
	for _, c := range calls {
		start := time.Now()
		resp := e.do(c.method, c.path, c.body)
		if elapsed := time.Since(start); resp.StatusCode != 503 || elapsed >= time.Second {
			t.Errorf("Redis stalled, %s %s = %d in %v; want 503 in under 1s", c.method, c.path, resp.StatusCode, elapsed)
		}
	}
	e.redis.Resume()
	deadline := time.Now().Add(5 * time.Second)
	for e.do("GET", "/readyz", "").StatusCode != 200 {
		if time.Now().After(deadline) {
			t.Fatal("not ready within 5s of Redis resuming")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A timed-out write may still land once Redis wakes, but never twice.
	rdb := e.redis.Client()
	if n, _ := rdb.XLen(t.Context(), "contact:messages").Result(); n > 1 {
		t.Errorf("one contact request stored %d messages", n)
	}
	if n, _ := rdb.ZCard(t.Context(), "users:by_created").Result(); n > 2 {
		t.Errorf("one signup stored %d accounts", n-1)
	}
}

// A client that goes away mid-request is not a server error: no 500, no
// error log, status 499 in the access log and metrics.
func TestClientGone(t *testing.T) {
	e := newTestEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	req := httptest.NewRequestWithContext(ctx, "GET", "/api/users/AAAAAAAAAAAAAAAAAAAAAAAAAA", nil)
	req.Header.Set("X-Request-ID", "gone-1")
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, req)
	if w.Code != statusClientClosed {
		t.Errorf("status = %d; want 499", w.Code)
	}
	if n := e.logs.FilterLevelExact(zapcore.ErrorLevel).Len() + e.logs.FilterLevelExact(zapcore.WarnLevel).Len(); n != 0 {
		t.Errorf("%d warn or error lines for a client that left", n)
	}
	access := e.logs.FilterMessage("handled request").FilterField(zap.String("request_id", "gone-1")).All()
	if len(access) != 1 || access[0].ContextMap()["code"] != "client_closed" {
		t.Errorf("access lines = %v", access)
	}
}

// Redis stopped mid-test: calls that need it answer 503 in under a second,
// /readyz turns 503, /healthz stays 200; Redis back: all recovers by itself
// within 5 s.
func TestRedisOutageAndRecovery(t *testing.T) {
	e := newTestEnv(t, withProductionTimeouts())
	if r := e.do("POST", "/api/users", validUser); r.StatusCode != 201 {
		t.Fatalf("create user: %d", r.StatusCode)
	}
	e.redis.Stop()

	checks := []struct {
		name, method, path, body string
		headers                  []string
		want                     int
		json                     bool
	}{
		{"signup", "POST", "/api/users", `{"email":"new@example.com","password":"correct horse battery","name":"N"}`, nil, 503, true},
		{"get user", "GET", "/api/users/AAAAAAAAAAAAAAAAAAAAAAAAAA", "", nil, 503, true},
		{"contact", "POST", "/api/contact", `{"name":"Bo","email":"bo@example.com","message":"Hi"}`, nil, 503, true},
		{"readyz", "GET", "/readyz", "", nil, 503, true},
		{"contact page", "POST", "/contact", "name=Bo&email=bo%40example.com&message=Hi", []string{"Content-Type", "application/x-www-form-urlencoded"}, 503, false},
		{"healthz", "GET", "/healthz", "", nil, 200, true},
		{"home page", "GET", "/", "", nil, 200, false},
	}
	for round := range 3 { // the first round dials; later ones meet the pool's dial backoff
		for _, c := range checks {
			start := time.Now()
			resp := e.do(c.method, c.path, c.body, c.headers...)
			elapsed := time.Since(start)
			body := readBody(t, resp)
			if resp.StatusCode != c.want || elapsed >= time.Second {
				t.Errorf("round %d, Redis down, %s: %d in %v; want %d in under 1s (%s)", round, c.name, resp.StatusCode, elapsed, c.want, body)
			}
			isJSON := strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json")
			if isJSON != c.json {
				t.Errorf("%s: Content-Type %q", c.name, resp.Header.Get("Content-Type"))
			}
			if c.want == 503 && c.json && !strings.Contains(body, `"code":"unavailable"`) {
				t.Errorf("%s: body %s", c.name, body)
			}
			if c.want == 503 && !c.json && (!strings.Contains(body, "503 · Service Unavailable") || strings.Contains(body, "refused")) {
				t.Errorf("%s: page %s", c.name, body)
			}
		}
	}
	if n := metricSum(t, e.reg, "redis_command_errors_total"); n < 9 {
		t.Errorf("redis_command_errors_total = %v; want at least one per failed Redis call (9)", n)
	}

	e.redis.Start()
	start := time.Now()
	deadline := start.Add(5 * time.Second)
	for {
		ready := e.do("GET", "/readyz", "").StatusCode == 200
		signup := ready && e.do("POST", "/api/users", `{"email":"back@example.com","password":"correct horse battery","name":"B"}`).StatusCode == 201
		if signup {
			t.Logf("recovered %v after Redis came back", time.Since(start).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not recovered within 5s of Redis coming back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := e.logs.FilterMessage("request failed").FilterField(zap.Int("status", 503)).Len(); got == 0 {
		t.Error("503s were not logged")
	}
}
