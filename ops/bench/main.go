// Command bench measures what the kit's edge and app cost, side by side
// with a reference nginx in front of the same app, on loopback. Run it as
// scripts/bench (the README's "Performance" section says how to read it):
//
//	scripts/bench            the full run: 2 rounds of 8 s cells, about 40 minutes
//	scripts/bench -smoke     a few seconds per cell, to check that it works
//
// It starts a Redis, the app in production mode, our Caddy with the
// repository's Caddyfile, the reference nginx (ops/bench/nginx.conf: a
// benchmark reference, not part of the kit) and a bare net/http server
// writing the app's home page, each in its own process group; and, with
// -stack (the default), the kit's compose stack as its own project, reached
// through its published port and at Caddy's and the app's containers
// directly (ops/bench/stack.go). Then, round after round, for each path and each mode, it loads every front in turn
// (the order alternates between rounds) and records requests/s, latency
// percentiles, errors, CPU time per request of the proxy, the app and Redis
// (from /proc; a container's processes from its cgroup) and their peak
// resident memory. Figures are the medians over
// rounds. Output: a Markdown table on stdout and in OUT/results.md, the raw
// data in OUT/results.json, a chart in OUT/chart.png.
//
// Load goes to 127.0.0.1 and to the bench's own containers only: h2load
// (Debian's nghttp2-client) for the closed model, vegeta (pinned in go.mod)
// for the open model.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A path is one of the requests the bench sends.
type path struct {
	name    string
	method  string
	target  string
	body    string
	headers []string
}

// A front is where the load goes: a proxy in front of the app, or a server
// alone.
type front struct {
	name   string
	tls    bool
	host   string // the address the load connects to: 127.0.0.1, or a container's
	port   int
	paths  []string         // the paths it serves (nil: all)
	skip   []string         // modes it is not measured in
	meters map[string]meter // role (proxy, app, redis...) → its CPU and memory
	user   benchUser        // the signed-in path's user, in this front's Redis
	stack  *stack           // the compose stack the front belongs to, if any
}

// url is p's URL on f: TLS fronts are named localhost, the certificate's
// name, whatever address the load connects to.
func (f *front) url(p path) string {
	if f.tls {
		return fmt.Sprintf("https://localhost:%d%s", f.port, p.target)
	}
	return fmt.Sprintf("http://%s%s", f.addr(), p.target)
}

func (f *front) addr() string { return net.JoinHostPort(f.host, strconv.Itoa(f.port)) }

// request is p for f's user: {id} and {cookie} filled in.
func (f *front) request(p path) path {
	r := strings.NewReplacer("{id}", f.user.id, "{cookie}", f.user.cookie)
	p.target = r.Replace(p.target)
	p.headers = slices.Clone(p.headers)
	for i, h := range p.headers {
		p.headers[i] = r.Replace(h)
	}
	return p
}

func (f *front) serves(p path, m mode) bool {
	if !m.h1 && !f.tls {
		return false // no HTTP/2 without TLS (no h2c)
	}
	return !contains(f.skip, m.name) && (f.paths == nil || contains(f.paths, p.name))
}

// only keeps the items whose name is in names; nil names keeps them all.
func only[T any](items []T, names []string, name func(T) string) []T {
	if names == nil {
		return items
	}
	var kept []T
	for _, it := range items {
		if contains(names, name(it)) {
			kept = append(kept, it)
		}
	}
	return kept
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

type config struct {
	rounds         int
	warm, duration time.Duration
	conns, streams int
	out            string
	only           []string // fronts to run (empty: all)
	onlyPaths      []string
	onlyModes      []string
	pprof          bool
	stack          bool
	caddyEnv       envList
	appEnv         envList
	stackEnv       envList
	smoke          bool
	caddyfile      string
	report         string
	nginxConf      string
	bareBody       string
	bareListen     string
	bareCert       string
	bareKey        string
}

// envList is a repeatable -flag NAME=VALUE.
type envList []string

func (e *envList) String() string     { return strings.Join(*e, " ") }
func (e *envList) Set(v string) error { *e = append(*e, v); return nil }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	var c config
	var only, onlyPaths, onlyModes string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.BoolVar(&c.smoke, "smoke", false, "a short run (1 s cells) that checks the bench works; its figures mean little")
	fs.IntVar(&c.rounds, "rounds", 2, "rounds; each cell's figure is the median over rounds")
	fs.DurationVar(&c.duration, "duration", 8*time.Second, "length of each measured cell")
	fs.DurationVar(&c.warm, "warm", 2*time.Second, "warm-up before each cell, not measured")
	fs.IntVar(&c.conns, "conns", 64, "connections in the saturation modes")
	fs.IntVar(&c.streams, "streams", 10, "HTTP/2 streams per connection in the h2x10 mode")
	fs.StringVar(&c.out, "out", ".artifacts/bench", "folder for results.md, results.json and chart.png")
	fs.StringVar(&only, "fronts", "", "comma-separated fronts to run (caddy,nginx,app,bare,bare-tls,stack,stack-caddy,stack-app); default all")
	fs.StringVar(&onlyPaths, "paths", "", "comma-separated paths to run (page,redis-read,signed-in,write); default all")
	fs.StringVar(&onlyModes, "modes", "", "comma-separated modes to run (h1,h2,h2x10,one,open); default all (open needs h1)")
	fs.BoolVar(&c.stack, "stack", true, "also measure the compose stack (project "+stackProject+", Docker and Compose v2, ports 80 and 443 free): "+
		"through its published port, and at Caddy's and the app's containers directly")
	fs.BoolVar(&c.pprof, "pprof", false, "save a CPU profile of Caddy (from its admin API) for each h1 cell in OUT/caddy-PATH-h1.pprof")
	fs.Var(&c.caddyEnv, "caddy-env", "NAME=VALUE for Caddy's environment (repeatable), to try a lever; "+
		"it overrides the GOGC, GOMEMLIMIT and GOMAXPROCS taken from compose.yaml")
	fs.Var(&c.appEnv, "app-env", "NAME=VALUE for the app's environment (repeatable), likewise")
	fs.Var(&c.stackEnv, "stack-env", "NAME=VALUE for the stack's env file (repeatable), such as EDGE_MAX_CONNS=512, likewise")
	fs.StringVar(&c.caddyfile, "caddyfile", "Caddyfile", "the Caddyfile to run")
	fs.StringVar(&c.nginxConf, "nginx-conf", "ops/bench/nginx.conf", "the reference nginx's configuration template")
	fs.StringVar(&c.report, "report", "", "measure nothing: write the tables and the chart again from DIR/results.json into DIR (after a change to the report)")
	// The bare server: this program, started again by the bench.
	fs.StringVar(&c.bareListen, "bare-listen", "", "internal: serve the bare page on this address")
	fs.StringVar(&c.bareBody, "bare-body", "", "internal: the bare page's bytes")
	fs.StringVar(&c.bareCert, "bare-cert", "", "internal: TLS certificate for the bare page")
	fs.StringVar(&c.bareKey, "bare-key", "", "internal: TLS key for the bare page")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.bareListen != "" {
		return serveBare(c.bareListen, c.bareBody, c.bareCert, c.bareKey)
	}
	if c.report != "" {
		return rewrite(c.report, stdout)
	}
	split := func(s string) []string {
		if s == "" {
			return nil
		}
		return strings.Split(s, ",")
	}
	c.only, c.onlyPaths, c.onlyModes = split(only), split(onlyPaths), split(onlyModes)
	if c.smoke {
		c.duration, c.warm = time.Second, 500*time.Millisecond
	}
	for _, tool := range []string{"h2load", "nginx", "redis-server", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed (apt-get install -y nghttp2-client nginx redis-server)", tool)
		}
	}
	if c.stack {
		if err := exec.Command("docker", "compose", "version").Run(); err != nil {
			return errors.New("the stack's fronts need Docker and Compose v2 (bash scripts/install-compose.sh); -stack=false leaves them out")
		}
	}
	return bench(ctx, c, stdout)
}

func bench(ctx context.Context, c config, stdout io.Writer) error {
	dir, err := os.MkdirTemp("", "sitekit-bench.")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ps := &procs{dir: dir}
	defer ps.stopAll()

	log := func(format string, a ...any) { fmt.Fprintf(os.Stderr, "==> "+format+"\n", a...) }
	var st *stack
	if c.stack {
		log("bringing up the compose stack (project %s) with scripts/up.sh", stackProject)
		st, err = startStack(ctx, dir, c.stackEnv)
		defer func() {
			log("removing the compose stack")
			st.down()
		}()
		if err != nil {
			return err
		}
	}
	log("building the app and our Caddy")
	appBin, err := build(ctx, dir, "./app", "app")
	if err != nil {
		return err
	}
	caddyBin, err := build(ctx, dir, "./caddy", "caddy")
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}

	// Caddy and the app get the Go runtime settings the stack gives them.
	caddyEnv, err := runtimeEnv("compose.yaml", "caddy")
	if err != nil {
		return err
	}
	appEnv, err := runtimeEnv("compose.yaml", "app")
	if err != nil {
		return err
	}
	caddyEnv, appEnv = append(caddyEnv, c.caddyEnv...), append(appEnv, c.appEnv...)

	password := rand.Text()
	redis, redisPort, err := ps.startRedis(password)
	if err != nil {
		return err
	}
	app, appPort, err := ps.startApp(appBin, redisPort, password, appEnv)
	if err != nil {
		return err
	}
	caddy, caddyPort, caddyData, caddyAdmin, err := ps.startCaddy(caddyBin, c.caddyfile, appPort, caddyEnv)
	if err != nil {
		return err
	}
	workers := runtime.NumCPU()
	for _, kv := range caddyEnv {
		if v, ok := strings.CutPrefix(kv, "GOMAXPROCS="); ok {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				workers = n
			}
		}
	}
	nginx, nginxPort, err := ps.startNginx(c.nginxConf, caddyData, appPort, workers)
	if err != nil {
		return err
	}
	// The bare servers write the bytes of the app's home page.
	page, err := fetch(http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", appPort))
	if err != nil {
		return err
	}
	pageFile := filepath.Join(dir, "page.html")
	if err := os.WriteFile(pageFile, page, 0o644); err != nil {
		return err
	}
	bare, barePort, err := ps.startBare(self, "bare", pageFile, "", "")
	if err != nil {
		return err
	}
	cert, key := caddyCert(caddyData)
	bareTLS, bareTLSPort, err := ps.startBare(self, "bare-tls", pageFile, cert, key)
	if err != nil {
		return err
	}

	user, err := signUp(fmt.Sprintf("http://127.0.0.1:%d", appPort))
	if err != nil {
		return err
	}
	paths := []path{
		{name: "page", method: "GET", target: "/"},
		{name: "redis-read", method: "GET", target: "/api/users/{id}"},
		{name: "signed-in", method: "GET", target: "/api/me", headers: []string{"cookie: {cookie}"}},
		{name: "write", method: "POST", target: "/api/contact",
			body:    `{"name":"Bench","email":"bench@example.com","message":"Hello from scripts/bench."}`,
			headers: []string{"content-type: application/json"}},
	}
	pg := func(p *proc) meter { return groupMeter(p.cmd.Process.Pid) }
	backend := map[string]meter{"app": pg(app), "redis": pg(redis)}
	with := func(role string, p *proc) map[string]meter {
		m := maps.Clone(backend)
		m[role] = pg(p)
		return m
	}
	const lo = "127.0.0.1"
	fronts := []*front{
		{name: "caddy", tls: true, host: lo, port: caddyPort, meters: with("proxy", caddy), user: user},
		{name: "nginx", tls: true, host: lo, port: nginxPort, meters: with("proxy", nginx), user: user},
		{name: "app", host: lo, port: appPort, meters: backend, user: user},
		{name: "bare", host: lo, port: barePort, paths: []string{"page"}, meters: map[string]meter{"app": pg(bare)}},
		{name: "bare-tls", tls: true, host: lo, port: bareTLSPort, paths: []string{"page"}, meters: map[string]meter{"app": pg(bareTLS)}},
	}
	if st != nil {
		// The stack's own user, signed up at its app's container.
		stackUser, err := signUp("http://" + net.JoinHostPort(st.app, "3000"))
		if err != nil {
			return fmt.Errorf("the stack: %w", err)
		}
		for _, f := range st.fronts() {
			f.user = stackUser
			fronts = append(fronts, f)
		}
	}
	fronts = only(fronts, c.only, func(f *front) string { return f.name })
	paths = only(paths, c.onlyPaths, func(p path) string { return p.name })
	modes := []mode{
		{name: "h1", h1: true, conns: c.conns, streams: 1},
		{name: "h2", conns: c.conns, streams: 1},
		{name: "h2x" + strconv.Itoa(c.streams), conns: c.conns, streams: c.streams},
		{name: "one", h1: true, conns: 1, streams: 1},
		{name: "open", h1: true, open: true},
	}
	modes = only(modes, c.onlyModes, func(m mode) string { return m.name })

	res := &results{
		Started: time.Now().UTC(), Rounds: c.rounds, Duration: c.duration.String(), Warm: c.warm.String(),
		Conns: c.conns, Streams: c.streams, Smoke: c.smoke, CPUs: runtime.NumCPU(), CaddyEnv: caddyEnv, AppEnv: appEnv,
		StackEnv: c.stackEnv,
		Versions: versions(caddyBin), NginxWorkers: workers,
		Idle: map[string]map[string]float64{},
	}
	for _, f := range fronts {
		res.Fronts = append(res.Fronts, f.name)
		res.Idle[f.name] = map[string]float64{}
		for role, m := range f.meters {
			res.Idle[f.name][role] = mib(m().rss)
		}
	}
	for _, p := range paths {
		res.Paths = append(res.Paths, p.name)
	}
	for _, m := range modes {
		res.Modes = append(res.Modes, m.name)
	}

	total := 0
	for _, p := range paths {
		for _, m := range modes {
			for _, f := range fronts {
				if f.serves(p, m) {
					total++
				}
			}
		}
	}
	log("%d cells x %d rounds, %s each after %s of warm-up", total, c.rounds, c.duration, c.warm)
	done := 0
	for round := 1; round <= c.rounds; round++ {
		order := fronts
		if round%2 == 0 {
			order = reversed(fronts)
		}
		for _, p := range paths {
			peak := map[string]float64{} // front → h1 requests/s this round
			for _, m := range modes {
				for _, f := range order {
					if !f.serves(p, m) {
						continue
					}
					if err := ctx.Err(); err != nil {
						return err
					}
					done++
					rate := 0.0
					if m.open {
						// Half of nginx's peak on this path; the front's own
						// when nginx is not in the run.
						rate = peak["nginx"] / 2
						if rate == 0 {
							rate = peak[f.name] / 2
						}
					}
					var profile func() error
					if c.pprof && f.name == "caddy" && m.name == "h1" {
						profile = caddyProfile(caddyAdmin, c.warm+c.duration/2, c.duration/2,
							filepath.Join(c.out, fmt.Sprintf("caddy-%s-h1.pprof", p.name)))
					}
					cell, err := runCell(ctx, dir, f, p, m, rate, c)
					if profile != nil {
						if err := profile(); err != nil {
							return err
						}
					}
					if err != nil {
						return fmt.Errorf("round %d, %s %s %s: %w", round, f.name, p.name, m.name, err)
					}
					cell.Round = round
					if m.name == "h1" {
						peak[f.name] = cell.RPS
					}
					res.Cells = append(res.Cells, cell)
					first := ""
					if cell.FirstErr != "" {
						first = " (the first: " + cell.FirstErr + ")"
					}
					log("[%d/%d] round %d %-11s %-10s %-5s %8.0f req/s  p99 %7.2f ms  errors %d%s%s",
						done, total*c.rounds, round, f.name, p.name, m.name, cell.RPS, cell.P99, cell.Errors, first, restarted(cell))
				}
			}
		}
	}
	for _, p := range []*proc{redis, app, caddy, nginx} {
		if !p.alive() {
			return fmt.Errorf("%s exited during the run:\n%s", p.name, p.tail())
		}
	}
	if err := res.write(c.out, stdout); err != nil {
		return err
	}
	// Under the full run's load an error answer is a figure; in the smoke
	// run, whose load is light and short, it means the bench is broken.
	if c.smoke {
		for _, cell := range res.Cells {
			if cell.Errors > 0 {
				return fmt.Errorf("smoke run: %s %s %s got %d error answers (logs: rerun without -smoke, or see %s)",
					cell.Front, cell.Path, cell.Mode, cell.Errors, c.out)
			}
		}
	}
	return nil
}

func runCell(ctx context.Context, dir string, f *front, p path, m mode, rate float64, c config) (cell, error) {
	if m.open {
		// An overloaded front goes on working through what queued after
		// the load stops, and the next front (which shares the app and
		// Redis) would meet it in its own warm-up: nginx's open cells after
		// Caddy's lost hundreds of requests that way, and none when first.
		defer settle(ctx, f)
	}
	if f.stack != nil {
		before, err := f.stack.restarts(ctx)
		if err != nil {
			return cell{}, err
		}
		out, err := measure(ctx, dir, f, p, m, rate, c)
		if err != nil {
			return out, err
		}
		after, err := f.stack.restarts(ctx)
		if err != nil {
			return out, err
		}
		// A container the load got killed: count it, and let Docker bring
		// it back before the next cell.
		if out.Restarts = after - before; out.Restarts > 0 {
			err = f.stack.waitHealthy(ctx, 2*time.Minute)
		}
		return out, err
	}
	return measure(ctx, dir, f, p, m, rate, c)
}

// settle waits until f's processes are idle again (under a tenth of a CPU
// over a quarter of a second), for at most 30 s.
func settle(ctx context.Context, f *front) {
	busy := func() time.Duration {
		var t time.Duration
		for _, m := range f.meters {
			t += m().cpu
		}
		return t
	}
	const every = 250 * time.Millisecond
	last := busy()
	for range 30 * time.Second / every {
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		now := busy()
		if now-last < every/10 {
			return
		}
		last = now
	}
}

// measure runs one cell's load and samples its processes.
func measure(ctx context.Context, dir string, f *front, p path, m mode, rate float64, c config) (cell, error) {
	p = f.request(p)
	s := newSampler(f.meters)
	var r measured
	var err error
	if m.open {
		r, err = vegetaRun(ctx, f, p, rate, c.warm, c.duration, s.mark)
	} else {
		r, err = h2load(ctx, dir, f, p, m, c.warm, c.duration, s.mark)
	}
	cpu, rss := s.stop()
	if err != nil {
		return cell{}, err
	}
	out := cell{Front: f.name, Path: p.name, Mode: m.name, Requests: r.requests, Errors: r.errors, FirstErr: r.firstError,
		Seconds: r.seconds, Rate: r.rate, CPUus: map[string]float64{}, RSSMiB: map[string]float64{}}
	if r.seconds > 0 {
		out.RPS = float64(r.requests) / r.seconds
	}
	out.P50, out.P99, out.P999 = quantile(r.latencies, 0.50), quantile(r.latencies, 0.99), quantile(r.latencies, 0.999)
	for role, t := range cpu {
		if r.requests > 0 {
			out.CPUus[role] = float64(t.Microseconds()) / float64(r.requests+r.errors)
		}
		out.RSSMiB[role] = mib(rss[role])
	}
	return out, nil
}

func restarted(c cell) string {
	if c.Restarts == 0 {
		return ""
	}
	return fmt.Sprintf("  CONTAINERS RESTARTED: %d", c.Restarts)
}

// caddyProfile starts taking a CPU profile of Caddy through its admin API,
// from after until after+d, into file; the returned function waits for it.
func caddyProfile(admin string, after, d time.Duration, file string) func() error {
	errc := make(chan error, 1)
	go func() {
		time.Sleep(after)
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", admin, max(1, int(d.Seconds())))
		b, err := fetch(http.DefaultClient, url)
		if err == nil {
			if err = os.MkdirAll(filepath.Dir(file), 0o755); err == nil {
				err = os.WriteFile(file, b, 0o644)
			}
		}
		errc <- err
	}()
	return func() error { return <-errc }
}

// quantile is the q-quantile of sorted latencies, in milliseconds.
func quantile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := min(len(sorted)-1, int(q*float64(len(sorted))))
	return float64(sorted[i].Microseconds()) / 1000
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func reversed(fs []*front) []*front {
	out := make([]*front, len(fs))
	for i, f := range fs {
		out[len(fs)-1-i] = f
	}
	return out
}

// versions names what was measured.
func versions(caddyBin string) map[string]string {
	v := map[string]string{}
	one := func(name string, argv ...string) {
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err == nil {
			v[name] = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
		}
	}
	one("caddy", caddyBin, "version")
	one("nginx", "nginx", "-v")
	one("redis", "redis-server", "--version")
	one("h2load", "h2load", "--version")
	one("go", "go", "version")
	return v
}
