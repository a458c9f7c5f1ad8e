//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Pebble, Let's Encrypt's ACME test server, and its DNS and challenge
// companion, built from the Go module proxy.
const (
	pebbleModule       = "github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.3"
	challtestsrvModule = "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv@v2.10.3"
)

// The names the ACME test asks certificates for: resolved by Pebble's DNS to
// Caddy's address on the edge network.
const (
	acmeDomain = "site.test"      // over HTTP-01, with TCP 443 cut
	alpnDomain = "alpn.site.test" // over TLS-ALPN-01, with TCP 80 cut
)

// pebble is a running Pebble: an ACME CA on the bridge's gateway, which
// Caddy's container reaches, validating challenges at Caddy's address.
type pebble struct {
	directory string         // the ACME directory URL
	mgmt      string         // its management API, https://host:port
	listenCA  *x509.CertPool // what its listeners' certificate is signed by
	caPEM     []byte         // the same, PEM
	log       string         // its log file
}

// listener is the certificate of Pebble's listeners (its ACME API), for
// the bridge gateway's address, and the CA that signed it.
type listener struct {
	certFile, keyFile string
	caPEM             []byte
	ca                *x509.CertPool
}

func newListener(t *testing.T, gateway string) listener {
	t.Helper()
	dir := t.TempDir()
	l := listener{certFile: filepath.Join(dir, "listener.pem"), keyFile: filepath.Join(dir, "listener.key")}
	l.caPEM, l.ca = listenerCert(t, l.certFile, l.keyFile, net.ParseIP(gateway), net.IPv4(127, 0, 0, 1))
	return l
}

// startPebble runs challtestsrv (DNS only: every name resolves to target)
// and Pebble, issuing certificates valid for validity, until the test ends.
func startPebble(t *testing.T, gateway, target string, l listener, validity time.Duration) *pebble {
	t.Helper()
	dir := t.TempDir()
	p := &pebble{log: filepath.Join(dir, "pebble.log"), caPEM: l.caPEM, listenCA: l.ca}
	certFile, keyFile := l.certFile, l.keyFile

	dns := freeAddr(t, "udp", "127.0.0.1")
	start(t, dir, "challtestsrv", goInstall(t, challtestsrvModule), nil,
		"-dnsserver", dns, "-defaultIPv4", target, "-defaultIPv6", "",
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "", "-management", freeAddr(t, "tcp", "127.0.0.1"))

	listen, mgmt := freeAddr(t, "tcp", gateway), freeAddr(t, "tcp", gateway)
	config, err := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress":           listen,
		"managementListenAddress": mgmt,
		"certificate":             certFile,
		"privateKey":              keyFile,
		// Where a real CA's validation connects: the name's ports 80, 443.
		"httpPort":                       80,
		"tlsPort":                        443,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm":                   "ecdsa",
		"profiles": map[string]any{"default": map[string]any{
			"description": "the test's", "validityPeriod": int(validity.Seconds()),
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfg, config, 0o644); err != nil {
		t.Fatal(err)
	}
	// No random sleeps before validation, and no nonces refused on purpose:
	// Caddy copes with both, the test's time does not.
	start(t, dir, "pebble", goInstall(t, pebbleModule), []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"},
		"-config", cfg, "-dnsserver", dns)
	p.directory = "https://" + listen + "/dir"
	p.mgmt = "https://" + mgmt
	waitFor(t, 30*time.Second, "Pebble's directory", func() error {
		_, err := p.get(p.directory)
		return err
	})
	return p
}

// get fetches url from Pebble, trusting its listeners' certificate.
func (p *pebble) get(url string) ([]byte, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.listenCA}}}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b, err
}

// root is the root certificate Pebble signs with (made anew at each start).
func (p *pebble) root(t *testing.T) []byte {
	t.Helper()
	b, err := p.get(p.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// orders counts the orders Pebble has taken, from its log.
func (p *pebble) orders(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(p.log)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("Added order"))
}

// start runs bin with args and env in dir, logging to dir/name.log, until
// the test ends.
func start(t *testing.T, dir, name, bin string, env []string, args ...string) {
	t.Helper()
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("%s's log (last 3000 bytes):\n%s", name, b[max(0, len(b)-3000):])
		}
	})
}

// freeAddr is host:port of a port free on host now.
func freeAddr(t *testing.T, network, host string) string {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// listenerCert writes a key and a certificate for ips, signed by a CA made
// for it, and returns the CA as PEM and as a pool.
func listenerCert(t *testing.T, certFile, keyFile string, ips ...net.IP) ([]byte, *x509.CertPool) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sitekit e2e Pebble listener CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "pebble"}, IPAddresses: ips,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), pool
}

// cut rejects the host's TCP connections to Caddy's address on port until
// the returned function runs (or the test ends): Pebble validates from this
// host, so a cut port is a challenge that cannot succeed.
func cut(t *testing.T, addr string, port int) func() {
	t.Helper()
	rule := []string{"OUTPUT", "-d", addr, "-p", "tcp", "--dport", fmt.Sprint(port), "-j", "REJECT", "--reject-with", "tcp-reset"}
	if out, err := exec.Command("iptables", append([]string{"-I"}, rule...)...).CombinedOutput(); err != nil {
		t.Fatalf("iptables -I %s: %v\n%s", strings.Join(rule, " "), err, out)
	}
	done := false
	undo := func() {
		if !done {
			done = true
			if out, err := exec.Command("iptables", append([]string{"-D"}, rule...)...).CombinedOutput(); err != nil {
				t.Errorf("iptables -D %s: %v\n%s", strings.Join(rule, " "), err, out)
			}
		}
	}
	t.Cleanup(undo)
	return undo
}

// caddyIssued waits until Caddy's log says msg ("certificate obtained
// successfully", "certificate renewed successfully") for name, and returns
// the challenge type it tried last for name.
func (s *stack) caddyIssued(t *testing.T, name, msg string, since time.Time) (challenge string, took time.Duration) {
	t.Helper()
	took = waitFor(t, 3*time.Minute, "Caddy's log: "+msg+" for "+name, func() error {
		out, err := s.composeCmd("logs", "--no-color", "--no-log-prefix", "--since", since.Format(time.RFC3339), "caddy").Output()
		if err != nil {
			return err
		}
		challenge = ""
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var l struct {
				Msg           string
				Identifier    string
				ChallengeType string `json:"challenge_type"`
			}
			if json.Unmarshal(sc.Bytes(), &l) != nil || l.Identifier != name {
				continue
			}
			switch l.Msg {
			case "trying to solve challenge":
				challenge = l.ChallengeType
			case msg:
				return nil
			}
		}
		return fmt.Errorf("no %q for %s yet (last challenge tried: %q)", msg, name, challenge)
	})
	return challenge, took
}

// siteCert is the certificate Caddy serves for name on the host's 443,
// verified against roots.
func siteCert(t *testing.T, name string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	var cert *x509.Certificate
	waitFor(t, 30*time.Second, "a verified TLS handshake for "+name, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d := tls.Dialer{Config: &tls.Config{RootCAs: roots, ServerName: name}}
		c, err := d.DialContext(ctx, "tcp", "127.0.0.1:443")
		if err != nil {
			return err
		}
		defer c.Close()
		cert = c.(*tls.Conn).ConnectionState().PeerCertificates[0]
		return nil
	})
	return cert
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:12])
}

// testACME: the certificate path of a real domain, with Pebble as the CA.
// Caddy gets site.test over HTTP-01 while TCP 443 is cut, a browser that
// trusts only Pebble's root walks https://site.test, the certificate
// survives down and up with no new order, and the blackbox probe verifies
// it and reads its expiry. Then, from a second Pebble that issues
// one-minute certificates, alpn.site.test comes over TLS-ALPN-01 while TCP
// 80 is cut, and Caddy renews it by itself. It changes DOMAIN: run it last.
func testACME(t *testing.T, s *stack, gateway string) {
	caddyAddr := s.env["CADDY_ADDR"]
	l := newListener(t, gateway)
	p := startPebble(t, gateway, caddyAddr, l, 90*24*time.Hour)
	short := startPebble(t, gateway, caddyAddr, l, time.Minute)

	// Caddy must trust Pebble's listener, as it would a private CA's
	// (README, "Running with a real domain"), and the blackbox probe must
	// trust the certificates Pebble signs, as it trusts a public CA's: a
	// compose override gives both a root bundle through SSL_CERT_FILE, and
	// the probe site.test's address (public DNS would).
	dir := t.TempDir()
	system, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		t.Fatal(err)
	}
	root := p.root(t)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(root) {
		t.Fatal("Pebble's root is no PEM certificate")
	}
	pebbleRoot := filepath.Join(dir, "pebble-root.pem")
	bundle := filepath.Join(dir, "roots.pem")
	for file, b := range map[string][]byte{
		pebbleRoot: root,
		bundle:     bytes.Join([][]byte{system, l.caPEM, root}, []byte("\n")),
	} {
		if err := os.WriteFile(file, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	override := filepath.Join(dir, "acme.compose.yaml")
	if err := os.WriteFile(override, []byte(fmt.Sprintf(`services:
  caddy:
    environment:
      SSL_CERT_FILE: /etc/sitekit-e2e/roots.pem
    volumes:
      - %[1]s:/etc/sitekit-e2e/roots.pem:ro
  blackbox:
    environment:
      SSL_CERT_FILE: /etc/sitekit-e2e/roots.pem
    volumes:
      - %[1]s:/etc/sitekit-e2e/roots.pem:ro
    extra_hosts:
      - "%[2]s:%[3]s"
`, bundle, acmeDomain, caddyAddr)), 0o644); err != nil {
		t.Fatal(err)
	}
	s.setEnv(t, "COMPOSE_FILE="+filepath.Join(s.root, "compose.yaml")+":"+override,
		"DOMAIN="+acmeDomain, "ACME_CA="+p.directory, "ACME_EMAIL=ops@"+acmeDomain)

	// HTTP-01 only: TLS-ALPN-01 cannot reach Caddy's 443.
	restore := cut(t, caddyAddr, 443)
	since := time.Now()
	s.compose(t, "up", "-d", "--no-build", "caddy")
	challenge, took := s.caddyIssued(t, acmeDomain, "certificate obtained successfully", since)
	restore()
	s.report(t, "Pebble certified %s over %s with TCP 443 cut, %s after docker compose up caddy", acmeDomain, challenge, took.Round(time.Second))
	if challenge != "http-01" {
		t.Errorf("%s: the challenge solved last was %q; want http-01", acmeDomain, challenge)
	}
	s.waitHealthy(t)
	cert := siteCert(t, acmeDomain, roots)
	if !slices.Contains(cert.DNSNames, acmeDomain) {
		t.Errorf("the certificate for %s names %v", acmeDomain, cert.DNSNames)
	}

	browse(t, s, "https://"+acmeDomain, pebbleRoot, filepath.Join(s.artifacts, "acme"),
		chromedp.Flag("host-resolver-rules", "MAP "+acmeDomain+" 127.0.0.1"))

	// The certificate and its key are in caddy_data: down and up keep them,
	// and Caddy asks Pebble for nothing.
	before := p.orders(t)
	s.compose(t, "down")
	s.compose(t, "up", "-d", "--no-build", "--wait", "--wait-timeout", "180")
	again := siteCert(t, acmeDomain, roots)
	after := p.orders(t)
	s.report(t, "Pebble's orders before down/up %d, after %d; certificate %s, then %s", before, after, fingerprint(cert), fingerprint(again))
	if after != before || !again.Equal(cert) {
		t.Errorf("after down and up: %d orders (want %d), certificate %s (want %s)", after, before, fingerprint(again), fingerprint(cert))
	}

	// The blackbox probe verifies the certificate (module https_public, no
	// insecure_skip_verify), and CertExpiringSoon reads its real expiry.
	waitFor(t, 2*time.Minute, "the blackbox probe of https://"+acmeDomain+"/ succeeding", func() error {
		if v := promQuery(t, `probe_success{job="site", module="https_public", domain="`+acmeDomain+`"}`); !slices.Equal(v, []string{"1"}) {
			return fmt.Errorf("probe_success %v", v)
		}
		return nil
	})
	expiry := promQuery(t, `probe_ssl_earliest_cert_expiry{job="site", module="https_public"}`)
	if want := fmt.Sprint(cert.NotAfter.Unix()); !slices.Equal(expiry, []string{want}) {
		t.Errorf("probe_ssl_earliest_cert_expiry %v; want the certificate's NotAfter, %s", expiry, want)
	}
	state := alertState(t, "CertExpiringSoon")
	s.report(t, "blackbox verified %s (https_public); its expiry %s is %.1f days away; CertExpiringSoon %s", acmeDomain, cert.NotAfter.Format(time.RFC3339), time.Until(cert.NotAfter).Hours()/24, state)
	if state != "inactive" {
		t.Errorf("CertExpiringSoon is %s with %s left; want inactive", state, time.Until(cert.NotAfter).Round(time.Hour))
	}

	// TLS-ALPN-01 only: HTTP-01 cannot reach Caddy's 80. The second name is
	// Grafana's site, which the Caddyfile serves when GRAFANA_DOMAIN is set;
	// its CA issues one-minute certificates, and Caddy looks for renewals
	// every 5 s (its default is 10 minutes).
	s.setEnv(t, "GRAFANA_DOMAIN="+alpnDomain, "ACME_CA="+short.directory, "EDGE_RENEW_INTERVAL=5s")
	restore = cut(t, caddyAddr, 80)
	since = time.Now()
	s.compose(t, "up", "-d", "--no-build", "caddy")
	challenge, took = s.caddyIssued(t, alpnDomain, "certificate obtained successfully", since)
	restore()
	s.report(t, "Pebble certified %s over %s with TCP 80 cut, %s after docker compose up caddy", alpnDomain, challenge, took.Round(time.Second))
	if challenge != "tls-alpn-01" {
		t.Errorf("%s: the challenge solved last was %q; want tls-alpn-01", alpnDomain, challenge)
	}
	shortRoots := x509.NewCertPool()
	shortRoots.AppendCertsFromPEM(short.root(t))
	first := siteCert(t, alpnDomain, shortRoots)

	// Renewal: within the one-minute lifetime, with no help.
	_, took = s.caddyIssued(t, alpnDomain, "certificate renewed successfully", since)
	var renewed *x509.Certificate
	waitFor(t, 30*time.Second, "the renewed certificate served for "+alpnDomain, func() error {
		renewed = siteCert(t, alpnDomain, shortRoots)
		if renewed.Equal(first) {
			return errors.New("still the first certificate")
		}
		return nil
	})
	s.report(t, "Caddy renewed %s (valid %s) by itself %s after up; served %s, then %s, valid until %s",
		alpnDomain, first.NotAfter.Sub(first.NotBefore).Round(time.Second), took.Round(time.Second), fingerprint(first), fingerprint(renewed), renewed.NotAfter.Format(time.TimeOnly))
	if !renewed.NotAfter.After(first.NotAfter) {
		t.Errorf("the renewed certificate expires %s, not after the first (%s)", renewed.NotAfter, first.NotAfter)
	}
}

// alertState is the state of the alerting rule name in Prometheus:
// inactive, pending or firing.
func alertState(t *testing.T, name string) string {
	t.Helper()
	var data struct {
		Groups []struct {
			Rules []struct {
				Name, State, Health, LastError string
			}
		}
	}
	if err := promGet("/api/v1/rules", url.Values{"type": {"alert"}}, &data); err != nil {
		t.Fatal(err)
	}
	for _, g := range data.Groups {
		for _, r := range g.Rules {
			if r.Name == name {
				if r.Health != "ok" {
					t.Errorf("rule %s: health %s (%s)", name, r.Health, r.LastError)
				}
				return r.State
			}
		}
	}
	t.Fatalf("Prometheus has no alerting rule %s", name)
	return ""
}

// waitHealthy waits until every container of the project is healthy.
func (s *stack) waitHealthy(t *testing.T) {
	t.Helper()
	waitFor(t, 2*time.Minute, "every container healthy", func() error {
		for svc, c := range s.containers(t) {
			if c.State.Health == nil || c.State.Health.Status != "healthy" {
				return fmt.Errorf("%s is %s", svc, c.State.Status)
			}
		}
		return nil
	})
}
