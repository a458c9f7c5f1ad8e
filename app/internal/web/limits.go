package web

import (
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"sitekit/app/internal/clientip"
	"sitekit/app/internal/ratelimit"
)

// limitGlobal applies the general per-IP limit to every request but the
// health probes (Caddy and Docker must always get an answer, and liveness
// never touches Redis). Its class fails open.
func (s *Server) limitGlobal(next http.Handler) http.Handler {
	limited := s.limit(s.limits.Global, next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isProbe(r) {
			next.ServeHTTP(w, r)
			return
		}
		limited.ServeHTTP(w, r)
	})
}

// limit applies class per client IP to one route.
func (s *Server) limit(class ratelimit.Class, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.decide(w, r, class, clientKey(r)); err != nil {
			s.fail(w, r, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// clientKey is the key per-IP limits count the request's client under.
func clientKey(r *http.Request) string { return clientip.LimitKey(infoOf(r.Context()).ip) }

// decide spends one request of class for key and sets the RateLimit
// headers. It returns nil when the request may go on and a 429 when it may
// not. When Redis cannot decide in time, the class's policy answers: nil when
// it fails open (logged at debug, counted as outcome="error"), 503 when it
// fails closed.
func (s *Server) decide(w http.ResponseWriter, r *http.Request, class ratelimit.Class, key string) error {
	d, err := s.limiter.Allow(r.Context(), class, key)
	if err != nil {
		if d.Allowed {
			s.log.Debug("rate limit undecided, failing open", zap.String("class", class.Name),
				zap.String("request_id", requestID(r.Context())), zap.Error(err))
			return nil
		}
		return withCause(errUnavailable, err)
	}
	setRateLimitHeaders(w, d)
	if !d.Allowed {
		w.Header().Set("Retry-After", seconds(d.RetryAfter))
		return errorf(http.StatusTooManyRequests, codeRateLimited, "too many requests; try again in "+seconds(d.RetryAfter)+" s")
	}
	return nil
}

// setRateLimitHeaders writes the IETF draft's RateLimit-Limit, -Remaining and
// -Reset (seconds until the limit is whole again), unless a decision already
// made for this request left fewer remaining: the headers describe the class
// the client is nearest to running out of.
func setRateLimitHeaders(w http.ResponseWriter, d ratelimit.Decision) {
	h := w.Header()
	if n, err := strconv.Atoi(h.Get("RateLimit-Remaining")); err == nil && n < d.Remaining {
		return
	}
	h.Set("RateLimit-Limit", strconv.Itoa(d.Limit))
	h.Set("RateLimit-Remaining", strconv.Itoa(d.Remaining))
	h.Set("RateLimit-Reset", seconds(d.Reset))
}

// seconds rounds d up to whole seconds, at least 1 when d > 0: a client told
// "0" would retry at once and be refused again.
func seconds(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}
