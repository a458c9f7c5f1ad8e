package edgetest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Requests that declare a body and never send it, over HTTP/1.1 and as
// HTTP/2 streams, twice as many as the app's slots behind Caddy
// (EDGE_APP_MAX_REQUESTS): visitors are still served, because Caddy reads a
// body before it asks the app (read_body), and the stalled requests end at
// EDGE_READ_BODY_TIMEOUT with 408, never reaching the app. Without the buffering, Caddy passed each
// request on at once, the app waited for its body, and every visitor got
// 503 once the slots were taken.
func TestStalledBodies(t *testing.T) {
	t.Parallel()
	const slots = 8
	const readBody = 3 * time.Second
	s := startStack(t, stackConfig{caddy: map[string]string{
		"EDGE_APP_MAX_REQUESTS":  strconv.Itoa(slots),
		"EDGE_LB_TRY_DURATION":   "1s",
		"EDGE_READ_BODY_TIMEOUT": readBody.String(),
	}})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	start := time.Now()

	// HTTP/1.1: a Content-Length and one byte of the body, on connections
	// of their own. Each records when Caddy ended it, and how.
	type ending struct {
		after time.Duration
		how   string
	}
	endings := make(chan ending, slots)
	for range slots {
		conn, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(s.httpsPort), &tls.Config{
			ServerName: "localhost", RootCAs: s.roots, NextProtos: []string{"http/1.1"},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprint(conn, "POST /api/contact HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{")
		go func() {
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			how := fmt.Sprint(err)
			if err == nil {
				how = resp.Status
				resp.Body.Close()
			}
			endings <- ending{time.Since(start), how}
		}()
	}
	// HTTP/2: streams on one connection whose body never comes (HEADERS
	// without END_STREAM), until the test ends.
	stalls := s.client("h2")
	var wg sync.WaitGroup
	for range slots {
		pr, pw := io.Pipe()
		defer pw.Close()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url("/api/contact"), pr)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = 64
		req.Header.Set("Content-Type", "application/json")
		wg.Go(func() {
			if resp, err := stalls.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	defer wg.Wait()
	time.Sleep(500 * time.Millisecond) // for them to reach Caddy, and without the buffering the app

	// Visitors, on a connection of their own: pages and a contact message.
	visitors := s.client("h2")
	var worst time.Duration
	for i := range 10 {
		for _, req := range []*http.Request{
			newRequest(t, http.MethodGet, s.url("/about"), nil),
			newRequest(t, http.MethodPost, s.url("/api/contact"), []byte(`{"name":"V","email":"v@example.com","message":"hello `+strconv.Itoa(i)+`"}`)),
		} {
			began := time.Now()
			resp, body := do(t, visitors, req)
			worst = max(worst, time.Since(began))
			if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
				t.Fatalf("a visitor's %s %s while %d stalled bodies wait = %d %s; want it served", req.Method, req.URL.Path, 2*slots, resp.StatusCode, body)
			}
		}
	}
	t.Logf("20 visitor requests served while %d bodies stalled; the slowest took %v", 2*slots, worst.Round(time.Millisecond))

	// The stalled HTTP/1.1 requests end at the read timeout, not the app's.
	for range slots {
		select {
		case e := <-endings:
			if e.after < readBody-time.Second || e.after > readBody+2*time.Second || e.how != "408 Request Timeout" {
				t.Errorf("a stalled HTTP/1.1 body ended after %v (%s); want 408 at about EDGE_READ_BODY_TIMEOUT, %v", e.after.Round(time.Millisecond), e.how, readBody)
			}
		case <-time.After(readBody + 5*time.Second):
			t.Fatalf("a stalled HTTP/1.1 body still open %v after it began; want it dropped at %v", time.Since(start).Round(time.Second), readBody)
		}
	}
	// Only the visitors' messages reached the app: a stalled request that
	// reached it at its deadline with part of a body would be a 4xx there.
	time.Sleep(time.Second)
	posts := 0
	for _, l := range s.appLog.jsonLines() {
		if l["method"] == "POST" {
			posts++
			if l["status"] != 202.0 {
				t.Errorf("the app saw a stalled request: %v", l)
			}
		}
	}
	if posts != 10 {
		t.Errorf("the app logged %d POSTs; want the visitors' 10", posts)
	}
}

// A request for any host name but the site's, over the site's TLS
// connection or on port 80, gets 421 and nothing of the site: not the empty
// 200 with "Server: Caddy" and no headers, nor a redirect to the host it
// named, that Caddy gave before the catch-all sites.
func TestOtherHostNames(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackConfig{})
	h1, h2 := s.client("h1"), s.client("h2")
	for _, c := range []struct {
		name   string
		client *http.Client
		url    string
		host   string
	}{
		{"Host: evil.example over HTTP/2", h2, s.url("/"), "evil.example"},
		{"Host: evil.example over HTTP/1.1", h1, s.url("/about"), "evil.example"},
		{"Host: localhost. (a trailing dot)", h2, s.url("/"), "localhost."},
		{"Host: 127.0.0.1", h1, s.url("/"), "127.0.0.1"},
		{"Host: evil.example on port 80", h1, "http://localhost:" + strconv.Itoa(s.httpPort) + "/about", "evil.example"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := newRequest(t, http.MethodGet, c.url, nil)
			req.Host = c.host
			resp, body := do(t, c.client, req)
			if resp.StatusCode != http.StatusMisdirectedRequest || resp.Header.Get("Location") != "" ||
				!bytes.Contains(body, []byte("does not serve that host name")) {
				t.Errorf("GET %s with Host %s = %d, Location %q: %s; want 421 and no redirect", c.url, c.host, resp.StatusCode, resp.Header.Get("Location"), body)
			}
			if v := resp.Header.Values("Server"); len(v) > 0 {
				t.Errorf("Server header %v; want none", v)
			}
			if resp.TLS != nil {
				checkSecurityHeaders(t, resp, hstsDefault)
			} else if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("port 80: no X-Content-Type-Options: nosniff")
			}
		})
	}
	// The site itself is as before.
	if resp, _ := do(t, h2, newRequest(t, http.MethodGet, s.url("/about"), nil)); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /about = %d; want 200", resp.StatusCode)
	}
	url := "http://localhost:" + strconv.Itoa(s.httpPort) + "/about"
	if resp, _ := do(t, h1, newRequest(t, http.MethodGet, url, nil)); resp.StatusCode != http.StatusPermanentRedirect {
		t.Errorf("GET %s = %d; want the 308 to HTTPS", url, resp.StatusCode)
	}
}

// holdSockets opens n TCP connections to Caddy's HTTPS port from the
// loopback address src and sends nothing on them (with handshake set: a
// TLS handshake, then nothing), closed when the test ends. It returns how
// many Caddy closed at once, as a refused connection is.
func holdSockets(t *testing.T, s *stack, src string, n int, handshake bool) (refused int) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	for range n {
		c, err := d.Dial("tcp", "127.0.0.1:"+strconv.Itoa(s.httpsPort))
		if err != nil {
			refused++
			continue
		}
		t.Cleanup(func() { c.Close() })
		if handshake {
			tc := tls.Client(c, &tls.Config{ServerName: "localhost", RootCAs: s.roots, NextProtos: []string{"h2"}})
			_ = tc.SetDeadline(time.Now().Add(2 * time.Second))
			if err := tc.Handshake(); err != nil {
				refused++
				continue
			}
			_ = tc.SetDeadline(time.Time{})
		}
		// A refused one is closed at once: a read sees EOF, not a timeout.
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			refused++
		}
		_ = c.SetReadDeadline(time.Time{})
	}
	return refused
}

// visit is one visitor's GET /about on a new connection from 127.0.0.1,
// within 3 s.
func visit(t *testing.T, s *stack) (int, time.Duration, error) {
	c := s.client("h2")
	c.Timeout = 3 * time.Second
	start := time.Now()
	resp, err := c.Get(s.url("/about"))
	if err != nil {
		return 0, time.Since(start), err
	}
	resp.Body.Close()
	return resp.StatusCode, time.Since(start), nil
}

// One address cannot fill Caddy's connection cap with sockets that never
// speak, or with TLS connections that never ask; a crowd of addresses that
// does fill it gives way to a new visitor, because the quietest connection
// is closed to make room. Before the per-client limits and the reclaiming,
// the cap counted every connection alike and a new visitor waited for the
// handshake deadline, or for ever.
func TestConnectionSlots(t *testing.T) {
	t.Parallel()
	const max, perClient = 40, 8
	s := startStack(t, stackConfig{caddy: map[string]string{
		"EDGE_MAX_CONNS":        strconv.Itoa(max),
		"EDGE_CLIENT_MAX_CONNS": strconv.Itoa(perClient),
		"EDGE_CLIENT_CONN_RATE": "1000",
		"EDGE_CONN_QUIET":       "1s",
	}})

	// One address: silent sockets and idle TLS connections, the cap's worth.
	refused := holdSockets(t, s, "127.0.0.2", max/2, false) + holdSockets(t, s, "127.0.0.2", max/2, true)
	if want := max - perClient; refused != want {
		t.Errorf("one address opening %d connections: %d closed at once; want %d (all past its %d)", max, refused, want, perClient)
	}
	if code, took, err := visit(t, s); err != nil || code != http.StatusOK {
		t.Fatalf("a visitor while one address holds its connections: %d, %v after %v; want 200", code, err, took.Round(time.Millisecond))
	} else {
		t.Logf("one address holding %d connections: a visitor's new connection served in %v", perClient, took.Round(time.Millisecond))
	}

	// Many addresses, each within its limit, together over the cap.
	for i := range 5 {
		holdSockets(t, s, "127.0.0."+strconv.Itoa(10+i), perClient, i%2 == 0)
	}
	time.Sleep(1500 * time.Millisecond) // all quiet for EDGE_CONN_QUIET
	if code, took, err := visit(t, s); err != nil || code != http.StatusOK {
		t.Fatalf("a visitor while five addresses fill the cap: %d, %v after %v; want 200", code, err, took.Round(time.Millisecond))
	} else {
		t.Logf("five addresses filling the cap of %d: a visitor's new connection served in %v", max, took.Round(time.Millisecond))
	}

	// The refusals and reclaims are counted for the dashboards.
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(s.metricsPort) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`sitekit_edge_conns_refused_total{reason="client_conns"}`, "sitekit_edge_conns_reclaimed_total"} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("Caddy's metrics lack %s", want)
		}
	}
}
