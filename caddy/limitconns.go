package main

import (
	"errors"
	"net"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"golang.org/x/net/netutil"
)

func init() {
	caddy.RegisterModule(limitConns{})
}

// limitConns is a listener wrapper, "limit_conns <max>" in a Caddyfile's
// listener_wrappers: at most max TCP connections open at once on each
// listener; a client past that waits in the kernel's accept queue until one
// closes. Caddy has no such limit of its own, and each open connection
// holds memory (TLS state, buffers, goroutines, and the request that waits
// for the app): an overload that opened thousands of connections took
// Caddy past its container's memory limit, and the kernel killed it
// (scripts/bench, the open model). The semaphore is x/net's LimitListener.
// HTTP/3 has no listener to wrap: QUIC connections are not counted.
type limitConns struct {
	// Max is the most connections open at once.
	Max int `json:"max"`
}

// CaddyModule returns the Caddy module information.
func (limitConns) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.listeners.limit_conns",
		New: func() caddy.Module { return new(limitConns) },
	}
}

// Validate refuses a limit that would refuse everything.
func (l limitConns) Validate() error {
	if l.Max < 1 {
		return errMaxConns
	}
	return nil
}

// WrapListener counts ln's connections.
func (l limitConns) WrapListener(ln net.Listener) net.Listener {
	return netutil.LimitListener(ln, l.Max)
}

var errMaxConns = errors.New("limit_conns: max must be a positive number of connections")

// UnmarshalCaddyfile sets up the wrapper from Caddyfile tokens:
//
//	limit_conns <max>
func (l *limitConns) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module's name
	if !d.NextArg() {
		return d.ArgErr()
	}
	n, err := strconv.Atoi(d.Val())
	if err != nil || n < 1 {
		return d.Errf("limit_conns %q: want a positive number of connections", d.Val())
	}
	l.Max = n
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

var (
	_ caddy.ListenerWrapper = (*limitConns)(nil)
	_ caddy.Validator       = (*limitConns)(nil)
	_ caddyfile.Unmarshaler = (*limitConns)(nil)
)
