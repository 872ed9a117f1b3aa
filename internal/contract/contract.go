// Package contract checks HTTP answers against docs/openapi.json, for
// tests: the document is validated by an independent implementation of
// OpenAPI 3.1 (kin-openapi), then every answer a test sees can be checked
// against the response the document gives for its route and status.
//
// A check fails when the status is not documented for the route, when the
// body does not match the response's schema, when the body has a field the
// schema does not list (the checker closes every object schema that lists
// properties), when a documented header does not match its schema, or when
// an Allow, Retry-After or WWW-Authenticate header comes with a response
// that does not document it. Unknown paths must answer the document's
// components.responses.NotFound; a known path with an undocumented method
// must answer the 405 of the path's operations.
//
// Only tests import this package.
package contract

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
)

// DocPath is the document's path relative to the module root.
const DocPath = "docs/openapi.json"

// Checker checks answers against the document. It is safe for concurrent
// use.
type Checker struct {
	doc *openapi3.T
	// Ignore, when set, names request paths the document does not cover
	// on purpose (the demo page); their answers are not checked.
	Ignore func(path string) bool
}

// Load reads and validates the document at path (see FindDoc).
func Load(path string) (*Checker, error) {
	b, err := os.ReadFile(path) // #nosec G304 -- a test's own document
	if err != nil {
		return nil, err
	}
	doc, err := Parse(b)
	if err != nil {
		return nil, err
	}
	closeSchemas(doc)
	return &Checker{doc: doc}, nil
}

// Parse loads an OpenAPI document and validates it.
func Parse(b []byte) (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(b)
	if err != nil {
		return nil, fmt.Errorf("contract: load: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("contract: the document is not valid OpenAPI: %w", err)
	}
	return doc, nil
}

// FindDoc walks up from the working directory to the module root holding
// DocPath.
func FindDoc() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, DocPath)
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("contract: " + DocPath + " not found above the working directory")
		}
		dir = parent
	}
}

// Ignoring returns a copy of c whose Ignore is ignore.
func (c *Checker) Ignoring(ignore func(path string) bool) *Checker {
	c2 := *c
	c2.Ignore = ignore
	return &c2
}

// Documented reports whether the document lists path.
func (c *Checker) Documented(path string) bool { return c.doc.Paths.Find(path) != nil }

// Doc returns the loaded document (for tests that inspect it).
func (c *Checker) Doc() *openapi3.T { return c.doc }

// closeSchemas sets additionalProperties: false on every object schema
// that lists properties and says nothing of others, so that a field the
// document does not list fails the check.
func closeSchemas(doc *openapi3.T) {
	seen := map[*openapi3.Schema]bool{}
	var walk func(s *openapi3.SchemaRef)
	walk = func(s *openapi3.SchemaRef) {
		if s == nil || s.Value == nil || seen[s.Value] {
			return
		}
		v := s.Value
		seen[v] = true
		if len(v.Properties) > 0 && v.AdditionalProperties.Has == nil && v.AdditionalProperties.Schema == nil {
			no := false
			v.AdditionalProperties.Has = &no
		}
		for _, p := range v.Properties {
			walk(p)
		}
		walk(v.Items)
		for _, l := range []openapi3.SchemaRefs{v.AllOf, v.AnyOf, v.OneOf} {
			for _, x := range l {
				walk(x)
			}
		}
	}
	for _, s := range doc.Components.Schemas {
		walk(s)
	}
	resp := func(r *openapi3.ResponseRef) {
		if r == nil || r.Value == nil {
			return
		}
		for _, mt := range r.Value.Content {
			walk(mt.Schema)
		}
	}
	for _, r := range doc.Components.Responses {
		resp(r)
	}
	for _, pi := range doc.Paths.Map() {
		for _, op := range pi.Operations() {
			for _, r := range op.Responses.Map() {
				resp(r)
			}
		}
	}
}

// checkedHeaders must be documented by a response that carries them.
var checkedHeaders = []string{"Allow", "Retry-After", "WWW-Authenticate"}

// Check checks one answer to req. body is the whole answer body (empty for
// HEAD).
func (c *Checker) Check(req *http.Request, status int, header http.Header, body []byte) error {
	path := req.URL.EscapedPath()
	if c.Ignore != nil && c.Ignore(path) && status != http.StatusNotFound {
		return nil
	}
	what := req.Method + " " + path + " → " + fmt.Sprint(status)
	pi := c.doc.Paths.Find(path)
	var op *openapi3.Operation
	switch {
	case pi == nil || strings.Contains(path, "%"):
		// Unknown path: the document's NotFound response.
		nf := c.doc.Components.Responses["NotFound"]
		if status != http.StatusNotFound || nf == nil {
			return fmt.Errorf("%s: an unknown path must answer 404 components.responses.NotFound", what)
		}
		op = &openapi3.Operation{Responses: openapi3.NewResponses(openapi3.WithStatus(http.StatusNotFound, nf))}
	case status == http.StatusNotFound && optionalRoute(pi):
		// A route the document marks as absent in some configurations.
		nf := c.doc.Components.Responses["NotFound"]
		if nf == nil {
			return fmt.Errorf("%s: no components.responses.NotFound", what)
		}
		op = &openapi3.Operation{Responses: openapi3.NewResponses(openapi3.WithStatus(http.StatusNotFound, nf))}
	case pi.GetOperation(req.Method) == nil:
		// A method the path does not have: its operations' 405.
		for _, o := range pi.Operations() {
			if o.Responses.Status(http.StatusMethodNotAllowed) != nil {
				op = o
				break
			}
		}
		if op == nil || status != http.StatusMethodNotAllowed {
			return fmt.Errorf("%s: a method the document does not list must answer a documented 405", what)
		}
	default:
		op = pi.GetOperation(req.Method)
	}
	rr := op.Responses.Status(status)
	if rr == nil || rr.Value == nil {
		return fmt.Errorf("%s: status not documented", what)
	}
	for _, h := range checkedHeaders {
		if header.Get(h) != "" && rr.Value.Headers[h] == nil {
			return fmt.Errorf("%s: header %s is not documented for this response", what, h)
		}
	}
	vreq := req
	if req.Method == http.MethodHead {
		// kin-openapi skips HEAD answers: check the headers as for GET,
		// and that there is no body.
		if len(body) > 0 {
			return fmt.Errorf("%s: a HEAD answer with a body", what)
		}
		vreq = req.Clone(req.Context())
		vreq.Method = http.MethodGet
	}
	route := &routers.Route{Spec: c.doc, Path: path, PathItem: pi, Method: vreq.Method, Operation: op}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: vreq, Route: route},
		Status:                 status,
		Header:                 header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	if req.Method == http.MethodHead {
		in.Options.ExcludeResponseBody = true
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		return fmt.Errorf("%s: %w\nbody: %s", what, err, truncate(body))
	}
	return nil
}

func truncate(b []byte) string {
	if len(b) > 500 {
		return string(b[:500]) + "…"
	}
	return string(b)
}

// Reporter is the part of testing.TB the wrappers use.
type Reporter interface {
	Helper()
	Errorf(format string, args ...any)
}

// optionalRoute reports whether the document marks pi's route as absent in
// some configurations (x-optional-route on its operations): it then answers
// 404 to every method.
func optionalRoute(pi *openapi3.PathItem) bool {
	for _, o := range pi.Operations() {
		if o.Extensions["x-optional-route"] != nil {
			return true
		}
	}
	return false
}

// Handler wraps h so that every answer it writes is checked; a mismatch
// fails t.
func (c *Checker) Handler(t Reporter, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &recorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		body := rec.body.Bytes()
		if r.Method == http.MethodHead {
			body = nil // net/http does not send it
		}
		if err := c.Check(r, status, w.Header(), body); err != nil {
			t.Errorf("contract: %v", err)
		}
	})
}

// recorder passes an answer through and keeps a copy of its status and
// body.
type recorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}

// Flush implements http.Flusher.
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Transport wraps a client transport (nil: http.DefaultTransport) so that
// every answer the client receives is checked; a mismatch fails t.
func (c *Checker) Transport(t Reporter, rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			return resp, err
		}
		b, rerr := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(b))
		if rerr != nil {
			return resp, rerr
		}
		if err := c.Check(req, resp.StatusCode, resp.Header, b); err != nil {
			t.Errorf("contract: %v", err)
		}
		return resp, nil
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// CheckResponse checks a response read off the wire (http.ReadResponse),
// consuming its body.
func (c *Checker) CheckResponse(req *http.Request, resp *http.Response) error {
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return c.Check(req, resp.StatusCode, resp.Header, b)
}
