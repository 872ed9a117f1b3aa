package demo

import (
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"mime"
	"net"
	"net/http"
	"strings"

	"github.com/wxphone/wxphone/server"
	"github.com/wxphone/wxphone/wxmock"
)

// page serves the demo page and the demo-only endpoints:
//
//	GET  /                  the page
//	GET  /assets/…          its script and style sheet
//	POST /demo/config       the demo key and appid (for the page's script)
//	POST /demo/mint         mint a phone code (WeChat's part)
//	POST /demo/fault        inject an emulator fault for the next exchange
//	POST /demo/code-stats   how often the emulator saw a code
//	     /secure/…          the backend in the API security mode
//
// The demo endpoints answer only a same-origin POST with a JSON body (the
// page's own fetch): a form another site posts, or a request without an
// Origin, cannot mint codes, inject faults or read the demo key. Other
// paths get the API's 404 not_found.
type page struct {
	emu    *wxmock.Server
	info   Info
	assets http.Handler
	secure http.Handler
}

func newPage(emu *wxmock.Server, info Info, secure http.Handler) http.Handler {
	sub, err := fs.Sub(webFS, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return &page{emu: emu, info: info, assets: http.FileServerFS(sub), secure: secure}
}

const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func (p *page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !loopbackHost(r.Host) {
		http.Error(w, "the demo answers only on loopback host names", http.StatusMisdirectedRequest)
		return
	}
	if p.secure != nil && strings.HasPrefix(r.URL.Path, SecurePrefix+"/") {
		p.secure.ServeHTTP(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	switch r.URL.EscapedPath() {
	case "/", "/index.html", "/assets/app.js", "/assets/style.css":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			demoError(w, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		p.assets.ServeHTTP(w, r)
	case "/demo/config":
		p.post(w, r, func([]byte) (any, error) {
			return map[string]string{"apiKey": p.info.APIKey, "appid": p.info.AppID, "emulator": p.info.EmulatorURL}, nil
		})
	case "/demo/mint":
		p.post(w, r, p.mint)
	case "/demo/fault":
		p.post(w, r, p.fault)
	case "/demo/code-stats":
		p.post(w, r, p.codeStats)
	default:
		server.WriteNotFound(w, r)
	}
}

// sameOrigin reports whether r was sent by a page of this origin: browsers
// send Origin with every POST, and another site's form or fetch carries
// that site's origin.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	return o != "" && o == "http://"+r.Host
}

// loopbackHost reports whether a Host header names this machine.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (p *page) post(w http.ResponseWriter, r *http.Request, fn func(body []byte) (any, error)) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		demoError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	if !sameOrigin(r) {
		demoError(w, http.StatusForbidden, "the demo endpoints answer the demo page only (same-origin Origin required)")
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		demoError(w, http.StatusUnsupportedMediaType, "the body must be JSON with Content-Type: application/json")
		return
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<10))
	if err != nil {
		demoError(w, http.StatusRequestEntityTooLarge, "body too large")
		return
	}
	v, err := fn(b)
	if err != nil {
		demoError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeDemo(w, http.StatusOK, v)
}

func (p *page) mint(b []byte) (any, error) {
	var g wxmock.PhoneGrant
	if len(b) > 0 {
		if err := json.Unmarshal(b, &g); err != nil {
			return nil, errors.New("invalid JSON")
		}
	}
	if g.PurePhoneNumber == "" {
		g.PurePhoneNumber = "13800138000"
	}
	code, err := p.emu.MintPhoneCode(g)
	if err != nil {
		return nil, err
	}
	return map[string]string{"code": code}, nil
}

// Faults the page offers, by name.
var faults = map[string]struct {
	description string
	faults      []wxmock.Fault
	revoke      bool
}{
	"busy_once":          {"WeChat answers -1 once: the library retries once and succeeds.", []wxmock.Fault{{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: -1, Count: 1}}, false},
	"busy_twice":         {"WeChat answers -1 twice: the code was not used; wechat_busy (502).", []wxmock.Fault{{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: -1, Count: 2}}, false},
	"busy_consume":       {"WeChat uses the code but answers -1; the retry gets 40029: outcome_unknown (502).", []wxmock.Fault{{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: -1, Consume: true, Count: 1}}, false},
	"drop_after_consume": {"WeChat uses the code and the connection drops before the answer: outcome_unknown (502).", []wxmock.Fault{{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultDropAfterConsume, Count: 1}}, false},
	"http_502":           {"A gateway answers 502 after WeChat used the code: outcome_unknown (502).", []wxmock.Fault{{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultHTTPStatus, Status: 502, Consume: true, Count: 1}}, false},
	"rate_limit":         {"WeChat answers 45011 (per-minute limit): wechat_rate_limited (429) with Retry-After.", []wxmock.Fault{{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: 45011, Count: 1}}, false},
	"unsigned_success":   {"API security mode: WeChat uses the code and answers the success unsigned, in plaintext: refused, outcome_unknown (502).", []wxmock.Fault{{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultUnsignedSuccess, Count: 1}}, false},
	"bad_signature":      {"API security mode: WeChat uses the code and the answer's signature does not verify: refused, outcome_unknown (502).", []wxmock.Fault{{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultBadSignature, Count: 1}}, false},
	"revoke_tokens":      {"Every access token is revoked: the exchange gets 40001, the token is refreshed and the exchange retried, transparently.", nil, true},
	"clear":              {"All faults cleared.", nil, false},
}

func (p *page) fault(b []byte) (any, error) {
	var req struct {
		Fault string `json:"fault"`
	}
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, errors.New("invalid JSON")
	}
	f, ok := faults[req.Fault]
	if !ok {
		return nil, errors.New("unknown fault")
	}
	if req.Fault == "clear" {
		p.emu.ClearFaults()
	}
	if f.revoke {
		if _, err := p.emu.RevokeTokens(""); err != nil {
			return nil, err
		}
	}
	for _, fl := range f.faults {
		if _, err := p.emu.AddFault(fl); err != nil {
			return nil, err
		}
	}
	return map[string]any{"ok": true, "description": f.description}, nil
}

func (p *page) codeStats(b []byte) (any, error) {
	var req struct {
		Code string `json:"code"`
	}
	if err := json.Unmarshal(b, &req); err != nil || req.Code == "" {
		return nil, errors.New("invalid JSON")
	}
	cs := p.emu.Stats().Codes[req.Code]
	return map[string]int64{"calls": cs.Calls, "answered": cs.Answered}, nil
}

func writeDemo(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func demoError(w http.ResponseWriter, status int, msg string) {
	writeDemo(w, status, map[string]string{"error": msg})
}
