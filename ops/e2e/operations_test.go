//go:build e2e

package e2e

import (
	"cmp"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// The operations proofs: what ops people do on bad days, under a constant
// load through Caddy over HTTPS, with figures in report.txt.

// loadRate is the constant load of the proofs, in requests per second.
const loadRate = 200

// load is a constant-rate mix of what visitors send: pages, API reads (one
// anonymous, one signed in) and API writes (contact messages), from vegeta.
type load struct {
	userID string // a user to read
	cookie string // a signed-in session
	n      atomic.Uint64
	h2     *http.Client // HTTP/2, as browsers and most API clients speak
	h1     *http.Client // HTTP/1.1 with keep-alive
}

// newLoad signs up the load's user and signs it in.
func newLoad(t *testing.T, s *stack) *load {
	t.Helper()
	a := s.signUp(t, fmt.Sprintf("load-%d@example.com", time.Now().UnixNano()), "Load")
	l := &load{userID: a.id, cookie: a.session.Name + "=" + a.session.Value}
	l.h2 = &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: s.rootCA},
			ForceAttemptHTTP2: true,
		},
	}
	// Each in-flight request has its own connection.
	l.h1 = &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: s.rootCA, NextProtos: []string{"http/1.1"}},
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     30 * time.Second,
		},
	}
	return l
}

// targeter: of every 20 requests, 8 pages, 6 anonymous API reads, 3 signed-in
// API reads and 3 writes.
func (l *load) targeter() vegeta.Targeter {
	return func(tgt *vegeta.Target) error {
		i := l.n.Add(1)
		*tgt = vegeta.Target{Method: http.MethodGet}
		switch i % 20 {
		case 0, 1, 2, 3, 4, 5, 6, 7:
			tgt.URL = site + "/"
		case 8, 9, 10, 11, 12, 13:
			tgt.URL = site + "/api/users/" + l.userID
		case 14, 15, 16:
			tgt.URL = site + "/api/me"
			tgt.Header = http.Header{"Cookie": {l.cookie}}
		default:
			tgt.Method = http.MethodPost
			tgt.URL = site + "/api/contact"
			tgt.Header = http.Header{"Content-Type": {"application/json"}}
			tgt.Body = fmt.Appendf(nil, `{"name":"Load","email":"load@example.com","message":"load message %d"}`, i)
		}
		return nil
	}
}

// result is what the proofs keep of a vegeta result.
type result struct {
	method, url string
	code        int
	sent        time.Time
	latency     time.Duration
	err         string
}

func (r result) failed() bool { return r.err != "" || r.code < 200 || r.code >= 300 }

func (r result) String() string {
	return fmt.Sprintf("%s %s sent %s: %d %s after %s", r.method, strings.TrimPrefix(r.url, site), r.sent.Format("15:04:05.000"), r.code, r.err, r.latency.Round(time.Millisecond))
}

// start runs the load at loadRate over HTTP/2 until the returned stop
// function is called (or max passes); stop returns every result.
func (l *load) start(name string, max time.Duration) (stop func() []result) {
	return l.startWith(l.h2, name, max)
}

func (l *load) startWith(c *http.Client, name string, max time.Duration) (stop func() []result) {
	a := vegeta.NewAttacker(vegeta.Client(c), vegeta.Workers(16), vegeta.MaxWorkers(512))
	ch := a.Attack(l.targeter(), vegeta.Rate{Freq: loadRate, Per: time.Second}, max, name)
	var results []result
	done := make(chan struct{})
	go func() {
		defer close(done)
		for r := range ch {
			results = append(results, result{method: r.Method, url: r.URL, code: int(r.Code), sent: r.Timestamp, latency: r.Latency, err: r.Error})
		}
	}()
	return func() []result {
		a.Stop()
		<-done
		return results
	}
}

// summary is a load run's figures.
type summary struct {
	requests, failed, server int // server: responses ≥ 500
	rate                     float64
	p50, p99, max            time.Duration
}

func summarize(rs []result) summary {
	var s summary
	lat := make([]time.Duration, 0, len(rs))
	var first, last time.Time
	for i, r := range rs {
		s.requests++
		if r.failed() {
			s.failed++
		}
		if r.code >= 500 {
			s.server++
		}
		lat = append(lat, r.latency)
		if i == 0 || r.sent.Before(first) {
			first = r.sent
		}
		if r.sent.After(last) {
			last = r.sent
		}
	}
	if len(lat) == 0 {
		return s
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	s.p50, s.p99, s.max = pct(0.50), pct(0.99), lat[len(lat)-1]
	if d := last.Sub(first).Seconds(); d > 0 {
		s.rate = float64(s.requests-1) / d
	}
	return s
}

func (s summary) String() string {
	return fmt.Sprintf("%d requests at %.0f/s, %d failed, %d ≥ 500; latency p50 %s, p99 %s, max %s",
		s.requests, s.rate, s.failed, s.server, s.p50.Round(100*time.Microsecond), s.p99.Round(100*time.Microsecond), s.max.Round(time.Millisecond))
}

// failures lists up to 10 failed results, for the test's message.
func failures(rs []result) string {
	var b strings.Builder
	n := 0
	for _, r := range rs {
		if r.failed() {
			if n < 10 {
				fmt.Fprintf(&b, "\n  %s", r)
			}
			n++
		}
	}
	if n > 10 {
		fmt.Fprintf(&b, "\n  … and %d more", n-10)
	}
	return b.String()
}

// testDeployUnderLoad: 10 deploys back to back with scripts/deploy.sh under
// the constant load, against the same load without deploys: no request may
// fail.
func testDeployUnderLoad(t *testing.T, s *stack, l *load) {
	stop := l.start("baseline", 30*time.Second)
	time.Sleep(30 * time.Second)
	rs := stop()
	base := summarize(rs)
	s.report(t, "without deploys: %s", base)
	if base.failed > 0 {
		t.Fatalf("without deploys, %d requests failed:%s", base.failed, failures(rs))
	}

	before := s.appContainers(t)
	stop = l.start("deploys", 15*time.Minute)
	time.Sleep(2 * time.Second)
	var took []string
	start := time.Now()
	for i := range 10 {
		// The first deploy pulls the app's image from the registry, as a
		// server that deploys what CI pushed does.
		mode := "--no-build"
		if i == 0 && s.registry != "" {
			mode = "--pull"
		}
		out := s.run(t, 5*time.Minute, "bash", "scripts/deploy.sh", mode)
		if !strings.Contains(string(out), "deploy: ok") {
			stop()
			t.Fatalf("deploy %d: no 'deploy: ok' line", i+1)
		}
		took = append(took, regexp.MustCompile(`in (\d+s)\n`).FindStringSubmatch(string(out))[1])
	}
	total := time.Since(start)
	time.Sleep(2 * time.Second)
	rs = stop()
	during := summarize(rs)
	s.report(t, "10 deploys back to back in %s (each: %s), under load: %s", total.Round(time.Second), strings.Join(took, " "), during)
	s.report(t, "p99 during deploys %s against %s without (×%.2f)", during.p99.Round(100*time.Microsecond), base.p99.Round(100*time.Microsecond), float64(during.p99)/float64(base.p99))
	if during.failed > 0 || during.server > 0 {
		t.Errorf("during deploys, %d requests failed and %d answered ≥ 500; want 0:%s", during.failed, during.server, failures(rs))
	}
	if during.requests < int(total.Seconds())*loadRate*9/10 {
		t.Errorf("only %d requests during %s of deploys: the load was not kept at %d/s", during.requests, total, loadRate)
	}
	after := s.appContainers(t)
	if len(after) != len(before) || slices.ContainsFunc(after, func(id string) bool { return slices.Contains(before, id) }) {
		t.Errorf("app containers before the deploys %v, after %v: want as many, all new", before, after)
	}
}

// testDeployRollback: an image whose app never becomes healthy is rolled
// back; the old container keeps serving and the image tag is restored.
func testDeployRollback(t *testing.T, s *stack, l *load) {
	image := "sitekit/app:latest"
	if p := s.env["SITEKIT_IMAGE_PREFIX"]; p != "" {
		image = p + "/app:" + cmp.Or(s.env["SITEKIT_TAG"], "latest")
	}
	good := dockerOut(t, "image", "inspect", "-f", "{{.Id}}", image)
	before := s.appContainers(t)

	// A broken release: the same image whose app exits at once (an unknown
	// subcommand), built with the classic builder from the local image.
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/Dockerfile", []byte("FROM "+image+"\nCMD [\"no-such-command\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("docker", "build", "-q", "-t", image, dir)
	build.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker build of the broken image: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "tag", good, image).Run() })

	stop := l.start("rollback", 5*time.Minute)
	cmd := exec.Command("bash", "scripts/deploy.sh", "--no-build")
	cmd.Dir = s.root
	cmd.Env = append(os.Environ(), "COMPOSE_PROJECT_NAME="+project, "SITEKIT_ENV_FILE="+s.envFile, "COMPOSE_PROFILES="+profiles, "DEPLOY_TIMEOUT=30")
	out, err := cmd.CombinedOutput()
	rs := stop()
	t.Logf("scripts/deploy.sh with a broken image:\n%s", out)
	if err == nil || !strings.Contains(string(out), "rolled back") {
		t.Errorf("deploy.sh with a broken image: %v; want a failure that says rolled back", err)
	}
	if got := dockerOut(t, "image", "inspect", "-f", "{{.Id}}", image); got != good {
		t.Errorf("after the rollback %s is %s; want the old image %s", image, got, good)
	}
	if after := s.appContainers(t); !slices.Equal(after, before) {
		t.Errorf("app containers after the rollback %v; want the old ones %v", after, before)
	}
	sum := summarize(rs)
	s.report(t, "a deploy of a broken image rolled back; under load: %s", sum)
	if sum.failed > 0 {
		t.Errorf("during the failed deploy, %d requests failed; want 0:%s", sum.failed, failures(rs))
	}
}

// testAppCrashUnderLoad: the app's process is killed (as the kernel's OOM
// killer would) and Docker's restart policy brings it back. Only requests
// in flight at the kill may fail; every later one waits (lb_try_duration)
// and succeeds.
func testAppCrashUnderLoad(t *testing.T, s *stack, l *load) {
	ids := s.appContainers(t)
	stop := l.start("app-crash", 2*time.Minute)
	time.Sleep(5 * time.Second)
	killed := s.kill(t, ids[0])
	back := waitFor(t, 60*time.Second, "the app container restarted after the kill", func() error {
		if !s.startedAt(t, ids[0]).After(killed) {
			return fmt.Errorf("not restarted yet")
		}
		if h := s.health(t, ids[0]); h != "healthy" {
			return fmt.Errorf("health %s", h)
		}
		return nil
	})
	time.Sleep(5 * time.Second)
	rs := stop()
	sum := summarize(rs)
	// In flight at the kill: sent just before it, or just after it but
	// forwarded on one of Caddy's connections to the app that the kill
	// broke before Caddy noticed. Caddy answers those 502; it cannot retry
	// a request the app may have received (a POST). Everything sent later
	// waits for the restart and succeeds.
	var late, inFlight []result
	for _, r := range rs {
		switch {
		case !r.failed():
		case r.code == http.StatusBadGateway && r.sent.After(killed.Add(-time.Second)) && r.sent.Before(killed.Add(time.Second)):
			inFlight = append(inFlight, r)
		default:
			late = append(late, r)
		}
	}
	s.report(t, "app killed (SIGKILL) and restarted by Docker, healthy again after %s; under load: %s; failed in flight at the kill %d, later %d",
		back.Round(100*time.Millisecond), sum, len(inFlight), len(late))
	if len(late) > 0 {
		t.Errorf("%d requests failed other than with a 502 within 1 s of the kill; want none:%s", len(late), failures(late))
	}
}

// testCaddyReloadUnderLoad: a configuration reload loses no request over
// HTTP/2. Over HTTP/1.1 no response is an error either, but the reload
// closes idle keep-alive connections, and a client that sent a request on
// one at that instant sees it closed: it must retry (browsers and curl do,
// and Go's client does for all but a POST), as with any server.
func testCaddyReloadUnderLoad(t *testing.T, s *stack, l *load) {
	for _, c := range []struct {
		proto  string
		client *http.Client
	}{{"HTTP/2", l.h2}, {"HTTP/1.1", l.h1}} {
		stop := l.startWith(c.client, "reload", 2*time.Minute)
		time.Sleep(3 * time.Second)
		for range 3 {
			s.compose(t, "exec", "-T", "caddy", "/caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile", "--force")
			time.Sleep(3 * time.Second)
		}
		rs := stop()
		sum := summarize(rs)
		s.report(t, "3 Caddy config reloads under load over %s: %s", c.proto, sum)
		if sum.server > 0 || (c.proto == "HTTP/2" && sum.failed > 0) {
			t.Errorf("during Caddy reloads over %s, %d requests failed, %d with a status ≥ 500:%s", c.proto, sum.failed, sum.server, failures(rs))
		}
		for _, r := range rs {
			if r.failed() && r.code != 0 {
				t.Errorf("during Caddy reloads over %s: %s; want no error response", c.proto, r)
			}
		}
	}
}

// testRedisCrashes: a writer posts contact messages (acknowledged with 202
// and the stream id) while Redis's process is killed with SIGKILL 20 times;
// after each restart, every acknowledged message is in Redis, but for those
// acknowledged in the window appendfsync everysec leaves open: while a
// background fsync runs, Redis postpones writing its AOF buffer to the file
// for up to 2 s, and answers meanwhile (aof.c, flushAppendOnlyFile). A loss
// of a message sent more than lossWindow before the kill fails the test.
func testRedisCrashes(t *testing.T, s *stack) {
	const kills = 20
	redisID := strings.TrimSpace(s.compose(t, "ps", "-q", "redis"))

	const lossWindow = 3 * time.Second // 2 s, and Redis's clock counts whole seconds
	type ack struct {
		id   string
		sent time.Time
	}
	var (
		mu       sync.Mutex
		acked    []ack     // stream ids the API acknowledged
		lastSent time.Time // when the last acknowledged write was sent
		codes    = map[int]int{}
		other    []string
	)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			sent := time.Now()
			resp, err := s.client.Post(site+"/api/contact", "application/json",
				strings.NewReader(fmt.Sprintf(`{"name":"Writer","email":"writer@example.com","message":"durable %d"}`, i)))
			if err != nil {
				mu.Lock()
				other = append(other, err.Error())
				mu.Unlock()
				continue
			}
			var body struct{ ID string }
			decodeErr := json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			mu.Lock()
			codes[resp.StatusCode]++
			if resp.StatusCode == http.StatusAccepted && decodeErr == nil {
				acked = append(acked, ack{body.ID, sent})
				lastSent = sent
			}
			mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	})
	defer func() { close(done); wg.Wait() }()

	// A write sent after the kill can only have been acknowledged by the
	// restarted Redis.
	ackedSince := func(t0 time.Time) bool {
		mu.Lock()
		defer mu.Unlock()
		return lastSent.After(t0)
	}
	var recoveries []time.Duration
	inWindow := 0 // acknowledged, sent less than lossWindow before a kill, and lost
	for k := range kills {
		// Docker restarts a crashed container after a delay that doubles
		// each time, unless it ran 10 s: keep it up that long, as a real
		// crash would be rare.
		for time.Since(s.startedAt(t, redisID)) < 11*time.Second {
			time.Sleep(200 * time.Millisecond)
		}
		if !ackedSince(time.Now().Add(-time.Second)) {
			t.Fatalf("kill %d: no write was acknowledged in the last second before it", k+1)
		}
		killed := s.kill(t, redisID)
		waitFor(t, 60*time.Second, fmt.Sprintf("an acknowledged write sent after Redis kill %d", k+1), func() error {
			if !ackedSince(killed) {
				return fmt.Errorf("none yet")
			}
			return nil
		})
		mu.Lock()
		recoveries = append(recoveries, lastSent.Sub(killed))
		mu.Unlock()

		have := s.streamIDs(t)
		mu.Lock()
		var lost []string
		kept := acked[:0]
		for _, a := range acked {
			switch {
			case have[a.id]:
				kept = append(kept, a)
			case a.sent.Before(killed.Add(-lossWindow)):
				lost = append(lost, a.id)
			default:
				inWindow++
			}
		}
		acked = kept
		mu.Unlock()
		if len(lost) > 0 {
			t.Fatalf("after Redis kill %d, %d acknowledged messages sent more than %s before the kill are gone: %v", k+1, len(lost), lossWindow, lost[:min(10, len(lost))])
		}
	}

	mu.Lock()
	defer mu.Unlock()
	slices.Sort(recoveries)
	var sum time.Duration
	var parts []string
	for _, r := range recoveries {
		sum += r
		parts = append(parts, strconv.FormatFloat(r.Seconds(), 'f', 1, 64))
	}
	s.report(t, "Redis killed (SIGKILL) %d times under writes: %d acknowledged messages kept, %d lost (all sent less than %s before a kill), none older; answers %v, transport errors %d",
		kills, len(acked), inWindow, lossWindow, codes, len(other))
	s.report(t, "time from each kill to the first write that was then acknowledged (s, sorted): %s; mean %.1f s, max %.1f s",
		strings.Join(parts, " "), sum.Seconds()/float64(len(recoveries)), recoveries[len(recoveries)-1].Seconds())
	if worst := recoveries[len(recoveries)-1]; worst > 5*time.Second {
		t.Errorf("the app took %s to write again after a Redis crash; want under 5 s", worst)
	}
	for code := range codes {
		if code != http.StatusAccepted && code != http.StatusServiceUnavailable {
			t.Errorf("the writer got %d %d times; want only 202, or 503 while Redis restarts", code, codes[code])
		}
	}
}

// streamIDs reads every contact message's id from Redis, as the app's user.
func (s *stack) streamIDs(t *testing.T) map[string]bool {
	t.Helper()
	// -e: an error reply (LOADING, NOAUTH...) fails the command.
	cmd := s.composeCmd("exec", "-T", "-e", "REDISCLI_AUTH", "redis", "/redis-cli", "-e", "--user", "app", "XREVRANGE", "contact:messages", "+", "-")
	cmd.Env = append(cmd.Env, "REDISCLI_AUTH="+s.env["REDIS_APP_PASSWORD"])
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli XREVRANGE: %v\n%s", err, trim(string(out)))
	}
	ids := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if streamID.MatchString(line) {
			ids[line] = true
		}
	}
	return ids
}

var streamID = regexp.MustCompile(`^\d+-\d+$`)

// appContainers: the ids of the app's running containers, sorted.
func (s *stack) appContainers(t *testing.T) []string {
	t.Helper()
	ids := strings.Fields(s.compose(t, "ps", "-q", "app"))
	if len(ids) == 0 {
		t.Fatal("no app container runs")
	}
	slices.Sort(ids)
	return ids
}

// kill sends SIGKILL to a container's main process, as a crash or the OOM
// killer would, and returns when. (docker kill would count as a manual
// stop, after which Docker does not restart the container.)
func (s *stack) kill(t *testing.T, id string) time.Time {
	t.Helper()
	pid, err := strconv.Atoi(dockerOut(t, "inspect", "-f", "{{.State.Pid}}", id))
	if err != nil || pid == 0 {
		t.Fatalf("container %s has no process: %v", id, err)
	}
	now := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -KILL %d (container %s): %v; the proofs need root", pid, id, err)
	}
	return now
}

func (s *stack) health(t *testing.T, id string) string {
	t.Helper()
	return dockerOut(t, "inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}", id)
}

func (s *stack) startedAt(t *testing.T, id string) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, dockerOut(t, "inspect", "-f", "{{.State.StartedAt}}", id))
	if err != nil {
		t.Fatal(err)
	}
	return at
}

func dockerOut(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).Output()
	if err != nil {
		t.Fatalf("docker %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out))
}
