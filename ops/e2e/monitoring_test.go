//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// prometheusURL is Prometheus on this host's loopback (ops profile).
const prometheusURL = "http://127.0.0.1:9090"

// testMonitoring: Prometheus scrapes every part of the stack; every metric
// that its rules name is really exported; and with traffic through the site,
// every recording rule (what the dashboards and alerts read) has data.
func testMonitoring(t *testing.T, s *stack) {
	// The app's counters start again from zero when its process restarts,
	// which would empty the dashboards' rates of what earlier tests did.
	app := s.containers(t)["app"]
	s.report(t, "the app container started at %s and was restarted %d times", app.State.StartedAt, app.RestartCount)

	wantJobs := []string{"alertmanager", "app", "blackbox", "caddy", "prometheus", "redis", "site"}
	took := waitFor(t, 2*time.Minute, "every Prometheus target up", func() error {
		var targets struct {
			ActiveTargets []struct {
				Labels    map[string]string
				Health    string
				LastError string
			}
		}
		if err := promGet("/api/v1/targets", nil, &targets); err != nil {
			return err
		}
		var jobs []string
		for _, tg := range targets.ActiveTargets {
			if tg.Health != "up" {
				return fmt.Errorf("%s %s is %s: %s", tg.Labels["job"], tg.Labels["instance"], tg.Health, tg.LastError)
			}
			jobs = append(jobs, tg.Labels["job"])
		}
		slices.Sort(jobs)
		if !slices.Equal(jobs, wantJobs) {
			return fmt.Errorf("targets of jobs %v; want one each of %v", jobs, wantJobs)
		}
		return nil
	})
	s.report(t, "every Prometheus target (%s) up %s into the test", strings.Join(wantJobs, ", "), took.Round(time.Second))

	// The blackbox probe reaches the site over HTTPS and reads its
	// certificate: Caddy's local one lives 12 hours. Its first probe may
	// have run while Caddy was still starting, so wait for a good one.
	var left string
	took = waitFor(t, 90*time.Second, "a successful HTTPS probe of the site", func() error {
		if v := promValue(t, `probe_success{job="site"}`); v != "1" {
			return fmt.Errorf("probe_success of the site: %q; want 1", v)
		}
		left = promValue(t, `probe_ssl_earliest_cert_expiry{job="site"} - time()`)
		if secs, err := strconv.ParseFloat(left, 64); err != nil || secs < 3600 || secs > 13*3600 {
			return fmt.Errorf("the site's certificate expires in %q s; want 1 to 13 hours (Caddy's local CA issues 12-hour certificates)", left)
		}
		return nil
	})
	s.report(t, "blackbox probe of the site: success %s into the test, certificate expires in %s s", took.Round(time.Second), left)

	var ams struct {
		ActiveAlertmanagers []struct{ URL string }
	}
	if err := promGet("/api/v1/alertmanagers", nil, &ams); err != nil || len(ams.ActiveAlertmanagers) != 1 {
		t.Errorf("Prometheus's Alertmanagers: %+v (%v); want alertmanager:9093", ams, err)
	}

	// The rules as Prometheus loaded them.
	var rules struct {
		Groups []struct {
			Rules []struct{ Name, Query, Type string }
		}
	}
	if err := promGet("/api/v1/rules", nil, &rules); err != nil {
		t.Fatal(err)
	}
	var recorded []string
	names := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Type == "recording" {
				recorded = append(recorded, r.Name)
			}
			for _, n := range metricNames(r.Query) {
				names[n] = true
			}
		}
	}
	if len(recorded) == 0 || len(names) == 0 {
		t.Fatalf("Prometheus loaded no rules: %+v", rules)
	}

	// Traffic through the site, so that every series the rules and
	// dashboards read exists: pages, an API 404, and a signed-in request
	// (session operations).
	session := s.signUp(t, fmt.Sprintf("monitoring-%d@example.com", time.Now().UnixNano()), "Monitoring").session
	for range 20 {
		for _, path := range []string{"/", "/about", "/api/nope", "/api/me"} {
			req := mustRequest(t, http.MethodGet, site+path, "")
			req.AddCookie(session)
			s.do(t, req)
		}
	}

	// Every base metric a rule names is exported by some target, once
	// Prometheus has scraped it after the traffic.
	waitFor(t, 90*time.Second, "every metric the rules name", func() error {
		var missing []string
		for n := range names {
			if strings.Contains(n, ":") {
				if !slices.Contains(recorded, n) {
					missing = append(missing, n+" (no rule records it)")
				}
				continue
			}
			if !promHasData(t, fmt.Sprintf("count({__name__=%q})", n)) {
				missing = append(missing, n)
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			return fmt.Errorf("the rules name metrics that nothing exports: %s", strings.Join(missing, ", "))
		}
		return nil
	})
	s.report(t, "%d metrics named by the rules, all exported", len(names))

	// Every recording rule has data once Prometheus has two scrapes of the
	// traffic (rate needs two samples).
	took = waitFor(t, 2*time.Minute, "data for every recording rule", func() error {
		for _, r := range recorded {
			if !promHasData(t, r) {
				return fmt.Errorf("%s has no data", r)
			}
		}
		return nil
	})
	var values []string
	for _, r := range []string{"job:caddy_http_requests:rate5m", "job:http_requests:rate5m", "job:caddy_http_requests_5xx:ratio5m", "job:http_request_duration_seconds:p99_5m"} {
		values = append(values, r+"="+promValue(t, r))
	}
	s.report(t, "all %d recording rules had data %s after the traffic: %s", len(recorded), took.Round(time.Second), strings.Join(values, " "))

	testDashboardQueries(t, s)

	// Restarted, Alertmanager and Prometheus render their files again into
	// their tmpfs (ops/envtemplate).
	s.compose(t, "restart", "alertmanager", "prometheus")
	took = waitFor(t, 2*time.Minute, "Alertmanager and Prometheus after docker compose restart", func() error {
		cs := s.containers(t)
		for _, svc := range []string{"alertmanager", "prometheus"} {
			if h := cs[svc].State.Health; h == nil || h.Status != "healthy" {
				return fmt.Errorf("%s is %s", svc, cs[svc].State.Status)
			}
		}
		return nil
	})
	s.report(t, "Alertmanager and Prometheus were healthy again %s after docker compose restart", took.Round(time.Second))
}

// metricNames returns the metric names in a PromQL expression: identifiers
// outside label matchers, range selectors, strings and grouping clauses,
// minus PromQL's functions and keywords.
func metricNames(query string) []string {
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`"[^"]*"`),
		regexp.MustCompile(`\{[^}]*\}`),
		regexp.MustCompile(`\[[^\]]*\]`),
		regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`),
	} {
		query = re.ReplaceAllString(query, " ")
	}
	var names []string
	for _, id := range regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`).FindAllString(query, -1) {
		if !promqlWords[id] && !slices.Contains(names, id) {
			names = append(names, id)
		}
	}
	return names
}

// promqlWords are the functions, aggregations and keywords the rules use.
var promqlWords = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "count": true, "rate": true, "irate": true,
	"increase": true, "histogram_quantile": true, "vector": true, "and": true, "or": true,
	"unless": true, "bool": true, "offset": true, "abs": true, "absent": true, "time": true,
}

// promGet GETs a Prometheus API path and decodes its data into v.
func promGet(path string, query url.Values, v any) error {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(prometheusURL + path + "?" + query.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status string
		Error  string
		Data   json.RawMessage
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("%s: %s: %w", path, resp.Status, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, resp.Status, body.Error)
	}
	return json.Unmarshal(body.Data, v)
}

// promQuery evaluates an instant query and returns its samples' values.
func promQuery(t *testing.T, q string) []string {
	t.Helper()
	var data struct {
		Result []struct {
			Value [2]any
		}
	}
	if err := promGet("/api/v1/query", url.Values{"query": {q}}, &data); err != nil {
		t.Fatalf("query %s: %v", q, err)
	}
	var values []string
	for _, r := range data.Result {
		values = append(values, fmt.Sprint(r.Value[1]))
	}
	return values
}

func promHasData(t *testing.T, q string) bool {
	t.Helper()
	return len(promQuery(t, q)) > 0
}

func promValue(t *testing.T, q string) string {
	t.Helper()
	return strings.Join(promQuery(t, q), ",")
}

// testDashboardQueries evaluates every panel query of the Grafana dashboards
// (ops/grafana/dashboards) against the live Prometheus, as Grafana would over
// the last minute: on a healthy stack with traffic, a panel that would show
// "No data" fails the test.
func testDashboardQueries(t *testing.T, s *stack) {
	files, err := filepath.Glob(filepath.Join(s.root, "ops", "grafana", "dashboards", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards in ops/grafana/dashboards: %v", err)
	}
	// Grafana's variables, as Grafana fills them in.
	vars := strings.NewReplacer("$__rate_interval", "1m", "$route", ".*")
	queries, panels := 0, 0
	// A rate needs two scrapes of a series: one that the traffic just
	// made (after the app's restart, a new target's) may have one yet. A
	// panel gets until then, two scrape intervals (30 s) past the first
	// look, to show data.
	deadline := time.Now().Add(30 * time.Second)
	query := func(expr string) []string {
		for {
			values := promQuery(t, expr)
			if len(values) > 0 || time.Now().After(deadline) {
				return values
			}
			time.Sleep(time.Second)
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Title  string
			Panels []struct {
				Title   string
				Targets []struct{ Expr string }
			}
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, p := range d.Panels {
			panels++
			for _, q := range p.Targets {
				queries++
				expr := vars.Replace(q.Expr)
				values := query(expr)
				if len(values) == 0 {
					// What Prometheus holds of the metrics it reads, to see why.
					var held []string
					for _, n := range metricNames(expr) {
						held = append(held, fmt.Sprintf("%s: now %v, samples in 2m %v", n,
							promQuery(t, n), promQuery(t, fmt.Sprintf("count_over_time({__name__=%q}[2m])", n))))
					}
					t.Errorf("dashboard %q, panel %q: no data for %s (%s)", d.Title, p.Title, expr, strings.Join(held, "; "))
					continue
				}
				s.report(t, "%s · %s: %d series, first %s ← %s", d.Title, p.Title, len(values), values[0], expr)
			}
		}
	}
	s.report(t, "%d dashboards: all %d queries of their %d panels returned data", len(files), queries, panels)
}

// testGrafanaConfig: Grafana's image needs a registry, so it cannot run
// here; compose's view of its service shows what it would run with:
// hardened, on loopback, no anonymous access or sign-up, the dashboards and
// data source provisioned.
func testGrafanaConfig(t *testing.T, s *stack) {
	out := s.compose(t, "--profile", "grafana", "config", "--format", "json")
	var cfg struct {
		Services map[string]struct {
			User        string
			ReadOnly    bool     `json:"read_only"`
			CapDrop     []string `json:"cap_drop"`
			SecurityOpt []string `json:"security_opt"`
			Environment map[string]*string
			Ports       []struct {
				HostIP string `json:"host_ip"`
			}
			Volumes []struct{ Source, Target string }
		}
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &cfg); err != nil {
		t.Fatalf("docker compose config: %v", err)
	}
	g, ok := cfg.Services["grafana"]
	if !ok {
		t.Fatal("no grafana service in the grafana profile")
	}
	env := func(k string) string {
		if v := g.Environment[k]; v != nil {
			return *v
		}
		return ""
	}
	if g.User == "" || strings.HasPrefix(g.User, "0") || !g.ReadOnly || !slices.Equal(g.CapDrop, []string{"ALL"}) ||
		!slices.Contains(g.SecurityOpt, "no-new-privileges:true") {
		t.Errorf("grafana is not hardened: user %q, read_only %v, cap_drop %v, security_opt %v", g.User, g.ReadOnly, g.CapDrop, g.SecurityOpt)
	}
	if len(g.Ports) != 1 || g.Ports[0].HostIP != "127.0.0.1" {
		t.Errorf("grafana publishes %+v; want one port on 127.0.0.1", g.Ports)
	}
	if env("GF_AUTH_ANONYMOUS_ENABLED") != "false" || env("GF_USERS_ALLOW_SIGN_UP") != "false" || env("GF_SECURITY_ADMIN_PASSWORD") != s.env["GRAFANA_ADMIN_PASSWORD"] {
		t.Errorf("grafana's access settings: anonymous %q, sign-up %q, admin password from .env: %v", env("GF_AUTH_ANONYMOUS_ENABLED"), env("GF_USERS_ALLOW_SIGN_UP"), env("GF_SECURITY_ADMIN_PASSWORD") == s.env["GRAFANA_ADMIN_PASSWORD"])
	}
	mounted := map[string]bool{}
	for _, v := range g.Volumes {
		mounted[v.Target] = true
	}
	for _, target := range []string{"/etc/grafana/provisioning", "/etc/grafana/dashboards", "/var/lib/grafana"} {
		if !mounted[target] {
			t.Errorf("grafana mounts nothing at %s", target)
		}
	}

	// GRAFANA_DOMAIN switches Caddy to the Caddyfile with Grafana's site
	// (app/internal/edgetest checks that file); unset, the stack above runs
	// the plain Caddyfile.
	for domain, want := range map[string]string{"": "/etc/caddy/Caddyfile", "grafana.example.com": "/etc/caddy/Caddyfile.grafana"} {
		cmd := s.composeCmd("config", "--format", "json", "caddy")
		cmd.Env = append(cmd.Env, "GRAFANA_DOMAIN="+domain)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("docker compose config caddy: %v", err)
		}
		var c struct {
			Services map[string]struct{ Command []string }
		}
		if err := json.Unmarshal(out, &c); err != nil {
			t.Fatal(err)
		}
		if got := c.Services["caddy"].Command; !slices.Contains(got, want) {
			t.Errorf("with GRAFANA_DOMAIN=%q, caddy runs %q; want --config %s", domain, got, want)
		}
	}
}
