package web

import "net/http"

// routes installs every route of the app. Reading this function tells you
// what the app answers; each handler is made by a small method of Server.
//
// Pages answer GET and HEAD and render HTML, errors included. The API lives
// under /api, speaks JSON only and answers errors in one JSON shape. Health
// probes are outside both, for Caddy and Docker.
func (s *Server) routes() {
	r := s.router
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
			e := asError(err)
			s.logError(r, e)
			infoOf(r.Context()).code = e.Code
			respond(w, r, e)
		}
	})
}
