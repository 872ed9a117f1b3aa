package wxmock

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"slices"
	"time"
)

// maxAdvance bounds one clock advance through the admin API (10 years).
const maxAdvance = 10 * 365 * 24 * time.Hour

type adminError struct {
	Error string `json:"error"`
}

// faultRequest is the admin input form of a Fault (no id, no remaining).
type faultRequest struct {
	Endpoint  string `json:"endpoint"`
	AppID     string `json:"appid"`
	Kind      string `json:"kind"`
	LatencyMS int    `json:"latency_ms"`
	Errcode   int    `json:"errcode"`
	Errmsg    string `json:"errmsg"`
	Status    int    `json:"status"`
	Consume   bool   `json:"consume"`
	Count     int    `json:"count"`
}

type configRequest struct {
	CountryCodeAsNumber     *bool `json:"country_code_as_number"`
	PhoneRateLimitPerMinute *int  `json:"phone_rate_limit_per_minute"`
	OpenIDMismatchErrcode   *int  `json:"openid_mismatch_errcode"`
}

type configResponse struct {
	CountryCodeAsNumber     bool  `json:"country_code_as_number"`
	PhoneRateLimitPerMinute int64 `json:"phone_rate_limit_per_minute"`
	OpenIDMismatchErrcode   int64 `json:"openid_mismatch_errcode"`
}

type clockRequest struct {
	AdvanceSeconds float64 `json:"advance_seconds"`
}

type clockResponse struct {
	Now           int64   `json:"now"`
	NowRFC3339    string  `json:"now_rfc3339"`
	OffsetSeconds float64 `json:"offset_seconds"`
}

type appidRequest struct {
	AppID string `json:"appid"`
}

func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) {
	type route struct {
		methods []string
		handle  func(w http.ResponseWriter, r *http.Request)
	}
	var rt route
	switch r.URL.Path {
	case "/admin/phone-codes":
		rt = route{[]string{http.MethodPost}, s.adminPhoneCodes}
	case "/admin/login-codes":
		rt = route{[]string{http.MethodPost}, s.adminLoginCodes}
	case "/admin/legacy-payloads":
		rt = route{[]string{http.MethodPost}, s.adminLegacyPayloads}
	case "/admin/faults":
		rt = route{[]string{http.MethodGet, http.MethodPost, http.MethodDelete}, s.adminFaults}
	case "/admin/revoke-tokens":
		rt = route{[]string{http.MethodPost}, s.adminRevoke}
	case "/admin/apps":
		rt = route{[]string{http.MethodGet, http.MethodPost}, s.adminApps}
	case "/admin/tokens":
		rt = route{[]string{http.MethodGet}, s.adminTokens}
	case "/admin/clock":
		rt = route{[]string{http.MethodGet, http.MethodPost}, s.adminClock}
	case "/admin/config":
		rt = route{[]string{http.MethodGet, http.MethodPost}, s.adminConfig}
	case "/admin/stats":
		rt = route{[]string{http.MethodGet}, s.adminStats}
	case "/admin/api-security":
		rt = route{[]string{http.MethodGet, http.MethodPost}, s.adminAPISecurity}
	case "/admin/api-security/rotate":
		rt = route{[]string{http.MethodPost}, s.adminRotate}
	case "/admin/stats/reset":
		rt = route{[]string{http.MethodPost}, s.adminStatsReset}
	case "/admin/quota":
		rt = route{[]string{http.MethodPost}, s.adminQuota}
	default:
		writeAdmin(w, http.StatusNotFound, adminError{"not found"})
		return
	}
	if !slices.Contains(rt.methods, r.Method) {
		allow := ""
		for i, m := range rt.methods {
			if i > 0 {
				allow += ", "
			}
			allow += m
		}
		w.Header().Set("Allow", allow)
		writeAdmin(w, http.StatusMethodNotAllowed, adminError{"method not allowed"})
		return
	}
	rt.handle(w, r)
}

func writeAdmin(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":"cannot encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func badRequest(w http.ResponseWriter, err error) {
	writeAdmin(w, http.StatusBadRequest, adminError{err.Error()})
}

// decodeAdmin decodes a JSON object body strictly (unknown fields and
// trailing data are errors). An empty body decodes as {}.
func decodeAdmin(r *http.Request, v any) error {
	if r.Body == nil {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		return errors.New("cannot read request body")
	}
	if len(b) > MaxBodyBytes {
		return errors.New("request body too large")
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errors.New("invalid JSON body: " + truncate(err.Error(), 200))
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("invalid JSON body: trailing data")
	}
	return nil
}

func (s *Server) adminPhoneCodes(w http.ResponseWriter, r *http.Request) {
	var g PhoneGrant
	if err := decodeAdmin(r, &g); err != nil {
		badRequest(w, err)
		return
	}
	code, err := s.MintPhoneCode(g)
	if err != nil {
		badRequest(w, err)
		return
	}
	writeAdmin(w, http.StatusOK, struct {
		Code      string `json:"code"`
		ExpiresIn int    `json:"expires_in"`
	}{code, int(CodeTTL / time.Second)})
}

func (s *Server) adminLoginCodes(w http.ResponseWriter, r *http.Request) {
	var g LoginGrant
	if err := decodeAdmin(r, &g); err != nil {
		badRequest(w, err)
		return
	}
	lc, err := s.MintLoginCode(g)
	if err != nil {
		badRequest(w, err)
		return
	}
	writeAdmin(w, http.StatusOK, lc)
}

func (s *Server) adminLegacyPayloads(w http.ResponseWriter, r *http.Request) {
	var g LegacyGrant
	if err := decodeAdmin(r, &g); err != nil {
		badRequest(w, err)
		return
	}
	p, err := s.MintLegacyPayload(g)
	if err != nil {
		badRequest(w, err)
		return
	}
	writeAdmin(w, http.StatusOK, p)
}

func (s *Server) adminFaults(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		writeAdmin(w, http.StatusOK, struct {
			Faults []Fault `json:"faults"`
		}{s.Faults()})
	case http.MethodDelete:
		s.ClearFaults()
		writeAdmin(w, http.StatusOK, struct{}{})
	default:
		var fr faultRequest
		if err := decodeAdmin(r, &fr); err != nil {
			badRequest(w, err)
			return
		}
		id, err := s.AddFault(Fault{
			Endpoint: fr.Endpoint, AppID: fr.AppID, Kind: fr.Kind,
			LatencyMS: fr.LatencyMS, Errcode: fr.Errcode, Errmsg: fr.Errmsg,
			Status: fr.Status, Consume: fr.Consume, Count: fr.Count,
		})
		if err != nil {
			badRequest(w, err)
			return
		}
		writeAdmin(w, http.StatusOK, struct {
			ID string `json:"id"`
		}{id})
	}
}

func (s *Server) adminRevoke(w http.ResponseWriter, r *http.Request) {
	var req appidRequest
	if err := decodeAdmin(r, &req); err != nil {
		badRequest(w, err)
		return
	}
	n, err := s.RevokeTokens(req.AppID)
	if err != nil {
		badRequest(w, err)
		return
	}
	writeAdmin(w, http.StatusOK, struct {
		Revoked int `json:"revoked"`
	}{n})
}

func (s *Server) adminApps(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		ids := s.Apps()
		slices.Sort(ids)
		writeAdmin(w, http.StatusOK, struct {
			Apps []string `json:"apps"`
		}{ids})
		return
	}
	var a App
	if err := decodeAdmin(r, &a); err != nil {
		badRequest(w, err)
		return
	}
	if err := s.AddApp(a); err != nil {
		badRequest(w, err)
		return
	}
	writeAdmin(w, http.StatusOK, appidRequest{a.AppID})
}

func (s *Server) adminTokens(w http.ResponseWriter, r *http.Request) {
	appid := r.URL.Query().Get("appid")
	if appid != "" {
		if _, err := s.resolveApp(appid); err != nil {
			badRequest(w, err)
			return
		}
	}
	toks := s.ValidTokens(appid)
	if toks == nil {
		toks = []string{}
	}
	writeAdmin(w, http.StatusOK, struct {
		Tokens []string `json:"tokens"`
	}{toks})
}

func (s *Server) adminClock(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		var req clockRequest
		if err := decodeAdmin(r, &req); err != nil {
			badRequest(w, err)
			return
		}
		d := req.AdvanceSeconds * float64(time.Second)
		if req.AdvanceSeconds < 0 || math.IsNaN(d) || d > float64(maxAdvance) {
			badRequest(w, errors.New("advance_seconds must be between 0 and 315360000"))
			return
		}
		s.Advance(time.Duration(d))
	}
	now := s.Now()
	writeAdmin(w, http.StatusOK, clockResponse{
		Now:           now.Unix(),
		NowRFC3339:    now.UTC().Format(time.RFC3339Nano),
		OffsetSeconds: time.Duration(s.offset.Load()).Seconds(),
	})
}

func (s *Server) adminConfig(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		var req configRequest
		if err := decodeAdmin(r, &req); err != nil {
			badRequest(w, err)
			return
		}
		if req.PhoneRateLimitPerMinute != nil {
			if err := s.SetPhoneRateLimit(*req.PhoneRateLimitPerMinute); err != nil {
				badRequest(w, err)
				return
			}
		}
		if req.OpenIDMismatchErrcode != nil {
			if err := s.SetOpenIDMismatchErrcode(*req.OpenIDMismatchErrcode); err != nil {
				badRequest(w, err)
				return
			}
		}
		if req.CountryCodeAsNumber != nil {
			s.SetCountryCodeAsNumber(*req.CountryCodeAsNumber)
		}
	}
	writeAdmin(w, http.StatusOK, configResponse{
		CountryCodeAsNumber:     s.ccNumber.Load(),
		PhoneRateLimitPerMinute: s.phoneRate.Load(),
		OpenIDMismatchErrcode:   s.openidErr.Load(),
	})
}

func (s *Server) adminStats(w http.ResponseWriter, _ *http.Request) {
	writeAdmin(w, http.StatusOK, s.Stats())
}

func (s *Server) adminStatsReset(w http.ResponseWriter, _ *http.Request) {
	s.ResetStats()
	writeAdmin(w, http.StatusOK, struct{}{})
}

func (s *Server) adminAPISecurity(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		in, err := s.APISecurityCert(r.URL.Query().Get("appid"))
		if err != nil {
			badRequest(w, err)
			return
		}
		writeAdmin(w, http.StatusOK, in)
		return
	}
	var req apiSecurityRequest
	if err := decodeAdmin(r, &req); err != nil {
		badRequest(w, err)
		return
	}
	cfg, err := s.parseAPISecurity(req)
	if err != nil {
		badRequest(w, err)
		return
	}
	in, err := s.SetAPISecurity(req.AppID, cfg)
	if err != nil {
		badRequest(w, err)
		return
	}
	writeAdmin(w, http.StatusOK, in)
}

type rotateRequest struct {
	AppID  string `json:"appid"`
	Finish bool   `json:"finish"`
}

func (s *Server) adminRotate(w http.ResponseWriter, r *http.Request) {
	var req rotateRequest
	if err := decodeAdmin(r, &req); err != nil {
		badRequest(w, err)
		return
	}
	in, err := s.RotatePlatformCert(req.AppID, req.Finish)
	if err != nil {
		badRequest(w, err)
		return
	}
	writeAdmin(w, http.StatusOK, in)
}
