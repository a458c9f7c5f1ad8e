//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"
)

// alertReceiver is a webhook receiver as a chat tool's would be: it takes
// Alertmanager's webhook JSON and keeps every alert it was sent, with when.
type alertReceiver struct {
	url string

	mu       sync.Mutex
	received []receivedAlert
}

type receivedAlert struct {
	at          time.Time
	Status      string
	Labels      map[string]string
	Annotations map[string]string
}

// startAlertReceiver listens on the bridge's gateway, which the stack's
// containers reach, until the test ends.
func startAlertReceiver(t *testing.T, gateway string) *alertReceiver {
	t.Helper()
	r := &alertReceiver{}
	r.url = serve(t, net.JoinHostPort(gateway, "0"), http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var msg struct{ Alerts []receivedAlert }
		if req.Method != http.MethodPost || json.NewDecoder(req.Body).Decode(&msg) != nil {
			http.Error(w, "want Alertmanager's webhook JSON", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, a := range msg.Alerts {
			a.at = time.Now()
			r.received = append(r.received, a)
		}
		r.mu.Unlock()
	})) + "/alerts"
	return r
}

// wait waits until an alert named name with status ("firing" or
// "resolved") arrives after since, and returns it.
func (r *alertReceiver) wait(t *testing.T, timeout time.Duration, name, status string, since time.Time) receivedAlert {
	t.Helper()
	var got receivedAlert
	waitFor(t, timeout, fmt.Sprintf("alert %s %s at the webhook receiver", name, status), func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, a := range r.received {
			if a.Labels["alertname"] == name && a.Status == status && a.at.After(since) {
				got = a
				return nil
			}
		}
		var seen []string
		for _, a := range r.received {
			seen = append(seen, fmt.Sprintf("%s %s at %s", a.Labels["alertname"], a.Status, a.at.Format(time.TimeOnly)))
		}
		return fmt.Errorf("none is %s %s since %s; received: %v; Prometheus says: %s", name, status, since.Format(time.TimeOnly), seen, ruleState(name))
	})
	return got
}

// ruleState is what Prometheus says of the alerting rule name, for a
// failure message.
func ruleState(name string) string {
	var data struct {
		Groups []struct {
			Rules []struct {
				Name, State, Health, LastError string
				Alerts                         []struct{ State, ActiveAt string }
			}
		}
	}
	if err := promGet("/api/v1/rules", url.Values{"type": {"alert"}}, &data); err != nil {
		return err.Error()
	}
	for _, g := range data.Groups {
		for _, r := range g.Rules {
			if r.Name == name {
				return fmt.Sprintf("%s, health %s %s, alerts %+v", r.State, r.Health, r.LastError, r.Alerts)
			}
		}
	}
	return "no such rule"
}
