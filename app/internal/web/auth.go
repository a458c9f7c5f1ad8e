package web

import (
	"errors"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"sitekit/app/internal/account"
	"sitekit/app/internal/ratelimit"
	"sitekit/app/internal/session"
)

// loadSession is router middleware on pages and the API: when the request
// carries a session cookie, it loads the session (one Redis round trip,
// which also slides the idle timeout) into the request's info.
//
// Failure policy: when Redis cannot answer, the request goes on as signed
// out for pages that need no user, and routes that need one answer 503
// (requireUser): a Redis outage neither logs anyone out nor lets anyone in.
func (s *Server) loadSession(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(s.cookieName)
		if err != nil || c.Value == "" {
			next.ServeHTTP(w, r)
			return
		}
		ri := infoOf(r.Context())
		sess, err := s.sessions.Load(r.Context(), c.Value)
		switch {
		case err == nil:
			ri.session = &sess
		case errors.Is(err, session.ErrNotFound):
			s.clearSessionCookie(w) // expired or logged out: stop sending it
		default:
			ri.sessionErr = err
		}
		next.ServeHTTP(w, r)
	})
}

// currentUser returns the signed-in user, nil when signed out, or an error
// when Redis could not tell.
func currentUser(r *http.Request) (*session.User, error) {
	ri := infoOf(r.Context())
	if ri.sessionErr != nil {
		return nil, ri.sessionErr
	}
	if ri.session == nil {
		return nil, nil
	}
	return &ri.session.User, nil
}

var errSignedOut = errorf(http.StatusUnauthorized, codeUnauthorized, "sign in first")

// requireUser guards an API route: 401 when signed out, 503 when Redis could
// not say who the user is.
func (s *Server) requireUser(next handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		u, err := currentUser(r)
		if err != nil {
			return err
		}
		if u == nil {
			return errSignedOut
		}
		return next(w, r)
	}
}

// requireAdmin guards an admin API route: 401 when signed out, 403 for a
// user who is not an admin.
func (s *Server) requireAdmin(next handlerFunc) handlerFunc {
	return s.requireUser(func(w http.ResponseWriter, r *http.Request) error {
		if u, _ := currentUser(r); !s.isAdmin(u) {
			return errorf(http.StatusForbidden, codeForbidden, "admins only")
		}
		return next(w, r)
	})
}

// isAdmin reports whether u (nil when signed out) has admin rights: an
// account made with app useradd (the flag) whose email ADMIN_EMAILS lists.
// Either alone is not enough: an address listed after someone signed up with
// it is a squatter's, and an operator revokes rights by unlisting one.
func (s *Server) isAdmin(u *session.User) bool {
	return u != nil && u.Admin && s.admins[u.Email]
}

func (s *Server) setSessionCookie(w http.ResponseWriter, id string) {
	// loadSession may already have cleared a stale cookie in this response:
	// send one Set-Cookie per name (RFC 6265 section 4.1.1).
	h := w.Header()
	kept := h.Values("Set-Cookie")[:0:0]
	for _, v := range h.Values("Set-Cookie") {
		if !strings.HasPrefix(v, s.cookieName+"=") {
			kept = append(kept, v)
		}
	}
	h["Set-Cookie"] = kept
	http.SetCookie(w, &http.Cookie{
		Name:     s.cookieName,
		Value:    id,
		Path:     "/",
		MaxAge:   int(s.sessions.Lifetime().Seconds()),
		Secure:   s.secure,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	})
}

func (s *Server) clearSessionCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: s.cookieName, Value: "", Path: "/", MaxAge: -1,
		Secure: s.secure, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

var errBadCredentials = errorf(http.StatusUnauthorized, codeUnauthorized, "invalid email or password")

// authenticate checks email and password. A wrong password and an unknown
// email fail the same way after the same work (a full argon2id verify), so
// neither the answer nor its timing tells whether an account exists.
//
// Before any work, every attempt spends a unit of the limits on guessing
// this account's password, atomically, so that concurrent guesses cannot
// slip past them; they fail closed. Which limits depends on who asks, so
// that nobody can lock the owner out by guessing wrong (OWASP's device
// cookies):
//
//   - a browser that signed in to this account before (its device cookie):
//     LoginEmail for that browser alone;
//   - anyone else: LoginEmail for the client (its IP, IPv6 /64), then, if
//     that allows it, LoginAccount for everyone without the cookie together.
//
// So one client gets LoginEmail's guesses at an account, however it tries;
// a crowd of clients gets LoginAccount's, after which only browsers that
// signed in before get in (and the owner in a new browser waits for the
// limit to refill). A success gives back the units of its own LoginEmail
// bucket and marks the browser as known to the account.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, email, password string) (account.User, error) {
	ctx := r.Context()
	accountKey := ratelimit.HashKey(email)
	var device string
	if c, err := r.Cookie(s.deviceCookie); err == nil && session.ValidDeviceToken(c.Value) {
		device = c.Value
	}
	known := false
	if device != "" {
		var err error
		if known, err = s.sessions.KnownDevice(ctx, device, accountKey); err != nil {
			return account.User{}, err
		}
	}
	bucket := accountKey + ":" + clientKey(r)
	if known {
		bucket = accountKey + ":device:" + ratelimit.HashKey(device)
	}
	if err := s.decide(w, r, s.limits.LoginEmail, bucket); err != nil {
		return account.User{}, err
	}
	if !known {
		if err := s.decide(w, r, s.limits.LoginAccount, accountKey); err != nil {
			return account.User{}, err
		}
	}
	u, err := s.accounts.ByEmail(ctx, email)
	if err != nil && !errors.Is(err, account.ErrNotFound) {
		return account.User{}, err
	}
	ok, err := s.hasher.Verify(ctx, password, u.PasswordHash) // "" for no user: a dummy verify
	if err != nil {
		return account.User{}, err
	}
	if !ok {
		return account.User{}, errBadCredentials
	}
	if err := s.limiter.Reset(ctx, s.limits.LoginEmail, bucket); err != nil {
		// The sign-in stands; the units stay spent until they refill.
		s.log.Warn("reset login limit", zap.String("request_id", requestID(ctx)), zap.Error(err))
	}
	if device == "" {
		device = session.NewDeviceToken()
	}
	if err := s.sessions.RememberDevice(ctx, device, accountKey); err != nil {
		// The sign-in stands; this browser is counted as a stranger's.
		s.log.Warn("remember device", zap.String("request_id", requestID(ctx)), zap.Error(err))
	} else {
		http.SetCookie(w, &http.Cookie{
			Name:     s.deviceCookie,
			Value:    device,
			Path:     "/",
			MaxAge:   int(session.DeviceLifetime.Seconds()),
			Secure:   s.secure,
			HttpOnly: true,
			SameSite: http.SameSiteLaxMode,
		})
	}
	return u, nil
}

// signIn starts a session for u, replacing the request's current one, and
// sets the cookie.
func (s *Server) signIn(w http.ResponseWriter, r *http.Request, u account.User) error {
	var old string
	if c, err := r.Cookie(s.cookieName); err == nil {
		old = c.Value
	}
	sess, err := s.sessions.Create(r.Context(), session.User{ID: u.ID, Email: u.Email, Name: u.Name, Admin: u.Admin, CreatedAt: u.CreatedAt}, old)
	if err != nil {
		return err
	}
	s.setSessionCookie(w, sess.ID)
	return nil
}

// signOut deletes the current session server-side, at once, and clears the
// cookie. With Redis down it fails (503) and the cookie stays: the session
// cannot be said to be over until Redis has dropped it.
func (s *Server) signOut(w http.ResponseWriter, r *http.Request) error {
	c, err := r.Cookie(s.cookieName)
	if err != nil || c.Value == "" {
		return nil
	}
	if err := s.sessions.Delete(r.Context(), c.Value); err != nil {
		return err
	}
	s.clearSessionCookie(w)
	return nil
}

type loginRequest struct {
	Email    string `json:"email" validate:"required,max=254"`
	Password string `json:"password" validate:"required,max=128"`
}

// createSession handles POST /api/sessions: sign in.
func (s *Server) createSession(w http.ResponseWriter, r *http.Request) error {
	var in loginRequest
	if err := decodeJSON(w, r, s.bodyLimit, &in); err != nil {
		return err
	}
	in.Email = account.NormalizeEmail(in.Email)
	if err := s.check(in); err != nil {
		return err
	}
	u, err := s.authenticate(w, r, in.Email, in.Password)
	if err != nil {
		return err
	}
	if err := s.signIn(w, r, u); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		User userJSON `json:"user"`
	}{userJSON{ID: u.ID, Email: u.Email, Name: u.Name, CreatedAt: u.CreatedAt}})
}

// deleteSession handles DELETE /api/sessions/current: sign out.
func (s *Server) deleteSession(w http.ResponseWriter, r *http.Request) error {
	if err := s.signOut(w, r); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// me handles GET /api/me: the signed-in user.
func (s *Server) me(w http.ResponseWriter, r *http.Request) error {
	u, _ := currentUser(r) // requireUser has checked
	return writeJSON(w, http.StatusOK, userJSON{ID: u.ID, Email: u.Email, Name: u.Name, CreatedAt: u.CreatedAt})
}
