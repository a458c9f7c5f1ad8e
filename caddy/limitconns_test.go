package main

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestLimitConnsCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want *limitConns // nil: an error
	}{
		{"limit_conns 1024", &limitConns{Max: 1024}},
		{"limit_conns 1024 {\n per_client 64\n per_client_rate 20\n quiet 5s\n}", &limitConns{Max: 1024, PerClient: 64, PerClientRate: 20, Quiet: caddy.Duration(5 * time.Second)}},
		{"limit_conns 10 {\n per_client 0\n}", &limitConns{Max: 10}},
		{"limit_conns 10 {\n shared\n}", &limitConns{Max: 10}},
		{"limit_conns", nil},
		{"limit_conns 0", nil},
		{"limit_conns many", nil},
		{"limit_conns 1 2", nil},
		{"limit_conns 10 {\n per_client -1\n}", nil},
		{"limit_conns 10 {\n per_client_rate fast\n}", nil},
		{"limit_conns 10 {\n quiet 0s\n}", nil},
		{"limit_conns 10 {\n per_client 1 2\n}", nil},
		{"limit_conns 10 {\n burst 5\n}", nil},
	} {
		var l limitConns
		err := l.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
		if tc.want == nil {
			if err == nil {
				t.Errorf("%q parsed as %+v; want an error", tc.in, l)
			}
			continue
		}
		if err != nil || fmt.Sprint(l) != fmt.Sprint(*tc.want) {
			t.Errorf("%q: %+v, err %v; want %+v", tc.in, l, err, *tc.want)
		}
	}
	var shared limitConns
	if err := shared.UnmarshalCaddyfile(caddyfile.NewTestDispenser("limit_conns 10 {\n shared 10.203.80.0/24 ::1\n}")); err != nil ||
		fmt.Sprint(shared.Shared) != "[10.203.80.0/24 ::1]" || shared.Validate() != nil {
		t.Errorf("shared: %v, %v, %v", shared.Shared, err, shared.Validate())
	}
	for _, bad := range []limitConns{{}, {Max: 1, PerClient: -1}, {Max: 1, PerClientRate: 5}, {Max: 1, Shared: []string{"nope"}}} {
		if bad.Validate() == nil {
			t.Errorf("%+v passed validation", bad)
		}
	}
}

func TestClientOf(t *testing.T) {
	for in, want := range map[string]string{
		"198.51.100.7:443":             "198.51.100.7/32",
		"[::ffff:198.51.100.7]:443":    "198.51.100.7/32",
		"[2001:db8:1:2:3:4:5:6]:443":   "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:55555": "2001:db8:1:2::/64",
	} {
		addr, err := net.ResolveTCPAddr("tcp", in)
		if err != nil {
			t.Fatal(err)
		}
		if got := clientOf(addr).String(); got != want {
			t.Errorf("clientOf(%s) = %s; want %s", in, got, want)
		}
	}
}

// listen wraps a loopback listener with l, on clock (nil: the real one),
// and hands out what it accepts.
func listen(t *testing.T, l limitConns, clock *fakeClock) (*limitListener, <-chan net.Conn) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := l.WrapListener(inner).(*limitListener)
	if clock != nil {
		ln.now = clock.Now
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	return ln, accepted
}

// dialFrom connects to ln from the loopback address src (127.0.0.0/8 is
// all this host's), as a client of that address would.
func dialFrom(t *testing.T, ln net.Listener, src string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// refused reports whether the server closed c without a word: a read
// returns EOF (or a reset) instead of timing out.
func refused(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func expectAccepted(t *testing.T, accepted <-chan net.Conn, what string) net.Conn {
	t.Helper()
	select {
	case c := <-accepted:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: not accepted", what)
		return nil
	}
}

// One client gets per_client connections open at once; the next is closed
// at accept, and another client's are not touched.
func TestLimitConnsPerClient(t *testing.T) {
	ln, accepted := listen(t, limitConns{Max: 10, PerClient: 2}, nil)
	a1, a2 := dialFrom(t, ln, "127.0.0.2"), dialFrom(t, ln, "127.0.0.2")
	first := expectAccepted(t, accepted, "127.0.0.2's first")
	expectAccepted(t, accepted, "127.0.0.2's second")
	a3 := dialFrom(t, ln, "127.0.0.2")
	if !refused(a3) {
		t.Error("127.0.0.2's third connection was not closed at accept")
	}
	b := dialFrom(t, ln, "127.0.0.3")
	expectAccepted(t, accepted, "127.0.0.3's, while 127.0.0.2 is at its limit")
	for _, c := range []net.Conn{a1, a2, b} {
		if refused(c) {
			t.Errorf("%s's accepted connection was closed", c.LocalAddr())
		}
	}
	first.Close()
	dialFrom(t, ln, "127.0.0.2")
	expectAccepted(t, accepted, "127.0.0.2's, after one of its own closed")
}

// A shared peer (Docker's gateway, relaying many clients) is limited only
// by the total.
func TestLimitConnsShared(t *testing.T) {
	ln, accepted := listen(t, limitConns{Max: 10, PerClient: 1, PerClientRate: 1, Shared: []string{"127.0.0.10/31"}}, nil)
	for range 4 {
		dialFrom(t, ln, "127.0.0.11")
		expectAccepted(t, accepted, "the shared peer's")
	}
	dialFrom(t, ln, "127.0.0.12")
	expectAccepted(t, accepted, "an ordinary client's first")
	if c := dialFrom(t, ln, "127.0.0.12"); !refused(c) {
		t.Error("an ordinary client's second was accepted with per_client 1")
	}
}

// fakeClock is a clock the test moves; safe from any goroutine.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// One client opens at most per_client_rate connections a second, after a
// burst of per_client.
func TestLimitConnsPerClientRate(t *testing.T) {
	clock := newFakeClock()
	ln, accepted := listen(t, limitConns{Max: 10, PerClient: 3, PerClientRate: 1}, clock)
	for range 3 {
		dialFrom(t, ln, "127.0.0.4")
		expectAccepted(t, accepted, "the burst").Close()
	}
	if c := dialFrom(t, ln, "127.0.0.4"); !refused(c) {
		t.Error("a fourth connection at once, with the burst spent, was accepted")
	}
	dialFrom(t, ln, "127.0.0.5")
	expectAccepted(t, accepted, "another client's, while 127.0.0.4 is limited")
	clock.Advance(time.Second)
	dialFrom(t, ln, "127.0.0.4")
	expectAccepted(t, accepted, "127.0.0.4's, a second later").Close()
	if c := dialFrom(t, ln, "127.0.0.4"); !refused(c) {
		t.Error("a second connection in that second was accepted")
	}
}

// At the cap, a new connection closes the one quiet longest (no byte for
// quiet), never one that moved a byte since; with none quiet it waits.
func TestLimitConnsReclaimsQuiet(t *testing.T) {
	clock := newFakeClock()
	ln, accepted := listen(t, limitConns{Max: 2, Quiet: caddy.Duration(10 * time.Second)}, clock)
	idle := dialFrom(t, ln, "127.0.0.6") // a socket that never sends its handshake
	expectAccepted(t, accepted, "the idle one")
	busy := dialFrom(t, ln, "127.0.0.7")
	busyServer := expectAccepted(t, accepted, "the busy one")
	clock.Advance(11 * time.Second)
	// The busy one moves a byte; the idle one stays silent.
	if _, err := busy.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := busyServer.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	dialFrom(t, ln, "127.0.0.8")
	expectAccepted(t, accepted, "a new client's at the cap")
	if !refused(idle) {
		t.Error("the quiet connection was not closed to make room")
	}
	if refused(busy) {
		t.Error("the busy connection was closed")
	}
	// Now nothing has been quiet for 10 s: the next one waits.
	dialFrom(t, ln, "127.0.0.9")
	select {
	case <-accepted:
		t.Fatal("a connection was accepted at the cap with none quiet")
	case <-time.After(200 * time.Millisecond):
	}
	clock.Advance(11 * time.Second)
	busyServer.Close() // frees a slot
	expectAccepted(t, accepted, "the waiting one, once a slot freed")
}

// TestLimitConnsWaits: past the limit a client's connection is not
// accepted until an accepted one closes.
func TestLimitConnsWaits(t *testing.T) {
	ln, accepted := listen(t, limitConns{Max: 2}, nil)
	for range 3 {
		dialFrom(t, ln, "127.0.0.1") // the kernel completes the handshake
	}
	first := expectAccepted(t, accepted, "the first")
	expectAccepted(t, accepted, "the second")
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted with max 2")
	case <-time.After(200 * time.Millisecond):
	}
	first.Close()
	expectAccepted(t, accepted, "the third, after one closed")
}

// A connection that never sent a byte gives way at the cap after 2 s, long
// before Quiet: no browser waits that long to say hello. One that spoke
// stays.
func TestLimitConnsReclaimsMuteFirst(t *testing.T) {
	clock := newFakeClock()
	ln, accepted := listen(t, limitConns{Max: 2, Quiet: caddy.Duration(time.Minute)}, clock)
	mute := dialFrom(t, ln, "127.0.0.6")
	expectAccepted(t, accepted, "the mute one")
	spoke := dialFrom(t, ln, "127.0.0.7")
	spokeServer := expectAccepted(t, accepted, "the one that speaks")
	if _, err := spoke.Write([]byte("x")); err != nil { // a TLS hello, say
		t.Fatal(err)
	}
	if _, err := spokeServer.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	clock.Advance(3 * time.Second)
	dialFrom(t, ln, "127.0.0.8")
	expectAccepted(t, accepted, "a new one, 3 s later at the cap")
	if !refused(mute) {
		t.Error("the connection that never spoke was not closed to make room")
	}
	if refused(spoke) {
		t.Error("the connection that spoke was closed, within Quiet")
	}
}
