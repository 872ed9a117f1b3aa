package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// fakeWxphone answers like a wxphone service: each call pops the next
// canned answer.
func fakeWxphone(t *testing.T, answers ...func(w http.ResponseWriter)) (*httptest.Server, *int) {
	t.Helper()
	calls := 0
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer test-key-0123456789" || r.URL.Path != "/v1/phone-number" {
			w.WriteHeader(401)
			return
		}
		var body map[string]string
		_ = json.NewDecoder(r.Body).Decode(&body)
		if body["openid"] != "oUser" || body["code"] != "the-code" {
			t.Errorf("body %v", body)
		}
		answers[min(calls, len(answers)-1)](w)
		calls++
	}))
	t.Cleanup(ts.Close)
	return ts, &calls
}

func answer(status int, body string, hdr ...string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for i := 0; i < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

const okAnswer = `{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86","watermark":{"appid":"wx","timestamp":1},"replayed":false}`

func TestHandlePhone(t *testing.T) {
	tests := []struct {
		name    string
		answers []func(http.ResponseWriter)
		want    reply
		calls   int
	}{
		{"ok", []func(http.ResponseWriter){answer(200, okAnswer)}, reply{OK: true, PhoneMasked: "138****8000"}, 1},
		{"outcome unknown asks for a new tap", []func(http.ResponseWriter){answer(502, `{"error":{"code":"outcome_unknown","message":"m","request_id":"r"}}`)}, reply{Retap: true, Message: "请重新点击按钮授权手机号"}, 1},
		{"invalid code asks for a new tap", []func(http.ResponseWriter){answer(422, `{"error":{"code":"invalid_code","errcode":40029,"message":"m","request_id":"r"}}`)}, reply{Retap: true, Message: "请重新点击按钮授权手机号"}, 1},
		{"busy is retried with the same code", []func(http.ResponseWriter){answer(502, `{"error":{"code":"wechat_busy","message":"m","request_id":"r"}}`, "Retry-After", "1"), answer(200, okAnswer)}, reply{OK: true, PhoneMasked: "138****8000"}, 2},
		{"persistent timeout", []func(http.ResponseWriter){answer(504, `{"error":{"code":"upstream_timeout","message":"m","request_id":"r"}}`, "Retry-After", "1")}, reply{Message: "服务繁忙，请稍后重试"}, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts, calls := fakeWxphone(t, tc.answers...)
			var bound string
			b := &backend{wx: &wxphoneClient{base: ts.URL, key: "test-key-0123456789", hc: &http.Client{Timeout: 5 * time.Second}},
				bind: func(user, phone string) error { bound = user + ":" + phone; return nil }}
			req := httptest.NewRequest("POST", "/api/phone", strings.NewReader(`{"code":"the-code"}`))
			req.Header.Set("Authorization", "Bearer oUser")
			rec := httptest.NewRecorder()
			b.routes().ServeHTTP(rec, req)
			var got reply
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want || *calls != tc.calls {
				t.Errorf("got %+v after %d calls, want %+v after %d", got, *calls, tc.want, tc.calls)
			}
			if tc.want.OK && bound != "oUser:13800138000" {
				t.Errorf("bound %q", bound)
			}
		})
	}
}
