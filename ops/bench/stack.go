package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The compose stack the bench brings up: its own project, image tag and
// subnet, so that it touches neither the site's own stack nor its images.
// Like every run of the stack it publishes 80 and 443 on this host, so
// those must be free.
const (
	stackProject = "sitekit-bench"
	stackSubnet  = "10.203.82"
)

// stackSettings go into the bench stack's env file, on top of .env.example
// and fresh secrets. The limits are raised as for the loopback app: every
// request comes from one address (the edge network's gateway).
var stackSettings = []string{
	"DOMAIN=localhost",
	"SITEKIT_TAG=bench",
	"EDGE_SUBNET=" + stackSubnet + ".0/24",
	"EDGE_DYNAMIC_RANGE=" + stackSubnet + ".128/25",
	"CADDY_ADDR=" + stackSubnet + ".2",
	"EDGE_GATEWAY=" + stackSubnet + ".1",
	"RATE_LIMIT_GLOBAL=1000000/s", "RATE_LIMIT_GLOBAL_BURST=1000000",
	"RATE_LIMIT_CONTACT=1000000/s", "RATE_LIMIT_SIGNUP=1000/s", "RATE_LIMIT_LOGIN_IP=1000/s",
	"CONTACT_MAX_MESSAGES=10000000", // the write path posts far more than the default cap
}

// stack is the running bench project.
type stack struct {
	envFile string
	caddy   string            // Caddy's address on the edge network
	app     string            // the app's
	ids     map[string]string // service → container id
	meters  map[string]meter
}

// startStack writes the env file and runs scripts/up.sh, the kit's one
// command, on the bench's project: the images are built from this checkout
// (staged on this host unless SITEKIT_BUILD says otherwise). It returns
// the stack also with an error: the caller must call down either way.
// settings (NAME=VALUE) go into the env file after stackSettings.
func startStack(ctx context.Context, dir string, settings []string) (*stack, error) {
	s := &stack{envFile: filepath.Join(dir, "stack.env"), caddy: stackSubnet + ".2"}
	s.down() // what a killed run left behind
	build := "SITEKIT_BUILD=" + cmp.Or(os.Getenv("SITEKIT_BUILD"), "local")
	if out, err := s.script(ctx, slices.Concat([]string{"scripts/init-env.sh", build}, stackSettings, settings)...); err != nil {
		return s, fmt.Errorf("init-env.sh: %w\n%s", err, out)
	}
	if out, err := s.script(ctx, "scripts/up.sh"); err != nil {
		return s, fmt.Errorf("up.sh: %w\n%s", err, tail(out, 40))
	}
	s.meters, s.ids = map[string]meter{}, map[string]string{}
	for _, svc := range []string{"caddy", "app", "redis"} {
		id, err := compose(ctx, s.envFile, "ps", "-q", svc)
		if err != nil {
			return s, err
		}
		s.ids[svc] = strings.TrimSpace(id)
		out, err := exec.CommandContext(ctx, "docker", "inspect", "-f",
			`{{.State.Pid}} {{with index .NetworkSettings.Networks "`+stackProject+`_edge"}}{{.IPAddress}}{{end}}`,
			s.ids[svc]).Output()
		if err != nil {
			return s, fmt.Errorf("docker inspect %s: %w", svc, err)
		}
		f := strings.Fields(string(out))
		pid, _ := strconv.Atoi(f[0])
		cg, err := cgroupDir(pid)
		if err != nil {
			return s, fmt.Errorf("%s's cgroup: %w", svc, err)
		}
		role := map[string]string{"caddy": "proxy"}[svc]
		s.meters[cmp.Or(role, svc)] = func() usage { return cgroupUsage(cg) }
		if svc == "app" && len(f) > 1 {
			s.app = f[1]
		}
	}
	if s.app == "" {
		return s, fmt.Errorf("the app container has no address on %s_edge", stackProject)
	}
	// Docker's own processes: the port proxy that carries the published
	// port on loopback, and the engine (dockerd, containerd and the
	// containers' shims) that carries every log line to its files.
	s.meters["docker-proxy"] = func() usage { return commUsage("docker-proxy") }
	s.meters["docker"] = func() usage { return commUsage("dockerd", "containerd", "containerd-shim") }
	return s, nil
}

// fronts are the stack's three: the published port (through Docker's port
// proxy), Caddy's container and the app's, each reached directly.
//
// The published port is not put through the open model: its overload
// wedged Docker's userland port proxy, which then served nothing for the
// rest of the run (while Caddy's container, reached directly, went on
// serving), and only clients on this host go through that proxy.
func (s *stack) fronts() []*front {
	pick := func(roles ...string) map[string]meter {
		m := map[string]meter{}
		for _, r := range roles {
			m[r] = s.meters[r]
		}
		return m
	}
	return []*front{
		{name: "stack", tls: true, host: "127.0.0.1", port: 443, meters: pick("proxy", "app", "redis", "docker-proxy", "docker"), stack: s, skip: []string{"open"}},
		{name: "stack-caddy", tls: true, host: s.caddy, port: 443, meters: pick("proxy", "app", "redis", "docker"), stack: s},
		{name: "stack-app", host: s.app, port: 3000, meters: pick("app", "redis", "docker"), stack: s},
	}
}

// restarts is how many times Docker has restarted the stack's containers
// (a crash, or the kernel killing one at its memory limit).
func (s *stack) restarts(ctx context.Context) (int, error) {
	args := []string{"inspect", "-f", "{{.RestartCount}}"}
	for _, id := range s.ids {
		args = append(args, id)
	}
	out, err := exec.CommandContext(ctx, "docker", args...).Output()
	if err != nil {
		return 0, fmt.Errorf("docker inspect: %w", err)
	}
	n := 0
	for _, f := range strings.Fields(string(out)) {
		v, _ := strconv.Atoi(f)
		n += v
	}
	return n, nil
}

// waitHealthy waits until Docker reports every container healthy again.
func (s *stack) waitHealthy(ctx context.Context, d time.Duration) error {
	args := []string{"inspect", "-f", "{{.State.Health.Status}}"}
	for _, id := range s.ids {
		args = append(args, id)
	}
	deadline := time.Now().Add(d)
	for {
		out, err := exec.CommandContext(ctx, "docker", args...).Output()
		if err == nil && strings.Count(string(out), "healthy") == len(s.ids) && !strings.Contains(string(out), "unhealthy") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the stack's containers were not healthy again within %s: %s", d, out)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// down removes the project: containers, networks and volumes.
func (s *stack) down() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := s.envFile
	if _, err := os.Stat(env); err != nil {
		// Compose reads compose.yaml, whose secrets it requires, even to
		// remove a project.
		env += ".down"
		_ = os.WriteFile(env, []byte("REDIS_APP_PASSWORD=x\nREDIS_EXPORTER_PASSWORD=x\nREDIS_BACKUP_PASSWORD=x\n"), 0o600)
	}
	_, _ = compose(ctx, env, "down", "-v", "--remove-orphans", "--timeout", "5")
}

// compose runs docker compose on the bench's project with envFile.
func compose(ctx context.Context, envFile string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", append([]string{"compose", "--project-name", stackProject, "--env-file", envFile}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker compose %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// script runs one of the kit's scripts on the bench's project.
func (s *stack) script(ctx context.Context, argv ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "bash", argv...)
	cmd.Env = append(os.Environ(), "COMPOSE_PROJECT_NAME="+stackProject, "SITEKIT_ENV_FILE="+s.envFile)
	return cmd.CombinedOutput()
}

// cgroupDir is the folder of pid's cgroup that lists its processes: the
// unified hierarchy's (cgroup v2) or the first v1 hierarchy's that is
// mounted under its controllers' names.
func cgroupDir(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		// hierarchy-ID:controllers:path; v2's has no controllers.
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		dir := filepath.Join("/sys/fs/cgroup", parts[1], parts[2])
		if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err == nil {
			return dir, nil
		}
	}
	return "", fmt.Errorf("no cgroup folder for process %d in:\n%s", pid, b)
}
