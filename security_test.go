package wxphone

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// insecureTLS returns the places in src that set InsecureSkipVerify to
// anything but the constant false: a composite literal's field
// (tls.Config{InsecureSkipVerify: …}) or an assignment (c.InsecureSkipVerify = …).
func insecureTLS(fset *token.FileSet, f *ast.File) []string {
	var hits []string
	notFalse := func(e ast.Expr) bool {
		id, ok := e.(*ast.Ident)
		return !ok || id.Name != "false"
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.KeyValueExpr:
			if k, ok := x.Key.(*ast.Ident); ok && k.Name == "InsecureSkipVerify" && notFalse(x.Value) {
				hits = append(hits, fset.Position(x.Pos()).String())
			}
		case *ast.AssignStmt:
			for i, lhs := range x.Lhs {
				if sel, ok := lhs.(*ast.SelectorExpr); ok && sel.Sel.Name == "InsecureSkipVerify" && (len(x.Rhs) != len(x.Lhs) || notFalse(x.Rhs[i])) {
					hits = append(hits, fset.Position(x.Pos()).String())
				}
			}
		}
		return true
	})
	return hits
}

// TestTLSVerificationNeverDisabled scans every non-test Go file of the
// module (nested modules and testdata aside) for InsecureSkipVerify set to
// anything but false.
func TestTLSVerificationNeverDisabled(t *testing.T) {
	t.Parallel()
	// The detector itself, on code that does disable verification.
	fset := token.NewFileSet()
	bad, err := parser.ParseFile(fset, "bad.go", `package p
import "crypto/tls"
var a = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true}
var skip = true
func f(c *tls.Config) { c.InsecureSkipVerify = skip; c.InsecureSkipVerify = false }
var b = tls.Config{InsecureSkipVerify: false}`, 0)
	if err != nil {
		t.Fatal(err)
	}
	if hits := insecureTLS(fset, bad); len(hits) != 2 {
		t.Fatalf("the detector found %v in code with two insecure settings", hits)
	}

	files := 0
	err = filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != "." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); path != "." && err == nil {
				return filepath.SkipDir // a nested module
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files++
		for _, h := range insecureTLS(fset, f) {
			t.Errorf("TLS certificate verification disabled at %s", h)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 40 {
		t.Fatalf("scanned only %d files: is the walk rooted at the module?", files)
	}
}

// TestDefaultHTTPClientVerifiesTLS: the client every Client uses by default
// verifies certificates, refuses TLS below 1.2 and follows no redirect.
func TestDefaultHTTPClientVerifiesTLS(t *testing.T) {
	t.Parallel()
	hc := NewHTTPClient()
	tc := hc.Transport.(*http.Transport).TLSClientConfig
	if tc == nil || tc.InsecureSkipVerify || tc.VerifyPeerCertificate != nil || tc.MinVersion < 0x0303 {
		t.Fatalf("TLS config %+v", tc)
	}
	if hc.CheckRedirect == nil || hc.CheckRedirect(nil, nil) != http.ErrUseLastResponse {
		t.Fatal("the default client follows redirects (which would carry access_token elsewhere)")
	}
}

// TestBaseURLErrorsQuoteNoUserInfo: url.Parse's errors quote the whole URL;
// a base URL's user info (a proxy password, say) must not reach a startup
// error.
func TestBaseURLErrorsQuoteNoUserInfo(t *testing.T) {
	t.Parallel()
	const pw = "base-url-password-0123"
	for _, u := range []string{
		"https://user:" + pw + "@exa mple.com",
		"https://user:" + pw + "@host:port",
		"https://user:" + pw + "@[::1",
		"https://user:" + pw + "@api.weixin.qq.com",
		"ftp://user:" + pw + "@api.weixin.qq.com",
		"https://user:" + pw + "@api.weixin.qq.com/?q=1",
		"https://api.weixin.qq.com/\x7f" + pw,
	} {
		_, err := ParseBaseURL(u)
		if err == nil {
			t.Errorf("ParseBaseURL accepted %q", u)
			continue
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("ParseBaseURL error quotes the password: %v", err)
		}
		if _, err := New(Config{AppID: testAppID, Secret: testSecret, BaseURL: u}); err == nil || strings.Contains(err.Error(), pw) {
			t.Errorf("New: %v", err)
		}
	}
}
