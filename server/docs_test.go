package server_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/wxphone/wxphone/server"
)

type openapiDoc struct {
	OpenAPI    string                          `json:"openapi"`
	Paths      map[string]map[string]openapiOp `json:"paths"`
	Components struct {
		SecuritySchemes map[string]json.RawMessage `json:"securitySchemes"`
		Responses       map[string]openapiResp     `json:"responses"`
		Schemas         map[string]struct {
			Enum []string `json:"enum"`
		} `json:"schemas"`
	} `json:"components"`
	ErrorStatuses map[string][]int `json:"x-error-statuses"`
}

type openapiOp struct {
	Security  []map[string][]string  `json:"security"`
	Responses map[string]openapiResp `json:"responses"`
}

type openapiResp struct {
	ErrorCodes []string `json:"x-error-codes"`
}

func loadOpenAPI(t *testing.T) openapiDoc {
	t.Helper()
	b, err := os.ReadFile("../docs/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var d openapiDoc
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("docs/openapi.json is not valid JSON: %v", err)
	}
	if !strings.HasPrefix(d.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", d.OpenAPI)
	}
	return d
}

// TestOpenAPICoversRoutes: every registered route is documented with its
// security, and every documented route is registered.
func TestOpenAPICoversRoutes(t *testing.T) {
	d := loadOpenAPI(t)
	e := newEnv(t, envOpts{})
	registered := map[string]bool{}
	for _, r := range e.srv.Routes() {
		key := strings.ToLower(r.Method) + " " + r.Path
		registered[key] = true
		op, ok := d.Paths[r.Path][strings.ToLower(r.Method)]
		if !ok {
			t.Errorf("route %s %s is not in docs/openapi.json", r.Method, r.Path)
			continue
		}
		secured := len(op.Security) > 0 && len(op.Security[0]) > 0
		if secured != (r.Auth != "none") {
			t.Errorf("route %s %s: documented security %v, server auth %q", r.Method, r.Path, op.Security, r.Auth)
		}
		if _, ok := op.Responses["200"]; !ok {
			t.Errorf("route %s %s: no 200 response documented", r.Method, r.Path)
		}
	}
	for p, ops := range d.Paths {
		for m, op := range ops {
			switch {
			case m == "head" && registered["get "+p]:
				// GET routes answer HEAD: the same statuses, no body.
				for st := range ops["get"].Responses {
					if _, ok := op.Responses[st]; !ok {
						t.Errorf("HEAD %s does not document GET's status %s", p, st)
					}
				}
			case !registered[m+" "+p]:
				t.Errorf("docs/openapi.json documents %s %s, which the server does not register", strings.ToUpper(m), p)
			}
			// Every route answers an unknown method with 405 and sits
			// among paths that answer 404.
			for _, st := range []string{"404", "405"} {
				if _, ok := op.Responses[st]; !ok {
					t.Errorf("%s %s does not document %s", strings.ToUpper(m), p, st)
				}
			}
		}
		if _, ok := ops["get"]; ok {
			if _, ok := ops["head"]; !ok {
				t.Errorf("GET %s answers HEAD, which is not documented", p)
			}
		}
	}
	if _, ok := d.Components.SecuritySchemes["bearer"]; !ok {
		t.Error("no bearer security scheme")
	}
}

// TestOpenAPICoversErrorCodes: every error code the server can emit is in
// the ErrorCode enum, with its statuses, and appears in a response of each
// of its statuses.
func TestOpenAPICoversErrorCodes(t *testing.T) {
	d := loadOpenAPI(t)
	enum := d.Components.Schemas["ErrorCode"].Enum
	documented := map[string]map[int]bool{} // code -> statuses with a response listing it
	note := func(status string, r openapiResp) {
		s, err := strconv.Atoi(status)
		if err != nil {
			t.Errorf("response key %q is not a status", status)
			return
		}
		for _, c := range r.ErrorCodes {
			if documented[c] == nil {
				documented[c] = map[int]bool{}
			}
			documented[c][s] = true
		}
	}
	for _, ops := range d.Paths {
		for _, op := range ops {
			for st, r := range op.Responses {
				note(st, r)
			}
		}
	}
	for _, name := range []string{"NotFound", "MethodNotAllowed", "RequestTimeout", "AmbiguousFraming"} {
		r, ok := d.Components.Responses[name]
		if !ok {
			t.Errorf("components.responses.%s is missing", name)
		}
		note(map[string]string{"NotFound": "404", "MethodNotAllowed": "405", "RequestTimeout": "408", "AmbiguousFraming": "400"}[name], r)
	}
	known := map[string]bool{}
	for _, info := range server.ErrorCodes() {
		c := string(info.Code)
		known[c] = true
		if !slices.Contains(enum, c) {
			t.Errorf("error code %s is not in the ErrorCode enum", c)
		}
		if got := d.ErrorStatuses[c]; !slices.Equal(got, info.Statuses) {
			t.Errorf("x-error-statuses[%s] = %v, want %v", c, got, info.Statuses)
		}
		for _, s := range info.Statuses {
			if !documented[c][s] {
				t.Errorf("error code %s with status %d appears in no documented response", c, s)
			}
		}
	}
	for _, c := range enum {
		if !known[c] {
			t.Errorf("the ErrorCode enum lists %s, which the server never emits", c)
		}
	}
	for c := range documented {
		if !known[c] {
			t.Errorf("a response lists the unknown code %s", c)
		}
	}
}

// TestErrorCodesComplete: ErrorCodes lists every ErrorCode constant
// declared in the package, so the documentation tests above see every code
// the server can emit.
func TestErrorCodesComplete(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var declared []string
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || vs.Type == nil {
			return true
		}
		if id, ok := vs.Type.(*ast.Ident); ok && id.Name == "ErrorCode" {
			for _, v := range vs.Values {
				if lit, ok := v.(*ast.BasicLit); ok {
					s, _ := strconv.Unquote(lit.Value)
					declared = append(declared, s)
				}
			}
		}
		return true
	})
	var listed []string
	for _, info := range server.ErrorCodes() {
		listed = append(listed, string(info.Code))
	}
	sort.Strings(declared)
	sort.Strings(listed)
	if len(declared) == 0 || !slices.Equal(declared, listed) {
		t.Errorf("declared codes %v\nlisted by ErrorCodes %v", declared, listed)
	}
	// No handler writes a code that is not a constant.
	for _, file := range []string{"errors.go", "middleware.go", "handlers.go", "server.go"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), `Code: "`) {
			t.Errorf("%s sets an error code from a literal", file)
		}
	}
}

// TestErrorsDoc: docs/errors.md has a row for every code.
func TestErrorsDoc(t *testing.T) {
	b, err := os.ReadFile("../docs/errors.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range server.ErrorCodes() {
		if !strings.Contains(string(b), "| `"+string(info.Code)+"`") {
			t.Errorf("docs/errors.md has no row for %s", info.Code)
		}
	}
}
