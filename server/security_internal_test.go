package server

import (
	"crypto/sha256"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/service"
)

// parsePackage parses the package's non-test files.
func parsePackage(t *testing.T) (*token.FileSet, []*ast.File) {
	t.Helper()
	fset := token.NewFileSet()
	paths, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return fset, files
}

func findFunc(files []*ast.File, name string) *ast.FuncDecl {
	for _, f := range files {
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == name {
				return fd
			}
		}
	}
	return nil
}

// callName returns "pkg.Func" for a call of a package-level function.
func callName(c *ast.CallExpr) string {
	if sel, ok := c.Fun.(*ast.SelectorExpr); ok {
		if id, ok := sel.X.(*ast.Ident); ok {
			return id.Name + "." + sel.Sel.Name
		}
	}
	return ""
}

// TestAPIKeyCheckIsConstantTime inspects authorize: the presented key is
// hashed with SHA-256 and compared with every configured digest by
// crypto/subtle, in a loop that cannot stop early, and the key is never
// compared any other way (==, bytes.Equal, strings.EqualFold, a map
// lookup), which would leak through timing how much of a key matched.
func TestAPIKeyCheckIsConstantTime(t *testing.T) {
	t.Parallel()
	_, files := parsePackage(t)
	fd := findFunc(files, "authorize")
	if fd == nil {
		t.Fatal("no authorize function: update this test with the key check")
	}
	for _, p := range constantTimeProblems(fd) {
		t.Error(p)
	}
	// The inspection itself, on checks that leak through timing.
	for name, src := range map[string]string{
		"early exit": `for i := range s.keys { if subtle.ConstantTimeCompare(d[:], s.keys[i].digest[:]) == 1 { idx = i; break } }`,
		"==":         `for i := range s.keys { eq := subtle.ConstantTimeCompare(d[:], s.keys[i].digest[:]); idx = subtle.ConstantTimeSelect(eq, i, idx) }; if key == s.raw { idx = 0 }`,
		"map":        `for i := range s.keys { eq := subtle.ConstantTimeCompare(d[:], s.keys[i].digest[:]); idx = subtle.ConstantTimeSelect(eq, i, idx) }; idx = s.byDigest[d]`,
		"raw bytes":  `for i := range s.keys { eq := subtle.ConstantTimeCompare([]byte(key), s.keys[i].raw); idx = subtle.ConstantTimeSelect(eq, i, idx) }`,
		"EqualFold":  `for i := range s.keys { eq := subtle.ConstantTimeCompare(d[:], s.keys[i].digest[:]); idx = subtle.ConstantTimeSelect(eq, i, idx) }; if strings.EqualFold(key, s.raw) { idx = 0 }`,
	} {
		f, err := parser.ParseFile(token.NewFileSet(), "bad.go", "package p\nfunc authorize(key string) { d := sha256.Sum256([]byte(key)); idx := -1; if key == \"\" { return }; "+src+" }", 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(constantTimeProblems(findFunc([]*ast.File{f}, "authorize"))) == 0 {
			t.Errorf("the inspection misses a non-constant-time check (%s)", name)
		}
	}
}

// constantTimeProblems lists what makes fd's key check depend on the key
// in time.
func constantTimeProblems(fd *ast.FuncDecl) []string {
	var problems []string
	addf := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	var keyVar, digestVar string
	var compares, selects int
	ast.Inspect(fd.Body, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.AssignStmt:
			for i, r := range x.Rhs {
				if c, ok := r.(*ast.CallExpr); ok && callName(c) == "sha256.Sum256" && i < len(x.Lhs) {
					digestVar = x.Lhs[i].(*ast.Ident).Name
					if conv, ok := c.Args[0].(*ast.CallExpr); ok && len(conv.Args) == 1 {
						if id, ok := conv.Args[0].(*ast.Ident); ok {
							keyVar = id.Name
						}
					}
				}
			}
		case *ast.CallExpr:
			switch callName(x) {
			case "subtle.ConstantTimeCompare":
				compares++
				// Both operands are slices of digests.
				for _, a := range x.Args {
					s, ok := a.(*ast.SliceExpr)
					if !ok {
						addf("ConstantTimeCompare operand %T is not a digest slice", a)
						continue
					}
					switch b := s.X.(type) {
					case *ast.Ident:
						if b.Name != digestVar {
							addf("ConstantTimeCompare over %s, not the presented key's digest", b.Name)
						}
					case *ast.SelectorExpr:
						if b.Sel.Name != "digest" {
							addf("ConstantTimeCompare over .%s, not a stored digest", b.Sel.Name)
						}
					}
				}
			case "subtle.ConstantTimeSelect":
				selects++
			case "bytes.Equal", "strings.EqualFold", "strings.Compare", "bytes.Compare", "hmac.Equal", "reflect.DeepEqual":
				for _, a := range x.Args {
					if id, ok := a.(*ast.Ident); ok && (id.Name == keyVar || id.Name == digestVar) {
						addf("the key is compared with %s", callName(x))
					}
				}
			}
		case *ast.BinaryExpr:
			if x.Op == token.EQL || x.Op == token.NEQ {
				for _, side := range []ast.Expr{x.X, x.Y} {
					id, ok := side.(*ast.Ident)
					if !ok || (id.Name != keyVar && id.Name != digestVar) {
						continue
					}
					// Only the emptiness check is allowed.
					if lit, ok := map[bool]ast.Expr{true: x.Y, false: x.X}[side == x.X].(*ast.BasicLit); !ok || lit.Value != `""` {
						addf("the key or its digest is compared with %s", x.Op)
					}
				}
			}
		case *ast.IndexExpr:
			if id, ok := x.Index.(*ast.Ident); ok && (id.Name == keyVar || id.Name == digestVar) {
				addf("the key or its digest indexes a map (not constant time)")
			}
		case *ast.RangeStmt, *ast.ForStmt:
			// The loop over the configured keys always runs to the end.
			ast.Inspect(n, func(m ast.Node) bool {
				switch b := m.(type) {
				case *ast.ReturnStmt:
					addf("a return inside the key loop ends it early")
				case *ast.BranchStmt:
					addf("a %s inside the key loop ends it early", b.Tok)
				case *ast.FuncLit:
					return false
				}
				return true
			})
		}
		return true
	})
	if keyVar == "" || digestVar == "" {
		addf("authorize does not hash the presented key with sha256.Sum256")
	}
	if compares != 1 || selects < 1 {
		addf("authorize makes %d ConstantTimeCompare and %d ConstantTimeSelect calls; want one compare in the loop and a constant-time select", compares, selects)
	}
	return problems
}

// TestServerKeepsOnlyKeyDigests: the server keeps SHA-256 digests of the
// API keys (and keyed-hash caller ids), never a key.
func TestServerKeepsOnlyKeyDigests(t *testing.T) {
	t.Parallel()
	c, err := wxphone.New(wxphone.Config{AppID: "wxkeysonly000001", TokenSource: wxphone.StaticTokenSource(wxphone.Token{Value: "static-token", ExpiresAt: time.Now().Add(time.Hour)})})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := service.New(service.Config{Clients: []*wxphone.Client{c}})
	if err != nil {
		t.Fatal(err)
	}
	const phoneKey, tokenKey = "phone-key-digest-test-0123", "token-key-digest-test-0123"
	s, err := New(Config{Service: svc, APIKeys: []wxphone.Secret{phoneKey}, TokenAPIKeys: []wxphone.Secret{tokenKey}})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.keys) != 2 {
		t.Fatalf("%d key entries", len(s.keys))
	}
	for i, want := range []string{phoneKey, tokenKey} {
		e := s.keys[i]
		if e.digest != sha256.Sum256([]byte(want)) {
			t.Errorf("entry %d holds another digest", i)
		}
		v := reflect.ValueOf(e)
		for j := 0; j < v.NumField(); j++ {
			f := v.Field(j)
			text := ""
			switch f.Kind() {
			case reflect.String:
				text = f.String()
			case reflect.Array, reflect.Slice:
				b := make([]byte, f.Len())
				for k := range b {
					if f.Index(k).Kind() == reflect.Uint8 {
						b[k] = byte(f.Index(k).Uint())
					}
				}
				text = string(b)
			}
			for _, k := range []string{phoneKey, tokenKey} {
				if strings.Contains(text, k) {
					t.Errorf("key entry field %s holds an API key", v.Type().Field(j).Name)
				}
			}
		}
	}
}

// TestHTTPServerLimits inspects the http.Server that Run builds: header,
// body-read, write and idle timeouts and a header size bound are all set,
// and within bounds (TestServerRefusesOversizeAndSlowRequests checks them
// on the wire).
func TestHTTPServerLimits(t *testing.T) {
	t.Parallel()
	_, files := parsePackage(t)
	fd := findFunc(files, "Run")
	if fd == nil {
		t.Fatal("no Run function")
	}
	var lit *ast.CompositeLit
	ast.Inspect(fd.Body, func(n ast.Node) bool {
		if cl, ok := n.(*ast.CompositeLit); ok {
			if sel, ok := cl.Type.(*ast.SelectorExpr); ok && sel.Sel.Name == "Server" {
				if id, ok := sel.X.(*ast.Ident); ok && id.Name == "http" {
					lit = cl
				}
			}
		}
		return true
	})
	if lit == nil {
		t.Fatal("Run builds no http.Server literal")
	}
	fields := map[string]ast.Expr{}
	for _, e := range lit.Elts {
		kv := e.(*ast.KeyValueExpr)
		fields[kv.Key.(*ast.Ident).Name] = kv.Value
	}
	for _, name := range []string{"ReadHeaderTimeout", "ReadTimeout", "WriteTimeout", "IdleTimeout", "MaxHeaderBytes"} {
		if _, ok := fields[name]; !ok {
			t.Errorf("http.Server.%s is not set", name)
		}
	}
	if v, ok := constInt(fields["MaxHeaderBytes"]); !ok || v <= 0 || v > 64<<10 {
		t.Errorf("MaxHeaderBytes = %d (constant: %v); want a constant of at most 64 KiB", v, ok)
	}
	for _, name := range []string{"ReadHeaderTimeout", "ReadTimeout"} {
		if d, ok := constDuration(fields[name]); !ok || d <= 0 || d > 30*time.Second {
			t.Errorf("%s = %v (constant: %v); want a constant of at most 30s", name, d, ok)
		}
	}
}

// constInt evaluates an integer constant expression made of literals, +,
// *, << (enough for "16 << 10").
func constInt(e ast.Expr) (int64, bool) {
	switch x := e.(type) {
	case *ast.BasicLit:
		if x.Kind != token.INT {
			return 0, false
		}
		v, err := strconv.ParseInt(x.Value, 0, 64)
		return v, err == nil
	case *ast.ParenExpr:
		return constInt(x.X)
	case *ast.BinaryExpr:
		a, ok1 := constInt(x.X)
		b, ok2 := constInt(x.Y)
		if !ok1 || !ok2 {
			return 0, false
		}
		switch x.Op {
		case token.SHL:
			return a << b, true
		case token.MUL:
			return a * b, true
		case token.ADD:
			return a + b, true
		}
	}
	return 0, false
}

// constDuration evaluates "N * time.Second" and the like.
func constDuration(e ast.Expr) (time.Duration, bool) {
	units := map[string]time.Duration{"Millisecond": time.Millisecond, "Second": time.Second, "Minute": time.Minute}
	switch x := e.(type) {
	case *ast.SelectorExpr:
		if id, ok := x.X.(*ast.Ident); ok && id.Name == "time" {
			u, ok := units[x.Sel.Name]
			return u, ok
		}
	case *ast.BinaryExpr:
		if x.Op != token.MUL {
			return 0, false
		}
		if n, ok := constInt(x.X); ok {
			u, ok := constDuration(x.Y)
			return time.Duration(n) * u, ok
		}
	}
	return 0, false
}
