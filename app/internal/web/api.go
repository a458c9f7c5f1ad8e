package web

import (
	"context"
	"net/http"
	"strings"
	"time"

	"sitekit/app/internal/account"
	"sitekit/app/internal/contact"
)

// userJSON is a user as the API shows it. Email is left out of the public
// view; the password hash is never in any view.
type userJSON struct {
	ID        string    `json:"id"`
	Email     string    `json:"email,omitempty"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

type createUserRequest struct {
	Email    string `json:"email" validate:"required,email,max=254"`
	Password string `json:"password" validate:"required,min=12,max=128"` // characters; no composition rules (NIST SP 800-63B)
	Name     string `json:"name" validate:"required,max=100,text"`
}

// createUser handles POST /api/users.
func (s *Server) createUser(w http.ResponseWriter, r *http.Request) error {
	var in createUserRequest
	if err := decodeJSON(w, r, s.bodyLimit, &in); err != nil {
		return err
	}
	in.Email = account.NormalizeEmail(in.Email)
	in.Name = strings.TrimSpace(in.Name)
	if err := s.check(in); err != nil {
		return err
	}
	u, err := s.register(r.Context(), in)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/users/"+u.ID)
	return writeJSON(w, http.StatusCreated, userJSON{ID: u.ID, Email: u.Email, Name: u.Name, CreatedAt: u.CreatedAt})
}

// register creates the account in (validated) for public sign-up, from the
// API or the page. An email in ADMIN_EMAILS cannot sign up here (admins are
// made with app useradd, and emails are not verified): it looks taken, as
// it should be. The password is hashed first, whatever the answer, so that
// a refusal takes as long as a sign-up and timing does not tell the admins'
// addresses from the rest.
func (s *Server) register(ctx context.Context, in createUserRequest) (account.User, error) {
	hash, err := s.hasher.Hash(ctx, in.Password)
	if err != nil {
		return account.User{}, err
	}
	if s.admins[in.Email] {
		return account.User{}, account.ErrEmailTaken
	}
	return s.accounts.Create(ctx, in.Email, in.Name, hash)
}

// contactRequest is a contact message, from the API's JSON or the page's form.
type contactRequest struct {
	Name    string `json:"name" validate:"required,max=100,text"`
	Email   string `json:"email" validate:"required,email,max=254"`
	Message string `json:"message" validate:"required,max=5000,text"`
}

func (c *contactRequest) normalize() {
	c.Name = strings.TrimSpace(c.Name)
	c.Email = strings.TrimSpace(c.Email)
	c.Message = strings.TrimSpace(c.Message)
}

// createContact handles POST /api/contact.
func (s *Server) createContact(w http.ResponseWriter, r *http.Request) error {
	var in contactRequest
	if err := decodeJSON(w, r, s.bodyLimit, &in); err != nil {
		return err
	}
	in.normalize()
	if err := s.check(in); err != nil {
		return err
	}
	id, err := s.contacts.Add(r.Context(), contact.Message{Name: in.Name, Email: in.Email, Message: in.Message})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusAccepted, struct {
		ID string `json:"id"`
	}{id})
}

// healthz handles GET /healthz: the process is alive. It never calls Redis,
// so a Redis outage does not get the app restarted.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz handles GET /readyz: the app can serve (Redis answers and the app is
// not draining). Caddy and Docker route by it.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	if err := s.ready(r.Context()); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
