package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// A mode is how the load is sent.
type mode struct {
	name    string
	h1      bool // HTTP/1.1 (else HTTP/2, TLS fronts only)
	conns   int  // connections (closed model)
	streams int  // requests in flight per connection
	open    bool // open model: a fixed rate, whatever the answers take
}

// measured is what one run of the load produced, before CPU and memory.
type measured struct {
	requests, errors int64
	seconds          float64
	latencies        []time.Duration // sorted
	rate             float64         // open model: the rate asked for
	firstError       string          // open model: what the first failed request met
}

// h2load runs Debian's h2load for d after warm (closed model): conns
// connections with streams requests in flight each. Its per-request log
// gives the latencies; only 2xx answers count as requests.
func h2load(ctx context.Context, dir string, f *front, p path, m mode, warm, d time.Duration, mark func()) (measured, error) {
	var r measured
	logFile := filepath.Join(dir, "h2load.log")
	_ = os.Remove(logFile)
	args := []string{
		"-D", strconv.Itoa(int(d.Milliseconds())) + "ms",
		"--warm-up-time", strconv.Itoa(int(warm.Milliseconds())) + "ms",
		"-c", strconv.Itoa(m.conns), "-m", strconv.Itoa(m.streams),
		"--log-file", logFile,
		"-H", "accept-encoding: gzip",
		"--connect-to", f.addr(),
	}
	if m.h1 {
		args = append(args, "--h1")
	}
	for _, h := range p.headers {
		args = append(args, "-H", h)
	}
	if p.body != "" {
		bodyFile := filepath.Join(dir, "body-"+p.name)
		if err := os.WriteFile(bodyFile, []byte(p.body), 0o644); err != nil {
			return r, err
		}
		args = append(args, "-d", bodyFile)
	}
	cmd := exec.CommandContext(ctx, "h2load", append(args, f.url(p))...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return r, err
	}
	// CPU is counted from the end of the warm-up to the end of the run.
	timer := time.AfterFunc(warm, mark)
	err := cmd.Wait()
	timer.Stop()
	if err != nil {
		return r, fmt.Errorf("h2load: %w\n%s", err, out.String())
	}
	return parseH2load(out.String(), logFile, d)
}

var (
	h2Finished = regexp.MustCompile(`finished in ([0-9.]+)(m?s)`)
	h2Requests = regexp.MustCompile(`requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	h2Status   = regexp.MustCompile(`status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`)
)

func parseH2load(out, logFile string, d time.Duration) (measured, error) {
	var r measured
	req, st := h2Requests.FindStringSubmatch(out), h2Status.FindStringSubmatch(out)
	if req == nil || st == nil {
		return r, fmt.Errorf("h2load printed no summary:\n%s", out)
	}
	n := func(s string) int64 { v, _ := strconv.ParseInt(s, 10, 64); return v }
	ok := n(st[1])
	// Anything but a 2xx is an error: a non-2xx status, a reset, a timeout.
	r.errors = n(st[2]) + n(st[3]) + n(st[4]) + n(req[6]) + n(req[7])
	r.requests = ok
	r.seconds = d.Seconds()
	if m := h2Finished.FindStringSubmatch(out); m != nil {
		v, _ := strconv.ParseFloat(m[1], 64)
		if m[2] == "ms" {
			v /= 1000
		}
		if v > 0 {
			r.seconds = v
		}
	}
	// The log: start time, status, latency in µs, one line per request.
	f, err := os.Open(logFile)
	if err != nil {
		return r, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), "\t")
		if len(fields) < 3 {
			continue
		}
		us, err := strconv.ParseInt(fields[2], 10, 64)
		if err != nil {
			continue
		}
		r.latencies = append(r.latencies, time.Duration(us)*time.Microsecond)
	}
	slices.Sort(r.latencies)
	if r.requests == 0 {
		return r, fmt.Errorf("no 2xx answer:\n%s", out)
	}
	return r, sc.Err()
}

// vegetaRun sends rate requests per second for d after warm (open model):
// a request leaves on time whether or not earlier ones were answered, so
// queueing shows in the latencies. HTTP/1.1 with keep-alive, as a browser's
// first connection.
func vegetaRun(ctx context.Context, f *front, p path, rate float64, warm, d time.Duration, mark func()) (measured, error) {
	r := measured{rate: rate}
	if rate < 1 {
		return r, errors.New("open model: no rate (the closed-model run found no peak)")
	}
	hdr := http.Header{}
	for _, h := range p.headers {
		k, v, _ := strings.Cut(h, ":")
		hdr.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	hdr.Set("Accept-Encoding", "gzip")
	target := vegeta.Target{Method: p.method, URL: f.url(p), Body: []byte(p.body), Header: hdr}
	transport := transportTo(f.addr())
	// An open model above a front's capacity opens a connection per waiting
	// request; close them all after the run, so the next cell does not find
	// the front holding thousands of idle connections.
	defer transport.CloseIdleConnections()
	client := &http.Client{Timeout: 10 * time.Second, Transport: transport}
	attack := func(d time.Duration, keep bool) {
		a := vegeta.NewAttacker(vegeta.Client(client), vegeta.Workers(64), vegeta.MaxWorkers(4096))
		start := time.Now()
		for res := range a.Attack(vegeta.NewStaticTargeter(target), vegeta.Rate{Freq: int(rate), Per: time.Second}, d, p.name) {
			if !keep {
				continue
			}
			if res.Error != "" || res.Code < 200 || res.Code >= 300 {
				if r.errors == 0 {
					r.firstError = cmp.Or(res.Error, fmt.Sprintf("HTTP %d", res.Code))
				}
				r.errors++
				continue
			}
			r.requests++
			r.latencies = append(r.latencies, res.Latency)
		}
		r.seconds = time.Since(start).Seconds()
	}
	attack(warm, false)
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	mark()
	attack(d, true)
	slices.Sort(r.latencies)
	return r, nil
}

// transportTo dials addr whatever the URL's host, and takes any
// certificate: the bench measures, it does not check identity.
func transportTo(addr string) *http.Transport {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		},
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback bench only
		MaxIdleConnsPerHost: 4096,
	}
}

// usage is CPU time and resident memory of a process group, read from /proc.
type usage struct {
	cpu time.Duration
	rss int64 // bytes
}

// clockTick is USER_HZ, the unit of /proc's CPU times: 100 on Linux.
const clockTick = 10 * time.Millisecond

// A meter reads the CPU time and resident memory of what plays one role in
// a cell: a process group the bench started, a container, or some of
// Docker's processes.
type meter func() usage

// groupMeter meters every process whose process group is pgid.
func groupMeter(pgid int) meter {
	return func() usage { return procsUsage(func(_ string, s procStat) bool { return s.pgrp == pgid }) }
}

// commUsage sums every process whose name (comm) is one of names.
func commUsage(names ...string) usage {
	return procsUsage(func(_ string, s procStat) bool { return contains(names, s.comm) })
}

// cgroupUsage sums the processes of the cgroup in dir: a container's.
func cgroupUsage(dir string) usage {
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	pids := strings.Fields(string(b))
	return procsUsage(func(pid string, _ procStat) bool { return contains(pids, pid) })
}

// procStat is what the bench reads of a process in /proc/PID/stat.
type procStat struct {
	comm string
	pgrp int
	cpu  time.Duration // user + system
	rss  int64         // bytes
}

// procsUsage sums CPU time and RSS over the processes that keep selects.
func procsUsage(keep func(pid string, s procStat) bool) usage {
	var u usage
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s, ok := parseStat(b)
		if ok && keep(e.Name(), s) {
			u.cpu += s.cpu
			u.rss += s.rss
		}
	}
	return u
}

var pageSize = int64(os.Getpagesize())

// parseStat reads a /proc/PID/stat line: "pid (comm) state ppid pgrp ...",
// utime and stime the 14th and 15th fields, rss (in pages) the 24th.
func parseStat(b []byte) (procStat, bool) {
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return procStat{}, false
	}
	f := strings.Fields(string(b[end+1:]))
	if len(f) < 22 {
		return procStat{}, false
	}
	pgrp, _ := strconv.Atoi(f[2])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	rss, _ := strconv.ParseInt(f[21], 10, 64)
	return procStat{comm: string(b[open+1 : end]), pgrp: pgrp, cpu: time.Duration(ut+st) * clockTick, rss: rss * pageSize}, true
}

// sampler follows the groups of one cell: CPU time between mark and stop,
// and the largest RSS seen meanwhile (every 200 ms).
type sampler struct {
	meters map[string]meter
	mu     sync.Mutex
	start  map[string]usage
	peak   map[string]int64
	stopc  chan struct{}
	done   chan struct{}
}

func newSampler(meters map[string]meter) *sampler {
	return &sampler{meters: meters, peak: map[string]int64{}, stopc: make(chan struct{}), done: make(chan struct{})}
}

func (s *sampler) mark() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.start = map[string]usage{}
	for role, m := range s.meters {
		s.start[role] = m()
	}
	go func() {
		defer close(s.done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stopc:
				return
			case <-t.C:
				s.mu.Lock()
				for role, m := range s.meters {
					s.peak[role] = max(s.peak[role], m().rss)
				}
				s.mu.Unlock()
			}
		}
	}()
}

// stop returns each role's CPU time since mark and its peak RSS.
func (s *sampler) stop() (cpu map[string]time.Duration, rss map[string]int64) {
	s.mu.Lock()
	started := s.start != nil
	s.mu.Unlock()
	if !started {
		return nil, nil
	}
	close(s.stopc)
	<-s.done
	cpu, rss = map[string]time.Duration{}, map[string]int64{}
	for role, m := range s.meters {
		u := m()
		cpu[role] = u.cpu - s.start[role].cpu
		rss[role] = max(s.peak[role], u.rss)
	}
	return cpu, rss
}
