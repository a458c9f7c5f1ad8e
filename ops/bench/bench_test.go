package main

import (
	"math"
	"os"
	"path/filepath"
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
