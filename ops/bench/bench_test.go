package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// h2loadOutput is what h2load 1.52 prints for a run with a 503 and a reset.
const h2loadOutput = `finished in 2.00s, 1500.50 req/s, 1.20MB/s
requests: 3003 total, 3003 started, 3003 done, 3001 succeeded, 2 failed, 1 errored, 0 timeout
status codes: 3001 2xx, 0 3xx, 0 4xx, 1 5xx
traffic: 2.40MB (2516582) total, 100.00KB (102400) headers (space savings 0.00%), 2.20MB (2306867) data
`

func TestParseH2load(t *testing.T) {
	log := filepath.Join(t.TempDir(), "h2load.log")
	// start time, status, latency in µs: 1 ms for 99 requests, 9 ms for one.
	var lines string
	for i := 0; i < 99; i++ {
		lines += "1795990000000000\t200\t1000\n"
	}
	lines += "1795990000000000\t200\t9000\n"
	if err := os.WriteFile(log, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := parseH2load(h2loadOutput, log, 8*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.requests != 3001 || m.errors != 2 {
		t.Errorf("requests %d, errors %d; want 3001 and 2 (one 5xx, one errored)", m.requests, m.errors)
	}
	if m.seconds != 2 {
		t.Errorf("seconds = %v; want the 2.00s h2load measured, not the 8s asked", m.seconds)
	}
	if len(m.latencies) != 100 {
		t.Fatalf("%d latencies; want 100", len(m.latencies))
	}
	if p50, p999 := quantile(m.latencies, 0.5), quantile(m.latencies, 0.999); p50 != 1 || p999 != 9 {
		t.Errorf("p50 %v ms, p99.9 %v ms; want 1 and 9", p50, p999)
	}
	if _, err := parseH2load("h2load: connection refused", log, time.Second); err == nil {
		t.Error("output without a summary parsed without an error")
	}
}

func TestMedians(t *testing.T) {
	r := &results{Cells: []cell{
		{Front: "caddy", Path: "page", Mode: "h1", RPS: 100, Errors: 1, CPUus: map[string]float64{"proxy": 10}, RSSMiB: map[string]float64{"proxy": 50}},
		{Front: "caddy", Path: "page", Mode: "h1", RPS: 300, Errors: 2, CPUus: map[string]float64{"proxy": 30}, RSSMiB: map[string]float64{"proxy": 70}},
		{Front: "nginx", Path: "page", Mode: "h1", RPS: 50, CPUus: map[string]float64{}, RSSMiB: map[string]float64{}},
	}}
	m := r.medians()
	if len(m) != 2 {
		t.Fatalf("%d medians; want one per front, path and mode", len(m))
	}
	c := m[0]
	if c.RPS != 200 || c.CPUus["proxy"] != 20 || c.Errors != 3 || c.RSSMiB["proxy"] != 70 {
		t.Errorf("caddy's median: %+v; want 200 req/s, 20 µs, 3 errors (summed), 70 MiB (the peak)", c)
	}
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median(3, 1, 2) = %v", got)
	}
	if got := quantile(nil, 0.99); got != 0 {
		t.Errorf("quantile of nothing = %v", got)
	}
	if !math.IsNaN(r.rps("app", "page", "h1")) {
		t.Error("a front that was not run has a figure")
	}
}

func TestRuntimeEnv(t *testing.T) {
	compose := filepath.Join(t.TempDir(), "compose.yaml")
	const doc = `services:
  caddy:
    environment:
      GOGC: "400"
      GOMEMLIMIT: 200MiB
    deploy:
      resources:
        limits:
          cpus: "${CADDY_CPUS:-1.5}"
`
	if err := os.WriteFile(compose, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	env, err := runtimeEnv(compose, "caddy")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"GOGC=400", "GOMEMLIMIT=200MiB", "GOMAXPROCS=2"}
	if len(env) != len(want) {
		t.Fatalf("env = %v; want %v", env, want)
	}
	for i := range want {
		if env[i] != want[i] {
			t.Errorf("env = %v; want %v", env, want)
		}
	}
	if _, err := runtimeEnv(compose, "nosuch"); err == nil {
		t.Error("a missing service gave no error")
	}
}

func TestOnly(t *testing.T) {
	modes := []mode{{name: "h1"}, {name: "h2"}, {name: "one"}}
	name := func(m mode) string { return m.name }
	if got := only(modes, nil, name); len(got) != 3 {
		t.Errorf("no filter kept %d of 3", len(got))
	}
	got := only(modes, []string{"one", "h1"}, name)
	if len(got) != 2 || got[0].name != "h1" || got[1].name != "one" {
		t.Errorf("only(h1, h2, one; one, h1) = %v; want h1 and one, in the original order", got)
	}
	if got := only(modes, []string{"nope"}, name); len(got) != 0 {
		t.Errorf("an unknown name kept %v", got)
	}
}

func TestParseStat(t *testing.T) {
	// A name with a space and a parenthesis, as comm may hold.
	line := "4242 (docker-proxy (x)) S 1 4240 4240 0 -1 4194560 1 0 0 0 150 50 0 0 20 0 9 0 100 1000000 300 18446744073709551615"
	s, ok := parseStat([]byte(line))
	if !ok {
		t.Fatal("a well-formed stat line did not parse")
	}
	if s.comm != "docker-proxy (x)" || s.pgrp != 4240 || s.cpu != 2*time.Second || s.rss != 300*pageSize {
		t.Errorf("parseStat = %+v; want comm %q, group 4240, 2 s of CPU (200 ticks), 300 pages", s, "docker-proxy (x)")
	}
	if _, ok := parseStat([]byte("4242 (short) S 1")); ok {
		t.Error("a truncated line parsed")
	}
}

func TestFrontRequest(t *testing.T) {
	f := &front{host: "10.203.82.130", port: 3000, user: benchUser{id: "u1", cookie: "__Host-session=abc"}}
	p := path{target: "/api/users/{id}", headers: []string{"cookie: {cookie}"}}
	r := f.request(p)
	if r.target != "/api/users/u1" || r.headers[0] != "cookie: __Host-session=abc" {
		t.Errorf("request = %+v; want the front's user filled in", r)
	}
	if p.headers[0] != "cookie: {cookie}" {
		t.Error("request changed the shared path's headers")
	}
	if got := f.url(r); got != "http://10.203.82.130:3000/api/users/u1" {
		t.Errorf("url = %s", got)
	}
	f.tls, f.port = true, 443
	if got := f.url(r); got != "https://localhost:443/api/users/u1" {
		t.Errorf("TLS url = %s; want the certificate's name, localhost", got)
	}
}

// TestWrite checks the report of a run with the stack's fronts: its
// section, Docker's columns, and a chart whose log-scale panel has a front
// with no figure.
func TestWrite(t *testing.T) {
	cpu := func(kv ...float64) map[string]float64 {
		m := map[string]float64{}
		for i, role := range []string{"proxy", "app", "redis", "docker-proxy", "docker"}[:len(kv)] {
			m[role] = kv[i]
		}
		return m
	}
	r := &results{Rounds: 1, Streams: 10, Conns: 64, Paths: []string{"page"},
		Fronts: []string{"caddy", "app", "stack", "stack-caddy", "stack-app"},
		Idle:   map[string]map[string]float64{},
		Cells: []cell{
			{Front: "caddy", Path: "page", Mode: "h1", RPS: 1000, CPUus: cpu(100, 40, 5)},
			{Front: "app", Path: "page", Mode: "one", P99: 1},
			{Front: "stack", Path: "page", Mode: "h1", RPS: 600, CPUus: cpu(110, 40, 5, 50, 30)},
			{Front: "stack-caddy", Path: "page", Mode: "h1", RPS: 800, CPUus: cpu(105, 40, 5)},
			{Front: "stack", Path: "page", Mode: "one", P99: 3},
			{Front: "stack-caddy", Path: "page", Mode: "one", P99: 2.5},
			{Front: "stack", Path: "page", Mode: "open", P99: 40, Errors: 7, Restarts: 1},
			{Front: "caddy", Path: "page", Mode: "open", P99: 0},
		},
	}
	dir := t.TempDir()
	var out strings.Builder
	if err := r.write(dir, &out); err != nil {
		t.Fatal(err)
	}
	md := out.String()
	for _, want := range []string{
		"## The compose stack",
		"| page | 0.75× | — | 50 µs | +0.50 ms |", // 600 ÷ 800; the port proxy's CPU and p99
		"CPU µs/req proxy | app | redis | docker-proxy | docker |",
		"| 7 (1 container restarts) |",
		"Docker restarted a container (a crash, or killed at its memory limit) during: stack page open (1).",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("results.md lacks %q:\n%s", want, md)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "chart.png")); err != nil || st.Size() == 0 {
		t.Errorf("no chart: %v", err)
	}

	// -report writes the same report again from results.json alone.
	os.Remove(filepath.Join(dir, "results.md"))
	os.Remove(filepath.Join(dir, "chart.png"))
	out.Reset()
	if err := rewrite(dir, &out); err != nil {
		t.Fatal(err)
	}
	again, err := os.ReadFile(filepath.Join(dir, "results.md"))
	if err != nil || string(again) != md || out.String() != md {
		t.Errorf("the report written from results.json differs (%v):\n%s", err, again)
	}
	if _, err := os.Stat(filepath.Join(dir, "chart.png")); err != nil {
		t.Errorf("no chart from results.json: %v", err)
	}
}
