// Package clientip is the one place the app decides who the client is.
//
// Forwarded headers are believed only from trusted proxies: a request whose
// peer is in the trusted list has its client taken from X-Forwarded-For,
// walking from the right and skipping trusted addresses (the rightmost entry
// that no trusted proxy vouches for is the one a client cannot forge). Any
// other request's client is its peer, whatever headers it carries.
package clientip

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Resolver finds the client address of a request.
type Resolver struct {
	trusted []netip.Prefix
}

// NewResolver returns a Resolver that trusts forwarded headers from peers in
// trusted. With none, it trusts no one.
func NewResolver(trusted []netip.Prefix) *Resolver {
	return &Resolver{trusted: trusted}
}

// ParsePrefixes parses a comma-separated list of CIDRs or single addresses
// ("172.30.0.2, 10.0.0.0/8, fd00::/8").
func ParsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an address nor a CIDR", f)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// ClientIP returns the client's address for a request from remoteAddr (the
// peer, "host:port") with the X-Forwarded-For header values xff. It returns
// the zero Addr only when remoteAddr itself is unparsable.
func (r *Resolver) ClientIP(remoteAddr string, xff []string) netip.Addr {
	peer := parseHost(remoteAddr)
	if !peer.IsValid() || !r.isTrusted(peer) {
		return peer
	}
	// Walk X-Forwarded-For from the right: the last hop was added by the
	// trusted peer; each trusted address means one more proxy to look past.
	// The first untrusted address is the client. A malformed entry stops the
	// walk: what lies left of it cannot be believed.
	client := peer
	for i := len(xff) - 1; i >= 0; i-- {
		parts := strings.Split(xff[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := parseEntry(strings.TrimSpace(parts[j]))
			if err != nil {
				return client
			}
			a = a.Unmap()
			if !r.isTrusted(a) {
				return a
			}
			client = a
		}
	}
	return client
}

func (r *Resolver) isTrusted(a netip.Addr) bool {
	for _, p := range r.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseEntry parses one X-Forwarded-For entry: an address, or an address
// with a port as some proxies write it.
func parseEntry(s string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a, nil
	}
	ap, err := netip.ParseAddrPort(s)
	return ap.Addr(), err
}

func parseHost(remoteAddr string) netip.Addr {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// LimitKey is the key rate limits count a client under: the address itself
// for IPv4, its /64 for IPv6, since one IPv6 subscriber usually holds a whole
// /64 and could otherwise rotate through 2^64 addresses.
func LimitKey(a netip.Addr) string {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}
