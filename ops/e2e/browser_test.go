//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// cspProbe runs in every page before its own scripts (the DevTools protocol
// is not bound by the page's CSP) and records CSP violations, which the
// browser reports as events on the document.
const cspProbe = `window.__csp = [];
document.addEventListener('securitypolicyviolation', e =>
  window.__csp.push(e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline')));`

// testBrowser drives Debian's headless Chromium through the site as a user:
// home page, sign up, sign out, sign in, account page, contact form, sign
// out. The browser trusts Caddy's local root through its own NSS database,
// as a user who imported root.crt would; no certificate error is ignored.
func testBrowser(t *testing.T, s *stack) {
	browse(t, s, site, s.rootPEM, s.artifacts)
}

// browse walks the site at base (https://name) as testBrowser says, in a
// Chromium that trusts rootPEM and runs with opts, and saves screenshots in
// dir.
func browse(t *testing.T, s *stack, base, rootPEM, dir string, opts ...chromedp.ExecAllocatorOption) {
	ctx := newBrowser(t, rootPEM, opts...)

	var mu sync.Mutex
	var problems []string
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			switch m.Type {
			case chromedp.ConsoleError, chromedp.ConsoleException:
				mu.Lock()
				problems = append(problems, fmt.Sprintf("console %s: %s (%s)", m.Type, m.Text, m.URL))
				mu.Unlock()
			case chromedp.ConsoleWarning:
				t.Logf("console warning: %s (%s)", m.Text, m.URL)
			}
		}
	}()
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: cspProbe}); err != nil {
		t.Fatalf("installing the CSP probe: %v", err)
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, ctx: ctx, base: base, dir: dir}
	email := fmt.Sprintf("e2e-%d@example.com", time.Now().UnixNano())
	const password = "a browser's long password"

	b.open("/", "Welcome")
	b.shot("01-home")

	b.open("/signup", "Sign up")
	b.fill("email", email)
	b.fill("name", "E2E Browser")
	b.fill("password", password)
	b.shot("02-signup")
	b.submit(`form[action="/signup"] button`, "/account")
	b.contains(email)
	b.shot("03-account-after-signup")
	b.checkSessionCookie()

	b.submit(`form[action="/logout"] button`, "/")
	b.noSessionCookie()

	b.open("/login", "Sign in")
	b.fill("email", email)
	b.fill("password", password)
	b.submit(`form[action="/login"] button`, "/account")
	b.contains("Your account")
	b.contains(email)
	b.shot("04-account-after-login")
	b.checkSessionCookie()

	b.open("/contact", "Contact")
	b.fill("name", "E2E Browser")
	b.fill("email", email)
	b.fill("message", "Hello from the end-to-end test.")
	b.submit(`form[action="/contact"] button`, "/contact/thanks")
	b.contains("Thank you")
	b.shot("05-contact-thanks")

	b.open("/account", "Your account")
	b.submit(`form[action="/logout"] button`, "/")
	b.noSessionCookie()
	b.shot("06-signed-out")

	s.report(t, "screenshots: %s", strings.Join(b.shots, " "))

	// Console messages arrive asynchronously; give the last ones a moment.
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Error(p)
	}
}

// newBrowser starts headless Chromium with a fresh profile and a HOME whose
// NSS database trusts rootPEM for TLS servers, and more options. It ends
// with the test.
func newBrowser(t *testing.T, rootPEM string, more ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed: apt-get install -y chromium libnss3-tools")
	}
	certutil, err := exec.LookPath("certutil")
	if err != nil {
		t.Fatal("certutil is not installed: apt-get install -y libnss3-tools")
	}
	home := t.TempDir()
	nssdb := "sql:" + filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(filepath.Join(home, ".pki", "nssdb"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-d", nssdb, "-N", "--empty-password"},
		{"-d", nssdb, "-A", "-t", "C,,", "-n", "sitekit e2e local CA", "-i", rootPEM},
	} {
		if out, err := exec.Command(certutil, args...).CombinedOutput(); err != nil {
			t.Fatalf("certutil %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.Env("HOME="+home),
		chromedp.UserDataDir(filepath.Join(home, "profile")),
		chromedp.WindowSize(1280, 900),
		// CI runs as root, where Chromium's sandbox cannot start.
		chromedp.NoSandbox,
	)
	opts = append(opts, more...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 5*time.Minute)
	t.Cleanup(func() {
		cancelTimeout()
		cancelTab()
		cancelAlloc()
	})
	return ctx
}

// browser runs the steps of a test in one tab; a failed step ends the test.
type browser struct {
	t     *testing.T
	ctx   context.Context
	base  string   // the site's URL, https://name
	dir   string   // screenshots
	shots []string // their paths
}

// open navigates to path and checks the page's heading.
func (b *browser) open(path, heading string) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, chromedp.Navigate(b.base+path), chromedp.WaitVisible(chromedp.CSS("h1"))); err != nil {
		b.t.Fatalf("open %s: %v", path, err)
	}
	h1, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS("h1")))
	if err != nil || !strings.Contains(h1, heading) {
		b.t.Fatalf("open %s: heading %q (%v); want %q", path, h1, err, heading)
	}
	b.checkCSP(path)
}

func (b *browser) fill(id, value string) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, chromedp.SendKeys(chromedp.ID(id), value)); err != nil {
		b.t.Fatalf("fill #%s: %v", id, err)
	}
}

// submit clicks the first button that sel finds and waits until the browser
// shows wantPath.
func (b *browser) submit(sel, wantPath string) {
	b.t.Helper()
	before, _ := chromedp.Run(b.ctx, chromedp.Location())
	if err := chromedp.Do(b.ctx, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible)); err != nil {
		b.t.Fatalf("click %s: %v", sel, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		loc, err := chromedp.Run(b.ctx, chromedp.Location())
		if err == nil {
			if u, perr := url.Parse(loc); perr == nil && u.Path == wantPath && loc != before {
				break
			}
		}
		if time.Now().After(deadline) {
			body, _ := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS("body")))
			b.t.Fatalf("after clicking %s on %s: at %q (%v); want %s. The page says:\n%s", sel, before, loc, err, wantPath, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := chromedp.Do(b.ctx, chromedp.WaitVisible(chromedp.CSS("h1"))); err != nil {
		b.t.Fatalf("after clicking %s: %v", sel, err)
	}
	b.checkCSP(wantPath)
}

// contains checks that the page's text holds want.
func (b *browser) contains(want string) {
	b.t.Helper()
	text, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS("body")))
	if err != nil || !strings.Contains(text, want) {
		b.t.Fatalf("the page does not say %q (%v):\n%s", want, err, text)
	}
}

// checkCSP fails the test if the page's CSP blocked anything.
func (b *browser) checkCSP(where string) {
	b.t.Helper()
	violations, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]string](`window.__csp || []`))
	if err != nil {
		b.t.Fatalf("%s: reading CSP violations: %v", where, err)
	}
	for _, v := range violations {
		b.t.Errorf("%s: CSP violation: %s", where, v)
	}
}

// shot saves a PNG of the whole page as an artifact.
func (b *browser) shot(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(b.dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", path)
	b.shots = append(b.shots, path)
}

// sessionCookie is the browser's session cookie for the site, or nil.
func (b *browser) sessionCookie() *network.Cookie {
	b.t.Helper()
	res, err := chromedp.Call(b.ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{b.base + "/"}})
	if err != nil {
		b.t.Fatalf("reading cookies: %v", err)
	}
	var found *network.Cookie
	for _, c := range res.Cookies {
		if strings.Contains(c.Name, "session") {
			if found != nil {
				b.t.Errorf("two session cookies: %s and %s", found.Name, c.Name)
			}
			found = c
		}
	}
	return found
}

// checkSessionCookie: the session cookie as the browser stored it is
// __Host- prefixed (Secure, Path=/, no Domain), HttpOnly, SameSite=Lax, and
// expires within the session lifetime (SESSION_LIFETIME, 12h).
func (b *browser) checkSessionCookie() {
	b.t.Helper()
	c := b.sessionCookie()
	if c == nil {
		b.t.Fatal("signed in, but the browser holds no session cookie")
	}
	if c.Name != "__Host-session" || !c.Secure || !c.HTTPOnly || c.Path != "/" ||
		c.Domain != strings.TrimPrefix(b.base, "https://") || c.SameSite != network.CookieSameSiteLax {
		b.t.Errorf("session cookie %s: Secure=%v HttpOnly=%v Path=%q Domain=%q SameSite=%q; want __Host-session, Secure, HttpOnly, Path=/, host-only %s, Lax",
			c.Name, c.Secure, c.HTTPOnly, c.Path, c.Domain, c.SameSite, strings.TrimPrefix(b.base, "https://"))
	}
	expires := time.Unix(int64(c.Expires), 0)
	if c.Session || time.Until(expires) <= 0 || time.Until(expires) > 12*time.Hour+time.Minute {
		b.t.Errorf("session cookie expires %s (session cookie: %v); want within the 12h session lifetime", expires, c.Session)
	}
}

func (b *browser) noSessionCookie() {
	b.t.Helper()
	if c := b.sessionCookie(); c != nil {
		b.t.Errorf("signed out, but the browser still holds %s", c.Name)
	}
}
