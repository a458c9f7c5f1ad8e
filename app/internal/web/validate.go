package web

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"

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
	default:
		return "is invalid"
	}
}
