//go:build e2e

package e2e

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The images compose.yaml builds, each with a local and a release twin.
var builtServices = []string{"caddy", "app", "redis", "prometheus", "redis-exporter", "blackbox", "alertmanager"}

// registryModule is the OCI registry the test pushes to and pulls from:
// CNCF Distribution, built from the Go module proxy.
const registryModule = "github.com/distribution/distribution/v3/cmd/registry@v3.1.2"

// releaseTag is the tag of the release images the test builds and pushes.
const releaseTag = "e2e"

// bridgeGateway is the host's address on Docker's default bridge, which
// build containers and the stack's containers reach: the test's module
// proxy and alert receiver listen there.
func bridgeGateway(t *testing.T) string {
	t.Helper()
	name := dockerOut(t, "network", "inspect", "bridge", "--format", `{{index .Options "com.docker.network.bridge.name"}}`)
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		t.Fatalf("the bridge network's interface %q: %v", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ip, ok := a.(*net.IPNet); ok && ip.IP.To4() != nil {
			return ip.IP.String()
		}
	}
	t.Fatalf("%s has no IPv4 address", name)
	return ""
}

// serve serves h on addr (host:0) until the test ends and returns its URL.
func serve(t *testing.T, addr string, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// moduleProxy serves this machine's Go module cache as a GOPROXY, on the
// bridge's gateway: builds inside containers reach no public proxy here
// (the machine's egress is by an HTTPS proxy they do not trust), so the
// release build is told this one through BUILD_GOPROXY, as a company's
// build would be told its own. go mod download first fills the cache with
// every module the build needs.
func moduleProxy(t *testing.T, root, gateway string) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go mod download: %v\n%s", err, out)
	}
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "cache", "download")
	return serve(t, net.JoinHostPort(gateway, "0"), http.FileServer(http.Dir(dir)))
}

// goInstall builds a pinned Go program (module/path@version) into the
// kit's cache, once, and returns its path.
func goInstall(t *testing.T, pkg string) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	name, version, _ := strings.Cut(pkg, "@")
	bin := filepath.Join(cache, "sitekit", "tools", path.Base(name)+"-"+version, path.Base(name))
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	cmd := exec.Command("go", "install", pkg)
	cmd.Env = append(os.Environ(), "GOBIN="+filepath.Dir(bin), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// startRegistry runs a real OCI registry on loopback until the test ends
// and returns its host:port and its log (with a line per request). The
// engine pushes to loopback registries over plain HTTP without any daemon
// setting.
func startRegistry(t *testing.T) (addr, logFile string) {
	t.Helper()
	bin := goInstall(t, registryModule)
	addr = freeAddr(t, "tcp", "127.0.0.1")
	dir := t.TempDir()
	config := fmt.Sprintf("version: 0.1\nlog: {level: warn}\nstorage: {filesystem: {rootdirectory: %s}, delete: {enabled: true}}\nhttp: {addr: %q}\n", filepath.Join(dir, "data"), addr)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	// No tracing exporter to send to.
	start(t, dir, "registry", bin, []string{"OTEL_TRACES_EXPORTER=none"}, "serve", filepath.Join(dir, "config.yml"))
	waitFor(t, 30*time.Second, "the registry", func() error {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	})
	return addr, filepath.Join(dir, "registry.log")
}

// requests counts the lines of the registry's access log with one of
// methods and all of parts in the path.
func requests(t *testing.T, logFile string, methods []string, parts ...string) int {
	t.Helper()
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for l := range strings.SplitSeq(string(b), "\n") {
		var req string
		ok := false
		for _, m := range methods {
			if _, req, ok = strings.Cut(l, `"`+m+" "); ok {
				break
			}
		}
		if !ok {
			continue
		}
		all := true
		for _, p := range parts {
			all = all && strings.Contains(req, p)
		}
		if all {
			n++
		}
	}
	return n
}

// composeEnv runs docker compose on the test's project with env (NAME=value)
// on top of the test's environment, which compose prefers to the env file.
func (s *stack) composeEnv(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := s.composeCmd(args...)
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("docker compose %s (with %q): %v\n%s", strings.Join(args, " "), env, err, out)
	}
	return string(out)
}

// testReleaseFromRegistry: the production path's images. Build every image
// with SITEKIT_BUILD=release (BuildKit, inside base images made here by
// scripts/base-images.sh) under the registry's name; check that each holds
// the files of its local twin; push them, remove them and the stack's
// containers, pull them back, and run the stack from them. The rest of the
// test runs on these images.
func testReleaseFromRegistry(t *testing.T, s *stack, goproxy string) {
	start := time.Now()
	s.run(t, 15*time.Minute, "bash", "scripts/base-images.sh")
	s.report(t, "scripts/base-images.sh took %s", time.Since(start).Round(time.Second))

	registry, registryLog := startRegistry(t)
	prefix := registry + "/sitekit"
	release := []string{"SITEKIT_BUILD=release", "SITEKIT_IMAGE_PREFIX=" + prefix, "SITEKIT_TAG=" + releaseTag, "BUILD_GOPROXY=" + goproxy}
	start = time.Now()
	s.composeEnv(t, release, "build")
	s.report(t, "docker compose build with SITEKIT_BUILD=release (7 images, BuildKit) took %s", time.Since(start).Round(time.Second))

	localPrefix := s.env["SITEKIT_IMAGE_PREFIX"]
	localTag := s.env["SITEKIT_TAG"]
	var sizes []string
	for _, svc := range builtServices {
		local, rel := localPrefix+"/"+svc+":"+localTag, prefix+"/"+svc+":"+releaseTag
		diff := compareTwins(t, local, rel)
		sizes = append(sizes, fmt.Sprintf("%s %s/%s", svc, imageSize(t, rel), imageSize(t, local)))
		if diff != "" {
			s.report(t, "%s: release differs from local only in Debian packages of other versions: %s", svc, diff)
		}
	}
	s.report(t, "image sizes, release/local: %s", strings.Join(sizes, ", "))

	// The user written now must be there when the stack runs from the
	// pulled images.
	email := fmt.Sprintf("release-%d@example.com", time.Now().UnixNano())
	resp, body := s.do(t, mustRequest(t, http.MethodPost, site+"/api/users", `{"email":"`+email+`","name":"Release","password":"a long enough password"}`))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /api/users: %s %q; want 201", resp.Status, trim(body))
	}

	start = time.Now()
	s.composeEnv(t, release, "push")
	s.report(t, "docker compose push of 7 images to the registry took %s", time.Since(start).Round(100*time.Millisecond))
	s.compose(t, "down")
	for _, svc := range builtServices {
		dockerOut(t, "image", "rm", prefix+"/"+svc+":"+releaseTag)
	}
	start = time.Now()
	// The engine asks for each tag's manifest (HEAD, or GET) and fetches
	// what it lacks; layers it still holds from the build it does not.
	manifest := []string{"HEAD", "GET"}
	manifests := requests(t, registryLog, manifest, "/v2/sitekit/", "/manifests/")
	s.composeEnv(t, release, "pull")
	manifests = requests(t, registryLog, manifest, "/v2/sitekit/", "/manifests/") - manifests
	s.report(t, "docker compose pull of 7 images took %s: %d manifest requests to the registry", time.Since(start).Round(100*time.Millisecond), manifests)
	if manifests < len(builtServices) {
		t.Errorf("docker compose pull made %d manifest requests to the registry; want at least one per image, %d", manifests, len(builtServices))
	}
	for _, svc := range builtServices {
		dockerOut(t, "image", "inspect", "--format", "{{.Id}}", prefix+"/"+svc+":"+releaseTag)
	}

	// From here on the stack's settings name the registry's images.
	s.setEnv(t, append(release, "SITEKIT_PULL_POLICY=missing")...)
	start = time.Now()
	s.compose(t, "up", "-d", "--no-build", "--wait", "--wait-timeout", "180")
	s.report(t, "docker compose up --no-build from the pulled images: healthy in %s", time.Since(start).Round(time.Second))
	for svc, c := range s.containers(t) {
		if want := prefix + "/" + svc + ":" + releaseTag; c.Config.Image != want {
			t.Errorf("%s runs %s; want %s", svc, c.Config.Image, want)
		}
	}
	waitFor(t, 60*time.Second, "the user written before the push, from the pulled images", func() error {
		resp, err := s.client.Post(site+"/api/sessions", "application/json", strings.NewReader(`{"email":"`+email+`","password":"a long enough password"}`))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
			return fmt.Errorf("POST /api/sessions: %s", resp.Status)
		}
		return nil
	})
	s.registry = registry
}

// setEnv sets NAME=value lines in the test's env file (replacing earlier
// values) and in s.env.
func (s *stack) setEnv(t *testing.T, kv ...string) {
	t.Helper()
	b, err := os.ReadFile(s.envFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	for _, pair := range kv {
		name, value, _ := strings.Cut(pair, "=")
		lines = slices.DeleteFunc(lines, func(l string) bool { return strings.HasPrefix(l, name+"=") })
		lines = append(lines, pair)
		s.env[name] = value
	}
	if err := os.WriteFile(s.envFile, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func imageSize(t *testing.T, image string) string {
	t.Helper()
	var size int64
	fmt.Sscan(dockerOut(t, "image", "inspect", "--format", "{{.Size}}", image), &size)
	return fmt.Sprintf("%.1f MiB", float64(size)/(1<<20))
}

// file is what the twins' comparison looks at of one file in an image.
type file struct {
	mode     int64
	uid, gid int
	size     int64
	sum      string // sha256 of a regular file's content
	link     string
}

// imageFiles lists the files of image's root filesystem, by path.
func imageFiles(t *testing.T, image string) map[string]file {
	t.Helper()
	id := dockerOut(t, "create", image, "unused") // a command: the monitoring images have none
	defer exec.Command("docker", "rm", id).Run()
	cmd := exec.Command("docker", "export", id)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	files := map[string]file{}
	tr := tar.NewReader(out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("docker export %s: %v", image, err)
		}
		name := strings.TrimSuffix(path.Clean("/"+h.Name), "/")
		// The engine's mount points of every container.
		if slices.Contains([]string{"", "/.dockerenv", "/dev", "/proc", "/sys", "/etc", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/etc/mtab", "/dev/console", "/dev/pts", "/dev/shm"}, name) {
			continue
		}
		f := file{mode: h.Mode, uid: h.Uid, gid: h.Gid, link: h.Linkname}
		if h.Typeflag == tar.TypeReg {
			hash := sha256.New()
			n, err := io.Copy(hash, tr)
			if err != nil {
				t.Fatal(err)
			}
			f.size, f.sum = n, hex.EncodeToString(hash.Sum(nil))
		}
		files[name] = f
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("docker export %s: %v", image, err)
	}
	return files
}

// debianPackages reads the image's package records (scripts/stage-image.sh
// writes them): each package's version, and which package each file came
// from.
func debianPackages(t *testing.T, image string, files map[string]file) (versions, owner map[string]string) {
	t.Helper()
	versions, owner = map[string]string{}, map[string]string{}
	if _, ok := files["/var/lib/dpkg/status.d"]; !ok {
		return versions, owner // nothing from Debian (the app's image)
	}
	id := dockerOut(t, "create", image, "unused") // a command: the monitoring images have none
	defer exec.Command("docker", "rm", id).Run()
	dir := t.TempDir()
	if out, err := exec.Command("docker", "cp", id+":/var/lib/dpkg/status.d", dir).CombinedOutput(); err != nil {
		t.Fatalf("docker cp %s:/var/lib/dpkg/status.d: %v\n%s", image, err, out)
	}
	entries, err := os.ReadDir(filepath.Join(dir, "status.d"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		f, err := os.Open(filepath.Join(dir, "status.d", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		pkg, isSums := strings.CutSuffix(e.Name(), ".md5sums")
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if isSums {
				if _, name, ok := strings.Cut(sc.Text(), "  "); ok {
					owner["/"+name] = pkg
				}
			} else if v, ok := strings.CutPrefix(sc.Text(), "Version: "); ok {
				versions[pkg] = v
			}
		}
		f.Close()
	}
	return versions, owner
}

// compareTwins fails the test unless the two images hold the same paths
// with the same modes and owners, and the same content, but for files of a
// Debian package whose version differs between them (the release build
// installs what the mirror has today, the local one what this host has).
// It returns those packages, "name old→new", or "" when all is the same.
func compareTwins(t *testing.T, local, release string) string {
	t.Helper()
	lf, rf := imageFiles(t, local), imageFiles(t, release)
	lv, lo := debianPackages(t, local, lf)
	rv, ro := debianPackages(t, release, rf)
	var changed []string
	for pkg, v := range lv {
		if rv[pkg] != "" && rv[pkg] != v {
			changed = append(changed, pkg+" "+v+"→"+rv[pkg])
		}
	}
	slices.Sort(changed)
	for name, l := range lf {
		r, ok := rf[name]
		if !ok {
			t.Errorf("%s holds %s; %s does not", local, name, release)
			continue
		}
		if l.mode != r.mode || l.uid != r.uid || l.gid != r.gid || l.link != r.link {
			t.Errorf("%s: %s has mode %o, owner %d:%d, link %q; %s has %o, %d:%d, %q", name, local, l.mode, l.uid, l.gid, l.link, release, r.mode, r.uid, r.gid, r.link)
		}
		if l.sum == r.sum && l.size == r.size {
			continue
		}
		// A package record of a package with another version, or a file
		// that package owns in both images.
		pkg := lo[name]
		if rec, ok := strings.CutPrefix(name, "/var/lib/dpkg/status.d/"); ok {
			pkg = strings.TrimSuffix(rec, ".md5sums")
		} else if ro[name] != pkg {
			pkg = ""
		}
		if pkg == "" || lv[pkg] == rv[pkg] {
			t.Errorf("%s differs between %s (%d bytes) and %s (%d bytes), and no Debian package of another version explains it", name, local, l.size, release, r.size)
		}
	}
	for name := range rf {
		if _, ok := lf[name]; !ok {
			t.Errorf("%s holds %s; %s does not", release, name, local)
		}
	}
	return strings.Join(changed, ", ")
}
