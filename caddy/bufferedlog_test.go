package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestBufferedStdoutCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		in    string
		flush time.Duration
		bad   bool
	}{
		{in: "buffered_stdout", flush: defaultLogFlush},
		{in: "buffered_stdout 50ms", flush: 50 * time.Millisecond},
		{in: "buffered_stdout soon", bad: true},
		{in: "buffered_stdout 0s", bad: true},
		{in: "buffered_stdout 1s 2s", bad: true},
	} {
		var b bufferedStdout
		err := b.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
		if tc.bad {
			if err == nil {
				t.Errorf("%q parsed; want an error", tc.in)
			}
			continue
		}
		if err != nil || b.flush() != tc.flush {
			t.Errorf("%q: flush %s, err %v; want %s", tc.in, b.flush(), err, tc.flush)
		}
	}

	// Through the Caddyfile adapter, as the kit's Caddyfile uses it.
	const cf = `:8080 {
	log {
		output buffered_stdout 50ms
	}
}`
	js, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := `"writer":{"flush_interval":50000000,"output":"buffered_stdout"}`; !bytes.Contains(js, []byte(want)) {
		t.Errorf("adapted config lacks %s:\n%s", want, js)
	}
}

// syncBuffer is a bytes.Buffer for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestBufferedStdoutBatches(t *testing.T) {
	out := &syncBuffer{}
	w, err := bufferedStdout{FlushInterval: caddy.Duration(time.Hour), out: out}.OpenWriter()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := w.Write([]byte(`{"msg":"handled request"}` + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	if got := out.String(); got != "" {
		t.Fatalf("written before the flush interval: %q", got)
	}
	// Caddy closes the writer when it stops: nothing held may be lost.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "handled request"); n != 3 {
		t.Errorf("after Close, %d of 3 lines were written", n)
	}

	// A line is written within the flush interval, with no more writes.
	out = &syncBuffer{}
	w, err = bufferedStdout{FlushInterval: caddy.Duration(20 * time.Millisecond), out: out}.OpenWriter()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write([]byte("one line\n")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for out.String() == "" {
		if time.Now().After(deadline) {
			t.Fatal("a held line was not written within 5s at a 20ms flush interval")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
