package web

import (
	"net/http"
	"strconv"

	"github.com/gorilla/mux"
)

// page is one page of a listing. Next is the cursor of the following page,
// empty on the last one.
type page[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next"`
}

// paging reads ?limit= (1–100, default 20) and ?next= (a cursor from the
// previous page).
func paging(r *http.Request) (limit int, cursor string, err error) {
	q := r.URL.Query()
	limit = 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			e := errorf(http.StatusUnprocessableEntity, codeValidation, "some fields are invalid")
			e.Details = []FieldError{{Field: "limit", Message: "must be a whole number from 1 to 100"}}
			return 0, "", e
		}
		limit = n
	}
	return limit, q.Get("next"), nil
}

// listUsers handles GET /api/users (admins): users, newest first.
func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) error {
	limit, cursor, err := paging(r)
	if err != nil {
		return err
	}
	users, next, err := s.accounts.List(r.Context(), cursor, limit)
	if err != nil {
		return err
	}
	out := page[userJSON]{Items: make([]userJSON, 0, len(users)), Next: next}
	for _, u := range users {
		out.Items = append(out.Items, userJSON{ID: u.ID, Email: u.Email, Name: u.Name, CreatedAt: u.CreatedAt})
	}
	return writeJSON(w, http.StatusOK, out)
}

type messageJSON struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Email     string `json:"email"`
	Message   string `json:"message"`
	CreatedAt string `json:"created_at"`
}

// listContact handles GET /api/contact (admins): messages, newest first.
func (s *Server) listContact(w http.ResponseWriter, r *http.Request) error {
	limit, cursor, err := paging(r)
	if err != nil {
		return err
	}
	msgs, next, err := s.contacts.List(r.Context(), cursor, limit)
	if err != nil {
		return err
	}
	out := page[messageJSON]{Items: make([]messageJSON, 0, len(msgs)), Next: next}
	for _, m := range msgs {
		out.Items = append(out.Items, messageJSON{ID: m.ID, Name: m.Name, Email: m.Email, Message: m.Message,
			CreatedAt: m.CreatedAt.Format("2006-01-02T15:04:05.000Z07:00")})
	}
	return writeJSON(w, http.StatusOK, out)
}

// deleteContact handles DELETE /api/contact/{id} (admins): a message dealt
// with leaves the inbox, which makes room under CONTACT_MAX_MESSAGES.
func (s *Server) deleteContact(w http.ResponseWriter, r *http.Request) error {
	if err := s.contacts.Delete(r.Context(), mux.Vars(r)["id"]); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// getUser handles GET /api/users/{id}: the public view of one user, with the
// private fields (email) only for the user themself or an admin.
func (s *Server) getUser(w http.ResponseWriter, r *http.Request) error {
	u, err := s.accounts.Get(r.Context(), mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	out := userJSON{ID: u.ID, Name: u.Name, CreatedAt: u.CreatedAt}
	if viewer, _ := currentUser(r); viewer != nil && (viewer.ID == u.ID || s.isAdmin(viewer)) {
		out.Email = u.Email
	}
	return writeJSON(w, http.StatusOK, out)
}
