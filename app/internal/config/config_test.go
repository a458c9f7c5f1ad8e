package config

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadDefaults(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil {
		t.Fatalf("Load with no environment: %v", err)
	}
	if c.Env != Development || c.Listen != "127.0.0.1:3000" || c.InternalListen != "127.0.0.1:9100" ||
		c.RedisURL != "redis://localhost:6379/0" || c.LogLevel != zapcore.InfoLevel {
		t.Errorf("defaults = %+v", c)
	}
	if c.IdleTimeout != 120*time.Second || c.DrainDelay != 5*time.Second || c.BodyLimit != 64<<10 {
		t.Errorf("server defaults = idle %v drain %v body %d", c.IdleTimeout, c.DrainDelay, c.BodyLimit)
	}
}

// TestLoadListenDefaults: outside production the listeners default to
// loopback (go run ./app on a shared server must not publish pprof); in
// production, inside the container, to every interface.
func TestLoadListenDefaults(t *testing.T) {
	c, err := Load(env(map[string]string{"APP_ENV": "production", "REDIS_URL": "redis://app:0123456789abcdef0123@redis:6379/0"}))
	if err != nil {
		t.Fatalf("Load in production: %v", err)
	}
	if c.Listen != ":3000" || c.InternalListen != ":9100" {
		t.Errorf("production listeners %q, %q; want :3000, :9100", c.Listen, c.InternalListen)
	}
}

func TestLoadErrors(t *testing.T) {
	strong := "redis://app:0123456789abcdef0123@redis:6379/0"
	tests := []struct {
		name    string
		env     map[string]string
		wantErr []string // each must appear in the error
	}{
		{"bad env", map[string]string{"APP_ENV": "prod"}, []string{"APP_ENV", `"development" or "production"`}},
		{"bad listen", map[string]string{"APP_LISTEN": "3000"}, []string{"APP_LISTEN", "host:port"}},
		{"bad duration", map[string]string{"APP_DRAIN_DELAY": "5"}, []string{"APP_DRAIN_DELAY", "Go duration"}},
		{"duration out of range", map[string]string{"REDIS_TIMEOUT": "5s"}, []string{"REDIS_TIMEOUT", "between"}},
		{"bad integer", map[string]string{"APP_BODY_LIMIT": "lots"}, []string{"APP_BODY_LIMIT", "whole number"}},
		{"bad level", map[string]string{"LOG_LEVEL": "loud"}, []string{"LOG_LEVEL", "debug, info"}},
		{"bad redis url", map[string]string{"REDIS_URL": "http://x"}, []string{"REDIS_URL", "redis://"}},
		{"production without password", map[string]string{"APP_ENV": "production", "REDIS_URL": "redis://redis:6379/0"},
			[]string{"REDIS_URL", "needs a Redis password"}},
		{"production with placeholder", map[string]string{"APP_ENV": "production", "REDIS_URL": "redis://:changeme@redis:6379/0"},
			[]string{"REDIS_URL", "placeholder"}},
		{"production with a long placeholder", map[string]string{"APP_ENV": "production", "REDIS_URL": "redis://app:change-me-to-a-long-random-value@redis:6379/0"},
			[]string{"REDIS_URL", "placeholder"}},
		{"production with short password", map[string]string{"APP_ENV": "production", "REDIS_URL": "redis://:abc123@redis:6379/0"},
			[]string{"REDIS_URL", "shorter than 16"}},
		{"every error at once", map[string]string{"APP_ENV": "x", "LOG_LEVEL": "y"}, []string{"APP_ENV", "LOG_LEVEL"}},
		{"production with a strong password", map[string]string{"APP_ENV": "production", "REDIS_URL": strong}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(env(tt.env))
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Load succeeded; want an error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestSecretsNeverShown(t *testing.T) {
	const secret = "s3cr3t-0123456789abcdef"
	c, err := Load(env(map[string]string{"REDIS_URL": "redis://app:" + secret + "@redis:6379/0"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Fields()["redis_url"].(string); strings.Contains(got, secret) {
		t.Errorf("Fields shows the password: %s", got)
	}
	for _, u := range []string{
		"redis://app:" + secret + "@redis:port/0", // unparsable
		"redis://" + secret + "@redis:6379/0",     // password without its colon
	} {
		_, err = Load(env(map[string]string{"APP_ENV": "production", "REDIS_URL": u}))
		if err == nil || strings.Contains(err.Error(), secret) {
			t.Errorf("error for %s = %v; want an error without the password", MaskURL(u), err)
		}
	}
	if got := MaskURL("redis://" + secret + "@redis:6379/0"); strings.Contains(got, secret) {
		t.Errorf("MaskURL shows a lone user name: %s", got)
	}
}

func TestAuthAndLimits(t *testing.T) {
	c, err := Load(env(map[string]string{
		"ADMIN_EMAILS":       " Root@Example.com, ops@example.com ,",
		"TRUSTED_PROXIES":    "172.30.0.2, fd00::/8",
		"RATE_LIMIT_CONTACT": "3/10m",
		"RATE_LIMIT_SIGNUP":  "2/h",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.AdminEmails) != 2 || c.AdminEmails[0] != "root@example.com" {
		t.Errorf("admins = %q", c.AdminEmails)
	}
	if len(c.TrustedProxies) != 2 || c.TrustedProxies[0].String() != "172.30.0.2/32" {
		t.Errorf("trusted proxies = %v", c.TrustedProxies)
	}
	if c.RateContact != (Rate{3, 10 * time.Minute}) || c.RateSignup != (Rate{2, time.Hour}) || c.RateGlobal != (Rate{20, time.Second}) {
		t.Errorf("rates = %v %v %v", c.RateContact, c.RateSignup, c.RateGlobal)
	}
	if c.SessionIdleTimeout != 30*time.Minute || c.SessionLifetime != 12*time.Hour {
		t.Errorf("session timeouts = %v %v", c.SessionIdleTimeout, c.SessionLifetime)
	}
	for _, bad := range []map[string]string{
		{"RATE_LIMIT_GLOBAL": "fast"}, {"RATE_LIMIT_GLOBAL": "0/s"}, {"RATE_LIMIT_GLOBAL": "5/ms"},
		{"TRUSTED_PROXIES": "everyone"}, {"ADMIN_EMAILS": "root"},
	} {
		if _, err := Load(env(bad)); err == nil {
			t.Errorf("Load(%v) accepted", bad)
		}
	}
}
