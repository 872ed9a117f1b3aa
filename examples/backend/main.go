// Command backend is an example customer backend: it receives the phone
// code from the Mini Program, exchanges it through a wxphone service and
// binds the number to the logged-in user. It uses only the standard
// library.
//
//	WXPHONE_URL=http://127.0.0.1:8080 WXPHONE_API_KEY_FILE=/run/secrets/key go run ./examples/backend
//
// The wxphone API key is read from the environment (WXPHONE_API_KEY) or a
// file (WXPHONE_API_KEY_FILE), never from the command line.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	key := os.Getenv("WXPHONE_API_KEY")
	if f := os.Getenv("WXPHONE_API_KEY_FILE"); f != "" {
		b, err := os.ReadFile(f) // #nosec G304 G703 -- the operator names the key file
		if err != nil {
			log.Fatalf("WXPHONE_API_KEY_FILE: %v", err)
		}
		key = strings.TrimSpace(string(b))
	}
	if key == "" {
		log.Fatal("set WXPHONE_API_KEY or WXPHONE_API_KEY_FILE")
	}
	base := os.Getenv("WXPHONE_URL")
	if base == "" {
		base = "http://127.0.0.1:8080"
	}
	addr := os.Getenv("ADDR")
	if addr == "" {
		addr = "127.0.0.1:9090"
	}
	app := &backend{wx: &wxphoneClient{base: base, key: key, hc: &http.Client{Timeout: 15 * time.Second}}, bind: func(user, phone string) error {
		// #nosec G706 -- user comes from the request: %q quotes it, so it cannot forge a log line
		log.Printf("bound a phone number ending in %s to user %q", last4(phone), user)
		return nil // store it in your user table
	}}
	srv := &http.Server{Addr: addr, Handler: app.routes(), ReadHeaderTimeout: 5 * time.Second}
	log.Printf("example backend on http://%s (POST /api/phone)", addr) // #nosec G706 -- the operator's ADDR variable
	log.Fatal(srv.ListenAndServe())
}

// backend is the customer's service.
type backend struct {
	wx   *wxphoneClient
	bind func(user, phone string) error
}

func (b *backend) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/phone", b.handlePhone)
	return mux
}

// reply is what the Mini Program receives.
type reply struct {
	OK          bool   `json:"ok"`
	PhoneMasked string `json:"phoneMasked,omitempty"`
	Retap       bool   `json:"retap,omitempty"` // ask the user to tap the button again
	Message     string `json:"message,omitempty"`
}

func (b *backend) handlePhone(w http.ResponseWriter, r *http.Request) {
	user := sessionUser(r)
	if user == "" {
		writeJSON(w, http.StatusUnauthorized, reply{Message: "请先登录"})
		return
	}
	var req struct {
		Code string `json:"code"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil || req.Code == "" {
		writeJSON(w, http.StatusBadRequest, reply{Message: "bad request"})
		return
	}
	// Bind the exchange to the user: a replay for another openid is refused.
	res, err := b.wx.exchange(r.Context(), req.Code, user)
	var we *wxError
	switch {
	case err == nil:
		if err := b.bind(user, res.PhoneNumber); err != nil {
			writeJSON(w, http.StatusInternalServerError, reply{Message: "保存失败，请重试"})
			return
		}
		writeJSON(w, http.StatusOK, reply{OK: true, PhoneMasked: mask(res.PhoneNumber)})
	case errors.As(err, &we) && we.needsNewTap():
		// outcome_unknown: WeChat may have used the code and the answer was
		// lost. Never resend that code: only a new tap gives a new one.
		writeJSON(w, http.StatusOK, reply{Retap: true, Message: "请重新点击按钮授权手机号"})
	default:
		log.Printf("phone exchange failed: %v", err) // never log the code or the number
		writeJSON(w, http.StatusServiceUnavailable, reply{Message: "服务繁忙，请稍后重试"})
	}
}

// sessionUser stands in for your own session handling: here the bearer
// token is the user's openid.
func sessionUser(r *http.Request) string {
	v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return ""
	}
	return strings.TrimSpace(v)
}

// wxphoneClient calls the wxphone service.
type wxphoneClient struct {
	base string
	key  string
	hc   *http.Client
}

// phoneResult is wxphone's 200 answer.
type phoneResult struct {
	PhoneNumber     string `json:"phoneNumber"`
	PurePhoneNumber string `json:"purePhoneNumber"`
	CountryCode     string `json:"countryCode"`
	Replayed        bool   `json:"replayed"`
}

// wxError is wxphone's error answer.
type wxError struct {
	Status     int
	Code       string `json:"code"`
	Message    string `json:"message"`
	Errcode    int    `json:"errcode"`
	RequestID  string `json:"request_id"`
	RetryAfter time.Duration
}

func (e *wxError) Error() string {
	return fmt.Sprintf("wxphone: %d %s (request %s)", e.Status, e.Code, e.RequestID)
}

// needsNewTap: the code is spent or may be.
func (e *wxError) needsNewTap() bool {
	switch e.Code {
	case "outcome_unknown", "invalid_code", "code_already_used", "malformed_code":
		return true
	}
	return false
}

// sameCodeRetryable: the code was not used; sending it again is safe.
func (e *wxError) sameCodeRetryable() bool {
	switch e.Code {
	case "upstream_timeout", "wechat_busy", "store_unavailable", "shutting_down", "rate_limited", "wechat_rate_limited", "token_unavailable", "upstream_error":
		return true
	}
	return false
}

// exchange calls POST /v1/phone-number, retrying with the same code when
// wxphone says that is safe (at most twice, within ctx). A network failure
// is retried too: wxphone answers a repeated code from its replay store.
func (c *wxphoneClient) exchange(ctx context.Context, code, openid string) (*phoneResult, error) {
	body, _ := json.Marshal(map[string]string{"code": code, "openid": openid})
	var last error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			wait := time.Second
			var we *wxError
			if errors.As(last, &we) && we.RetryAfter > 0 {
				wait = we.RetryAfter
			}
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
				return nil, last
			}
			select {
			case <-ctx.Done():
				return nil, last
			case <-time.After(wait):
			}
		}
		res, err := c.once(ctx, body)
		if err == nil {
			return res, nil
		}
		last = err
		var we *wxError
		if errors.As(err, &we) && !we.sameCodeRetryable() {
			return nil, err
		}
	}
	return nil, last
}

func (c *wxphoneClient) once(ctx context.Context, body []byte) (*phoneResult, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/phone-number", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.key)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("wxphone unreachable: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusOK {
		var res phoneResult
		if err := json.Unmarshal(b, &res); err != nil {
			return nil, fmt.Errorf("wxphone: undecodable answer: %w", err)
		}
		return &res, nil
	}
	var eb struct {
		Error wxError `json:"error"`
	}
	if err := json.Unmarshal(b, &eb); err != nil || eb.Error.Code == "" {
		return nil, fmt.Errorf("wxphone: HTTP %d", resp.StatusCode)
	}
	e := eb.Error
	e.Status = resp.StatusCode
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return nil, &e
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// mask shows the first three and last four digits.
func mask(p string) string {
	if len(p) < 11 {
		return "****" + last4(p)
	}
	return p[:3] + "****" + p[len(p)-4:]
}

func last4(p string) string {
	if len(p) <= 4 {
		return p
	}
	return p[len(p)-4:]
}
