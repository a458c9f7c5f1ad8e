package main

import (
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// runtimeEnv is the Go runtime's settings that compose.yaml gives service:
// its GOGC and GOMEMLIMIT, and GOMAXPROCS as Go derives it from the
// container's CPU limit (deploy.resources.limits.cpus, rounded up). The bench
// runs Caddy and the app with them, so that its figures are the stack's.
func runtimeEnv(composeFile, service string) ([]string, error) {
	b, err := os.ReadFile(composeFile)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
			Deploy      struct {
				Resources struct {
					Limits struct {
						CPUs string `yaml:"cpus"`
					} `yaml:"limits"`
				} `yaml:"resources"`
			} `yaml:"deploy"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", composeFile, err)
	}
	s, ok := doc.Services[service]
	if !ok {
		return nil, fmt.Errorf("%s has no service %q", composeFile, service)
	}
	var env []string
	for _, k := range []string{"GOGC", "GOMEMLIMIT"} {
		if v, ok := s.Environment[k]; ok {
			env = append(env, k+"="+defaultOf(v))
		}
	}
	if cpus, err := strconv.ParseFloat(defaultOf(s.Deploy.Resources.Limits.CPUs), 64); err == nil && cpus > 0 {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(int(math.Ceil(cpus))))
	}
	return env, nil
}

// defaultOf is the default of "${NAME:-default}", or v itself.
func defaultOf(v string) string {
	if m := interpolation.FindStringSubmatch(v); m != nil {
		return m[1]
	}
	return v
}

var interpolation = regexp.MustCompile(`^\$\{\w+:-([^}]*)\}$`)
