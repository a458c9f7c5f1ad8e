package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"go.uber.org/zap"

	"sitekit/app/internal/contact"
	"sitekit/app/internal/session"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// renderer holds the parsed page templates and the static assets under their
// content-hashed names ("style.css" is served as "style.1a2b3c4d5e6f.css"),
// so that a changed file gets a new URL and every URL can be cached for a year.
type renderer struct {
	pages  map[string]*template.Template
	assets map[string]string // "style.css" → "/static/style.1a2b3c4d5e6f.css"
	files  map[string][]byte // "style.1a2b3c4d5e6f.css" → content
}

func newRenderer() (*renderer, error) {
	rd := &renderer{assets: map[string]string{}, files: map[string][]byte{}}
	entries, err := fs.ReadDir(staticFS, "static")
	if err != nil {
		return nil, fmt.Errorf("read static assets: %w", err)
	}
	for _, e := range entries {
		b, err := staticFS.ReadFile("static/" + e.Name())
		if err != nil {
			return nil, fmt.Errorf("read static asset: %w", err)
		}
		sum := sha256.Sum256(b)
		ext := path.Ext(e.Name())
		hashed := strings.TrimSuffix(e.Name(), ext) + "." + hex.EncodeToString(sum[:6]) + ext
		rd.assets[e.Name()] = "/static/" + hashed
		rd.files[hashed] = b
	}

	funcs := template.FuncMap{"asset": func(name string) (string, error) {
		if p, ok := rd.assets[name]; ok {
			return p, nil
		}
		return "", fmt.Errorf("no static asset %q", name)
	}}
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("parse layout: %w", err)
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	rd.pages = map[string]*template.Template{}
	for _, n := range names {
		name := strings.TrimSuffix(path.Base(n), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.Must(layout.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return nil, fmt.Errorf("parse page %s: %w", name, err)
		}
		rd.pages[name] = t
	}
	return rd, nil
}

// pageData is what every page template gets.
type pageData struct {
	Path      string        // for the navigation's current item
	RequestID string        // shown on error pages
	User      *session.User // the signed-in user, nil when signed out
	Form      *formData
	Error     *errorPage
}

// formData is a form as the user left it: the values typed (never the
// password) and a message per invalid field, or one Alert for the whole form.
type formData struct {
	Values map[string]string
	Errors map[string]string
	Alert  string
}

// renderInvalid answers a form that failed s.check: the page again, 422,
// with each field's error and the values kept. Any error other than a 422
// is returned as it is.
func (s *Server) renderInvalid(w http.ResponseWriter, r *http.Request, page string, err error, values map[string]string) error {
	var e *Error
	if !errors.As(err, &e) || e.Status != http.StatusUnprocessableEntity {
		return err
	}
	f := &formData{Values: values, Errors: map[string]string{}}
	for _, d := range e.Details {
		f.Errors[d.Field] = d.Message
	}
	infoOf(r.Context()).code = e.Code
	return s.render(w, r, http.StatusUnprocessableEntity, page, pageData{Form: f})
}

type errorPage struct {
	Status  int
	Title   string
	Message string
}

// render writes the page name with status. It renders into a buffer first,
// so a template error becomes a clean error page, not half a page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, data pageData) error {
	data.Path = r.URL.Path
	data.RequestID = requestID(r.Context())
	data.User, _ = currentUser(r) // Redis down: shown as signed out
	page, err := s.pages.execute(name, data)
	if err != nil {
		return err
	}
	writePage(w, status, page)
	return nil
}

// execute renders the page name with data.
func (rd *renderer) execute(name string, data pageData) ([]byte, error) {
	t, ok := rd.pages[name]
	if !ok {
		return nil, fmt.Errorf("render: no page %q", name)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout.html", data); err != nil {
		return nil, fmt.Errorf("render %s: %w", name, err)
	}
	return buf.Bytes(), nil
}

func writePage(w http.ResponseWriter, status int, page []byte) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// Pages may show who is signed in: no cache may keep them, nor the
	// browser's back button after sign-out.
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(page)
}

// renderError answers e as an HTML page in the site's look. A 5xx page says
// only that something went wrong, with the request id to quote.
func (s *Server) renderError(w http.ResponseWriter, r *http.Request, e *Error) {
	msg := e.Message
	if e.Status >= 500 {
		msg = "Something went wrong on our side. Please try again in a moment."
		if e.Status == http.StatusServiceUnavailable {
			msg = "The site is briefly unavailable. Please try again in a moment."
		}
	}
	data := pageData{Error: &errorPage{Status: e.Status, Title: http.StatusText(e.Status), Message: msg}}
	if err := s.render(w, r, e.Status, "error", data); err != nil {
		s.log.Error("render error page", zap.String("request_id", requestID(r.Context())), zap.Error(err))
		http.Error(w, http.StatusText(e.Status), e.Status)
	}
}

// staticPage returns a handler for a page without data of its own. Signed
// out, such a page is the same bytes every time, so they are rendered once
// and kept; the template runs for signed-in users only, whose name is in the
// navigation. Running html/template was over half of an anonymous page's
// allocations and a third of its time (BenchmarkRequestPath).
func (s *Server) staticPage(name string) handlerFunc {
	type rendered struct {
		path string // the route's one path, which the navigation marks
		page []byte
	}
	var signedOut atomic.Pointer[rendered]
	return func(w http.ResponseWriter, r *http.Request) error {
		if u, _ := currentUser(r); u != nil {
			return s.render(w, r, http.StatusOK, name, pageData{})
		}
		if c := signedOut.Load(); c != nil && c.path == r.URL.Path {
			writePage(w, http.StatusOK, c.page)
			return nil
		}
		page, err := s.pages.execute(name, pageData{Path: r.URL.Path})
		if err != nil {
			return err
		}
		signedOut.Store(&rendered{path: r.URL.Path, page: page})
		writePage(w, http.StatusOK, page)
		return nil
	}
}

// contactForm handles GET /contact.
func (s *Server) contactForm(w http.ResponseWriter, r *http.Request) error {
	return s.render(w, r, http.StatusOK, "contact", pageData{Form: &formData{}})
}

// contactSubmit handles POST /contact: a valid message is stored and answered
// with a redirect (so a reload does not send it twice); an invalid one gets
// the form again with each field's error and what was typed.
func (s *Server) contactSubmit(w http.ResponseWriter, r *http.Request) error {
	if err := s.parseForm(w, r); err != nil {
		return err
	}
	in := contactRequest{Name: r.PostForm.Get("name"), Email: r.PostForm.Get("email"), Message: r.PostForm.Get("message")}
	in.normalize()
	if err := s.check(in); err != nil {
		return s.renderInvalid(w, r, "contact", err, map[string]string{"name": in.Name, "email": in.Email, "message": in.Message})
	}
	_, err := s.contacts.Add(r.Context(), contact.Message{Name: in.Name, Email: in.Email, Message: in.Message})
	if errors.Is(err, contact.ErrFull) {
		// The form again, with what they wrote, so that nothing is lost.
		e := asError(err)
		s.logError(r, e)
		infoOf(r.Context()).code = e.Code
		form := &formData{
			Values: map[string]string{"name": in.Name, "email": in.Email, "message": in.Message},
			Errors: map[string]string{"message": "the contact inbox is full; try again later (your message is kept here)"},
		}
		return s.render(w, r, e.Status, "contact", pageData{Form: form})
	}
	if err != nil {
		return err
	}
	http.Redirect(w, r, "/contact/thanks", http.StatusSeeOther)
	return nil
}

// parseForm reads a url-encoded form body of at most the body limit into
// r.PostForm.
func (s *Server) parseForm(w http.ResponseWriter, r *http.Request) error {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-www-form-urlencoded" {
		return errorf(http.StatusUnsupportedMediaType, codeUnsupportedMedia, "send the form as application/x-www-form-urlencoded")
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.bodyLimit)
	if err := r.ParseForm(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return errorf(http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Sprintf("the form must be at most %d bytes", s.bodyLimit))
		}
		return errorf(http.StatusBadRequest, codeBadRequest, "the form could not be read")
	}
	return nil
}

// static handles GET /static/{file}: only content-hashed names exist, and
// each is immutable, so browsers and Caddy may cache it for a year.
func (s *Server) static(w http.ResponseWriter, r *http.Request) error {
	name := mux.Vars(r)["file"]
	b, ok := s.pages.files[name]
	if !ok {
		return errorf(http.StatusNotFound, codeNotFound, "no such file")
	}
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
	return nil
}
