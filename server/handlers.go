package server

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/internal/jsonscan"
	"github.com/wxphone/wxphone/internal/valid"
	"github.com/wxphone/wxphone/metrics"
	"github.com/wxphone/wxphone/service"
)

// Route paths.
const (
	PathPhoneNumber     = "/v1/phone-number"
	PathAccessToken     = "/v1/access-token"
	PathTokenInvalidate = "/v1/access-token/invalidate"
	PathHealthz         = "/healthz"
	PathReadyz          = "/readyz"
	PathMetrics         = "/metrics"
)

// MaxAccessTokenLen bounds the access_token of an invalidate request
// (WeChat advises reserving 512 bytes).
const MaxAccessTokenLen = 512

func (s *Server) routeTable() map[string][]*route {
	rs := []*route{
		{method: http.MethodPost, path: PathPhoneNumber, perm: permPhone, body: true, handle: s.handlePhone},
		{method: http.MethodGet, path: PathAccessToken, perm: permToken, handle: s.handleToken},
		{method: http.MethodPost, path: PathTokenInvalidate, perm: permToken, body: true, handle: s.handleInvalidate},
		{method: http.MethodGet, path: PathHealthz, handle: s.handleHealthz},
		{method: http.MethodGet, path: PathReadyz, handle: s.handleReadyz},
		{method: http.MethodGet, path: PathMetrics, handle: s.handleMetrics},
	}
	m := make(map[string][]*route)
	for _, rt := range rs {
		m[rt.path] = append(m[rt.path], rt)
	}
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

type phoneRequest struct {
	Code   string `json:"code"`
	AppID  string `json:"appid"`
	OpenID string `json:"openid"`
	Kind   string `json:"kind"`
}

type watermarkJSON struct {
	AppID     string `json:"appid"`
	Timestamp int64  `json:"timestamp"`
}

type phoneResponse struct {
	PhoneNumber     string        `json:"phoneNumber"`
	PurePhoneNumber string        `json:"purePhoneNumber"`
	CountryCode     string        `json:"countryCode"`
	Watermark       watermarkJSON `json:"watermark"`
	Replayed        bool          `json:"replayed"`
}

// knownApp returns appID if it is served (so that junk sent as an appid
// never reaches a log line), else "".
func (s *Server) knownApp(appID string) string {
	if appID == "" {
		if apps := s.svc.Apps(); len(apps) == 1 {
			return apps[0]
		}
		return ""
	}
	if slices.Contains(s.svc.Apps(), appID) {
		return appID
	}
	return ""
}

func (s *Server) handlePhone(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	var req phoneRequest
	if e := decodeFields(r, field{name: "code", dst: &req.Code}, field{name: "appid", dst: &req.AppID}, field{name: "openid", dst: &req.OpenID}, field{name: "kind", dst: &req.Kind}); e != nil {
		s.writeError(w, rc, e)
		return
	}
	rc.appID = s.knownApp(req.AppID)
	res, err := s.svc.Exchange(r.Context(), service.Request{AppID: req.AppID, Code: wxphone.Secret(req.Code), OpenID: req.OpenID, Kind: req.Kind, Caller: rc.caller})
	if err != nil {
		s.writeError(w, rc, classify(err))
		return
	}
	writePhone(w, rc, res)
}

// writePhone writes a successful exchange.
func writePhone(w http.ResponseWriter, rc *reqCtx, res *service.Result) {
	rc.appID = res.AppID
	rc.replayed = &res.Replayed
	rc.phone = res.Phone.PhoneNumber
	if rc.phone == "" {
		rc.phone = res.Phone.PurePhoneNumber
	}
	// The one place the full number leaves the process.
	resp := phoneResponse{
		PhoneNumber:     res.Phone.PhoneNumber.Reveal(),
		PurePhoneNumber: res.Phone.PurePhoneNumber.Reveal(),
		CountryCode:     res.Phone.CountryCode,
		Watermark:       watermarkJSON{AppID: res.Phone.Watermark.AppID, Timestamp: res.Phone.Watermark.Timestamp},
		Replayed:        res.Replayed,
	}
	buf := bodyPool.Get().(*bytes.Buffer)
	defer putBody(buf)
	b, ok := resp.appendJSON(buf.AvailableBuffer())
	if !ok {
		writeJSON(w, http.StatusOK, resp)
		return
	}
	writeRaw(w, http.StatusOK, b)
	clear(b) // the number
}

// appendJSON appends what encoding/json's Encoder writes for p (the
// answer, then a newline) when every string in it is one encoding/json
// writes as is; otherwise it reports false and encoding/json writes it.
// It is the reflective encoder's output without its cost (150 against
// 840 ns per answer, BenchmarkPhoneResponseJSON); FuzzPhoneResponseJSON
// checks the two agree byte for byte.
func (p *phoneResponse) appendJSON(b []byte) ([]byte, bool) {
	if !jsonscan.Plain(p.PhoneNumber) || !jsonscan.Plain(p.PurePhoneNumber) || !jsonscan.Plain(p.CountryCode) || !jsonscan.Plain(p.Watermark.AppID) {
		return nil, false
	}
	b = append(b, `{"phoneNumber":"`...)
	b = append(b, p.PhoneNumber...)
	b = append(b, `","purePhoneNumber":"`...)
	b = append(b, p.PurePhoneNumber...)
	b = append(b, `","countryCode":"`...)
	b = append(b, p.CountryCode...)
	b = append(b, `","watermark":{"appid":"`...)
	b = append(b, p.Watermark.AppID...)
	b = append(b, `","timestamp":`...)
	b = strconv.AppendInt(b, p.Watermark.Timestamp, 10)
	b = append(b, `},"replayed":`...)
	b = strconv.AppendBool(b, p.Replayed)
	return append(b, "}\n"...), true
}

type tokenResponse struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
}

// TokenHandoverMargin is subtracted from a token's remaining life in the
// central token endpoint's expires_in: wxphone fetches the next token when
// the current one has this much left (WeChat's stable-token handover), so
// a client caching for expires_in asks again just when a new token is
// available. While that refresh is slow or failing, wxphone keeps handing
// out the current token (until its serve margin) with expires_in 1, so the
// client asks again every second and gets the new token once it is there.
const TokenHandoverMargin = 300 * time.Second

func (s *Server) writeToken(w http.ResponseWriter, tok wxphone.Token) {
	left := (tok.Remaining(time.Now()) - TokenHandoverMargin) / time.Second
	writeJSON(w, http.StatusOK, tokenResponse{AccessToken: tok.Value, ExpiresIn: max(int64(left), 1)})
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	q := r.URL.Query()
	for k := range q {
		if k != "appid" {
			s.writeError(w, rc, newError(http.StatusBadRequest, CodeInvalidRequest, "Unknown query parameter; only \"appid\" is allowed."))
			return
		}
	}
	appID := q.Get("appid")
	rc.appID = s.knownApp(appID)
	tok, err := s.svc.AccessToken(r.Context(), appID)
	if err != nil {
		s.writeError(w, rc, classifyToken(err))
		return
	}
	s.writeToken(w, tok)
}

type invalidateRequest struct {
	AppID       string `json:"appid"`
	AccessToken string `json:"access_token"`
}

func (s *Server) handleInvalidate(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	var req invalidateRequest
	if e := decodeFields(r, field{name: "appid", dst: &req.AppID}, field{name: "access_token", dst: &req.AccessToken}); e != nil {
		s.writeError(w, rc, e)
		return
	}
	rc.appID = s.knownApp(req.AppID)
	if req.AccessToken == "" || len(req.AccessToken) > MaxAccessTokenLen {
		s.writeError(w, rc, newError(http.StatusBadRequest, CodeInvalidRequest, "\"access_token\" (the token WeChat rejected) is required, at most 512 bytes."))
		return
	}
	if !valid.Printable(req.AccessToken) {
		s.writeError(w, rc, newError(http.StatusBadRequest, CodeInvalidRequest, "\"access_token\" must be printable ASCII."))
		return
	}
	tok, err := s.svc.InvalidateToken(r.Context(), req.AppID, req.AccessToken)
	if err != nil {
		s.writeError(w, rc, classifyToken(err))
		return
	}
	s.writeToken(w, tok)
}

func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request, _ *reqCtx) {
	writeJSON(w, http.StatusOK, struct {
		Status string `json:"status"`
	}{"ok"})
}

type appReadiness struct {
	AppID     string `json:"appid"`
	Ready     bool   `json:"ready"`
	ExpiresIn int64  `json:"expires_in"`
}

type checkResult struct {
	Name string `json:"name"`
	OK   bool   `json:"ok"`
}

type readyBody struct {
	Status   string         `json:"status"`
	Apps     []appReadiness `json:"apps"`
	NotReady []string       `json:"not_ready,omitempty"`
	Checks   []checkResult  `json:"checks,omitempty"`
	Error    *errorDetail   `json:"error,omitempty"`
}

// handleReadyz reports ready when every app holds a usable token and every
// extra check passes. It never shows a token.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	body := readyBody{Status: "ready", Apps: []appReadiness{}}
	for _, st := range s.svc.Status() {
		body.Apps = append(body.Apps, appReadiness{AppID: st.AppID, Ready: st.Token.Usable, ExpiresIn: int64(st.Token.Remaining / time.Second)})
		if !st.Token.Usable {
			body.NotReady = append(body.NotReady, st.AppID)
		}
	}
	failed, degraded := false, false
	for _, c := range s.checks {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		err := c.Check(ctx)
		cancel()
		if err != nil {
			if c.Degrades {
				degraded = true
			} else {
				failed = true
			}
			s.log.Warn("readiness check failed", "request_id", rc.id, "check", c.Name, "degrades_only", c.Degrades, "err", err)
		}
		body.Checks = append(body.Checks, checkResult{Name: c.Name, OK: err == nil})
	}
	if degraded {
		body.Status = "degraded"
	}
	status := http.StatusOK
	switch {
	case s.closing.Load():
		body.Status = "shutting_down"
		body.Error = &errorDetail{Code: CodeShuttingDown, Message: "This instance is shutting down.", RequestID: rc.id}
	case len(body.NotReady) > 0 || failed:
		body.Status = "not_ready"
		body.Error = &errorDetail{Code: CodeNotReady, Message: "Not ready: an app has no usable access token or a check failed.", RequestID: rc.id}
	}
	if body.Error != nil {
		status = http.StatusServiceUnavailable
		rc.errCode = body.Error.Code
	}
	writeJSON(w, status, body)
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request, _ *reqCtx) {
	s.promH.ServeHTTP(w, r)
}

// registerInFlight exports the number of requests being served. A
// registry shared by several servers keeps the first one's gauge.
func registerInFlight(m *metrics.Metrics, n *atomic.Int64) error {
	g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "wxphone_http_requests_in_flight", Help: "HTTP requests being served now.",
	}, func() float64 { return float64(n.Load()) })
	return registerOnce(m, g)
}

// registerOnce registers c unless an equal collector is registered already
// (a registry shared by several servers keeps the first one's).
func registerOnce(m *metrics.Metrics, c prometheus.Collector) error {
	err := m.Registry.Register(c)
	if are := (prometheus.AlreadyRegisteredError{}); errors.As(err, &are) {
		return nil
	}
	return err
}

// tokenCollector exports each app's token state from service.Status at
// scrape time.
type tokenCollector struct {
	svc       Backend
	remaining *prometheus.Desc
	usable    *prometheus.Desc
}

func registerTokenCollector(m *metrics.Metrics, svc Backend) error {
	c := &tokenCollector{
		svc: svc,
		remaining: prometheus.NewDesc("wxphone_token_remaining_seconds",
			"Life left of each app's current access token (0 when none is held).", []string{"appid"}, nil),
		usable: prometheus.NewDesc("wxphone_token_usable",
			"1 when the app holds a token usable for requests.", []string{"appid"}, nil),
	}
	return registerOnce(m, c)
}

// Describe implements prometheus.Collector.
func (c *tokenCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.remaining
	ch <- c.usable
}

// Collect implements prometheus.Collector.
func (c *tokenCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.svc.Status() {
		ch <- prometheus.MustNewConstMetric(c.remaining, prometheus.GaugeValue, st.Token.Remaining.Seconds(), st.AppID)
		u := 0.0
		if st.Token.Usable {
			u = 1
		}
		ch <- prometheus.MustNewConstMetric(c.usable, prometheus.GaugeValue, u, st.AppID)
	}
}
