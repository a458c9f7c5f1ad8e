package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus"
)

func init() {
	caddy.RegisterModule(limitConns{})
}

// limitConns is a listener wrapper, "limit_conns" in a Caddyfile's
// listener_wrappers, that bounds TCP connections before TLS:
//
//   - at most Max open at once on the listener. Each open connection holds
//     memory (TLS state, buffers, goroutines, the request that waits for
//     the app): an overload that opened thousands took Caddy past its
//     container's memory limit, and the kernel killed it (scripts/bench).
//     At the cap, the connection that has been quiet longest (no byte read
//     or written for Quiet) is closed to make room: an idle keep-alive, a
//     TLS connection that never asked. One that has not sent a byte since
//     it was accepted gives way after 2 s already: a browser sends its TLS
//     hello at once. If none is quiet enough, the new one waits in the
//     kernel's accept queue until one closes.
//   - at most PerClient open at once per client address (IPv6 per /64),
//     and PerClientRate new ones per second (a burst of PerClient): past
//     either, the client's new connection is closed at once. One client
//     can then neither fill the cap nor churn handshakes; another client's
//     connection is never closed for it.
//
// The client is the connection's peer: put proxy_protocol before this
// wrapper when a load balancer sits in front (EDGE_TRUSTED_PROXIES). A peer
// in Shared stands for many clients (Docker's gateway, which relays what
// its userland proxy accepts, IPv6 visitors among them): it counts only
// towards Max.
// HTTP/3 has no listener to wrap: QUIC connections are not counted.
type limitConns struct {
	// Max is the most connections open at once.
	Max int `json:"max"`
	// PerClient is the most open at once from one client; 0: no limit.
	PerClient int `json:"per_client,omitempty"`
	// PerClientRate is new connections per second from one client, in a
	// burst of PerClient; 0: no limit.
	PerClientRate float64 `json:"per_client_rate,omitempty"`
	// Quiet is how long a connection must have been silent before it may
	// be closed to make room at the cap; 0: 10s.
	Quiet caddy.Duration `json:"quiet,omitempty"`
	// Shared are peers not limited per client (CIDRs or addresses).
	Shared []string `json:"shared,omitempty"`

	metrics *limitMetrics
}

// CaddyModule returns the Caddy module information.
func (limitConns) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.listeners.limit_conns",
		New: func() caddy.Module { return new(limitConns) },
	}
}

// limitMetrics count what the wrapper refused or closed.
type limitMetrics struct {
	refused   *prometheus.CounterVec // by reason: client_conns, client_rate
	reclaimed prometheus.Counter
}

// Provision registers the wrapper's metrics, once per registry: every
// listener of a config shares them.
func (l *limitConns) Provision(ctx caddy.Context) error {
	m := &limitMetrics{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sitekit_edge_conns_refused_total",
			Help: "TCP connections closed at accept by limit_conns, by reason (client_conns: the client had per_client open; client_rate: it opened more than per_client_rate a second).",
		}, []string{"reason"}),
		reclaimed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sitekit_edge_conns_reclaimed_total",
			Help: "Quiet TCP connections limit_conns closed to make room for a new one at its cap.",
		}),
	}
	reg := ctx.GetMetricsRegistry()
	if reg == nil {
		l.metrics = m
		return nil
	}
	var are prometheus.AlreadyRegisteredError
	if err := reg.Register(m.refused); errors.As(err, &are) {
		m.refused = are.ExistingCollector.(*prometheus.CounterVec)
	} else if err != nil {
		return err
	}
	if err := reg.Register(m.reclaimed); errors.As(err, &are) {
		m.reclaimed = are.ExistingCollector.(prometheus.Counter)
	} else if err != nil {
		return err
	}
	l.metrics = m
	return nil
}

// Validate refuses limits that would refuse everything.
func (l limitConns) Validate() error {
	if l.Max < 1 || l.PerClient < 0 || l.PerClientRate < 0 || l.Quiet < 0 || l.PerClientRate > 0 && l.PerClient == 0 {
		return errMaxConns
	}
	_, err := parsePrefixes(l.Shared)
	return err
}

// parsePrefixes parses CIDRs or bare addresses.
func parsePrefixes(in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("limit_conns shared %q: want a CIDR or an address", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

var errMaxConns = errors.New("limit_conns: max must be a positive number of connections; per_client, per_client_rate and quiet not negative; per_client_rate needs per_client, its burst")

// WrapListener counts ln's connections.
func (l limitConns) WrapListener(ln net.Listener) net.Listener {
	quiet := time.Duration(l.Quiet)
	if quiet == 0 {
		quiet = 10 * time.Second
	}
	m := l.metrics
	if m == nil { // not provisioned: a test
		m = &limitMetrics{
			refused:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "refused"}, []string{"reason"}),
			reclaimed: prometheus.NewCounter(prometheus.CounterOpts{Name: "reclaimed"}),
		}
	}
	shared, _ := parsePrefixes(l.Shared) // checked by Validate
	ll := &limitListener{
		Listener: ln, max: l.Max, perClient: l.PerClient, rate: l.PerClientRate, quiet: quiet, shared: shared,
		now: time.Now, metrics: m,
		conns: map[*limitedConn]struct{}{}, clients: map[netip.Prefix]*client{},
	}
	ll.freed = sync.NewCond(&ll.mu)
	return ll
}

type limitListener struct {
	net.Listener
	max, perClient int
	rate           float64
	quiet          time.Duration
	shared         []netip.Prefix
	now            func() time.Time
	metrics        *limitMetrics

	mu      sync.Mutex
	freed   *sync.Cond // a connection closed
	conns   map[*limitedConn]struct{}
	clients map[netip.Prefix]*client
	closed  bool
}

// client is what one client address holds: its open connections and its
// token bucket for new ones.
type client struct {
	open   int
	tokens float64
	at     time.Time // when tokens was last brought up to date
}

// clientOf is the key a peer is counted under: its address, IPv6 per /64
// (one subscriber usually holds a whole /64), as the app's rate limits do.
func clientOf(addr net.Addr) netip.Prefix {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return netip.Prefix{}
	}
	ip := ap.Addr().Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// Accept returns the next connection within the limits. A connection
// refused for its client's limits is closed here and never returned.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if lc := l.admit(c); lc != nil {
			return lc, nil
		}
		_ = c.Close()
	}
}

// admit counts c in, or returns nil when its client is over a limit. At the
// total cap it first closes the quietest connection, if one is quiet
// enough, or waits for one to close.
func (l *limitListener) admit(c net.Conn) *limitedConn {
	key := clientOf(c.RemoteAddr())
	limited := l.perClient > 0
	for _, p := range l.shared {
		if p.Contains(key.Addr()) {
			limited = false
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	cl := l.clients[key]
	if cl == nil {
		cl = &client{tokens: float64(l.perClient), at: now}
		l.clients[key] = cl
	}
	if l.rate > 0 {
		cl.tokens = min(float64(l.perClient), cl.tokens+now.Sub(cl.at).Seconds()*l.rate)
		cl.at = now
	}
	switch {
	case limited && cl.open >= l.perClient:
		l.metrics.refused.WithLabelValues("client_conns").Inc()
		return nil
	case limited && l.rate > 0 && cl.tokens < 1:
		l.metrics.refused.WithLabelValues("client_rate").Inc()
		return nil
	}
	for len(l.conns) >= l.max && !l.closed {
		if victim := l.quietest(l.now()); victim != nil {
			l.metrics.reclaimed.Inc()
			l.mu.Unlock()
			_ = victim.Close() // takes l.mu to count itself out
			l.mu.Lock()
			continue
		}
		l.freed.Wait()
	}
	if l.closed {
		return nil
	}
	cl.open++
	if limited && l.rate > 0 {
		cl.tokens--
	}
	lc := &limitedConn{Conn: c, l: l, key: key}
	lc.touch(now)
	l.conns[lc] = struct{}{}
	if len(l.clients) > 2*len(l.conns)+1024 {
		l.sweep(now)
	}
	return lc
}

// muteLimit is how long a connection that has sent nothing since it was
// accepted may stay at the cap: a browser's TLS hello follows its connect
// within a round trip, so 2 s of silence is no browser (the abuse run: 50
// addresses' silent sockets kept new visitors out for the whole Quiet).
const muteLimit = 2 * time.Second

// quietest is the connection silent longest among those silent for l.quiet
// (for muteLimit, if it never sent a byte), or nil. A linear scan: it runs only
// at the cap, over at most max connections.
func (l *limitListener) quietest(now time.Time) *limitedConn {
	var victim *limitedConn
	var oldest int64
	quiet, mute := now.Add(-l.quiet).UnixNano(), now.Add(-min(l.quiet, muteLimit)).UnixNano()
	for c := range l.conns {
		t := c.last.Load()
		limit := quiet
		if !c.spoke.Load() {
			limit = mute
		}
		if t <= limit && (victim == nil || t < oldest) {
			victim, oldest = c, t
		}
	}
	return victim
}

// sweep forgets clients with nothing open whose bucket is full again.
func (l *limitListener) sweep(now time.Time) {
	for k, cl := range l.clients {
		if cl.open == 0 && (l.rate == 0 || cl.tokens+now.Sub(cl.at).Seconds()*l.rate >= float64(l.perClient)) {
			delete(l.clients, k)
		}
	}
}

func (l *limitListener) release(c *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.conns[c]; !ok {
		return
	}
	delete(l.conns, c)
	if cl := l.clients[c.key]; cl != nil {
		cl.open--
	}
	l.freed.Signal()
}

// Close closes the listener and wakes an Accept that waits at the cap.
func (l *limitListener) Close() error {
	l.mu.Lock()
	l.closed = true
	l.freed.Broadcast()
	l.mu.Unlock()
	return l.Listener.Close()
}

// limitedConn is a counted connection that notes when it last moved a byte.
type limitedConn struct {
	net.Conn
	l     *limitListener
	key   netip.Prefix
	last  atomic.Int64 // unix nanoseconds of the last read or write
	spoke atomic.Bool  // the peer has sent a byte
	once  sync.Once
}

func (c *limitedConn) touch(t time.Time) { c.last.Store(t.UnixNano()) }

func (c *limitedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.touch(c.l.now())
		c.spoke.Store(true)
	}
	return n, err
}

func (c *limitedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 {
		c.touch(c.l.now())
	}
	return n, err
}

// Close closes the connection and counts it out, once.
func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c) })
	return err
}

// UnmarshalCaddyfile sets up the wrapper from Caddyfile tokens:
//
//	limit_conns <max> {
//		per_client <n>
//		per_client_rate <per second>
//		quiet <duration>
//		shared <cidr>...
//	}
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
	for d.NextBlock(0) {
		name := d.Val()
		if name == "shared" {
			l.Shared = append(l.Shared, d.RemainingArgs()...) // none: an empty setting
			continue
		}
		if !d.NextArg() {
			return d.ArgErr()
		}
		v := d.Val()
		switch name {
		case "per_client":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return d.Errf("limit_conns per_client %q: want a number of connections, 0 for no limit", v)
			}
			l.PerClient = n
		case "per_client_rate":
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 {
				return d.Errf("limit_conns per_client_rate %q: want new connections per second, 0 for no limit", v)
			}
			l.PerClientRate = f
		case "quiet":
			q, err := caddy.ParseDuration(v)
			if err != nil || q <= 0 {
				return d.Errf("limit_conns quiet %q: want a positive duration", v)
			}
			l.Quiet = caddy.Duration(q)
		default:
			return d.Errf("limit_conns: unknown option %q", name)
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return nil
}

var (
	_ caddy.ListenerWrapper = (*limitConns)(nil)
	_ caddy.Provisioner     = (*limitConns)(nil)
	_ caddy.Validator       = (*limitConns)(nil)
	_ caddyfile.Unmarshaler = (*limitConns)(nil)
)
