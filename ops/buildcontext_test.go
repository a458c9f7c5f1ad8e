// Package ops holds the stack's images, configuration and tests; this file
// checks what the images' build context carries. compose.yaml builds every
// image from the repository root, filtered by .dockerignore, and the
// release stages COPY all of it into a builder stage, whose layers stay in
// the build cache (and, with a registry cache, in the registry).
package ops

import (
	"os"
	"testing"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// TestBuildContextLeavesOutSecrets reads .dockerignore with the parser and
// matcher BuildKit uses: the secrets of .env (and other env files) and the
// backups (password hashes) never reach a build, while what the images are
// built from does.
func TestBuildContextLeavesOutSecrets(t *testing.T) {
	f, err := os.Open("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	for path, sent := range map[string]bool{
		".env":                    false,
		".env.production":         false,
		"prod.env":                false,
		"backups/redis-2026.rdb":  false,
		".git/config":             false,
		"app/main_test.go":        false,
		".env.example":            true,
		"go.mod":                  true,
		"app/main.go":             true,
		"Caddyfile":               true,
		"ops/redis/redis.conf":    true,
		"scripts/stage-image.sh":  true,
		".build/app/rootfs/app":   true, // SITEKIT_BUILD=local copies it
		"ops/prometheus/rules/x":  true,
		"ops/grafana/dashboards/": true,
	} {
		ignored, err := pm.MatchesOrParentMatches(path)
		if err != nil {
			t.Fatal(err)
		}
		if ignored == sent {
			t.Errorf("%s: sent to builds %v; want %v", path, !ignored, sent)
		}
	}
}
