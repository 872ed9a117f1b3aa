package wxmock

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// WeChat's "openapi" management endpoints, emulated:
//
//	POST /cgi-bin/openapi/quota/get  the day's quota of one API for the token's app
//	POST /cgi-bin/openapi/rid/get    the request and response behind a failed call's rid
//
// Both need a valid access token in the query. They are not subject to
// faults and do not appear in Stats; their own calls are counted in the
// quota like every other call.

// cgi paths of the emulated endpoints, as named by quota/get's cgi_path.
const (
	CGIPathToken          = "/cgi-bin/token"        // #nosec G101 -- an API path, not a credential
	CGIPathStableToken    = "/cgi-bin/stable_token" // #nosec G101 -- an API path, not a credential
	CGIPathPhone          = "/wxa/business/getuserphonenumber"
	CGIPathJSCode2Session = "/sns/jscode2session"
	CGIPathQuotaGet       = "/cgi-bin/openapi/quota/get"
	CGIPathRIDGet         = "/cgi-bin/openapi/rid/get"
)

// DefaultQuotaDailyLimit is the daily limit quota/get reports for an API
// without a configured one (Options.QuotaDailyLimits); /cgi-bin/token
// reports ClassicDailyLimit.
const DefaultQuotaDailyLimit = 100000

// RIDRetention is how long rid/get remembers a failed call (WeChat: 7
// days); MaxRIDs bounds how many it remembers (the oldest are forgotten).
const (
	RIDRetention = 7 * 24 * time.Hour
	MaxRIDs      = 1024
)

// quotaPaths are the cgi paths quota/get knows, in the order QuotaUsage
// lists them. jscode2session is a /sns/ path: quota/get refuses it (76022).
var quotaPaths = []string{CGIPathToken, CGIPathStableToken, CGIPathPhone, CGIPathQuotaGet, CGIPathRIDGet}

// epPath maps an emulated endpoint to its cgi path.
var epPath = [numEndpoints]string{
	epToken: CGIPathToken, epStable: CGIPathStableToken, epPhone: CGIPathPhone, epSession: CGIPathJSCode2Session,
}

// openapiState holds per-app daily call counts and remembered rids.
type openapiState struct {
	mu     sync.Mutex
	limits map[string]int          // cgi path → configured daily limit
	calls  map[quotaKey]quotaCount // (appid, cgi path) → calls today
	rids   map[string]*ridRecord
	order  [MaxRIDs]string // a ring of the remembered rids, oldest at next
	next   int
}

type quotaKey struct{ appid, path string }

type quotaCount struct {
	day int64
	n   int64
}

// ridRecord is what rid/get returns about one failed call.
type ridRecord struct {
	appid      string
	path       string
	at         time.Time
	cost       time.Duration
	requestURL string
	reqBody    string
	respBody   string
	clientIP   string
}

func (o *openapiState) init() {
	o.limits = make(map[string]int)
	o.calls = make(map[quotaKey]quotaCount)
	o.rids = make(map[string]*ridRecord)
}

// countCall counts one call of path by appid (a known app) on now's day.
func (s *Server) countCall(appid, path string, now time.Time) {
	if appid == "" {
		return
	}
	s.appMu.RLock()
	_, known := s.apps[appid]
	s.appMu.RUnlock()
	if !known {
		return
	}
	day := dayNumber(now)
	o := &s.openapi
	o.mu.Lock()
	k := quotaKey{appid, path}
	c := o.calls[k]
	if c.day != day {
		c = quotaCount{day: day}
	}
	c.n++
	o.calls[k] = c
	o.mu.Unlock()
}

// Quota is one API's daily quota as quota/get reports it.
type Quota struct {
	// DailyLimit is the calls allowed per day.
	DailyLimit int64 `json:"daily_limit"`
	// Used is the calls made today (emulated UTC+8 day).
	Used int64 `json:"used"`
	// Remain is DailyLimit - Used, never negative.
	Remain int64 `json:"remain"`
}

// QuotaUsage returns appid's quota for cgiPath today, as quota/get would
// (without counting a call). ok is false for a cgi path quota/get does
// not know.
func (s *Server) QuotaUsage(appid, cgiPath string) (q Quota, ok bool) {
	known := false
	for _, p := range quotaPaths {
		known = known || p == cgiPath
	}
	if !known {
		return Quota{}, false
	}
	day := dayNumber(s.Now())
	o := &s.openapi
	o.mu.Lock()
	defer o.mu.Unlock()
	limit, set := o.limits[cgiPath]
	switch {
	case set:
	case cgiPath == CGIPathToken:
		limit = s.classicLimit
	default:
		limit = DefaultQuotaDailyLimit
	}
	q.DailyLimit = int64(limit)
	if c := o.calls[quotaKey{appid, cgiPath}]; c.day == day {
		q.Used = c.n
	}
	q.Remain = max(q.DailyLimit-q.Used, 0)
	return q, true
}

// SetQuotaDailyLimit sets the daily limit quota/get reports for cgiPath.
// Limits are reported, not enforced (the token endpoints enforce their own,
// see Options.ClassicDailyLimit and Options.StableForceDailyLimit).
func (s *Server) SetQuotaDailyLimit(cgiPath string, limit int) error {
	if _, ok := s.QuotaUsage("", cgiPath); !ok {
		return errUnknownCGIPath
	}
	if limit < 0 {
		return errNegativeLimit
	}
	s.openapi.mu.Lock()
	s.openapi.limits[cgiPath] = limit
	s.openapi.mu.Unlock()
	return nil
}

var (
	errUnknownCGIPath = errors.New("unknown cgi_path")
	errNegativeLimit  = errors.New("daily limit must not be negative")
)

// remember records a failed call under rid.
func (s *Server) remember(rid string, rec *ridRecord) {
	o := &s.openapi
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, dup := o.rids[rid]; dup {
		return
	}
	if old := o.order[o.next]; old != "" {
		delete(o.rids, old)
	}
	o.rids[rid] = rec
	o.order[o.next] = rid
	o.next = (o.next + 1) % MaxRIDs
}

// recordFailure remembers a failed WeChat call (q answered errcode with
// body) for rid/get.
func (s *Server) recordFailure(q *wxRequest, rid string, start, now time.Time, body []byte) {
	rec := &ridRecord{
		appid:      s.requestApp(q),
		path:       epPath[q.ep],
		at:         now,
		cost:       time.Since(start),
		requestURL: q.r.URL.RawQuery,
		reqBody:    string(q.raw),
		respBody:   string(body),
	}
	if host, _, err := net.SplitHostPort(q.r.RemoteAddr); err == nil {
		rec.clientIP = host
	}
	s.remember(rid, rec)
}

// requestApp returns the app a WeChat request is for, whatever its outcome.
func (s *Server) requestApp(q *wxRequest) string {
	switch q.ep {
	case epStable:
		return q.stable.AppID
	case epPhone:
		return s.tokenApp(q.params().Get("access_token"))
	default:
		return q.params().Get("appid")
	}
}

type quotaRequest struct {
	CGIPath string `json:"cgi_path"`
}

type ridRequest struct {
	RID string `json:"rid"`
}

type ridInfo struct {
	InvokeTime   int64  `json:"invoke_time"`
	CostInMS     int64  `json:"cost_in_ms"`
	RequestURL   string `json:"request_url"`
	RequestBody  string `json:"request_body"`
	ResponseBody string `json:"response_body"`
	ClientIP     string `json:"client_ip"`
}

// serveOpenAPI serves quota/get and rid/get. Its errors are WeChat's
// (HTTP 200, errcode and a rid), but are not remembered for rid/get.
func (s *Server) serveOpenAPI(w http.ResponseWriter, r *http.Request, path string) {
	now := s.Now()
	fail := func(errcode int, msg string) { s.writeError(w, now, errcode, msg) }
	if r.Method != http.MethodPost {
		fail(43002, errText(43002))
		return
	}
	tok := r.URL.Query().Get("access_token")
	if tok == "" {
		fail(41001, errText(41001))
		return
	}
	appid, ec := s.checkToken(tok, now)
	if ec != 0 {
		fail(ec, errText(ec))
		return
	}
	s.countCall(appid, path, now)
	b, ec := readBody(r)
	if ec != 0 {
		fail(ec, errText(ec))
		return
	}
	var out []byte
	var err error
	if path == CGIPathQuotaGet {
		var req quotaRequest
		if json.Unmarshal(b, &req) != nil {
			fail(47001, errText(47001))
			return
		}
		if len(req.CGIPath) > 4 && req.CGIPath[:5] == "/sns/" {
			fail(76022, "could not use this cgi_path, no permission")
			return
		}
		q, ok := s.QuotaUsage(appid, req.CGIPath)
		if !ok {
			fail(76021, "cgi_path not found, please check")
			return
		}
		out, err = json.Marshal(struct {
			ErrCode int    `json:"errcode"`
			ErrMsg  string `json:"errmsg"`
			Quota   Quota  `json:"quota"`
		}{0, "ok", q})
	} else {
		var req ridRequest
		if json.Unmarshal(b, &req) != nil {
			fail(47001, errText(47001))
			return
		}
		if !validRID(req.RID) {
			fail(76002, "rid is error")
			return
		}
		s.openapi.mu.Lock()
		rec := s.openapi.rids[req.RID]
		s.openapi.mu.Unlock()
		switch {
		case rec == nil || now.Sub(rec.at) > RIDRetention:
			fail(76001, "rid not found")
			return
		case rec.path == CGIPathJSCode2Session:
			fail(76022, "could not use this rid, /sns/ apis are not supported")
			return
		case rec.appid != appid:
			fail(76003, "could not query this rid, no permission")
			return
		}
		out, err = json.Marshal(struct {
			ErrCode int     `json:"errcode"`
			ErrMsg  string  `json:"errmsg"`
			Request ridInfo `json:"request"`
		}{0, "ok", ridInfo{
			InvokeTime: rec.at.Unix(), CostInMS: rec.cost.Milliseconds(),
			RequestURL: rec.requestURL, RequestBody: rec.reqBody, ResponseBody: rec.respBody, ClientIP: rec.clientIP,
		}})
	}
	if err != nil {
		fail(-1, errText(-1))
		return
	}
	w.Header().Set("Content-Type", contentTypeJSON)
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

// validRID accepts WeChat's rid shape loosely: 1..64 characters of
// [A-Za-z0-9-].
func validRID(v string) bool {
	if v == "" || len(v) > 64 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

type quotaLimitRequest struct {
	CGIPath    string `json:"cgi_path"`
	DailyLimit *int   `json:"daily_limit"`
}

// adminQuota is POST /admin/quota {"cgi_path":"…","daily_limit":N}: the
// HTTP form of SetQuotaDailyLimit.
func (s *Server) adminQuota(w http.ResponseWriter, r *http.Request) {
	var req quotaLimitRequest
	if err := decodeAdmin(r, &req); err != nil {
		badRequest(w, err)
		return
	}
	if req.DailyLimit == nil {
		badRequest(w, errors.New("daily_limit is required"))
		return
	}
	if err := s.SetQuotaDailyLimit(req.CGIPath, *req.DailyLimit); err != nil {
		badRequest(w, err)
		return
	}
	writeAdmin(w, http.StatusOK, struct {
		CGIPath    string `json:"cgi_path"`
		DailyLimit int    `json:"daily_limit"`
	}{req.CGIPath, *req.DailyLimit})
}
