// Package edgetest tests the kit's edge for real: it builds our Caddy
// (./caddy) and the app (./app) once per run, starts a real Redis, the app
// and Caddy with the repository's Caddyfile on free loopback ports, and talks
// to them over HTTP/1.1, HTTP/2 and HTTP/3 the way a browser would. No mocks.
//
// It holds tests only. It lives under app/ so that it may import
// sitekit/app/internal/redistest.
package edgetest
