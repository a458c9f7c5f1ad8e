package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
)

// decodeJSON reads r's body into dst, which must be a pointer to a struct. It
// is the one way request bodies come in: the body must be application/json,
// at most limit bytes, one JSON value with no unknown fields and nothing after
// it. Every failure is an *Error for the client.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, dst any) error {
	if ct := r.Header.Get("Content-Type"); !isJSON(ct) {
		return errorf(http.StatusUnsupportedMediaType, codeUnsupportedMedia, `send the body as "Content-Type: application/json"`)
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	return decodeJSONBody(body, limit, dst)
}

func isJSON(contentType string) bool {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "application/json" {
		return false
	}
	cs, ok := params["charset"]
	return !ok || strings.EqualFold(cs, "utf-8")
}

// decodeJSONBody is decodeJSON without the HTTP parts, so that it can be
// fuzzed on its own.
func decodeJSONBody(body io.Reader, limit int64, dst any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonError(err, limit)
	}
	// Exactly one value: anything but whitespace after it is an error, so
	// "{} {}" or "{}x" cannot smuggle a second request past validation.
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return jsonError(err, limit)
		}
		return errorf(http.StatusBadRequest, codeBadRequest, "the body must hold a single JSON object with nothing after it")
	}
	return nil
}

func jsonError(err error, limit int64) *Error {
	var (
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
		tooBig    *http.MaxBytesError
	)
	switch {
	case errors.As(err, &tooBig):
		return errorf(http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Sprintf("the body must be at most %d bytes", limit))
	case errors.Is(err, io.EOF):
		return errorf(http.StatusBadRequest, codeBadRequest, "the body is empty; send a JSON object")
	case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF):
		return errorf(http.StatusBadRequest, codeBadRequest, "the body is not valid JSON")
	case errors.As(err, &typeErr):
		e := errorf(http.StatusBadRequest, codeBadRequest, "a field has the wrong type")
		if typeErr.Field != "" {
			e.Details = []FieldError{{Field: typeErr.Field, Message: "must be a " + jsonType(typeErr.Type.Kind().String())}}
		} else {
			e.Message = "the body must be a JSON object"
		}
		return e
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no typed error for this one.
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		e := errorf(http.StatusBadRequest, codeBadRequest, "the body has a field this endpoint does not take")
		e.Details = []FieldError{{Field: field, Message: "unknown field"}}
		return e
	default:
		return errorf(http.StatusBadRequest, codeBadRequest, "the body is not valid JSON")
	}
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "slice", "array":
		return "list"
	case "map", "struct":
		return "object"
	default:
		return "number"
	}
}

// writeJSON writes v as the response with status. It encodes into a buffer
// first, so a value that cannot be encoded becomes a clean 500 rather than a
// half-written body.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes()) // a client gone away is not our error
	return nil
}

// errorBody is the API's one error shape.
type errorBody struct {
	Code      string       `json:"code"`
	Message   string       `json:"message"`
	Details   []FieldError `json:"details"`
	RequestID string       `json:"request_id"`
}

func writeJSONError(w http.ResponseWriter, r *http.Request, e *Error) {
	details := e.Details
	if details == nil {
		details = []FieldError{} // always a list, never null
	}
	_ = writeJSON(w, e.Status, errorBody{Code: e.Code, Message: e.Message, Details: details, RequestID: requestID(r.Context())})
}
