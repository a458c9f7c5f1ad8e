// Package grafana holds no Go code: this test checks the dashboards and
// provisioning in this folder, as part of `go test ./...`. Grafana itself
// cannot run on a machine with no registry; the end-to-end test evaluates
// every panel's query against the live Prometheus instead.
package grafana

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"
)

// Dashboard is the part of a Grafana dashboard the tests read. The
// end-to-end test (ops/e2e) reads the same files.
type Dashboard struct {
	UID    string
	Title  string
	Panels []struct {
		ID         int
		Title      string
		Type       string
		Datasource *Datasource
		GridPos    struct{ X, Y, W, H int }
		Targets    []struct {
			RefID      string
			Expr       string
			Datasource *Datasource
		}
	}
}

type Datasource struct{ Type, UID string }

// provisionedUID is the uid of the data source in provisioning/.
func provisionedUID(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("provisioning/datasources/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Datasources []struct{ UID, Type, URL string }
	}
	if err := yaml.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Datasources) != 1 || p.Datasources[0].Type != "prometheus" || p.Datasources[0].UID == "" {
		t.Fatalf("provisioning/datasources/prometheus.yml: want one prometheus data source with a uid, got %+v", p.Datasources)
	}
	return p.Datasources[0].UID
}

// TestDashboards: each file is valid JSON with a unique uid, unique panel
// ids, panels inside the 24-column grid, and every panel and query bound to
// the provisioned Prometheus data source with a query to run.
func TestDashboards(t *testing.T) {
	uid := provisionedUID(t)
	files, err := filepath.Glob("dashboards/*.json")
	if err != nil || len(files) < 4 {
		t.Fatalf("dashboards/*.json: %v, %d files; want the overview, edge, app and redis dashboards", err, len(files))
	}
	uids := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d Dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Errorf("%s: not valid JSON: %v", f, err)
			continue
		}
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: uid %q, title %q; want both", f, d.UID, d.Title)
		}
		if other, ok := uids[d.UID]; ok {
			t.Errorf("%s and %s share the uid %q", f, other, d.UID)
		}
		uids[d.UID] = f
		if len(d.Panels) == 0 {
			t.Errorf("%s: no panels", f)
		}
		ids := map[int]bool{}
		for _, p := range d.Panels {
			where := f + ": panel " + p.Title
			if p.ID == 0 || ids[p.ID] {
				t.Errorf("%s: id %d is missing or not unique", where, p.ID)
			}
			ids[p.ID] = true
			if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("%s: gridPos %+v is outside the 24-column grid", where, p.GridPos)
			}
			if p.Datasource == nil || p.Datasource.UID != uid || p.Datasource.Type != "prometheus" {
				t.Errorf("%s: data source %+v; want the provisioned prometheus uid %q", where, p.Datasource, uid)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: no queries", where)
			}
			for _, q := range p.Targets {
				if q.Expr == "" || q.RefID == "" {
					t.Errorf("%s: query %q has no expr or refId", where, q.RefID)
				}
				if q.Datasource != nil && q.Datasource.UID != uid {
					t.Errorf("%s: query %s uses data source %q; want %q", where, q.RefID, q.Datasource.UID, uid)
				}
			}
		}
	}
}
