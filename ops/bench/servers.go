package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// proc is a program the bench started, in its own process group, so that its
// CPU time and memory are those of every process in the group (nginx's
// workers with their master).
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{} // closed when the process has ended
}

// alive reports whether the process is still running.
func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// procs starts and ends the bench's programs.
type procs struct {
	dir  string
	list []*proc
}

// start runs argv with env (and PATH) in the background, its output in
// dir/name.log.
func (ps *procs) start(name string, env []string, argv ...string) (*proc, error) {
	logPath := filepath.Join(ps.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	ps.list = append(ps.list, p)
	return p, nil
}

// stopAll ends every group: SIGTERM, then SIGKILL after 5 s.
func (ps *procs) stopAll() {
	for _, p := range ps.list {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	}
	for _, p := range ps.list {
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
	}
	ps.list = nil
}

// tail is the end of p's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	return tail(b, 15)
}

// tail is the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// freePort is a loopback port nobody listens on right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func freePorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	return ports, nil
}

// waitFor retries check every 100 ms until it succeeds or d passes.
func waitFor(d time.Duration, p *proc, check func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if !p.alive() || time.Now().After(deadline) {
			return fmt.Errorf("%s did not start: %v\n%s", p.name, err, p.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// build compiles a package of this module into dir.
func build(ctx context.Context, dir, pkg, name string) (string, error) {
	out := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}

// startRedis runs a Redis for the app, with the AOF on as in production
// (ops/redis/redis.conf: appendfsync everysec).
func (ps *procs) startRedis(password string) (*proc, int, error) {
	port, err := freePort()
	if err != nil {
		return nil, 0, err
	}
	dir := filepath.Join(ps.dir, "redis")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, 0, err
	}
	p, err := ps.start("redis", nil, "redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--dir", dir, "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
		"--requirepass", password)
	if err != nil {
		return nil, 0, err
	}
	return p, port, waitFor(10*time.Second, p, func() error {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
		}
		return err
	})
}

// startApp runs the app in production mode on a loopback port, its limits
// raised so that the load measures the app, not the limiter (the limiter
// still runs: one Redis call per request).
func (ps *procs) startApp(bin string, redisPort int, password string, extra []string) (*proc, int, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, 0, err
	}
	env := []string{
		"APP_ENV=production",
		"APP_LISTEN=127.0.0.1:" + strconv.Itoa(ports[0]),
		"APP_INTERNAL_LISTEN=127.0.0.1:" + strconv.Itoa(ports[1]),
		fmt.Sprintf("REDIS_URL=redis://:%s@127.0.0.1:%d/0", password, redisPort),
		"TRUSTED_PROXIES=127.0.0.1",
		"APP_DRAIN_DELAY=0",
		"RATE_LIMIT_GLOBAL=1000000/s", "RATE_LIMIT_GLOBAL_BURST=1000000",
		"RATE_LIMIT_CONTACT=1000000/s", "RATE_LIMIT_SIGNUP=1000/s", "RATE_LIMIT_LOGIN_IP=1000/s",
		"CONTACT_MAX_MESSAGES=10000000", // the write path posts far more than the default cap
	}
	p, err := ps.start("app", append(env, extra...), bin)
	if err != nil {
		return nil, 0, err
	}
	return p, ports[0], waitFor(20*time.Second, p, func() error {
		return getOK(http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[0]))
	})
}

// caddyCert is where Caddy keeps the local CA's certificate for localhost,
// under its data folder; nginx serves the same one.
func caddyCert(dataDir string) (cert, key string) {
	d := filepath.Join(dataDir, "caddy", "certificates", "local", "localhost")
	return filepath.Join(d, "localhost.crt"), filepath.Join(d, "localhost.key")
}

// startCaddy runs our Caddy with the repository's Caddyfile in front of the
// app, as scripts/lib.sh's start_caddy does.
// It returns Caddy's process, its HTTPS port, its data folder and its admin
// API's address.
func (ps *procs) startCaddy(bin, caddyfile string, appPort int, extra []string) (p *proc, port int, data, admin string, err error) {
	ports, err := freePorts(4)
	if err != nil {
		return nil, 0, "", "", err
	}
	home := filepath.Join(ps.dir, "caddy-home")
	env := []string{
		"HOME=" + home, "XDG_DATA_HOME=" + filepath.Join(home, "data"), "XDG_CONFIG_HOME=" + filepath.Join(home, "config"),
		"DOMAIN=localhost",
		"HTTP_PORT=" + strconv.Itoa(ports[0]), "HTTPS_PORT=" + strconv.Itoa(ports[1]),
		"APP_UPSTREAM_HOST=127.0.0.1", "APP_UPSTREAM_PORT=" + strconv.Itoa(appPort),
		"CADDY_ADMIN=127.0.0.1:" + strconv.Itoa(ports[2]), "EDGE_METRICS_PORT=" + strconv.Itoa(ports[3]),
		"EDGE_GRACE_PERIOD=1s",
		// The load comes from this host, one address: limited only by
		// the total, as Docker's gateway is in the stack.
		"EDGE_SHARED_PEERS=127.0.0.0/8",
	}
	p, err = ps.start("caddy", append(env, extra...), bin, "run", "--config", caddyfile, "--adapter", "caddyfile")
	if err != nil {
		return nil, 0, "", "", err
	}
	cert, _ := caddyCert(filepath.Join(home, "data"))
	err = waitFor(30*time.Second, p, func() error {
		if _, err := os.Stat(cert); err != nil {
			return err
		}
		return getOK(insecureClient(ports[1]), fmt.Sprintf("https://localhost:%d/about", ports[1]))
	})
	return p, ports[1], filepath.Join(home, "data"), "127.0.0.1:" + strconv.Itoa(ports[2]), err
}

// startNginx runs the reference nginx (ops/bench/nginx.conf) with Caddy's
// certificate in front of the app.
// It gets as many worker processes as Caddy has Go threads running code
// (GOMAXPROCS), so that both use the same share of the CPUs.
func (ps *procs) startNginx(confTemplate, caddyData string, appPort, workers int) (*proc, int, error) {
	port, err := freePort()
	if err != nil {
		return nil, 0, err
	}
	dir := filepath.Join(ps.dir, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, 0, err
	}
	tmpl, err := template.ParseFiles(confTemplate)
	if err != nil {
		return nil, 0, err
	}
	cert, key := caddyCert(caddyData)
	var conf bytes.Buffer
	if err := tmpl.Execute(&conf, map[string]any{"Dir": dir, "Port": port, "AppPort": appPort, "Cert": cert, "Key": key, "Workers": workers}); err != nil {
		return nil, 0, err
	}
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, conf.Bytes(), 0o644); err != nil {
		return nil, 0, err
	}
	p, err := ps.start("nginx", nil, "nginx", "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "nginx-error.log"))
	if err != nil {
		return nil, 0, err
	}
	return p, port, waitFor(10*time.Second, p, func() error {
		return getOK(insecureClient(port), fmt.Sprintf("https://localhost:%d/about", port))
	})
}

// startBare runs this program as a bare net/http server writing body for
// every request: the floor under the app's page (plain) and under a TLS
// front (with cert and key).
func (ps *procs) startBare(self, name, bodyFile, cert, key string) (*proc, int, error) {
	port, err := freePort()
	if err != nil {
		return nil, 0, err
	}
	args := []string{self, "-bare-listen", "127.0.0.1:" + strconv.Itoa(port), "-bare-body", bodyFile}
	scheme := "http"
	if cert != "" {
		args = append(args, "-bare-cert", cert, "-bare-key", key)
		scheme = "https"
	}
	p, err := ps.start(name, nil, args...)
	if err != nil {
		return nil, 0, err
	}
	return p, port, waitFor(10*time.Second, p, func() error {
		return getOK(insecureClient(port), fmt.Sprintf("%s://localhost:%d/", scheme, port))
	})
}

// serveBare is the bare server: net/http with nothing but a handler that
// writes the same bytes as the app's home page.
func serveBare(addr, bodyFile, cert, key string) error {
	body, err := os.ReadFile(bodyFile)
	if err != nil {
		return err
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if cert != "" {
		return srv.ListenAndServeTLS(cert, key)
	}
	return srv.ListenAndServe()
}

// insecureClient reaches localhost:port on 127.0.0.1 without checking the
// certificate: only for start-up checks and the setup requests.
func insecureClient(port int) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: transportTo("127.0.0.1:" + strconv.Itoa(port))}
}

// getOK is fetch for a check: only whether the answer was a 200 counts.
func getOK(c *http.Client, url string) error {
	_, err := fetch(c, url)
	return err
}

// fetch GETs url with c and returns the body of a 200.
func fetch(c *http.Client, url string) ([]byte, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// benchUser is the bench's user in one Redis: its id is the Redis read's
// path, its cookie the signed-in request's.
type benchUser struct{ id, cookie string }

// signUp signs up the bench's user and signs it in, straight at the app
// at base.
func signUp(base string) (benchUser, error) {
	var u benchUser
	const creds = `{"email":"bench@example.com","password":"a bench password for the bench"}`
	post := func(path, body string) (*http.Response, error) {
		return http.Post(base+path, "application/json", strings.NewReader(body))
	}
	resp, err := post("/api/users", `{"email":"bench@example.com","password":"a bench password for the bench","name":"Bench"}`)
	if err != nil {
		return u, err
	}
	var created struct{ ID string }
	err = json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusCreated || created.ID == "" {
		return u, fmt.Errorf("sign up: %s %v", resp.Status, err)
	}
	u.id = created.ID
	resp, err = post("/api/sessions", creds)
	if err != nil {
		return u, err
	}
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if strings.HasSuffix(c.Name, "session") {
			u.cookie = c.Name + "=" + c.Value
			return u, nil
		}
	}
	return u, errors.New("sign in: no session cookie: " + resp.Status)
}
