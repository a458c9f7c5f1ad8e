package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap/zapcore"
)

func init() {
	caddy.RegisterModule(bufferedStdout{})
	caddy.OnExit(func(context.Context) { writeOutAll() })
}

// bufferedStdout is a log writer, "output buffered_stdout [flush]" in the
// Caddyfile: standard output, with the lines written in batches of up to
// 64 KiB, each line held at most flush (default 200ms). Caddy's own stdout
// writer makes one write per line; in the stack each write crosses a pipe
// to Docker's log path, whose cost is per write: it took about as much CPU
// per proxied request as Caddy itself (scripts/bench: 212 against 258 µs).
// The batches are zap's
// BufferedWriteSyncer. What a writer holds is written out when Caddy
// closes it, and when the process exits: Caddy 2.11.9 does not close log
// writers on its way out (the SIGTERM path cancels the config's context,
// but the logging's clean-up is not among what that runs).
type bufferedStdout struct {
	// The longest a line is held before it is written.
	FlushInterval caddy.Duration `json:"flush_interval,omitempty"`

	out io.Writer // os.Stdout; tests set another
}

const defaultLogFlush = 200 * time.Millisecond

// CaddyModule returns the Caddy module information.
func (bufferedStdout) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.logging.writers.buffered_stdout",
		New: func() caddy.Module { return new(bufferedStdout) },
	}
}

func (b bufferedStdout) flush() time.Duration {
	if b.FlushInterval > 0 {
		return time.Duration(b.FlushInterval)
	}
	return defaultLogFlush
}

func (b bufferedStdout) String() string { return fmt.Sprintf("stdout, buffered %s", b.flush()) }

// WriterKey names the writer for Caddy's pool of open writers, which keeps
// it open across config reloads that keep the same key.
func (b bufferedStdout) WriterKey() string { return "buffered_stdout:" + b.flush().String() }

// OpenWriter starts the batches.
func (b bufferedStdout) OpenWriter() (io.WriteCloser, error) {
	out := b.out
	if out == nil {
		out = os.Stdout
	}
	w := batches{&zapcore.BufferedWriteSyncer{WS: zapcore.AddSync(out), Size: 64 << 10, FlushInterval: b.flush()}}
	opened.Store(w, struct{}{})
	return w, nil
}

// batches closes by writing out what it holds.
type batches struct{ *zapcore.BufferedWriteSyncer }

func (w batches) Close() error {
	opened.Delete(w)
	return w.Stop()
}

// opened holds the writers not yet closed, for writeOutAll.
var opened sync.Map // batches → struct{}

// writeOutAll writes out what every open writer holds.
func writeOutAll() {
	opened.Range(func(w, _ any) bool {
		_ = w.(batches).Sync()
		return true
	})
}

// UnmarshalCaddyfile sets up the writer from Caddyfile tokens:
//
//	output buffered_stdout [<flush_interval>]
func (b *bufferedStdout) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module's name
	if d.NextArg() {
		v, err := caddy.ParseDuration(d.Val())
		if err != nil || v <= 0 {
			return d.Errf("flush interval %q: want a positive duration", d.Val())
		}
		b.FlushInterval = caddy.Duration(v)
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

var (
	_ caddy.WriterOpener    = (*bufferedStdout)(nil)
	_ caddyfile.Unmarshaler = (*bufferedStdout)(nil)
)
