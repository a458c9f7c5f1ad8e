package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"sitekit/app/internal/clientip"
	"sitekit/app/internal/password"
	"sitekit/app/internal/ratelimit"
)

// signup creates an account and returns its id.
func (e *testEnv) signup(email, pw, name string) string {
	e.t.Helper()
	resp := e.do("POST", "/api/users", fmt.Sprintf(`{"email":%q,"password":%q,"name":%q}`, email, pw, name))
	if resp.StatusCode != http.StatusCreated {
		e.t.Fatalf("signup %s = %d %s", email, resp.StatusCode, readBody(e.t, resp))
	}
	return decode[userJSON](e.t, resp).ID
}

// login signs in and returns the session cookie, ready for a Cookie header.
func (e *testEnv) login(email, pw string, headers ...string) string {
	e.t.Helper()
	resp := e.do("POST", "/api/sessions", fmt.Sprintf(`{"email":%q,"password":%q}`, email, pw), headers...)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("login %s = %d %s", email, resp.StatusCode, readBody(e.t, resp))
	}
	c := sessionCookie(resp)
	if c == nil {
		e.t.Fatal("login set no session cookie")
	}
	return c.Name + "=" + c.Value
}

func sessionCookie(resp *http.Response) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == "session" || c.Name == "__Host-session" {
			return c
		}
	}
	return nil
}

const pw = "correct horse battery"

func TestCookieAttributes(t *testing.T) {
	for _, production := range []bool{false, true} {
		t.Run(fmt.Sprint("production=", production), func(t *testing.T) {
			e := newTestEnv(t, withDeps(func(d *Deps) { d.Production = production }))
			e.signup("ann@example.com", pw, "Ann")
			resp := e.do("POST", "/api/sessions", `{"email":"ann@example.com","password":"`+pw+`"}`)
			c := sessionCookie(resp)
			if c == nil {
				t.Fatal("no session cookie")
			}
			wantName := map[bool]string{false: "session", true: "__Host-session"}[production]
			if c.Name != wantName || c.Secure != production || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode ||
				c.Path != "/" || c.Domain != "" || c.MaxAge != int((12*time.Hour).Seconds()) || len(c.Value) != 43 {
				t.Errorf("cookie = %+v; want %s, Secure=%v, HttpOnly, SameSite=Lax, Path=/, no Domain, Max-Age 12h", c, wantName, production)
			}
			// The Redis key is a hash of the id, not the id.
			keys, _ := e.redis.Client().Keys(t.Context(), "session:*").Result()
			if len(keys) != 1 || strings.Contains(keys[0], c.Value) {
				t.Errorf("session keys = %v; cookie value %s", keys, c.Value)
			}
			// The device cookie, for the sign-in limits, is as guarded.
			var d *http.Cookie
			for _, x := range resp.Cookies() {
				if x.Name == map[bool]string{false: "device", true: "__Host-device"}[production] {
					d = x
				}
			}
			if d == nil || d.Secure != production || !d.HttpOnly || d.SameSite != http.SameSiteLaxMode ||
				d.Path != "/" || d.Domain != "" || d.MaxAge != 180*24*3600 || len(d.Value) != 43 {
				t.Errorf("device cookie = %+v; want Secure=%v, HttpOnly, SameSite=Lax, Path=/, no Domain, Max-Age 180 days", d, production)
			} else if keys, _ := e.redis.Client().Keys(t.Context(), "device:*").Result(); len(keys) != 1 || strings.Contains(keys[0], d.Value) {
				t.Errorf("device keys = %v; cookie value %s", keys, d.Value)
			}
		})
	}
}

func TestLoginLogout(t *testing.T) {
	e := newTestEnv(t)
	id := e.signup("ann@example.com", pw, "Ann")
	if r := e.do("GET", "/api/me", ""); r.StatusCode != 401 {
		t.Errorf("me signed out = %d; want 401", r.StatusCode)
	}
	cookie := e.login(" ANN@example.com", pw)
	resp := e.do("GET", "/api/me", "", "Cookie", cookie)
	me := decode[userJSON](t, resp)
	if resp.StatusCode != 200 || me.ID != id || me.Email != "ann@example.com" || me.Name != "Ann" {
		t.Fatalf("me = %d %+v", resp.StatusCode, me)
	}

	// Rotation: signing in again with a session gets a new id, and the old
	// one is dead.
	rotated := e.login("ann@example.com", pw, "Cookie", cookie)
	if rotated == cookie {
		t.Fatal("sign-in kept the session id")
	}
	if r := e.do("GET", "/api/me", "", "Cookie", cookie); r.StatusCode != 401 {
		t.Errorf("old session after rotation = %d; want 401", r.StatusCode)
	}

	// Logout deletes the session server-side: a copied cookie is dead.
	if r := e.do("DELETE", "/api/sessions/current", "", "Cookie", rotated); r.StatusCode != 204 {
		t.Fatalf("logout = %d", r.StatusCode)
	}
	if r := e.do("GET", "/api/me", "", "Cookie", rotated); r.StatusCode != 401 {
		t.Errorf("me with a logged-out cookie = %d; want 401", r.StatusCode)
	}
}

// A wrong password and an unknown email get the same answer after the same
// work (a full argon2id verify each).
func TestLoginFailuresLookAlike(t *testing.T) {
	e := newTestEnv(t, withHasher(password.NewHasher(password.Params, 2, 10*time.Second)))
	e.signup("ann@example.com", pw, "Ann")
	attempt := func(email string) (string, time.Duration) {
		start := time.Now()
		resp := e.do("POST", "/api/sessions", fmt.Sprintf(`{"email":%q,"password":"wrong password here"}`, email), "X-Request-ID", "same")
		elapsed := time.Since(start)
		if resp.StatusCode != 401 || sessionCookie(resp) != nil {
			t.Fatalf("login %s = %d", email, resp.StatusCode)
		}
		return readBody(t, resp), elapsed
	}
	wrongBody, wrongTime := attempt("ann@example.com")
	unknownBody, unknownTime := attempt("nobody@example.com")
	if wrongBody != unknownBody || !strings.Contains(wrongBody, `"code":"unauthorized","message":"invalid email or password"`) {
		t.Errorf("bodies differ or are wrong:\n%s\n%s", wrongBody, unknownBody)
	}
	if unknownTime < wrongTime/10 || unknownTime > wrongTime*10 {
		t.Errorf("unknown email took %v, wrong password %v: the work differs", unknownTime, wrongTime)
	}
}

func TestSessionExpiryThroughRouter(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC)}
	e := newTestEnv(t, withDeps(func(d *Deps) { d.Now = clock.Now }))
	e.signup("ann@example.com", pw, "Ann")
	cookie := e.login("ann@example.com", pw)
	clock.Advance(29 * time.Minute)
	if r := e.do("GET", "/api/me", "", "Cookie", cookie); r.StatusCode != 200 {
		t.Fatalf("me after 29 idle minutes = %d", r.StatusCode)
	}
	clock.Advance(30 * time.Minute)
	r := e.do("GET", "/api/me", "", "Cookie", cookie)
	if r.StatusCode != 401 {
		t.Errorf("me after 30 idle minutes = %d; want 401", r.StatusCode)
	}
	if c := sessionCookie(r); c == nil || c.MaxAge != -1 {
		t.Errorf("an expired session's cookie was not cleared: %+v", c)
	}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// The CSRF matrix: safe methods always pass; state-changing ones pass when
// same-origin or from a non-browser client, and get 403 otherwise, as JSON
// for the API and HTML for pages.
func TestCrossOriginProtection(t *testing.T) {
	e := newTestEnv(t)
	origins := []struct {
		name    string
		headers []string
		allowed bool
	}{
		{"same-origin", []string{"Sec-Fetch-Site", "same-origin", "Origin", "http://example.com"}, true},
		{"same-origin by Origin only", []string{"Origin", "http://example.com"}, true},
		{"user typed the URL", []string{"Sec-Fetch-Site", "none"}, true},
		{"same-site", []string{"Sec-Fetch-Site", "same-site", "Origin", "http://evil.example.com"}, false},
		{"cross-site", []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://attacker.test"}, false},
		{"cross-site by Origin only", []string{"Origin", "https://attacker.test"}, false},
		{"no headers (curl, server to server)", nil, true},
	}
	targets := []struct {
		name, method, path, body, contentType string
		okStatus                              int
		json                                  bool
	}{
		{"API GET", "GET", "/api/users/AAAAAAAAAAAAAAAAAAAAAAAAAA", "", "", 404, true},
		{"API POST", "POST", "/api/contact", `{"name":"Bo","email":"bo@example.com","message":"Hi"}`, "application/json", 202, true},
		{"page GET", "GET", "/contact", "", "", 200, false},
		{"page POST", "POST", "/contact", "name=Bo&email=bo%40example.com&message=Hi", form, 303, false},
		{"API DELETE", "DELETE", "/api/sessions/current", "", "", 204, true},
		{"API PUT", "PUT", "/api/contact", "", "", 405, true},
		{"API PATCH", "PATCH", "/api/users", "", "", 405, true},
		{"API HEAD", "HEAD", "/api/users/AAAAAAAAAAAAAAAAAAAAAAAAAA", "", "", 404, true},
		{"page OPTIONS", "OPTIONS", "/contact", "", "", 405, false},
	}
	for _, o := range origins {
		for _, tg := range targets {
			t.Run(o.name+"/"+tg.name, func(t *testing.T) {
				req := httptest.NewRequest(tg.method, tg.path, strings.NewReader(tg.body))
				req.Host = "example.com"
				if tg.contentType != "" {
					req.Header.Set("Content-Type", tg.contentType)
				}
				for i := 0; i+1 < len(o.headers); i += 2 {
					req.Header.Set(o.headers[i], o.headers[i+1])
				}
				w := httptest.NewRecorder()
				e.h.ServeHTTP(w, req)
				safe := tg.method == "GET" || tg.method == "HEAD" || tg.method == "OPTIONS"
				want := tg.okStatus
				if !safe && !o.allowed {
					want = 403
				}
				if w.Code != want {
					t.Fatalf("status = %d; want %d (%s)", w.Code, want, w.Body)
				}
				if want == 403 && tg.method != "HEAD" {
					isJSON := strings.HasPrefix(w.Header().Get("Content-Type"), "application/json")
					if isJSON != tg.json || (tg.json && !strings.Contains(w.Body.String(), `"code":"forbidden"`)) ||
						(!tg.json && !strings.Contains(w.Body.String(), "403 · Forbidden")) {
						t.Errorf("403 body = %s %s", w.Header().Get("Content-Type"), w.Body)
					}
				}
			})
		}
	}
}

func TestAdminViews(t *testing.T) {
	e := newTestEnv(t, withDeps(func(d *Deps) { d.Admins = []string{"root@example.com"} }))
	// An admin email cannot sign up publicly: whoever came first would be admin.
	if r := e.do("POST", "/api/users", `{"email":"ROOT@example.com","password":"`+pw+`","name":"Mallory"}`); r.StatusCode != 409 {
		t.Fatalf("public signup with an admin email = %d; want 409", r.StatusCode)
	}
	if r := e.do("POST", "/signup", "email=root%40example.com&name=M&password=correct+horse+battery", "Content-Type", form); r.StatusCode != 409 {
		t.Fatalf("signup page with an admin email = %d; want 409", r.StatusCode)
	}
	// Admins are made out of band (app useradd).
	hash, _ := e.srv.hasher.Hash(t.Context(), pw)
	rootUser, err := e.srv.accounts.CreateAdmin(t.Context(), "root@example.com", "Root", hash)
	if err != nil {
		t.Fatal(err)
	}
	rootID := rootUser.ID
	annID := e.signup("ann@example.com", pw, "Ann")
	for i := range 3 {
		e.signup(fmt.Sprintf("u%d@example.com", i), pw, "U")
		e.do("POST", "/api/contact", fmt.Sprintf(`{"name":"N","email":"n@example.com","message":"m%d"}`, i))
	}
	root, ann := e.login("root@example.com", pw), e.login("ann@example.com", pw)

	for _, path := range []string{"/api/users", "/api/contact"} {
		if r := e.do("GET", path, ""); r.StatusCode != 401 {
			t.Errorf("%s signed out = %d; want 401", path, r.StatusCode)
		}
		if r := e.do("GET", path, "", "Cookie", ann); r.StatusCode != 403 {
			t.Errorf("%s as non-admin = %d; want 403", path, r.StatusCode)
		}
		if r := e.do("GET", path+"?limit=101", "", "Cookie", root); r.StatusCode != 422 {
			t.Errorf("%s?limit=101 = %d; want 422", path, r.StatusCode)
		}
		if r := e.do("GET", path+"?next=%21%21", "", "Cookie", root); r.StatusCode != 400 {
			t.Errorf("%s with a bad cursor = %d; want 400", path, r.StatusCode)
		}
	}

	// Users: five, newest first, two per page.
	var emails []string
	next, pages := "", 0
	for {
		resp := e.do("GET", "/api/users?limit=2&next="+next, "", "Cookie", root)
		if resp.StatusCode != 200 {
			t.Fatalf("page %d = %d", pages, resp.StatusCode)
		}
		p := decode[struct {
			Items []userJSON
			Next  string
		}](t, resp)
		for _, u := range p.Items {
			emails = append(emails, u.Email)
		}
		pages++
		if p.Next == "" {
			break
		}
		next = p.Next
	}
	if pages != 3 || strings.Join(emails, ",") != "u2@example.com,u1@example.com,u0@example.com,ann@example.com,root@example.com" {
		t.Errorf("%d pages: %v", pages, emails)
	}
	var texts []string
	next = ""
	for range 5 {
		var msgs struct {
			Items []messageJSON
			Next  string
		}
		if err := json.NewDecoder(e.do("GET", "/api/contact?limit=2&next="+next, "", "Cookie", root).Body).Decode(&msgs); err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs.Items {
			texts = append(texts, m.Message)
		}
		if next = msgs.Next; next == "" {
			break
		}
	}
	if strings.Join(texts, ",") != "m2,m1,m0" {
		t.Errorf("contact messages paged = %v; want m2,m1,m0", texts)
	}

	// A user's email: to themself and admins only.
	for _, c := range []struct {
		name, cookie string
		visible      bool
	}{{"anonymous", "", false}, {"other user", e.login("u0@example.com", pw), false}, {"admin", root, true}, {"themself", ann, true}} {
		body := readBody(t, e.do("GET", "/api/users/"+annID, "", "Cookie", c.cookie))
		if strings.Contains(body, "ann@example.com") != c.visible {
			t.Errorf("%s sees %s", c.name, body)
		}
	}
	if body := readBody(t, e.do("GET", "/api/users/"+rootID, "", "Cookie", root)); !strings.Contains(body, "root@example.com") {
		t.Errorf("a user does not see their own email: %s", body)
	}
}

// An address an operator lists in ADMIN_EMAILS after someone signed up
// with it gives that someone nothing: admin rights need an account made by
// app useradd. On the code before the admin flag, the squatter's session
// listed every user.
func TestAdminEmailSquatted(t *testing.T) {
	// Monday: ops@ is nobody's admin address yet, and Mallory signs up with it.
	monday := newTestEnv(t)
	monday.signup("ops@example.com", pw, "Mallory")
	// Tuesday: the operator lists ops@ and restarts the app on the same Redis.
	e := newTestEnv(t, withRedis(monday.redis), withDeps(func(d *Deps) { d.Admins = []string{"ops@example.com"} }))
	squatter := e.login("ops@example.com", pw)
	for _, path := range []string{"/api/users", "/api/contact"} {
		if r := e.do("GET", path, "", "Cookie", squatter); r.StatusCode != 403 {
			t.Errorf("%s as the account that signed up before its address was listed = %d; want 403", path, r.StatusCode)
		}
	}
	// A useradd-made account that ADMIN_EMAILS does not list has no rights
	// either: unlisting an address revokes them.
	hash, _ := e.srv.hasher.Hash(t.Context(), pw)
	if _, err := e.srv.accounts.CreateAdmin(t.Context(), "former@example.com", "Former", hash); err != nil {
		t.Fatal(err)
	}
	if r := e.do("GET", "/api/users", "", "Cookie", e.login("former@example.com", pw)); r.StatusCode != 403 {
		t.Errorf("/api/users as an unlisted useradd account = %d; want 403", r.StatusCode)
	}
}

// Signup refuses an admin address only after the same work as any other
// signup (a full argon2id hash), so timing does not single the admins out.
// On the code before, that refusal took 1.5 ms against 30-70 ms.
func TestSignupRefusalsLookAlike(t *testing.T) {
	e := newTestEnv(t, withHasher(password.NewHasher(password.Params, 2, 10*time.Second)),
		withDeps(func(d *Deps) { d.Admins = []string{"root@example.com"} }))
	e.signup("ann@example.com", pw, "Ann")
	attempt := func(email string) time.Duration {
		start := time.Now()
		resp := e.do("POST", "/api/users", fmt.Sprintf(`{"email":%q,"password":%q,"name":"M"}`, email, pw))
		elapsed := time.Since(start)
		if resp.StatusCode != 409 {
			t.Fatalf("signup %s = %d; want 409", email, resp.StatusCode)
		}
		return elapsed
	}
	// The fastest of three each: the work, not a scheduler's hiccup.
	fastest := func(email string) time.Duration {
		return min(attempt(email), attempt(email), attempt(email))
	}
	admin, taken := fastest("root@example.com"), fastest("ann@example.com")
	if admin < taken/3 {
		t.Errorf("signup refused an admin address in %v, a taken one in %v: the work differs", admin, taken)
	}
}

// Behind a trusted proxy the client comes from X-Forwarded-For; from anyone
// else the header is ignored. Logs and limits see the same address.
func TestClientIPThroughRouter(t *testing.T) {
	trusted, _ := clientip.ParsePrefixes("10.0.0.2")
	e := newTestEnv(t, withDeps(func(d *Deps) {
		d.TrustedProxies = trusted
		d.Limits.Contact = ratelimit.Class{Name: "contact", Rate: 1, Period: time.Hour}
	}))
	send := func(peer, xff, id string) int {
		req := httptest.NewRequest("POST", "/api/contact", strings.NewReader(`{"name":"Bo","email":"bo@example.com","message":"Hi"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Request-ID", id)
		req.RemoteAddr = peer
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		w := httptest.NewRecorder()
		e.h.ServeHTTP(w, req)
		return w.Code
	}
	logged := func(id string) any {
		l := e.logs.FilterMessage("handled request").FilterField(zap.String("request_id", id)).All()
		if len(l) != 1 {
			t.Fatalf("no access line for %s", id)
		}
		return l[0].ContextMap()["remote_ip"]
	}
	if code := send("10.0.0.2:1", "6.6.6.6, 198.51.100.7", "a"); code != 202 || logged("a") != "198.51.100.7" {
		t.Errorf("via proxy: %d, logged %v", code, logged("a"))
	}
	// The same client again, via the proxy: its one message an hour is spent.
	if code := send("10.0.0.2:2", "198.51.100.7", "b"); code != 429 {
		t.Errorf("same client again = %d; want 429", code)
	}
	// Another client via the proxy has its own budget.
	if code := send("10.0.0.2:3", "198.51.100.8", "c"); code != 202 {
		t.Errorf("another client = %d; want 202", code)
	}
	// An untrusted peer cannot pose as someone else.
	if code := send("203.0.113.9:1", "198.51.100.99", "d"); code != 202 || logged("d") != "203.0.113.9" {
		t.Errorf("untrusted peer: %d, logged %v", code, logged("d"))
	}
	if code := send("203.0.113.9:1", "198.51.100.100", "e"); code != 429 {
		t.Errorf("untrusted peer forging a new address = %d; want 429", code)
	}
	// IPv6 clients share a budget per /64.
	if code := send("[2001:db8:1:2::1]:1", "", "f"); code != 202 {
		t.Errorf("IPv6 client = %d", code)
	}
	if code := send("[2001:db8:1:2:ffff::9]:1", "", "g"); code != 429 {
		t.Errorf("another address in the same /64 = %d; want 429", code)
	}
}

// 200 concurrent requests against a limit of 5 let exactly 5 through.
func TestRateLimitExact(t *testing.T) {
	e := newTestEnv(t, withDeps(func(d *Deps) {
		d.Limits.Contact = ratelimit.Class{Name: "contact", Rate: 5, Period: time.Hour}
	}))
	const n = 200
	type result struct {
		status int
		h      http.Header
	}
	results := make(chan result, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			resp := e.do("POST", "/api/contact", `{"name":"Bo","email":"bo@example.com","message":"Hi"}`)
			results <- result{resp.StatusCode, resp.Header}
		})
	}
	wg.Wait()
	close(results)
	count := map[int]int{}
	for r := range results {
		count[r.status]++
		if r.h.Get("RateLimit-Limit") != "5" || r.h.Get("RateLimit-Remaining") == "" || r.h.Get("RateLimit-Reset") == "" {
			t.Errorf("%d without RateLimit headers: %v", r.status, r.h)
		}
		if r.status == 429 && r.h.Get("Retry-After") == "" {
			t.Errorf("429 without Retry-After")
		}
	}
	if count[202] != 5 || count[429] != n-5 {
		t.Errorf("statuses = %v; want exactly 5 × 202 and %d × 429", count, n-5)
	}
	if got, _ := e.redis.Client().XLen(t.Context(), "contact:messages").Result(); got != 5 {
		t.Errorf("%d messages stored; want 5", got)
	}
	if got := metricSum(t, e.reg, "ratelimit_decisions_total"); got < n {
		t.Errorf("ratelimit_decisions_total = %v; want at least %d", got, n)
	}
}

func TestRateLimitResponses(t *testing.T) {
	e := newTestEnv(t, withDeps(func(d *Deps) {
		d.Limits.Contact = ratelimit.Class{Name: "contact", Rate: 1, Period: time.Hour}
		d.Limits.Global = ratelimit.Class{Name: "global", Rate: 3, Period: time.Minute, FailOpen: true}
	}))
	// The API: JSON 429 with Retry-After and the class's headers.
	e.do("POST", "/api/contact", `{"name":"Bo","email":"bo@example.com","message":"Hi"}`)
	resp := e.do("POST", "/api/contact", `{"name":"Bo","email":"bo@example.com","message":"Hi"}`)
	body := readBody(t, resp)
	if resp.StatusCode != 429 || !strings.Contains(body, `"code":"rate_limited"`) || resp.Header.Get("RateLimit-Limit") != "1" ||
		resp.Header.Get("RateLimit-Remaining") != "0" {
		t.Errorf("API 429 = %d %v %s", resp.StatusCode, resp.Header, body)
	}
	if ra := resp.Header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Errorf("Retry-After = %q", ra)
	}
	// The global limit (3 a minute, 2 spent above): one more, then a 429 page.
	if r := e.do("GET", "/about", ""); r.StatusCode != 200 || r.Header.Get("RateLimit-Limit") != "3" {
		t.Errorf("third request = %d %v", r.StatusCode, r.Header)
	}
	page := e.do("GET", "/about", "")
	if page.StatusCode != 429 || !strings.Contains(readBody(t, page), "429 · Too Many Requests") {
		t.Errorf("fourth request = %d", page.StatusCode)
	}
	// Probes are never limited.
	for range 10 {
		if r := e.do("GET", "/healthz", ""); r.StatusCode != 200 {
			t.Fatalf("healthz under the limit = %d", r.StatusCode)
		}
	}
}

// signInAttempt is one POST /api/sessions through Caddy (10.0.0.2, trusted)
// for the client ip, with the cookies given; it returns the status and the
// device cookie the answer set, if any.
func (e *testEnv) signInAttempt(email, password, ip string, cookies ...string) (int, string) {
	e.t.Helper()
	req := httptest.NewRequest("POST", "/api/sessions", strings.NewReader(fmt.Sprintf(`{"email":%q,"password":%q}`, email, password)))
	req.Header.Set("Content-Type", "application/json")
	req.RemoteAddr = "10.0.0.2:1"
	req.Header.Set("X-Forwarded-For", ip)
	if len(cookies) > 0 {
		req.Header.Set("Cookie", strings.Join(cookies, "; "))
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, req)
	for _, c := range w.Result().Cookies() {
		if c.Name == "device" {
			return w.Code, c.Name + "=" + c.Value
		}
	}
	return w.Code, ""
}

func newLoginLimitEnv(t *testing.T, perClient, perAccount int) *testEnv {
	trusted, _ := clientip.ParsePrefixes("10.0.0.2")
	return newTestEnv(t, withDeps(func(d *Deps) {
		d.TrustedProxies = trusted
		d.Limits.LoginEmail = ratelimit.Class{Name: "login_email", Rate: perClient, Period: 15 * time.Minute}
		d.Limits.LoginAccount = ratelimit.Class{Name: "login_account", Rate: perAccount, Period: time.Hour}
	}))
}

// One client gets RATE_LIMIT_LOGIN_EMAIL's guesses at an account, the right
// password included once it is spent; the owner, elsewhere, still signs in.
// On the code before device cookies, the per-email limit was shared by
// everyone, and the owner got 429.
func TestLoginLimitPerClient(t *testing.T) {
	e := newLoginLimitEnv(t, 3, 100)
	e.signup("ann@example.com", pw, "Ann")
	var got []int
	for range 5 {
		code, _ := e.signInAttempt("ann@example.com", "wrong password!", "198.51.100.7")
		got = append(got, code)
	}
	if fmt.Sprint(got) != "[401 401 401 429 429]" {
		t.Errorf("five guesses from one client = %v; want three 401s, then 429s", got)
	}
	if code, _ := e.signInAttempt("ann@example.com", pw, "198.51.100.7"); code != 429 {
		t.Errorf("the right password from the limited client = %d; want 429 (the bound holds for it)", code)
	}
	// Another address of the same IPv6 /64 is the same client.
	for i, ip := range []string{"2001:db8::1", "2001:db8::2", "2001:db8::3", "2001:db8::ffff"} {
		want := map[bool]int{true: 401, false: 429}[i < 3]
		if code, _ := e.signInAttempt("ann@example.com", "wrong password!", ip); code != want {
			t.Errorf("guess %d from %s = %d; want %d (one /64, one bucket)", i+1, ip, code, want)
		}
	}
	if code, _ := e.signInAttempt("ann@example.com", pw, "203.0.113.5"); code != 200 {
		t.Errorf("the owner from elsewhere while one client hammers = %d; want 200", code)
	}
	// A success gives its own client's units back.
	got = nil
	for _, p := range []string{"nope nope nope", "nope nope nope", pw, "nope nope nope", "nope nope nope", "nope nope nope", "nope nope nope"} {
		code, _ := e.signInAttempt("ann@example.com", p, "192.0.2.9")
		got = append(got, code)
	}
	if fmt.Sprint(got) != "[401 401 200 401 401 401 429]" {
		t.Errorf("two failures, a success, four failures = %v; want [401 401 200 401 401 401 429]", got)
	}
}

// A crowd of clients together gets RATE_LIMIT_LOGIN_ACCOUNT's guesses; then
// only a browser that signed in to the account before gets in, and within
// its own budget.
func TestLoginLimitPerAccount(t *testing.T) {
	e := newLoginLimitEnv(t, 3, 5)
	e.signup("ann@example.com", pw, "Ann")
	code, device := e.signInAttempt("ann@example.com", pw, "203.0.113.5") // the owner's browser, last week
	if code != 200 || device == "" {
		t.Fatalf("the owner's first sign-in = %d, device cookie %q; want 200 and a cookie", code, device)
	}
	var got []int
	for i := range 8 {
		code, _ := e.signInAttempt("ann@example.com", "wrong password!", fmt.Sprintf("198.51.100.%d", i+1))
		got = append(got, code)
	}
	// The owner's sign-in spent one of the five.
	if fmt.Sprint(got) != "[401 401 401 401 429 429 429 429]" {
		t.Errorf("guesses from eight clients = %v; want four 401s, then 429s", got)
	}
	if code, _ := e.signInAttempt("ann@example.com", pw, "192.0.2.44"); code != 429 {
		t.Errorf("the right password from a new browser while the account's budget is spent = %d; want 429", code)
	}
	// The device cookie only counts for the account it signed in to.
	e.signup("bo@example.com", pw, "Bo")
	for range 3 {
		e.signInAttempt("bo@example.com", "wrong password!", "198.51.100.50")
	}
	if code, _ := e.signInAttempt("ann@example.com", pw, "198.51.100.9", device); code != 200 {
		t.Errorf("the owner's browser while the account's budget is spent = %d; want 200", code)
	}
	if code, _ := e.signInAttempt("bo@example.com", pw, "198.51.100.50", device); code != 429 {
		t.Errorf("Ann's browser on Bo's account, from Bo's guesser's address = %d; want 429 (a stranger there)", code)
	}
	// A stolen device cookie is worth its own bucket of guesses, no more.
	got = nil
	for range 4 {
		code, _ := e.signInAttempt("ann@example.com", "wrong password!", "198.51.100.77", device)
		got = append(got, code)
	}
	if fmt.Sprint(got) != "[401 401 401 429]" {
		t.Errorf("guesses with the owner's device cookie = %v; want three 401s, then 429", got)
	}
	// A forged or foreign token is a stranger's.
	if code, _ := e.signInAttempt("ann@example.com", pw, "198.51.100.78", "device="+strings.Repeat("A", 43)); code != 429 {
		t.Errorf("a made-up device token = %d; want 429", code)
	}
}

// decisions is ratelimit_decisions_total{class,outcome} from reg.
func decisions(t *testing.T, e *testEnv, class, outcome string) float64 {
	t.Helper()
	families, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "ratelimit_decisions_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["class"] == class && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// Redis down: the global limit fails open, the others fail closed, and no
// one is signed in or out by the outage. The bodies are invalid on purpose:
// had a limiter let the request through, the handler would answer 422.
func TestLimitsWhenRedisDown(t *testing.T) {
	e := newTestEnv(t, withProductionTimeouts())
	e.signup("ann@example.com", pw, "Ann")
	cookie := e.login("ann@example.com", pw)
	e.redis.Stop()
	checks := []struct {
		method, path, body, ct string
		want                   int
		class                  string // the limiter whose decision failed
	}{
		{"GET", "/", "", "", 200, "global"},      // fails open; the page shows as signed out
		{"GET", "/about", "", "", 200, "global"}, // the same
		{"POST", "/api/users", `{}`, "application/json", 503, "signup"},
		{"POST", "/signup", "email=bad", form, 503, "signup"},
		{"POST", "/api/sessions", `{}`, "application/json", 503, "login_ip"},
		{"POST", "/login", "email=bad", form, 503, "login_ip"},
		{"POST", "/api/contact", `{}`, "application/json", 503, "contact"},
		{"POST", "/contact", "name=", form, 503, "contact"},
		{"GET", "/api/me", "", "", 503, "global"},  // cannot tell who you are: not 401
		{"GET", "/account", "", "", 503, "global"}, // nor a misleading redirect to /login
		{"GET", "/healthz", "", "", 200, ""},       // no limit, no Redis
	}
	for _, c := range checks {
		before := decisions(t, e, c.class, "error")
		start := time.Now()
		resp := e.do(c.method, c.path, c.body, "Content-Type", c.ct, "Cookie", cookie)
		if resp.StatusCode != c.want || time.Since(start) > time.Second {
			t.Errorf("Redis down: %s %s = %d in %v; want %d", c.method, c.path, resp.StatusCode, time.Since(start), c.want)
		}
		if c.class != "" && decisions(t, e, c.class, "error") != before+1 {
			t.Errorf("%s %s: %s decision error not counted once", c.method, c.path, c.class)
		}
	}
}

// The per-email login limit fails closed on its own, even when the per-IP
// one fails open.
func TestLoginEmailLimitFailsClosed(t *testing.T) {
	e := newTestEnv(t, withDeps(func(d *Deps) { d.Limits.LoginIP.FailOpen = true }))
	e.redis.Stop()
	resp := e.do("POST", "/api/sessions", `{"email":"ann@example.com","password":"x"}`)
	if resp.StatusCode != 503 || decisions(t, e, "login_email", "error") != 1 || decisions(t, e, "login_ip", "error") != 1 {
		t.Errorf("login with Redis down = %d; login_email errors %v, login_ip errors %v", resp.StatusCode,
			decisions(t, e, "login_email", "error"), decisions(t, e, "login_ip", "error"))
	}
}
