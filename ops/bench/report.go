package main

import (
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// cell is one measured run: one front, one path, one mode, one round (or,
// in medians, the median over rounds).
type cell struct {
	Round    int                `json:"round,omitempty"`
	Front    string             `json:"front"`
	Path     string             `json:"path"`
	Mode     string             `json:"mode"`
	Requests int64              `json:"requests"`                     // 2xx answers
	Errors   int64              `json:"errors"`                       // everything else
	FirstErr string             `json:"first_error,omitempty"`        // open model: the first error, to tell a refused connection from a 5xx
	Restarts int                `json:"container_restarts,omitempty"` // the stack's containers Docker restarted during the cell
	Seconds  float64            `json:"seconds"`
	RPS      float64            `json:"rps"`
	Rate     float64            `json:"rate,omitempty"` // open model: the rate asked for
	P50      float64            `json:"p50_ms"`
	P99      float64            `json:"p99_ms"`
	P999     float64            `json:"p999_ms"`
	CPUus    map[string]float64 `json:"cpu_us_per_request"` // by role: proxy, app, redis
	RSSMiB   map[string]float64 `json:"rss_mib_peak"`
}

// results is the whole run, written as results.json.
type results struct {
	Started      time.Time                     `json:"started"`
	Smoke        bool                          `json:"smoke"`
	Rounds       int                           `json:"rounds"`
	Duration     string                        `json:"duration"`
	Warm         string                        `json:"warm_up"`
	Conns        int                           `json:"connections"`
	Streams      int                           `json:"h2_streams"`
	CPUs         int                           `json:"cpus"`
	CaddyEnv     []string                      `json:"caddy_env,omitempty"`
	StackEnv     []string                      `json:"stack_env,omitempty"`
	AppEnv       []string                      `json:"app_env,omitempty"`
	NginxWorkers int                           `json:"nginx_workers"`
	Versions     map[string]string             `json:"versions"`
	Fronts       []string                      `json:"fronts"`
	Paths        []string                      `json:"paths"`
	Modes        []string                      `json:"modes"`
	Idle         map[string]map[string]float64 `json:"idle_rss_mib"` // front → role → MiB
	Cells        []cell                        `json:"cells"`
	Medians      []cell                        `json:"medians"`
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// medians folds the rounds: the median of every figure, errors summed and
// memory at its largest.
func (r *results) medians() []cell {
	type key struct{ front, path, mode string }
	groups := map[key][]cell{}
	var order []key
	for _, c := range r.Cells {
		k := key{c.Front, c.Path, c.Mode}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], c)
	}
	var out []cell
	for _, k := range order {
		cs := groups[k]
		m := cell{Front: k.front, Path: k.path, Mode: k.mode, CPUus: map[string]float64{}, RSSMiB: map[string]float64{}}
		pick := func(f func(cell) float64) float64 {
			v := make([]float64, len(cs))
			for i, c := range cs {
				v[i] = f(c)
			}
			return median(v)
		}
		m.RPS = pick(func(c cell) float64 { return c.RPS })
		m.Rate = pick(func(c cell) float64 { return c.Rate })
		m.P50 = pick(func(c cell) float64 { return c.P50 })
		m.P99 = pick(func(c cell) float64 { return c.P99 })
		m.P999 = pick(func(c cell) float64 { return c.P999 })
		m.Seconds = pick(func(c cell) float64 { return c.Seconds })
		for _, c := range cs {
			m.Requests += c.Requests
			m.Errors += c.Errors
			m.Restarts += c.Restarts
			for role, v := range c.RSSMiB {
				m.RSSMiB[role] = math.Max(m.RSSMiB[role], v)
			}
		}
		for role := range cs[0].CPUus {
			m.CPUus[role] = pick(func(c cell) float64 { return c.CPUus[role] })
		}
		out = append(out, m)
	}
	return out
}

func (r *results) find(front, path, mode string) (cell, bool) {
	for _, c := range r.Medians {
		if c.Front == front && c.Path == path && c.Mode == mode {
			return c, true
		}
	}
	return cell{}, false
}

// write prints the tables and writes results.md, results.json and
// chart.png into dir.
func (r *results) write(dir string, stdout io.Writer) error {
	r.Medians = r.medians()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	md := r.markdown()
	fmt.Fprint(stdout, md)
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), js, 0o644); err != nil {
		return err
	}
	if err := r.chart(filepath.Join(dir, "chart.png")); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "==> wrote %s/results.md, results.json and chart.png\n", dir)
	return nil
}

// rewrite writes dir's report again from its results.json.
func rewrite(dir string, stdout io.Writer) error {
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		return err
	}
	var r results
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s/results.json: %w", dir, err)
	}
	return r.write(dir, stdout)
}

func (r *results) markdown() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	kind := "full run"
	if r.Smoke {
		kind = "SMOKE run (1 s cells: the figures only show that it works)"
	}
	p("# scripts/bench, %s\n\n", kind)
	p("%s; %d CPUs shared by the load and the servers; %d rounds of %s cells after %s of warm-up; medians over rounds.\n",
		r.Started.Format("2006-01-02 15:04 UTC"), r.CPUs, r.Rounds, r.Duration, r.Warm)
	p("Saturation: %d connections, 1 request in flight each (h1, h2) or %d streams each (h2x%d). "+
		"one: a single connection, one request at a time. open: a fixed rate (half of nginx's h1 peak on that path), HTTP/1.1.\n",
		r.Conns, r.Streams, r.Streams)
	p("Go runtime settings (from compose.yaml, then -caddy-env and -app-env): Caddy `%s`, app `%s`; "+
		"nginx runs %d worker processes, as many as Caddy's GOMAXPROCS.\n",
		strings.Join(r.CaddyEnv, " "), strings.Join(r.AppEnv, " "), r.NginxWorkers)
	if len(r.StackEnv) > 0 {
		p("The stack's settings changed with -stack-env: `%s`.\n", strings.Join(r.StackEnv, " "))
	}
	p("\nVersions: ")
	var vs []string
	for _, k := range []string{"caddy", "nginx", "redis", "h2load", "go"} {
		if v := r.Versions[k]; v != "" {
			vs = append(vs, fmt.Sprintf("%s `%s`", k, v))
		}
	}
	p("%s.\n\n", strings.Join(vs, ", "))

	p("## Targets\n\n")
	p("| target | figure | met |\n|---|---|---|\n")
	for _, t := range r.targets() {
		met := "no"
		if t.met {
			met = "yes"
		}
		if math.IsNaN(t.value) {
			met = "not measured"
		}
		p("| %s | %s | %s |\n", t.name, t.figure, met)
	}

	p("\n## Ratios\n\n")
	p("| path | caddy ÷ nginx req/s h1 | h2 | h2x%d | caddy ÷ nginx CPU/req h1 | added p99, one connection: caddy | nginx | caddy h2x%d ÷ caddy h1 | caddy ÷ app req/s h1 |\n", r.Streams, r.Streams)
	p("|---|---|---|---|---|---|---|---|---|\n")
	h2x := fmt.Sprintf("h2x%d", r.Streams)
	for _, path := range r.Paths {
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", path,
			ratio(r.rps("caddy", path, "h1"), r.rps("nginx", path, "h1")),
			ratio(r.rps("caddy", path, "h2"), r.rps("nginx", path, "h2")),
			ratio(r.rps("caddy", path, h2x), r.rps("nginx", path, h2x)),
			ratio(r.cpu("caddy", path, "h1", "proxy"), r.cpu("nginx", path, "h1", "proxy")),
			ms(r.added("caddy", path)), ms(r.added("nginx", path)),
			ratio(r.rps("caddy", path, h2x), r.rps("caddy", path, "h1")),
			ratio(r.rps("caddy", path, "h1"), r.rps("app", path, "h1")))
	}

	if r.hasFront("stack") || r.hasFront("stack-caddy") || r.hasFront("stack-app") {
		r.stackSection(p)
	}

	roles := r.roles()
	header := func(what string) string {
		h := fmt.Sprintf("%s %s", what, roles[0])
		for _, role := range roles[1:] {
			h += " | " + role
		}
		return h
	}
	p("\n## Every cell (medians)\n\n")
	p("| path | mode | front | req/s | p50 ms | p99 ms | p99.9 ms | errors | %s | %s |\n", header("CPU µs/req"), header("peak RSS MiB"))
	p("|---|---|---|--:|--:|--:|--:|--:|%s\n", strings.Repeat("--:|", 2*len(roles)))
	for _, c := range r.Medians {
		rps := fmt.Sprintf("%.0f", c.RPS)
		if c.Rate > 0 {
			rps = fmt.Sprintf("%.0f (asked %.0f)", c.RPS, c.Rate)
		}
		errs := strconv.FormatInt(c.Errors, 10)
		if c.Restarts > 0 {
			errs += fmt.Sprintf(" (%d container restarts)", c.Restarts)
		}
		p("| %s | %s | %s | %s | %.2f | %.2f | %.2f | %s |", c.Path, c.Mode, c.Front, rps, c.P50, c.P99, c.P999, errs)
		for _, role := range roles {
			p(" %s |", num(c.CPUus, role))
		}
		for _, role := range roles {
			p(" %s |", num(c.RSSMiB, role))
		}
		p("\n")
	}

	p("\n## Resident memory when idle (MiB, before the first cell)\n\n| front | %s |\n|---|%s\n",
		strings.Join(roles, " | "), strings.Repeat("--:|", len(roles)))
	for _, f := range r.Fronts {
		p("| %s |", f)
		for _, role := range roles {
			p(" %s |", num(r.Idle[f], role))
		}
		p("\n")
	}
	return b.String()
}

// stackSection compares the compose stack's fronts: the published port
// (Docker's port proxy on loopback) against Caddy's container reached
// directly, and the containers against the same programs on loopback.
func (r *results) stackSection(p func(string, ...any)) {
	h2x := fmt.Sprintf("h2x%d", r.Streams)
	p("\n## The compose stack\n\n")
	p("stack: the published port 127.0.0.1:443, through Docker's port proxy; stack-caddy: Caddy's container at its own address; " +
		"stack-app: the app's container. docker: dockerd, containerd and the shims, which carry every log line.\n\n")
	p("| path | published ÷ Caddy's container req/s h1 | h2x%d | docker-proxy CPU µs/req h1 | added p99, one connection: port proxy | Caddy's container | "+
		"Caddy's container ÷ loopback Caddy req/s h1 | its CPU/req | app's container ÷ loopback app req/s h1 | docker CPU µs/req h1 (stack) |\n", r.Streams)
	p("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, path := range r.Paths {
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", path,
			ratio(r.rps("stack", path, "h1"), r.rps("stack-caddy", path, "h1")),
			ratio(r.rps("stack", path, h2x), r.rps("stack-caddy", path, h2x)),
			us(r.cpu("stack", path, "h1", "docker-proxy")),
			ms(r.p99("stack", path, "one")-r.p99("stack-caddy", path, "one")),
			ms(r.p99("stack-caddy", path, "one")-r.p99("stack-app", path, "one")),
			ratio(r.rps("stack-caddy", path, "h1"), r.rps("caddy", path, "h1")),
			ratio(r.cpu("stack-caddy", path, "h1", "proxy"), r.cpu("caddy", path, "h1", "proxy")),
			ratio(r.rps("stack-app", path, "h1"), r.rps("app", path, "h1")),
			us(r.cpu("stack", path, "h1", "docker")))
	}
	var killed []string
	for _, c := range r.Medians {
		if c.Restarts > 0 {
			killed = append(killed, fmt.Sprintf("%s %s %s (%d)", c.Front, c.Path, c.Mode, c.Restarts))
		}
	}
	if len(killed) > 0 {
		p("\nDocker restarted a container (a crash, or killed at its memory limit) during: %s.\n", strings.Join(killed, ", "))
	}
}

func (r *results) hasFront(name string) bool { return slices.Contains(r.Fronts, name) }

// roles are the columns of the per-role figures: proxy, app and redis, then
// Docker's when the stack was measured.
func (r *results) roles() []string {
	roles := []string{"proxy", "app", "redis"}
	for _, extra := range []string{"docker-proxy", "docker"} {
		for _, c := range r.Medians {
			if _, ok := c.CPUus[extra]; ok {
				roles = append(roles, extra)
				break
			}
		}
	}
	return roles
}

func (r *results) p99(front, path, mode string) float64 {
	if c, ok := r.find(front, path, mode); ok {
		return c.P99
	}
	return math.NaN()
}

func (r *results) rps(front, path, mode string) float64 {
	if c, ok := r.find(front, path, mode); ok {
		return c.RPS
	}
	return math.NaN()
}

func (r *results) cpu(front, path, mode, role string) float64 {
	if c, ok := r.find(front, path, mode); ok {
		if v, ok := c.CPUus[role]; ok {
			return v
		}
	}
	return math.NaN()
}

// added is the p99 latency a front adds over the app alone, on one
// unsaturated connection.
func (r *results) added(front, path string) float64 {
	return r.p99(front, path, "one") - r.p99("app", path, "one")
}

type target struct {
	name, figure string
	value        float64
	met          bool
}

// targets are issue 9's, each from this run's medians.
func (r *results) targets() []target {
	worst := func(f func(path string) float64, lowest bool) (float64, string) {
		best, at := math.NaN(), ""
		for _, p := range r.Paths {
			v := f(p)
			if math.IsNaN(v) {
				continue
			}
			if math.IsNaN(best) || (lowest && v < best) || (!lowest && v > best) {
				best, at = v, p
			}
		}
		return best, at
	}
	var ts []target
	add := func(name string, v float64, at string, unit string, met bool) {
		fig := "—"
		if !math.IsNaN(v) {
			fig = fmt.Sprintf("%.2f%s (worst path: %s)", v, unit, at)
		}
		ts = append(ts, target{name: name, figure: fig, value: v, met: met})
	}
	v, at := worst(func(p string) float64 { return r.rps("caddy", p, "h1") / r.rps("nginx", p, "h1") }, true)
	add("our edge ≥ 0.6× nginx's req/s on every path, HTTP/1.1", v, at, "×", v >= 0.6)
	v, at = worst(func(p string) float64 { return r.cpu("caddy", p, "h1", "proxy") / r.cpu("nginx", p, "h1", "proxy") }, false)
	add("Caddy CPU per proxied request ≤ 3× nginx's (h1)", v, at, "×", v <= 3)
	v, at = worst(func(p string) float64 { return r.added("caddy", p) }, false)
	add("latency Caddy adds at p99, one connection, ≤ 1.5 ms", v, at, " ms", v <= 1.5)
	h2x := fmt.Sprintf("h2x%d", r.Streams)
	v, at = worst(func(p string) float64 { return r.rps("caddy", p, h2x) / r.rps("caddy", p, "h1") }, true)
	add(fmt.Sprintf("Caddy's HTTP/2 (%d streams) ≥ 0.8× its HTTP/1.1", r.Streams), v, at, "×", v >= 0.8)
	// The app's whole chain against net/http writing the same bytes, both
	// plain HTTP: CPU per request and throughput.
	cpuRatio := r.cpu("app", "page", "h1", "app") / r.cpu("bare", "page", "h1", "app")
	add("the app's chain on a page ≤ 1.25× a bare net/http handler's CPU per request", cpuRatio, "page", "×", cpuRatio <= 1.25)
	tput := r.rps("bare", "page", "h1") / r.rps("app", "page", "h1")
	add("… and bare req/s ÷ the app's (≤ 1.25)", tput, "page", "×", tput <= 1.25)
	return ts
}

func ratio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func ms(v float64) string {
	if math.IsNaN(v) {
		return "—"
	}
	return fmt.Sprintf("%+.2f ms", v)
}

func us(v float64) string {
	if math.IsNaN(v) {
		return "—"
	}
	return fmt.Sprintf("%.0f µs", v)
}

func num(m map[string]float64, k string) string {
	v, ok := m[k]
	if !ok {
		return "—"
	}
	return fmt.Sprintf("%.0f", v)
}

// chart draws two panels: HTTP/1.1 saturation req/s and open-model p99
// latency (on a log scale: an overloaded front's seconds would flatten the
// others' milliseconds), per path, one bar per front; the fronts' legend
// stands on its own to the right, clear of the bars.
func (r *results) chart(file string) error {
	legend := plot.NewLegend()
	legend.Top, legend.Left = true, true
	panel := func(title, ylabel, mode string, value func(cell) float64) *plot.Plot {
		p := plot.New()
		p.Title.Text = title
		p.Y.Label.Text = ylabel
		w := vg.Points(10)
		n := len(r.Fronts)
		for i, f := range r.Fronts {
			vals := make(plotter.Values, len(r.Paths))
			for j, path := range r.Paths {
				if c, ok := r.find(f, path, mode); ok {
					vals[j] = value(c)
				}
			}
			bars, err := plotter.NewBarChart(vals, w)
			if err != nil {
				continue
			}
			bars.LineStyle.Width = 0
			bars.Color = palette[i%len(palette)]
			bars.Offset = vg.Length(float64(i)-float64(n-1)/2) * w
			p.Add(bars)
			if mode == "h1" {
				legend.Add(f, bars)
			}
		}
		p.NominalX(r.Paths...)
		// Room for each path's outer bars: the axis would end at the
		// last path's centre.
		p.X.Min, p.X.Max = -0.5, float64(len(r.Paths))-0.5
		return p
	}
	p1 := panel(fmt.Sprintf("Saturation, HTTP/1.1, %d connections", r.Conns), "requests/s", "h1", func(c cell) float64 { return c.RPS })
	p1.Y.Tick.Marker = plot.TickerFunc(func(min, max float64) []plot.Tick {
		ticks := plot.DefaultTicks{}.Ticks(min, max)
		for i, t := range ticks {
			if t.Label != "" { // whole requests, not "50000.00"
				ticks[i].Label = strconv.FormatFloat(t.Value, 'f', -1, 64)
			}
		}
		return ticks
	})
	p2 := panel("Fixed rate (half of nginx's peak): p99 latency", "ms (log scale)", "open", func(c cell) float64 { return c.P99 })
	p2.Y.Scale, p2.Y.Tick.Marker = logFloor{}, plot.LogTicks{Prec: -1}
	p2.Y.Min = math.Inf(1)
	for _, c := range r.Medians {
		if c.Mode == "open" && c.P99 > 0 {
			p2.Y.Min = math.Min(p2.Y.Min, c.P99/2)
		}
	}
	if math.IsInf(p2.Y.Min, 1) {
		p2.Y.Min, p2.Y.Max = 0.1, 1
	}
	const legendWidth = 110
	img := vgimg.New(vg.Points(1000+legendWidth), vg.Points(420))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Points(20), PadTop: vg.Points(10), PadBottom: vg.Points(10), PadLeft: vg.Points(10), PadRight: vg.Points(10)}
	canvases := plot.Align([][]*plot.Plot{{p1, p2}}, tiles, draw.Crop(dc, 0, -vg.Points(legendWidth), 0, 0))
	p1.Draw(canvases[0][0])
	p2.Draw(canvases[0][1])
	legend.Draw(draw.Crop(dc, vg.Points(1000), -vg.Points(10), 0, -vg.Points(40)))
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// logFloor is a log scale on which what lies below the axis's minimum (a
// bar's foot at 0) is drawn at the minimum.
type logFloor struct{}

func (logFloor) Normalize(min, max, x float64) float64 {
	return plot.LogScale{}.Normalize(min, max, math.Max(x, min))
}

var palette = []color.Color{
	color.RGBA{0x1f, 0x77, 0xb4, 0xff}, // caddy
	color.RGBA{0x2c, 0xa0, 0x2c, 0xff}, // nginx
	color.RGBA{0xff, 0x7f, 0x0e, 0xff}, // app
	color.RGBA{0x7f, 0x7f, 0x7f, 0xff}, // bare
	color.RGBA{0xbc, 0xbd, 0x22, 0xff}, // bare-tls
	color.RGBA{0x94, 0x67, 0xbd, 0xff}, // stack
	color.RGBA{0x17, 0xbe, 0xcf, 0xff}, // stack-caddy
	color.RGBA{0xd6, 0x27, 0x28, 0xff}, // stack-app
}
