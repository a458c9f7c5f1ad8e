//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// account is a user the backup test signed up through the site, with the
// session it signed in with.
type account struct {
	id, email, name, password string
	session                   *http.Cookie
}

// testBackupRestore: scripts/backup.sh takes a snapshot of the running
// stack's Redis; scripts/restore.sh refuses a damaged file and a running
// Redis, and loads the snapshot into a new, empty redis_data volume, after
// which the stack comes up with exactly the data written before the backup:
// users, their passwords' hashes, their sessions (keys with a TTL), and none
// of what was written after.
func testBackupRestore(t *testing.T, s *stack) {
	dir := t.TempDir() // SITEKIT_BACKUP_DIR
	tag := strconv.FormatInt(time.Now().UnixNano(), 36)
	var before []account
	for i := range 5 {
		before = append(before, s.signUp(t, fmt.Sprintf("backup-%s-%d@example.com", tag, i), fmt.Sprintf("Before %d", i)))
	}

	start := time.Now()
	s.run(t, 5*time.Minute, "env", "SITEKIT_BACKUP_DIR="+dir, "bash", "scripts/backup.sh")
	backupTook := time.Since(start)
	rdb, meta := checkBackupFiles(t, dir)
	s.report(t, "scripts/backup.sh took %s for %s keys (%s bytes)", backupTook.Round(time.Millisecond), meta["keys"], meta["bytes"])
	if keys, _ := strconv.Atoi(meta["keys"]); keys < 2*len(before) {
		t.Errorf("the backup's meta counts %s keys; %d users and their sessions make at least %d", meta["keys"], len(before), 2*len(before))
	}

	after := s.signUp(t, "backup-"+tag+"-after@example.com", "After")

	out, err := s.tryRun(t, time.Minute, "env", "SITEKIT_BACKUP_DIR="+dir, "bash", "scripts/restore.sh", rdb)
	if err == nil || !strings.Contains(string(out), "still running") || !strings.Contains(string(out), "stop app redis") {
		t.Fatalf("scripts/restore.sh with the stack running: %v; want a refusal that says to stop app and redis\n%s", err, out)
	}

	s.compose(t, "stop")
	// If a step below fails, start the stack again for the tests after this
	// one (with an empty Redis if the restore did not happen).
	up := false
	defer func() {
		if !up {
			out, err := s.composeCmd("up", "-d", "--wait", "--wait-timeout", "180").CombinedOutput()
			t.Logf("docker compose up after a failed backup test: %v\n%s", err, out)
		}
	}()
	// A damaged copy is refused by its checksum (the stack is stopped: the
	// checksum alone refuses it).
	damaged := t.TempDir()
	for _, f := range []string{rdb, strings.TrimSuffix(rdb, ".rdb") + ".sha256", strings.TrimSuffix(rdb, ".rdb") + ".meta"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if f == rdb {
			b[len(b)/2] ^= 0x01
		}
		if err := os.WriteFile(filepath.Join(damaged, filepath.Base(f)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, err = s.tryRun(t, time.Minute, "env", "SITEKIT_BACKUP_DIR="+dir, "bash", "scripts/restore.sh", filepath.Join(damaged, filepath.Base(rdb)))
	if err == nil || !strings.Contains(string(out), "checksum mismatch") {
		t.Fatalf("scripts/restore.sh with a damaged file: %v; want a refusal for the checksum\n%s", err, out)
	}

	// Lose Redis's data entirely: the container and its volume.
	s.compose(t, "rm", "-f", "redis")
	volume := project + "_redis_data"
	if out, err := exec.Command("docker", "volume", "rm", volume).CombinedOutput(); err != nil {
		t.Fatalf("docker volume rm %s: %v\n%s", volume, err, out)
	}

	// A local user's trap at the lock path restore.sh once used: a symlink
	// in the shared /tmp to a file of root's, which opening the lock for
	// writing would truncate.
	victim := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(victim, []byte("root's data\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	trap := filepath.Join(os.TempDir(), "sitekit-restore-"+project+".lock")
	os.Remove(trap)
	if err := os.Symlink(victim, trap); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(trap) })

	start = time.Now()
	out = s.run(t, 10*time.Minute, "env", "SITEKIT_BACKUP_DIR="+dir, "bash", "scripts/restore.sh", rdb)
	restoreTook := time.Since(start)
	if b, err := os.ReadFile(victim); err != nil || string(b) != "root's data\n" {
		t.Errorf("the file behind the symlink at %s is now %q (%v): restore.sh wrote through it", trap, b, err)
	}
	if !strings.Contains(string(out), "up -d --wait") {
		t.Errorf("scripts/restore.sh does not print the next step (docker compose up -d --wait)")
	}
	start = time.Now()
	up = true
	s.compose(t, "up", "-d", "--wait", "--wait-timeout", "180")
	s.report(t, "scripts/restore.sh took %s into a new volume; up --wait then took %s", restoreTook.Round(time.Millisecond), time.Since(start).Round(time.Second))

	userStatus := func(a account) (int, string) {
		resp, body := s.get(t, site+"/api/users/"+a.id)
		return resp.StatusCode, body
	}
	waitFor(t, 60*time.Second, "the site after the restore", func() error {
		resp, err := s.client.Get(site + "/api/users/" + before[0].id)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /api/users/%s: %s", before[0].id, resp.Status)
		}
		return nil
	})
	for _, a := range before {
		if code, body := userStatus(a); code != http.StatusOK || !strings.Contains(body, a.name) {
			t.Errorf("GET /api/users/%s (written before the backup) after the restore: %d %s; want 200 with its name", a.id, code, trim(body))
		}
		if code, body := s.me(t, a.session); code != http.StatusOK || !strings.Contains(body, a.email) {
			t.Errorf("GET /api/me with %s's session from before the backup: %d %s; want 200 with the email", a.email, code, trim(body))
		}
		resp, body := s.do(t, mustRequest(t, http.MethodPost, site+"/api/sessions", `{"email":"`+a.email+`","password":"`+a.password+`"}`))
		if resp.StatusCode != http.StatusOK {
			t.Errorf("POST /api/sessions as %s after the restore: %s %s; want 200 (the password's hash is back)", a.email, resp.Status, trim(body))
		}
	}
	if code, body := userStatus(after); code != http.StatusNotFound {
		t.Errorf("GET /api/users/%s (written after the backup) after the restore: %d %s; want 404", after.id, code, trim(body))
	}
	if code, body := s.me(t, after.session); code != http.StatusUnauthorized {
		t.Errorf("GET /api/me with the session made after the backup: %d %s; want 401", code, trim(body))
	}
	// Its email is free again: the claim on it was written after the backup
	// too.
	resp, body := s.do(t, mustRequest(t, http.MethodPost, site+"/api/users", `{"email":"`+after.email+`","name":"After again","password":"`+after.password+`"}`))
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("POST /api/users with the email signed up after the backup: %s %s; want 201", resp.Status, trim(body))
	}
}

// checkBackupFiles checks what scripts/backup.sh wrote in dir: one
// redis-<time>.rdb with its .sha256 (sha256sum -c format, naming both files)
// and .meta, private to their owner, and nothing else. It returns the .rdb's
// path and the .meta's settings.
func checkBackupFiles(t *testing.T, dir string) (string, map[string]string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	var base string
	for _, n := range names {
		if m := regexp.MustCompile(`^(redis-\d{8}T\d{6}Z)\.rdb$`).FindStringSubmatch(n); m != nil {
			base = m[1]
		}
	}
	if want := []string{base + ".meta", base + ".rdb", base + ".sha256"}; base == "" || strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("the backup folder holds %q; want exactly redis-<UTC time>.{meta,rdb,sha256}", names)
	}
	sums := map[string]string{}
	for _, ext := range []string{".rdb", ".meta", ".sha256"} {
		path := filepath.Join(dir, base+ext)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		sums[base+ext] = hex.EncodeToString(sum[:])
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v; want 0600 (it holds password hashes)", path, fi.Mode().Perm())
		}
	}
	rdb := filepath.Join(dir, base+".rdb")
	data, err := os.ReadFile(rdb)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte("REDIS")) {
		t.Errorf("%s does not start with an RDB header: %q", rdb, data[:min(len(data), 9)])
	}

	b, err := os.ReadFile(filepath.Join(dir, base+".sha256"))
	if err != nil {
		t.Fatal(err)
	}
	want := sums[base+".rdb"] + "  " + base + ".rdb\n" + sums[base+".meta"] + "  " + base + ".meta\n"
	if string(b) != want {
		t.Errorf("%s.sha256:\n%s\nwant (sha256sum format):\n%s", base, b, want)
	}
	// sha256sum itself agrees.
	cmd := exec.Command("sha256sum", "--check", "--strict", base+".sha256")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c %s.sha256: %v\n%s", base, err, out)
	}

	b, err = os.ReadFile(filepath.Join(dir, base+".meta"))
	if err != nil {
		t.Fatal(err)
	}
	meta := map[string]string{}
	for l := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(k, "#") {
			meta[k] = v
		}
	}
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(meta["redis_version"]) {
		t.Errorf("%s.meta: redis_version=%q; want Redis's version", base, meta["redis_version"])
	}
	if meta["bytes"] != strconv.Itoa(len(data)) {
		t.Errorf("%s.meta: bytes=%s; the file has %d", base, meta["bytes"], len(data))
	}
	if meta["file"] != base+".rdb" {
		t.Errorf("%s.meta: file=%q; want %s.rdb", base, meta["file"], base)
	}
	created, err := time.Parse(time.RFC3339, meta["created"])
	if err != nil || time.Since(created) > 10*time.Minute || time.Until(created) > time.Minute {
		t.Errorf("%s.meta: created=%q; want the backup's time in RFC 3339", base, meta["created"])
	}
	return rdb, meta
}

// signUp creates a user through the API and signs it in.
func (s *stack) signUp(t *testing.T, email, name string) account {
	t.Helper()
	a := account{email: email, name: name, password: "a backup test's long password"}
	resp, body := s.do(t, mustRequest(t, http.MethodPost, site+"/api/users", `{"email":"`+email+`","name":"`+name+`","password":"`+a.password+`"}`))
	var u struct{ ID string }
	if resp.StatusCode != http.StatusCreated || json.Unmarshal([]byte(body), &u) != nil || u.ID == "" {
		t.Fatalf("POST /api/users %s: %s %s; want 201 with an id", email, resp.Status, trim(body))
	}
	a.id = u.ID
	resp, body = s.do(t, mustRequest(t, http.MethodPost, site+"/api/sessions", `{"email":"`+email+`","password":"`+a.password+`"}`))
	for _, c := range resp.Cookies() {
		if c.Name == "__Host-session" {
			a.session = c
		}
	}
	if resp.StatusCode != http.StatusOK || a.session == nil {
		t.Fatalf("POST /api/sessions %s: %s %s; want 200 with a __Host-session cookie", email, resp.Status, trim(body))
	}
	return a
}

// me is GET /api/me with a session cookie: its status and body.
func (s *stack) me(t *testing.T, session *http.Cookie) (int, string) {
	t.Helper()
	req := mustRequest(t, http.MethodGet, site+"/api/me", "")
	req.AddCookie(session)
	resp, body := s.do(t, req)
	return resp.StatusCode, body
}

// tryRun is s.run for a command that may fail: it returns the output and the
// error instead of failing the test.
func (s *stack) tryRun(t *testing.T, timeout time.Duration, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = s.root
	cmd.Env = append(os.Environ(), "COMPOSE_PROJECT_NAME="+project, "SITEKIT_ENV_FILE="+s.envFile, "COMPOSE_PROFILES="+profiles)
	out, err := cmd.CombinedOutput()
	t.Logf("%s (%v):\n%s", strings.Join(args, " "), err, out)
	return out, err
}
