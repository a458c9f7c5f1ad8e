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
// never touches Redis). It fails open: when Redis cannot decide in time the
// request goes on, counted as outcome="error".
func (s *Server) limitGlobal(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isProbe(r) && s.refuse(w, r, s.limits.Global) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// limit returns middleware that applies class per client IP on one route.
// Its headers replace the global limit's: they describe the stricter one.
func (s *Server) limit(class ratelimit.Class, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.refuse(w, r, class) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuse spends one request of class for the client's IP (its /64 for IPv6),
// sets the RateLimit headers, and answers the request itself, returning
// true, when it may not go on: 429 when limited, 503 when Redis could not
// decide and the class fails closed.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, class ratelimit.Class) bool {
	ip := infoOf(r.Context()).ip
	d, err := s.limiter.Allow(r.Context(), class, clientip.LimitKey(ip))
	if err != nil {
		if d.Allowed {
			s.log.Debug("rate limit undecided, failing open", zap.String("class", class.Name),
				zap.String("request_id", requestID(r.Context())), zap.Error(err))
			return false
		}
		e := withCause(errUnavailable, err)
		s.logError(r, e)
		s.respondError(w, r, e)
		return true
	}
	if !d.Allowed {
		s.respondError(w, r, s.tooMany(w, d))
		return true
	}
	setRateLimitHeaders(w, d)
	return false
}

// tooMany sets the headers of a refusal and returns its error.
func (s *Server) tooMany(w http.ResponseWriter, d ratelimit.Decision) *Error {
	setRateLimitHeaders(w, d)
	w.Header().Set("Retry-After", seconds(d.RetryAfter))
	return errorf(http.StatusTooManyRequests, codeRateLimited, "too many requests; try again in "+seconds(d.RetryAfter)+" s")
}

// setRateLimitHeaders writes the IETF draft's RateLimit-Limit, -Remaining and
// -Reset (seconds until the limit is whole again).
func setRateLimitHeaders(w http.ResponseWriter, d ratelimit.Decision) {
	h := w.Header()
	h.Set("RateLimit-Limit", strconv.Itoa(d.Limit))
	h.Set("RateLimit-Remaining", strconv.Itoa(d.Remaining))
	h.Set("RateLimit-Reset", seconds(d.Reset))
}

// seconds rounds d up to whole seconds, at least 1 when d > 0: a client told
// "0" would retry at once and be refused again.
func seconds(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}
