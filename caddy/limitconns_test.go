package main

import (
	"net"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestLimitConnsCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		in  string
		max int // 0: an error
	}{
		{"limit_conns 1024", 1024},
		{"limit_conns", 0},
		{"limit_conns 0", 0},
		{"limit_conns many", 0},
		{"limit_conns 1 2", 0},
	} {
		var l limitConns
		err := l.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
		if tc.max == 0 {
			if err == nil {
				t.Errorf("%q parsed as %d; want an error", tc.in, l.Max)
			}
			continue
		}
		if err != nil || l.Max != tc.max {
			t.Errorf("%q: max %d, err %v; want %d", tc.in, l.Max, err, tc.max)
		}
	}
	if (limitConns{}).Validate() == nil {
		t.Error("a limit of 0 passed validation")
	}
}

// TestLimitConnsWaits: past the limit a client's connection is not
// accepted until an accepted one closes.
func TestLimitConnsWaits(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := limitConns{Max: 2}.WrapListener(inner)
	defer ln.Close()
	accepted := make(chan net.Conn, 3)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", inner.Addr().String()) // the kernel completes the handshake
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	first := <-accepted
	<-accepted
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted with max 2")
	case <-time.After(200 * time.Millisecond):
	}
	first.Close()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the third connection was not accepted after one closed")
	}
}
