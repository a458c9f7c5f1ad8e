package web

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
)

const form = "application/x-www-form-urlencoded"

func TestPages(t *testing.T) {
	e := newTestEnv(t)
	tests := []struct {
		name, method, path, body string
		headers                  []string
		want                     int
		contains                 []string
	}{
		{"home", "GET", "/", "", nil, 200, []string{"<h1>Welcome</h1>", `aria-current="page">Home`}},
		{"head home", "HEAD", "/", "", nil, 200, nil},
		{"about", "GET", "/about", "", nil, 200, []string{"<h1>About</h1>"}},
		{"contact form", "GET", "/contact", "", nil, 200, []string{`<form method="post" action="/contact"`}},
		{"thanks", "GET", "/contact/thanks", "", nil, 200, []string{"Thank you"}},
		{"unknown page", "GET", "/no/such/page", "", nil, 404, []string{"404 · Not Found", "Request ID"}},
		{"wrong method", "DELETE", "/about", "", nil, 405, []string{"405 · Method Not Allowed"}},
		{"form as JSON", "POST", "/contact", `{"name":"x"}`, nil, 415, []string{"415"}},
		{"unhashed static name", "GET", "/static/style.css", "", nil, 404, []string{"404"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.do(tt.method, tt.path, tt.body, tt.headers...)
			body := readBody(t, resp)
			if resp.StatusCode != tt.want {
				t.Fatalf("%s %s = %d; want %d", tt.method, tt.path, resp.StatusCode, tt.want)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
				t.Errorf("Content-Type = %q; want HTML", ct)
			}
			for _, c := range tt.contains {
				if !strings.Contains(body, c) {
					t.Errorf("body lacks %q", c)
				}
			}
			if tt.method == "GET" {
				checkCSPClean(t, body)
			}
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("Content-Security-Policy = %q", csp)
			}
		})
	}
}

// checkCSPClean fails on anything a strict Content-Security-Policy
// (default-src 'self', no 'unsafe-inline') would block.
func checkCSPClean(t *testing.T, body string) {
	t.Helper()
	bad := regexp.MustCompile(`(?i)<script|<style|\sstyle=|\son[a-z]+=|javascript:|https?://`)
	if m := bad.FindString(body); m != "" {
		t.Errorf("page has %q, which a strict CSP blocks or which loads from elsewhere", m)
	}
}

func TestContactForm(t *testing.T) {
	e := newTestEnv(t)

	// Invalid: 422, the form again with each field's error and the values kept.
	resp := e.do("POST", "/contact", "name=&email=not-an-email&message=Hi+%3Cb%3Ethere%3C%2Fb%3E", "Content-Type", form)
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("invalid form = %d", resp.StatusCode)
	}
	for _, want := range []string{
		"Name is required.",
		"Email must be a valid email address.",
		`value="not-an-email"`,
		"Hi &lt;b&gt;there&lt;/b&gt;", // kept, and escaped
	} {
		if !strings.Contains(body, want) {
			t.Errorf("re-rendered form lacks %q", want)
		}
	}
	if strings.Contains(body, "message-error") {
		t.Error("the valid message field is marked invalid")
	}
	if n, _ := e.redis.Client().XLen(t.Context(), "contact:messages").Result(); n != 0 {
		t.Fatalf("an invalid form was stored (%d entries)", n)
	}

	// Valid: stored, then a 303 to the thank-you page.
	resp = e.do("POST", "/contact", "name=Bo&email=bo%40example.com&message=Hello", "Content-Type", form)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/contact/thanks" {
		t.Fatalf("valid form = %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	msgs, _, err := e.srv.contacts.List(t.Context(), "", 5)
	if err != nil || len(msgs) != 1 || msgs[0].Email != "bo@example.com" {
		t.Fatalf("stored = %+v, %v", msgs, err)
	}

	// Too big: 413 as a page, nothing stored.
	resp = e.do("POST", "/contact", "name=Bo&email=bo%40example.com&message="+strings.Repeat("a", 70<<10), "Content-Type", form)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("big form = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

func TestStaticAssets(t *testing.T) {
	e := newTestEnv(t)
	home := readBody(t, e.do("GET", "/", ""))
	href := regexp.MustCompile(`href="(/static/style\.[0-9a-f]{12}\.css)"`).FindStringSubmatch(home)
	if href == nil {
		t.Fatalf("home page links no hashed stylesheet")
	}
	resp := e.do("GET", href[1], "")
	body := readBody(t, resp)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/css") || !strings.Contains(body, "body {") {
		t.Fatalf("GET %s = %d %s", href[1], resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
		t.Errorf("Cache-Control = %q", cc)
	}
}

func TestAccountPages(t *testing.T) {
	e := newTestEnv(t)

	// Signed out: the account page sends you to sign in; the nav offers it.
	resp := e.do("GET", "/account", "")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("account signed out = %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if home := readBody(t, e.do("GET", "/", "")); !strings.Contains(home, `href="/login"`) || strings.Contains(home, "Sign out") {
		t.Error("signed-out nav does not offer sign-in")
	}

	// Sign up: bad input keeps the values (never the password) and marks fields.
	resp = e.do("POST", "/signup", "email=ann%40example.com&name=Ann&password=short", "Content-Type", form)
	body := readBody(t, resp)
	if resp.StatusCode != 422 || !strings.Contains(body, "Password must be at least 12 characters.") ||
		!strings.Contains(body, `value="ann@example.com"`) || strings.Contains(body, "short") {
		t.Errorf("bad signup = %d %s", resp.StatusCode, body)
	}
	resp = e.do("POST", "/signup", "email=Ann%40Example.com&name=Ann&password=correct+horse+battery", "Content-Type", form)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/account" {
		t.Fatalf("signup = %d %s", resp.StatusCode, readBody(t, resp))
	}
	c := sessionCookie(resp)
	if c == nil {
		t.Fatal("signup did not sign in")
	}
	cookie := c.Name + "=" + c.Value

	// The account page shows the user; the nav shows them signed in.
	body = readBody(t, e.do("GET", "/account", "", "Cookie", cookie))
	for _, want := range []string{"ann@example.com", "<dd>Ann</dd>", "Member since", `action="/logout"`} {
		if !strings.Contains(body, want) {
			t.Errorf("account page lacks %q", want)
		}
	}
	checkCSPClean(t, body)

	// Signing up again with that email: 409, the form again.
	resp = e.do("POST", "/signup", "email=ann%40example.com&name=Other&password=correct+horse+battery", "Content-Type", form)
	if body := readBody(t, resp); resp.StatusCode != 409 || !strings.Contains(body, "already has an account") {
		t.Errorf("duplicate signup = %d", resp.StatusCode)
	}

	// Sign out, then the cookie is dead.
	resp = e.do("POST", "/logout", "", "Content-Type", form, "Cookie", cookie)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("logout = %d", resp.StatusCode)
	}
	if r := e.do("GET", "/account", "", "Cookie", cookie); r.StatusCode != http.StatusSeeOther {
		t.Errorf("account after logout = %d; want a redirect", r.StatusCode)
	}

	// Sign in: a wrong password re-renders with one message and 401.
	resp = e.do("POST", "/login", "email=ann%40example.com&password=wrong+password+x", "Content-Type", form)
	if body := readBody(t, resp); resp.StatusCode != 401 || !strings.Contains(body, "Invalid email or password.") ||
		!strings.Contains(body, `value="ann@example.com"`) {
		t.Errorf("bad login = %d %s", resp.StatusCode, body)
	}
	resp = e.do("POST", "/login", "email=ann%40example.com&password=correct+horse+battery", "Content-Type", form)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/account" || sessionCookie(resp) == nil {
		t.Errorf("login = %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// A static page is rendered once for signed-out visitors and kept; a
// signed-in user still gets their own navigation, and the kept copy never
// carries it.
func TestStaticPageSignedOutCopy(t *testing.T) {
	e := newTestEnv(t)
	first := readBody(t, e.do("GET", "/", ""))
	if again := readBody(t, e.do("GET", "/", "")); again != first {
		t.Fatalf("second signed-out render differs:\n%s\nthen\n%s", first, again)
	}
	if !strings.Contains(first, `href="/login"`) || !strings.Contains(first, `aria-current="page">Home`) {
		t.Fatalf("signed-out home lacks the sign-in link or the current item:\n%s", first)
	}
	// Each page keeps its own copy, with its own current item.
	if about := readBody(t, e.do("GET", "/about", "")); !strings.Contains(about, `aria-current="page">About`) {
		t.Errorf("about does not mark About as current:\n%s", about)
	}

	e.do("POST", "/api/users", validUser)
	cookie := e.login("ann@example.com", "correct horse battery")
	signedIn := readBody(t, e.do("GET", "/", "", "Cookie", cookie))
	if !strings.Contains(signedIn, ">Ann</a>") || strings.Contains(signedIn, `href="/login"`) {
		t.Errorf("signed-in home lacks the user's name or still offers sign-in:\n%s", signedIn)
	}
	if after := readBody(t, e.do("GET", "/", "")); after != first || strings.Contains(after, "Ann") {
		t.Errorf("signed-out home changed after a signed-in visit:\n%s", after)
	}
}
