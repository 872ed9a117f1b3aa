// Package silenceper is the recipe of docs/token-endpoint.md for
// github.com/silenceper/wechat/v2: a credential.AccessTokenContextHandle
// that takes access tokens from wxphone's central token endpoint instead of
// fetching them from WeChat, and Retry, the small wrapper that reports a
// token WeChat rejected (40001, 40014, 42001) to wxphone and retries the
// call once. The SDK's handle interface has no invalidation hook and the
// SDK does not retry on 40001 itself, hence the wrapper.
//
// The test runs it against the WeChat emulator (wxmock) and the `wxphone
// serve` wiring, in process.
package silenceper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/silenceper/wechat/v2/credential"
	"github.com/silenceper/wechat/v2/util"
)

// Handle hands out wxphone's token for one app. It caches the token for
// the expires_in wxphone gives (its remaining life minus wxphone's
// five-minute handover margin), so a cached token is never one WeChat is
// about to retire. Safe for concurrent use.
type Handle struct {
	// Base is wxphone's base URL, e.g. https://wxphone.internal.
	Base string
	// AppID is the Mini Program.
	AppID string
	// Key is a key from WXPHONE_TOKEN_API_KEYS (read it from your secret
	// store).
	Key string
	// HTTP sends the requests; nil means http.DefaultClient.
	HTTP *http.Client

	mu    sync.Mutex
	token string
	until time.Time
}

var _ credential.AccessTokenContextHandle = (*Handle)(nil)

// GetAccessToken implements credential.AccessTokenHandle.
func (h *Handle) GetAccessToken() (string, error) {
	return h.GetAccessTokenContext(context.Background())
}

// GetAccessTokenContext returns the cached token or asks wxphone for the
// current one.
func (h *Handle) GetAccessTokenContext(ctx context.Context) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.token != "" && time.Now().Before(h.until) {
		return h.token, nil
	}
	return h.call(ctx, http.MethodGet, "/v1/access-token?appid="+url.QueryEscape(h.AppID), nil)
}

// Invalidate reports a token WeChat rejected and returns the token to use
// next. wxphone drops the rejected token only if it is still its current
// one, so reporting a stale token is harmless. When wxphone finds that
// WeChat still accepts the token (409 token_still_valid: the rejection
// was transient, or this handle's copy was stale), the answer is wxphone's
// current token, fetched again.
func (h *Handle) Invalidate(ctx context.Context, rejected string) (string, error) {
	body, err := json.Marshal(map[string]string{"appid": h.AppID, "access_token": rejected})
	if err != nil {
		return "", err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	tok, err := h.call(ctx, http.MethodPost, "/v1/access-token/invalidate", body)
	var ee *EndpointError
	if errors.As(err, &ee) && ee.Status == http.StatusConflict {
		return h.call(ctx, http.MethodGet, "/v1/access-token?appid="+url.QueryEscape(h.AppID), nil)
	}
	return tok, err
}

// EndpointError is a refusal of the token endpoint: wxphone's error code
// (token_unavailable, unauthorized, …) and how long to wait when it said
// so. It never holds a token or the key.
type EndpointError struct {
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration
}

func (e *EndpointError) Error() string {
	s := fmt.Sprintf("wxphone token endpoint: %d %s: %s", e.Status, e.Code, e.Message)
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	return s
}

func (h *Handle) call(ctx context.Context, method, path string, body []byte) (string, error) {
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(h.Base, "/")+path, rd)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+h.Key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := h.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		var eb struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = json.Unmarshal(b, &eb)
		e := &EndpointError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			e.RetryAfter = time.Duration(s) * time.Second
		}
		return "", e
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(b, &tr); err != nil || tr.AccessToken == "" || tr.ExpiresIn < 1 {
		return "", errors.New("wxphone token endpoint: malformed answer")
	}
	h.token, h.until = tr.AccessToken, time.Now().Add(time.Duration(tr.ExpiresIn)*time.Second)
	return h.token, nil
}

// TokenRejected reports whether err is WeChat refusing the access token:
// 40001 (invalid or not the latest), 40014 (invalid), 42001 (expired).
func TokenRejected(err error) bool {
	var ce *util.CommonError
	if !errors.As(err, &ce) {
		return false
	}
	switch ce.ErrCode {
	case 40001, 40014, 42001:
		return true
	}
	return false
}

// Retry runs call, which makes one WeChat call through the SDK with h as
// its token handle. When WeChat rejects the token, Retry reports that
// token to wxphone and runs call once more; a second rejection is
// returned as is (never loop: wxphone's force-refresh budget is shared by
// the fleet).
//
// The token reported is the one h held before the call: the SDK asks h for
// a token inside call, and h answers from its cache, so it is the token
// WeChat refused. Should another goroutine have replaced it meanwhile,
// wxphone answers the current token without dropping anything.
func Retry[T any](ctx context.Context, h *Handle, call func(context.Context) (T, error)) (T, error) {
	used, err := h.GetAccessTokenContext(ctx)
	if err != nil {
		var zero T
		return zero, err
	}
	v, err := call(ctx)
	if !TokenRejected(err) {
		return v, err
	}
	if _, ierr := h.Invalidate(ctx, used); ierr != nil {
		return v, errors.Join(err, ierr)
	}
	return call(ctx)
}
