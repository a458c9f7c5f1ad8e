package edgetest

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Requests that declare a body and never send it, over HTTP/1.1 and as
// HTTP/2 streams, twice as many as the app's slots behind Caddy
// (EDGE_APP_MAX_REQUESTS): visitors are still served, because Caddy reads a
// body before it asks the app (request_buffers), and the stalled requests
// end at EDGE_READ_BODY_TIMEOUT. Without the buffering, Caddy passed each
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
			if e.after < readBody-time.Second || e.after > readBody+2*time.Second {
				t.Errorf("a stalled HTTP/1.1 body ended after %v (%s); want about EDGE_READ_BODY_TIMEOUT, %v", e.after.Round(time.Millisecond), e.how, readBody)
			}
		case <-time.After(readBody + 5*time.Second):
			t.Fatalf("a stalled HTTP/1.1 body still open %v after it began; want it dropped at %v", time.Since(start).Round(time.Second), readBody)
		}
	}
	// Only the visitors' messages reached the app.
	time.Sleep(time.Second)
	var posts []string
	for _, l := range s.appLog.jsonLines() {
		if l["method"] == "POST" {
			posts = append(posts, fmt.Sprint(l["status"]))
		}
	}
	t.Logf("the app's POST lines: %v", posts)
}
