package web

import (
	"errors"
	"net/http"
	"strings"

	"sitekit/app/internal/account"
)

// signupForm handles GET /signup.
func (s *Server) signupForm(w http.ResponseWriter, r *http.Request) error {
	return s.render(w, r, http.StatusOK, "signup", pageData{Form: &formData{}})
}

// signupSubmit handles POST /signup: the same rules as POST /api/users, then
// the new user is signed in and sent to their account page.
func (s *Server) signupSubmit(w http.ResponseWriter, r *http.Request) error {
	if err := s.parseForm(w, r); err != nil {
		return err
	}
	in := createUserRequest{
		Email:    account.NormalizeEmail(r.PostForm.Get("email")),
		Password: r.PostForm.Get("password"),
		Name:     strings.TrimSpace(r.PostForm.Get("name")),
	}
	values := map[string]string{"email": in.Email, "name": in.Name} // never echo the password
	if err := s.check(in); err != nil {
		return s.renderInvalid(w, r, "signup", err, values)
	}
	u, err := s.register(r.Context(), in)
	if errors.Is(err, account.ErrEmailTaken) {
		infoOf(r.Context()).code = codeConflict
		form := &formData{Values: values, Errors: map[string]string{"email": "already has an account; sign in instead"}}
		return s.render(w, r, http.StatusConflict, "signup", pageData{Form: form})
	}
	if err != nil {
		return err
	}
	return s.signInAndRedirect(w, r, u)
}

// loginForm handles GET /login.
func (s *Server) loginForm(w http.ResponseWriter, r *http.Request) error {
	return s.render(w, r, http.StatusOK, "login", pageData{Form: &formData{}})
}

// loginSubmit handles POST /login.
func (s *Server) loginSubmit(w http.ResponseWriter, r *http.Request) error {
	if err := s.parseForm(w, r); err != nil {
		return err
	}
	email := account.NormalizeEmail(r.PostForm.Get("email"))
	values := map[string]string{"email": email}
	in := loginRequest{Email: email, Password: r.PostForm.Get("password")}
	if err := s.check(in); err != nil {
		return s.renderInvalid(w, r, "login", err, values)
	}
	u, err := s.authenticate(w, r, in.Email, in.Password)
	if errors.Is(err, errBadCredentials) {
		infoOf(r.Context()).code = codeUnauthorized
		return s.render(w, r, http.StatusUnauthorized, "login", pageData{Form: &formData{Values: values, Alert: "Invalid email or password."}})
	}
	if err != nil {
		return err
	}
	return s.signInAndRedirect(w, r, u)
}

// signInAndRedirect signs u in and sends the browser to their account page,
// with 303 so that a reload does not post the form again.
func (s *Server) signInAndRedirect(w http.ResponseWriter, r *http.Request, u account.User) error {
	if err := s.signIn(w, r, u); err != nil {
		return err
	}
	http.Redirect(w, r, "/account", http.StatusSeeOther)
	return nil
}

// logout handles POST /logout: the session ends server-side at once.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) error {
	if err := s.signOut(w, r); err != nil {
		return err
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
	return nil
}

// accountPage handles GET /account: the signed-in user's details, or a
// redirect to /login when signed out.
func (s *Server) accountPage(w http.ResponseWriter, r *http.Request) error {
	u, err := currentUser(r)
	if err != nil {
		return err // Redis could not say: 503, not a misleading redirect
	}
	if u == nil {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return nil
	}
	return s.render(w, r, http.StatusOK, "account", pageData{})
}
