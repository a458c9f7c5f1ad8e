package web

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/go-playground/validator/v10"
)

// newValidator returns a validator that names fields by their json tag, so
// that details point at the field the client sent.
func newValidator() *validator.Validate {
	v := validator.New(validator.WithRequiredStructEnabled())
	v.RegisterTagNameFunc(func(f reflect.StructField) string {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			return ""
		}
		return name
	})
	// "text": no control or invisible formatting characters (NUL, escape
	// sequences, U+202E that flips text to spoof what a reader sees), but
	// line breaks and tabs, which a message may hold.
	if err := v.RegisterValidation("text", func(fl validator.FieldLevel) bool {
		return !strings.ContainsFunc(fl.Field().String(), func(r rune) bool {
			return r != '\n' && r != '\r' && r != '\t' && (unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == utf8.RuneError)
		})
	}); err != nil {
		panic(err) // only a bad tag name fails, which is a bug here
	}
	return v
}

// check validates in against its struct tags and returns a 422 with one
// detail per invalid field, or nil.
func (s *Server) check(in any) error {
	err := s.validate.Struct(in)
	if err == nil {
		return nil
	}
	var fields validator.ValidationErrors
	if !errors.As(err, &fields) {
		return fmt.Errorf("validate: %w", err) // a bug in the tags, not the client's fault
	}
	e := errorf(http.StatusUnprocessableEntity, codeValidation, "some fields are invalid")
	for _, f := range fields {
		e.Details = append(e.Details, FieldError{Field: f.Field(), Message: fieldMessage(f)})
	}
	return e
}

func fieldMessage(f validator.FieldError) string {
	switch f.Tag() {
	case "required":
		return "is required"
	case "email":
		return "must be a valid email address"
	case "min":
		return "must be at least " + f.Param() + " characters"
	case "max":
		return "must be at most " + f.Param() + " characters"
	case "text":
		return "must not contain control or invisible formatting characters"
	default:
		return "is invalid"
	}
}
