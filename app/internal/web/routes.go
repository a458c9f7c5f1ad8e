package web

import (
	"net/http"

	"go.uber.org/zap"
)

// routes installs every route of the app. Reading this function tells you
// what the app answers; each handler is made by a small method of Server.
//
// Pages answer GET and HEAD and render HTML, errors included. The API lives
// under /api, speaks JSON only and answers errors in one JSON shape. Health
// probes are outside both, for Caddy and Docker.
func (s *Server) routes() {
	r := s.router
	// A path with "//", "." or ".." segments gets a 404 in the error contract
	// rather than mux's bare 301, which clients would follow as a GET.
	r.SkipClean(true)
	r.NotFoundHandler = http.HandlerFunc(s.unmatched)
	r.MethodNotAllowedHandler = http.HandlerFunc(s.unmatched)
	r.Use(recordRoute)

	// Health: liveness never touches Redis; readiness does.
	r.Handle("/healthz", s.api(s.healthz)).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/readyz", s.api(s.readyz)).Methods(http.MethodGet, http.MethodHead)

	// Pages. The session and CSRF middleware will sit on this subrouter.
	pages := r.NewRoute().Subrouter()
	pages.Handle("/", s.page(s.staticPage("home"))).Methods(http.MethodGet, http.MethodHead)
	pages.Handle("/about", s.page(s.staticPage("about"))).Methods(http.MethodGet, http.MethodHead)
	pages.Handle("/contact", s.page(s.contactForm)).Methods(http.MethodGet, http.MethodHead)
	pages.Handle("/contact", s.page(s.contactSubmit)).Methods(http.MethodPost)
	pages.Handle("/contact/thanks", s.page(s.staticPage("contact_thanks"))).Methods(http.MethodGet, http.MethodHead)
	pages.Handle("/static/{file}", s.page(s.static)).Methods(http.MethodGet, http.MethodHead)

	// JSON API. Sessions, CSRF and rate limits will sit on this subrouter.
	api := r.PathPrefix("/api").Subrouter()
	api.Handle("/users", s.api(s.createUser)).Methods(http.MethodPost)
	api.Handle("/users/{id}", s.api(s.getUser)).Methods(http.MethodGet, http.MethodHead)
	api.Handle("/contact", s.api(s.createContact)).Methods(http.MethodPost)
}

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
