//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The abuse run: attacks on the edge from addresses of their own while the
// constant visitor load runs, with the visitors' figures during each in
// report.txt. The attackers live in a network namespace on the compose edge
// network's bridge, so Caddy sees each of their addresses as it would a
// client on the internet (the host's own traffic reaches it from Docker's
// gateway, a shared peer). Every attack is bounded in connections and time
// and ends by itself.

const abuseNetns = "sitekit-abuse"

// abuseNet is the attackers' namespace: one veth on the edge bridge holding
// addrs (10 to 59 of the edge subnet, below Docker's dynamic range), with
// /etc/hosts naming Caddy "localhost" so that SNI and Host are the site's.
type abuseNet struct {
	addrs []string
	caddy string // Caddy's address on the edge network
}

func newAbuseNet(t *testing.T, s *stack) *abuseNet {
	t.Helper()
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	id := strings.TrimSpace(dockerOut(t, "network", "inspect", project+"_edge", "--format", "{{.Id}}"))
	bridge := "br-" + id[:12]
	prefix := strings.TrimSuffix(s.env["EDGE_SUBNET"], "0/24")
	if prefix == s.env["EDGE_SUBNET"] {
		t.Fatalf("EDGE_SUBNET %q is not a /24 ending in .0", s.env["EDGE_SUBNET"])
	}
	n := &abuseNet{caddy: s.env["CADDY_ADDR"]}

	_ = exec.Command("ip", "netns", "del", abuseNetns).Run() // a killed run's
	hostsDir := filepath.Join("/etc/netns", abuseNetns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", abuseNetns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", abuseNetns, err, out)
		}
		os.RemoveAll(hostsDir)
	})
	ip("netns", "add", abuseNetns)
	ip("link", "add", "sk-abuse0", "mtu", "1400", "type", "veth", "peer", "name", "sk-abuse1", "mtu", "1400")
	ip("link", "set", "sk-abuse1", "netns", abuseNetns)
	ip("link", "set", "sk-abuse0", "master", bridge, "up")
	in := func(args ...string) { ip(append([]string{"netns", "exec", abuseNetns, "ip"}, args...)...) }
	in("link", "set", "lo", "up")
	for i := 10; i < 60; i++ {
		a := prefix + strconv.Itoa(i)
		in("addr", "add", a+"/24", "dev", "sk-abuse1")
		n.addrs = append(n.addrs, a)
	}
	in("link", "set", "sk-abuse1", "up")
	if err := os.MkdirAll(hostsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hostsDir, "hosts"), []byte(n.caddy+" localhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return n
}

// exec runs name with args in the namespace, killed after timeout, and
// returns its output and how it ended.
func (n *abuseNet) exec(timeout time.Duration, env []string, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", abuseNetns, name}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s (%v)", out, err)
	}
	return string(out)
}

// attack is one attack of the run.
type attack struct {
	name  string
	many  bool // from many addresses (no target; figures only)
	start func(t *testing.T, n *abuseNet) (wait func() string)
}

// slowhttptest runs Debian's slowhttptest in mode (-H slowloris, -B slow
// body, -X slow read) from one address for seconds, opening conns
// connections at rate a second.
func slowhttptest(mode string, conns, rate, seconds int, extra ...string) func(t *testing.T, n *abuseNet) func() string {
	return func(t *testing.T, n *abuseNet) func() string {
		done := make(chan string, 1)
		go func() {
			args := append([]string{mode, "-c", strconv.Itoa(conns), "-r", strconv.Itoa(rate), "-l", strconv.Itoa(seconds),
				"-i", "5", "-u", "https://localhost/contact", "-p", "3", "-v", "1"}, extra...)
			done <- slowhttptestSummary(n.exec(time.Duration(seconds+20)*time.Second, nil, "slowhttptest", args...))
		}()
		return func() string { return <-done }
	}
}

var ansi = regexp.MustCompile(`\x1b\[[0-9;]*m`)

// slowhttptestSummary is the last status block of slowhttptest's output
// (its counts of connections by state) and how the test ended, on a line.
func slowhttptestSummary(out string) string {
	out = ansi.ReplaceAllString(out, "")
	var counts []string
	ended := ""
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "slow HTTP test status on"):
			counts = counts[:0]
		case strings.HasPrefix(l, "Test ended"), strings.HasPrefix(l, "Exit status"):
			ended += " " + l
		default:
			for _, k := range []string{"initializing:", "pending:", "connected:", "error:", "closed:", "service available:"} {
				if strings.HasPrefix(l, k) {
					counts = append(counts, strings.Join(strings.Fields(l), " "))
				}
			}
		}
	}
	return strings.Join(counts, ", ") + ";" + ended
}

// holder runs this test binary in the namespace as an attacker (abuseMain)
// holding connections of mode from each of sources for hold.
func holder(mode string, sources, perSource int, hold time.Duration) func(t *testing.T, n *abuseNet) func() string {
	return func(t *testing.T, n *abuseNet) func() string {
		done := make(chan string, 1)
		go func() {
			env := []string{
				"SITEKIT_ABUSE=" + mode,
				"SITEKIT_ABUSE_TARGET=" + net.JoinHostPort(n.caddy, "443"),
				"SITEKIT_ABUSE_SOURCES=" + strings.Join(n.addrs[:sources], ","),
				"SITEKIT_ABUSE_PER_SOURCE=" + strconv.Itoa(perSource),
				"SITEKIT_ABUSE_HOLD=" + hold.String(),
			}
			self, err := os.Executable()
			if err != nil {
				done <- err.Error()
				return
			}
			done <- strings.TrimSpace(n.exec(hold+time.Minute, env, self))
		}()
		return func() string { return <-done }
	}
}

// testAbuse: each attack while the visitors' load runs. From one address,
// every visitor's request must succeed; the many-address attacks are
// measured and reported. The target for p99 (250 ms) is reported.
func testAbuse(t *testing.T, s *stack, l *load) {
	if _, err := exec.LookPath("slowhttptest"); err != nil {
		t.Fatal("slowhttptest is not installed: apt-get install slowhttptest (.ci/run does)")
	}
	n := newAbuseNet(t, s)
	const seconds = 15
	hold := seconds * time.Second
	attacks := []attack{
		// Within one client's connection limits (64, 20 a second), so that
		// the slow-client deadlines do the work; then a flood past them.
		{name: "slowloris (slowhttptest -H), 60 connections at 15/s, one address", start: slowhttptest("-H", 60, 15, seconds)},
		{name: "slow body (slowhttptest -B), 60 connections at 15/s, one address", start: slowhttptest("-B", 60, 15, seconds, "-s", "8192")},
		{name: "slow read (slowhttptest -X), 60 connections at 15/s, one address", start: slowhttptest("-X", 60, 15, seconds, "-k", "3", "-n", "5", "-w", "512", "-y", "1024", "-z", "32", "-u", "https://localhost/")},
		{name: "slowloris (slowhttptest -H), 1000 connections at 200/s, one address", start: slowhttptest("-H", 1000, 200, seconds)},
		{name: "slow body (slowhttptest -B), 1000 connections at 200/s, one address", start: slowhttptest("-B", 1000, 200, seconds, "-s", "8192")},
		{name: "silent TCP sockets, 2000, one address", start: holder("tcp", 1, 2000, hold)},
		{name: "idle TLS connections, 2000, one address", start: holder("tls", 1, 2000, hold)},
		{name: "HTTP/2 streams with a body that never comes, 10 connections x 100, one address", start: holder("h2stall", 1, 10, hold)},
		{name: "silent TCP sockets, 50 addresses x 64 (3200, over the 1024 cap)", many: true, start: holder("tcp", 50, 64, hold)},
		{name: "idle TLS connections, 50 addresses x 64", many: true, start: holder("tls", 50, 64, hold)},
	}
	stop := l.start("abuse baseline", 10*time.Second)
	time.Sleep(10 * time.Second)
	s.report(t, "visitors with no attack: %s", summarize(stop()))
	for _, a := range attacks {
		stop := l.start(a.name, time.Duration(seconds+10)*time.Second)
		arrivals := newVisitors(s)
		time.Sleep(time.Second)
		wait := a.start(t, n)
		attacker := wait()
		time.Sleep(time.Second)
		rs, fresh := stop(), arrivals()
		sum, freshSum := summarize(rs), summarize(fresh)
		verdict := "p99 target (250 ms) met"
		if sum.p99 >= 250*time.Millisecond || freshSum.p99 >= 250*time.Millisecond {
			verdict = "p99 target (250 ms) NOT met"
		}
		s.report(t, "visitors during %s: %s; new visitors, a connection each: %s; %s; the attacker: %s", a.name, sum, freshSum, verdict, attacker)
		if !a.many && (sum.failed > 0 || freshSum.failed > 0) {
			t.Errorf("during %s, %d of %d visitor requests and %d of %d new visitors' failed:%s%s", a.name,
				sum.failed, sum.requests, freshSum.failed, freshSum.requests, failures(rs), failures(fresh))
		}
	}
	// The site is whole after the run.
	if resp, body := s.get(t, site+"/about"); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /about after the abuse run: %s %s", resp.Status, trim(body))
	}
}

// newVisitors sends a GET / on a new connection (a new TLS handshake) five
// times a second until the returned function is called, which returns the
// results: the load's clients keep their connections, and these show
// whether a newcomer gets in.
func newVisitors(s *stack) func() []result {
	done := make(chan struct{})
	var mu sync.Mutex
	var rs []result
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			wg.Go(func() {
				c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
					TLSClientConfig: &tls.Config{RootCAs: s.rootCA}, ForceAttemptHTTP2: true, DisableKeepAlives: true,
				}}
				r := result{method: http.MethodGet, url: site + "/", sent: time.Now()}
				resp, err := c.Get(r.url)
				r.latency = time.Since(r.sent)
				if err != nil {
					r.err = err.Error()
				} else {
					r.code = resp.StatusCode
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				rs = append(rs, r)
				mu.Unlock()
			})
		}
	})
	return func() []result {
		close(done)
		wg.Wait()
		return rs
	}
}

// abuseMain is the attacker, when this test binary runs with SITEKIT_ABUSE
// set (in the namespace, from testAbuse): it opens its connections from
// each source, holds them for SITEKIT_ABUSE_HOLD, prints what it got and
// exits.
func abuseMain() int {
	mode, target := os.Getenv("SITEKIT_ABUSE"), os.Getenv("SITEKIT_ABUSE_TARGET")
	sources := strings.Split(os.Getenv("SITEKIT_ABUSE_SOURCES"), ",")
	perSource, _ := strconv.Atoi(os.Getenv("SITEKIT_ABUSE_PER_SOURCE"))
	hold, err := time.ParseDuration(os.Getenv("SITEKIT_ABUSE_HOLD"))
	if err != nil || perSource < 1 || perSource > 5000 || hold > 2*time.Minute || len(sources) > 200 {
		fmt.Println("abuse: bad settings")
		return 2
	}
	deadline := time.Now().Add(hold)
	var mu sync.Mutex
	counts := map[string]int{}
	count := func(what string) { mu.Lock(); counts[what]++; mu.Unlock() }
	var wg sync.WaitGroup
	var conns []io.Closer
	keep := func(c io.Closer) { mu.Lock(); conns = append(conns, c); mu.Unlock() }
	for _, src := range sources {
		wg.Go(func() {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 3 * time.Second}
			for range perSource {
				if time.Now().After(deadline) {
					return
				}
				c, err := d.Dial("tcp", target)
				if err != nil {
					count("dial failed")
					continue
				}
				keep(c)
				// Caddy closing it before the hold ends: refused or reclaimed.
				closed := func(r io.Reader) {
					if _, err := r.Read(make([]byte, 1)); err != nil && time.Now().Before(deadline) {
						count("closed by Caddy")
					}
				}
				switch mode {
				case "tcp":
					count("opened")
					_ = c.SetReadDeadline(deadline)
					wg.Go(func() { closed(c) })
				case "tls", "h2stall":
					tc := tls.Client(c, &tls.Config{ServerName: "localhost", InsecureSkipVerify: true, NextProtos: []string{"h2"}})
					_ = tc.SetDeadline(time.Now().Add(3 * time.Second))
					if err := tc.Handshake(); err != nil {
						count("handshake failed")
						continue
					}
					_ = tc.SetDeadline(time.Time{})
					if mode == "tls" {
						count("handshaken")
						_ = tc.SetReadDeadline(deadline)
						wg.Go(func() { closed(tc) })
						continue
					}
					wg.Go(func() { stallStreams(tc, deadline, count) })
				}
			}
		})
	}
	wg.Wait()
	time.Sleep(time.Until(deadline))
	for _, c := range conns {
		c.Close()
	}
	b, _ := json.Marshal(counts)
	fmt.Println(string(b))
	return 0
}

// stallStreams opens 100 streams on the HTTP/2 connection c, each a POST
// that declares a body and never sends it, until deadline.
func stallStreams(c *tls.Conn, deadline time.Time, count func(string)) {
	tr := &http.Transport{
		DialTLSContext:    func(context.Context, string, string) (net.Conn, error) { return c, nil },
		ForceAttemptHTTP2: true,
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	var wg sync.WaitGroup
	for range 100 {
		pr, pw := io.Pipe()
		defer pw.Close()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://localhost/api/contact", pr)
		req.ContentLength = 64
		req.Header.Set("Content-Type", "application/json")
		wg.Go(func() {
			resp, err := tr.RoundTrip(req)
			if err != nil {
				count("stream ended: " + strings.SplitN(err.Error(), ":", 2)[0])
				return
			}
			resp.Body.Close()
			count("stream answered " + strconv.Itoa(resp.StatusCode))
		})
	}
	count("streams opened")
	wg.Wait()
}
