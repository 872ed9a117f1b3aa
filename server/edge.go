package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/wxphone/wxphone/internal/jsonscan"
	"github.com/wxphone/wxphone/internal/valid"
)

// The edge refuses what two HTTP implementations could read differently
// (a front proxy and this server, or this server and the client that
// signed a request): a message framed by both Transfer-Encoding and
// Content-Length, a path with percent-encoded characters that need no
// encoding, a JSON body with a duplicate key or a key in another letter
// case, and an X-Request-Id outside a plain alphabet.

// validRequestID reports whether an incoming X-Request-Id is kept: 1 to
// MaxRequestIDLen characters of [A-Za-z0-9._-].
func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > MaxRequestIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !valid.IDChar(c) && c != '.' {
			return false
		}
	}
	return true
}

// routePath is the path a request is routed on: the path as sent
// (percent-encoding kept), so that /v1%2Fphone-number or /%6Detrics never
// reach a route. Every route path is plain ASCII that needs no encoding.
func routePath(r *http.Request) string {
	if r.URL.RawPath != "" {
		return r.URL.RawPath
	}
	return r.URL.Path
}

// edgeListener wraps the listener of Run so that each connection's bytes
// are scanned for a header block that carries both Transfer-Encoding and
// Content-Length. net/http accepts such a request (it drops
// Content-Length and reads the chunked body), but a proxy in front may
// have framed it by Content-Length: the bytes that follow would then be
// a request the proxy never saw (request smuggling).
type edgeListener struct{ net.Listener }

func (l edgeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &edgeConn{Conn: c}, nil
}

// edgeConn scans what is read from it; see framingScanner.
type edgeConn struct {
	net.Conn
	scan      framingScanner // used by Read only (net/http reads a connection from one goroutine at a time)
	ambiguous atomic.Bool
}

func (c *edgeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.ambiguous.Load() && c.scan.scan(p[:n]) {
		c.ambiguous.Store(true)
	}
	return n, err
}

// CloseWrite half-closes the connection when the underlying one can
// (net/http uses it to close a connection gracefully).
func (c *edgeConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

type edgeConnKey struct{}

// connContext makes a connection of edgeListener known to its requests.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if ec, ok := c.(*edgeConn); ok {
		return context.WithValue(ctx, edgeConnKey{}, ec)
	}
	return ctx
}

// ambiguousFraming reports whether r came over an HTTP/1 connection that
// carried a header block with both Transfer-Encoding and Content-Length
// (r's own, or a pipelined one read with it). Such a connection is refused
// and closed: none of its requests is served.
func ambiguousFraming(r *http.Request) bool {
	c, ok := r.Context().Value(edgeConnKey{}).(*edgeConn)
	return ok && r.ProtoMajor == 1 && c.ambiguous.Load()
}

func errAmbiguousFraming() *apiError {
	e := newError(http.StatusBadRequest, CodeInvalidRequest, "A request carried both Transfer-Encoding and Content-Length; the connection is closed. Send one of them.")
	e.close = true
	return e
}

// framingScanner finds, in a stream of HTTP/1 bytes, a block of lines
// (between blank lines) with both a Transfer-Encoding and a
// Content-Length header line, whatever the letter case and the blanks
// before the colon (net/http reads "Transfer-Encoding :" as another
// header, a proxy may not). It does not frame messages: a body that holds
// such lines also trips it, which only refuses that connection. It keeps
// a few bytes of state whatever the line length.
type framingScanner struct {
	name    [len("transfer-encoding")]byte // the current line's name so far, lower case
	n       int                            // bytes of name; len(name)+1 once it is too long to match
	blank   bool                           // a blank followed the name
	done    bool                           // the name of this line is decided (colon seen, or not a header)
	content bool                           // the line has a byte other than CR
	te, cl  bool                           // seen in the current block
}

// scan consumes p and reports whether an ambiguous block was seen.
func (s *framingScanner) scan(p []byte) bool {
	for i := 0; i < len(p); i++ {
		c := p[i]
		if s.done && s.content && c != '\n' {
			// The rest of the line does not matter: skip to its end.
			j := bytes.IndexByte(p[i:], '\n')
			if j < 0 {
				return false
			}
			i += j
			c = '\n'
		}
		switch {
		case c == '\n':
			if !s.content {
				s.te, s.cl = false, false
			}
			s.n, s.blank, s.done, s.content = 0, false, false, false
			continue
		case c != '\r':
			s.content = true
		}
		if s.done {
			continue
		}
		switch {
		case c == ':':
			s.done = true
			switch string(s.name[:min(s.n, len(s.name))]) {
			case "transfer-encoding":
				s.te = s.te || s.n == len("transfer-encoding")
			case "content-length":
				s.cl = true
			}
			if s.te && s.cl {
				return true
			}
		case c == ' ' || c == '\t':
			s.blank = true
		case s.blank || c == '\r':
			s.done = true // a blank inside the name, or leading: not a header line
		case s.n < len(s.name):
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			s.name[s.n] = c
			s.n++
		default:
			s.n = len(s.name) + 1 // longer than any name looked for
		}
	}
	return false
}

// field is one member of a request body: all are strings.
type field struct {
	name string
	dst  *string
	seen bool
}

// decodeFields decodes exactly one JSON object whose members are among
// fields, each a string, each at most once, names matched exactly
// (encoding/json would take {"CODE":…} for code, and the last of two
// "code" members). Messages never quote the body.
//
// The body is read whole first (it is at most MaxBodyBytes): the usual one,
// plain strings under the right names, is then read by decodeFieldsFast
// without encoding/json (the json.Decoder loop cost 63 allocations per
// body, docs/benchmarks.md); any other goes to decodeFieldsJSON, which
// decides and words the refusal.
// FuzzDecodeFieldsFast checks that the two agree on every body the fast
// path accepts.
func decodeFields(r *http.Request, fields ...field) *apiError {
	buf := bodyPool.Get().(*bytes.Buffer)
	defer putBody(buf) // cleared: the code
	if _, err := buf.ReadFrom(r.Body); err != nil {
		return bodyReadError(err, "The body is not a valid JSON object.")
	}
	if decodeFieldsFast(buf.Bytes(), fields) {
		return nil
	}
	return decodeFieldsJSON(bytes.NewReader(buf.Bytes()), fields)
}

// bodyPool holds the buffers request bodies are read into (MaxBodyBytes
// at most: MaxBytesReader stops a longer one) and JSON answers are
// written from (putBody keeps those up to 64 KiB). A buffer comes out
// empty: putBody resets it.
var bodyPool = sync.Pool{New: func() any { return bytes.NewBuffer(make([]byte, 0, 512)) }}

// decodeFieldsFast decodes b into fields when b is an object of plain
// strings (see internal/jsonscan) under the fields' exact names, each at
// most once, and reports whether it did; otherwise it changes nothing.
func decodeFieldsFast(b []byte, fields []field) bool {
	var vals [8]string
	if len(fields) > len(vals) {
		return false
	}
	var seen uint64
	var d jsonscan.Scanner
	d.Reset(b)
	ok := d.Members(func(key []byte) (uint64, bool) {
		i := slices.IndexFunc(fields, func(f field) bool { return f.name == string(key) })
		if i < 0 {
			return 0, false // unknown, or in another case: decodeFieldsJSON words it
		}
		var ok bool
		vals[i], ok = d.Str()
		seen |= 1 << i
		return 1 << i, ok
	})
	if !ok || !d.End() {
		return false
	}
	for i := range fields {
		if seen&(1<<i) != 0 {
			*fields[i].dst = vals[i]
			fields[i].seen = true
		}
	}
	return true
}

// decodeFieldsJSON is decodeFields with encoding/json's tokenizer: the
// reference for every body, and the one that words each refusal.
func decodeFieldsJSON(body io.Reader, fields []field) *apiError {
	allowed := func() string {
		names := make([]string, len(fields))
		for i, f := range fields {
			names[i] = f.name
		}
		return strings.Join(names, ", ")
	}
	invalid := func(msg string) *apiError { return newError(http.StatusBadRequest, CodeInvalidRequest, msg) }
	dec := json.NewDecoder(body)
	tok, err := dec.Token()
	if err != nil {
		return bodyReadError(err, "The body is not a valid JSON object.")
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return invalid("The body must be a JSON object.")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return bodyReadError(err, "The body is not a valid JSON object.")
		}
		key, _ := tok.(string)
		var f *field
		folded := false
		for j := range fields {
			if fields[j].name == key {
				f = &fields[j]
				break
			}
			folded = folded || strings.EqualFold(fields[j].name, key)
		}
		switch {
		case f == nil && folded:
			return invalid("A field name of the body differs from an allowed one in letter case; names are case-sensitive: " + allowed() + ".")
		case f == nil:
			return invalid("The body has an unknown field; allowed fields: " + allowed() + ".")
		case f.seen:
			return invalid("A field appears twice in the body; each of " + allowed() + " may appear once.")
		}
		f.seen = true
		tok, err = dec.Token()
		if err != nil {
			return bodyReadError(err, "The body is not a valid JSON object.")
		}
		s, ok := tok.(string)
		if !ok {
			return invalid("A field of the body has the wrong type; allowed fields (all strings): " + allowed() + ".")
		}
		*f.dst = s
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return bodyReadError(err, "The body is not a valid JSON object.")
	}
	if _, err := dec.Token(); err != io.EOF {
		if err != nil {
			if e := bodyReadError(err, ""); e.code != CodeInvalidRequest {
				return e
			}
		}
		return invalid("The body must hold exactly one JSON object.")
	}
	return nil
}

// bodyReadError maps an error met while reading a body: too large (413),
// too slow (408: the server's read deadline passed), else a 400 with msg.
func bodyReadError(err error, msg string) *apiError {
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &mbe):
		return errBodyTooLarge()
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		e := newError(http.StatusRequestTimeout, CodeRequestTimeout, "The body did not arrive in time; nothing was sent to WeChat. Retry.")
		e.close = true
		return e
	}
	return newError(http.StatusBadRequest, CodeInvalidRequest, msg)
}

// WriteNotFound writes the API's 404 not_found answer. A Config.Fallback
// calls it for the paths it does not serve, so that every unknown path is
// answered in the documented error shape.
func WriteNotFound(w http.ResponseWriter, r *http.Request) {
	id := w.Header().Get("X-Request-Id")
	if !validRequestID(id) {
		id = requestID("")
		w.Header().Set("X-Request-Id", id)
	}
	e := errNotFound()
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, e.status, errorBody{errorDetail{Code: e.code, Message: e.msg, RequestID: id}})
}

func errNotFound() *apiError {
	return newError(http.StatusNotFound, CodeNotFound, "No such route.")
}
