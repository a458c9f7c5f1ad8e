package clientip

import (
	"net/netip"
	"strings"
	"testing"
)

func TestClientIP(t *testing.T) {
	trusted, err := ParsePrefixes("172.30.0.2, 10.0.0.0/8, fd00::/8")
	if err != nil {
		t.Fatal(err)
	}
	r := NewResolver(trusted)
	tests := []struct {
		name   string
		remote string
		xff    []string
		want   string
	}{
		{"untrusted peer, no header", "203.0.113.5:1234", nil, "203.0.113.5"},
		{"untrusted peer forges the header", "203.0.113.5:1234", []string{"1.2.3.4"}, "203.0.113.5"},
		{"trusted proxy, one client", "172.30.0.2:5555", []string{"198.51.100.7"}, "198.51.100.7"},
		{"trusted proxy, client forged a left entry", "172.30.0.2:5555", []string{"1.1.1.1, 198.51.100.7"}, "198.51.100.7"},
		{"two trusted proxies", "172.30.0.2:5555", []string{"198.51.100.7, 10.1.2.3"}, "198.51.100.7"},
		{"several header lines", "172.30.0.2:5555", []string{"1.1.1.1", "198.51.100.7, 10.1.2.3"}, "198.51.100.7"},
		{"trusted proxy, no header", "172.30.0.2:5555", nil, "172.30.0.2"},
		{"only trusted entries", "172.30.0.2:5555", []string{"10.0.0.9"}, "10.0.0.9"},
		{"malformed rightmost entry", "172.30.0.2:5555", []string{"198.51.100.7, nonsense"}, "172.30.0.2"},
		{"malformed left of the client", "172.30.0.2:5555", []string{"nonsense, 198.51.100.7"}, "198.51.100.7"},
		{"entry with a port", "172.30.0.2:5555", []string{"198.51.100.7:80"}, "198.51.100.7"},
		{"IPv6 entry with a port", "172.30.0.2:5555", []string{"[2001:db8::1]:443"}, "2001:db8::1"},
		{"empty entry", "172.30.0.2:5555", []string{""}, "172.30.0.2"},
		{"IPv6 client behind proxy", "172.30.0.2:5555", []string{"2001:db8::1"}, "2001:db8::1"},
		{"IPv4-mapped IPv6 peer", "[::ffff:203.0.113.5]:1", nil, "203.0.113.5"},
		{"IPv6 trusted proxy", "[fd00::2]:1", []string{"198.51.100.7"}, "198.51.100.7"},
		{"unparsable peer", "nonsense", []string{"1.2.3.4"}, "invalid IP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.ClientIP(tt.remote, tt.xff).String(); got != tt.want {
				t.Errorf("ClientIP(%q, %q) = %s; want %s", tt.remote, tt.xff, got, tt.want)
			}
		})
	}
	// With no trusted proxies, headers never count.
	if got := NewResolver(nil).ClientIP("172.30.0.2:1", []string{"198.51.100.7"}).String(); got != "172.30.0.2" {
		t.Errorf("no trusted proxies: %s", got)
	}
}

func TestLimitKey(t *testing.T) {
	a := LimitKey(netip.MustParseAddr("2001:db8:1:2:aaaa::1"))
	b := LimitKey(netip.MustParseAddr("2001:db8:1:2:bbbb::9"))
	c := LimitKey(netip.MustParseAddr("2001:db8:1:3::1"))
	if a != b || a == c || a != "2001:db8:1:2::/64" {
		t.Errorf("IPv6 keys: %s %s %s; want one /64 for the first two", a, b, c)
	}
	if k := LimitKey(netip.MustParseAddr("203.0.113.5")); k != "203.0.113.5" {
		t.Errorf("IPv4 key = %s", k)
	}
}

func TestParsePrefixes(t *testing.T) {
	if _, err := ParsePrefixes("10.0.0.0/8, bogus"); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("ParsePrefixes with a bad entry = %v", err)
	}
	p, err := ParsePrefixes(" ")
	if err != nil || len(p) != 0 {
		t.Errorf("empty list = %v, %v", p, err)
	}
}

// FuzzClientIP: whatever the headers, the answer is the peer or an address
// that appears in the header, never a panic, and an untrusted peer is never
// overridden.
func FuzzClientIP(f *testing.F) {
	f.Add("172.30.0.2:5555", "1.1.1.1, 198.51.100.7")
	f.Add("203.0.113.5:1", "1.2.3.4")
	f.Add("[fd00::2]:1", "2001:db8::1, ,")
	f.Add("nonsense", "")
	trusted, _ := ParsePrefixes("172.30.0.2, fd00::/8")
	r := NewResolver(trusted)
	f.Fuzz(func(t *testing.T, remote, xff string) {
		got := r.ClientIP(remote, []string{xff})
		peer := parseHost(remote)
		if !peer.IsValid() {
			if got.IsValid() {
				t.Fatalf("valid %s from an unparsable peer", got)
			}
			return
		}
		if !r.isTrusted(peer) && got != peer {
			t.Fatalf("untrusted peer %s overridden by %s", peer, got)
		}
		if got != peer && !strings.Contains(xff, strings.TrimPrefix(got.String(), "::ffff:")) && !containsAddr(xff, got) {
			t.Fatalf("client %s is neither the peer nor in the header %q", got, xff)
		}
		_ = LimitKey(got)
	})
}

func containsAddr(xff string, a netip.Addr) bool {
	for _, p := range strings.Split(xff, ",") {
		if b, err := netip.ParseAddr(strings.TrimSpace(p)); err == nil && b.Unmap() == a {
			return true
		}
	}
	return false
}
