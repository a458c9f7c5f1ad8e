package main

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(readBody{})
	httpcaddyfile.RegisterHandlerDirective("read_body", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		var rb readBody
		err := rb.UnmarshalCaddyfile(h.Dispenser)
		return rb, err
	})
}

// readBody is an HTTP handler, "read_body" in a Caddyfile's site: it reads
// the request's whole body before the handlers after it run, so that the
// app is asked only once the body is here. A body that stops arriving
// before the server's read deadline (read_body in timeouts) gets 408 Request
// Timeout from Caddy, and one over request_body's max_size 413; neither
// reaches the app. reverse_proxy's request_buffers reads ahead the same
// way but, when the read fails, passes the request on with what it got:
// 1000 stalled HTTP/2 streams then reached the app at once at their
// deadline, and visitors waited seconds for its slots (the abuse run).
// Put request_body (max_size) before it: that bounds what it holds.
type readBody struct{}

// CaddyModule returns the Caddy module information.
func (readBody) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.read_body",
		New: func() caddy.Module { return new(readBody) },
	}
}

// ServeHTTP reads r's body whole, then calls next with it in memory.
func (readBody) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if r.Body == nil || r.Body == http.NoBody {
		return next.ServeHTTP(w, r)
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return caddyhttp.Error(http.StatusRequestEntityTooLarge, err)
		}
		// The client is too slow or gone: the deadline or a reset.
		r.Close = true
		return caddyhttp.Error(http.StatusRequestTimeout, err)
	}
	_ = r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.ContentLength = int64(len(b))
	r.Header.Set("Content-Length", strconv.Itoa(len(b)))
	r.Header.Del("Transfer-Encoding")
	return next.ServeHTTP(w, r)
}

// UnmarshalCaddyfile takes no arguments: "read_body".
func (*readBody) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive's name
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

var (
	_ caddyhttp.MiddlewareHandler = (*readBody)(nil)
	_ caddyfile.Unmarshaler       = (*readBody)(nil)
)
