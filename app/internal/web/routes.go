package web

import (
	"net/http"

	"go.uber.org/zap"
)

// routes installs every route of the app. Reading this function tells you
// what the app answers, who may ask, and how often.
//
// Around every route (Handler in server.go): security headers, request id
// and client IP, access log and metrics, panic recovery, the global per-IP
// rate limit (not on probes) and cross-origin protection for POST, PUT,
// PATCH and DELETE.
//
// Pages answer GET and HEAD and render HTML, errors included. The API lives
// under /api, speaks JSON only and answers errors in one JSON shape. Both
// load the session from the cookie. Health probes and static files need no
// session.
func (s *Server) routes() {
	r := s.router
	// A path with "//", "." or ".." segments gets a 404 in the error contract
	// rather than mux's bare 301, which clients would follow as a GET.
	r.SkipClean(true)
	r.NotFoundHandler = http.HandlerFunc(s.unmatched)
	r.MethodNotAllowedHandler = http.HandlerFunc(s.unmatched)
	r.Use(recordRoute)

	// Health: liveness never touches Redis; readiness does.
	r.Handle("/healthz", s.api(s.healthz)).Methods(get...)
	r.Handle("/readyz", s.api(s.readyz)).Methods(get...)
	r.Handle("/static/{file}", s.page(s.static)).Methods(get...)

	lim := s.limits

	// Pages.
	pages := r.NewRoute().Subrouter()
	pages.Use(s.loadSession)
	pages.Handle("/", s.page(s.staticPage("home"))).Methods(get...)
	pages.Handle("/about", s.page(s.staticPage("about"))).Methods(get...)
	pages.Handle("/contact", s.page(s.contactForm)).Methods(get...)
	pages.Handle("/contact", s.limit(lim.Contact, s.page(s.contactSubmit))).Methods(http.MethodPost)
	pages.Handle("/contact/thanks", s.page(s.staticPage("contact_thanks"))).Methods(get...)
	pages.Handle("/signup", s.page(s.signupForm)).Methods(get...)
	pages.Handle("/signup", s.limit(lim.Signup, s.page(s.signupSubmit))).Methods(http.MethodPost)
	pages.Handle("/login", s.page(s.loginForm)).Methods(get...)
	pages.Handle("/login", s.limit(lim.LoginIP, s.page(s.loginSubmit))).Methods(http.MethodPost) // and per email, inside
	pages.Handle("/logout", s.page(s.logout)).Methods(http.MethodPost)
	pages.Handle("/account", s.page(s.accountPage)).Methods(get...) // signed out: redirect to /login

	// JSON API.
	api := r.PathPrefix("/api").Subrouter()
	api.Use(s.loadSession)
	api.Handle("/users", s.limit(lim.Signup, s.api(s.createUser))).Methods(http.MethodPost)
	api.Handle("/users", s.api(s.requireAdmin(s.listUsers))).Methods(get...)
	api.Handle("/users/{id}", s.api(s.getUser)).Methods(get...) // email only for themself or an admin
	api.Handle("/contact", s.limit(lim.Contact, s.api(s.createContact))).Methods(http.MethodPost)
	api.Handle("/contact", s.api(s.requireAdmin(s.listContact))).Methods(get...)
	api.Handle("/contact/{id}", s.api(s.requireAdmin(s.deleteContact))).Methods(http.MethodDelete)
	api.Handle("/sessions", s.limit(lim.LoginIP, s.api(s.createSession))).Methods(http.MethodPost) // and per email, inside
	api.Handle("/sessions/current", s.api(s.deleteSession)).Methods(http.MethodDelete)
	api.Handle("/me", s.api(s.requireUser(s.me))).Methods(get...)
}

// get is the methods of a read-only route: HEAD is GET without the body.
var get = []string{http.MethodGet, http.MethodHead}

// statusClientClosed is nginx's status for a request the client abandoned
// before the answer; it is never sent, only logged and counted.
const statusClientClosed = 499

// handlerFunc is a handler that returns its failure instead of writing it;
// s.api and s.page turn the error into the response and log it once.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// api adapts h for the JSON API and the health probes: a returned error
// becomes the JSON error shape.
func (s *Server) api(h handlerFunc) http.Handler {
	return s.adapt(h, writeJSONError)
}

// page adapts h for pages: a returned error becomes an HTML error page.
func (s *Server) page(h handlerFunc) http.Handler {
	return s.adapt(h, s.renderError)
}

// fail answers err from middleware, as the adapters answer a handler's error:
// mapped by asError, logged once, JSON or HTML by the path.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := asError(err)
	s.logError(r, e)
	s.respondError(w, r, e)
}

func (s *Server) adapt(h handlerFunc, respond func(http.ResponseWriter, *http.Request, *Error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			if r.Context().Err() != nil {
				// The client went away mid-request, so the error is most
				// likely that. Nobody reads an answer: record nginx's 499 for
				// the access log and metrics, and log the cause at debug.
				infoOf(r.Context()).code = "client_closed"
				s.log.Debug("client closed request", zap.String("request_id", requestID(r.Context())), zap.Error(err))
				w.WriteHeader(statusClientClosed)
				return
			}
			e := asError(err)
			s.logError(r, e)
			infoOf(r.Context()).code = e.Code
			respond(w, r, e)
		}
	})
}
