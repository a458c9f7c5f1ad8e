package web

import (
	"errors"
	"net/http"

	"go.uber.org/zap"

	"sitekit/app/internal/account"
	"sitekit/app/internal/contact"
	"sitekit/app/internal/password"
	"sitekit/app/internal/redisdb"
)

// Error is what a failed request tells the client (Status, Code, Message,
// Details) kept apart from what only the logs see (Err, the cause).
type Error struct {
	Status  int
	Code    string
	Message string
	Details []FieldError
	Err     error
}

// FieldError is one invalid field of a request.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// The error codes of the API, one per status. The README lists them with an
// example each; clients switch on the code, never on the message.
const (
	codeBadRequest       = "bad_request"            // 400
	codeNotFound         = "not_found"              // 404
	codeMethodNotAllowed = "method_not_allowed"     // 405
	codeUnauthorized     = "unauthorized"           // 401
	codeForbidden        = "forbidden"              // 403
	codeConflict         = "conflict"               // 409
	codeTooLarge         = "payload_too_large"      // 413
	codeUnsupportedMedia = "unsupported_media_type" // 415
	codeValidation       = "validation_failed"      // 422
	codeRateLimited      = "rate_limited"           // 429
	codeInternal         = "internal"               // 500
	codeUnavailable      = "unavailable"            // 503
)

func errorf(status int, code, message string) *Error {
	return &Error{Status: status, Code: code, Message: message}
}

var (
	errUnavailable = errorf(http.StatusServiceUnavailable, codeUnavailable, "service temporarily unavailable, try again shortly")
	errInternal    = errorf(http.StatusInternalServerError, codeInternal, "internal error")
)

// asError maps any error a handler returns to what the client is told. It is
// the one table from domain errors to statuses. Anything it does not know is
// a 500 whose cause stays in the logs.
func asError(err error) *Error {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, account.ErrNotFound):
		return errorf(http.StatusNotFound, codeNotFound, "user not found")
	case errors.Is(err, account.ErrEmailTaken):
		return errorf(http.StatusConflict, codeConflict, "an account with this email already exists")
	case errors.Is(err, contact.ErrNotFound):
		return errorf(http.StatusNotFound, codeNotFound, "message not found")
	case errors.Is(err, contact.ErrFull):
		// Nothing the sender did: an admin must make room (README, "Contact").
		return withCause(errorf(http.StatusServiceUnavailable, codeUnavailable, "the contact inbox is full; try again later"), err)
	case errors.Is(err, account.ErrBadCursor), errors.Is(err, contact.ErrBadCursor):
		return errorf(http.StatusBadRequest, codeBadRequest, "the next cursor is not one this API handed out")
	case errors.Is(err, password.ErrBusy), redisdb.Unavailable(err):
		return withCause(errUnavailable, err)
	default:
		return withCause(errInternal, err)
	}
}

func withCause(e *Error, cause error) *Error {
	c := *e
	c.Err = cause
	return &c
}

// logError logs a failed request once: 5xx with its cause (500 at error level,
// 503 at warn, since Redis being down is an outage to watch, not a bug); 4xx
// not at all, since the access line already has its status and code.
func (s *Server) logError(r *http.Request, e *Error) {
	if e.Status < 500 {
		return
	}
	fields := []zap.Field{
		zap.String("request_id", requestID(r.Context())),
		zap.String("method", r.Method),
		zap.String("route", routeOf(r.Context())),
		zap.Int("status", e.Status),
		zap.Error(e.Err),
	}
	switch {
	case isProbe(r):
		// Caddy and Docker ask every few seconds; a failing probe is in the
		// health status and in the metrics, and would flood the log at warn.
		s.log.Debug("request failed", fields...)
		return
	case e.Status == http.StatusServiceUnavailable:
		s.log.Warn("request failed", fields...)
		return
	}
	// The error's own text carries its context ("create user: ..."); the
	// stack adds the path through the middleware to this route's adapter.
	s.log.Error("request failed", append(fields, zap.StackSkip("stack", 1))...)
}
