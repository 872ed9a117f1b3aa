package wxphone_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http/httptest"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/wxmock"
)

// newEmulator starts a WeChat emulator on a loopback port; the examples
// point BaseURL at it instead of https://api.weixin.qq.com.
func newEmulator() (*wxmock.Server, *httptest.Server) {
	emu, err := wxmock.New(wxmock.Options{Apps: []wxmock.App{{AppID: "wx4f4bc4dec97d474b", Secret: "example-app-secret"}}})
	if err != nil {
		log.Fatal(err)
	}
	return emu, httptest.NewServer(emu)
}

func ExampleClient_PhoneNumber() {
	emu, srv := newEmulator()
	defer srv.Close()
	// The Mini Program's getPhoneNumber button hands the front end a code.
	code, _ := emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: "13800138000"})

	c, err := wxphone.New(wxphone.Config{
		AppID:   "wx4f4bc4dec97d474b",
		Secret:  wxphone.Secret("example-app-secret"),
		BaseURL: srv.URL, // omit in production
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := c.PhoneNumber(ctx, code)
	switch {
	case errors.Is(err, wxphone.ErrInvalidCode):
		fmt.Println("the code expired or was used: ask the user to tap again")
		return
	case errors.Is(err, wxphone.ErrOutcomeUnknown):
		fmt.Println("WeChat may have used the code: ask the user to tap again, do not resend")
		return
	case err != nil:
		fmt.Println("failed:", err)
		return
	}
	fmt.Println("logs show:", info.PhoneNumber)
	fmt.Println("store:", info.PhoneNumber.Reveal())
	fmt.Println("country code:", info.CountryCode)
	fmt.Println("watermark appid:", info.Watermark.AppID)

	// The code is single use.
	_, err = c.PhoneNumber(ctx, code)
	fmt.Println("second use is ErrInvalidCode:", errors.Is(err, wxphone.ErrInvalidCode))
	// Output:
	// logs show: 138****8000
	// store: 13800138000
	// country code: 86
	// watermark appid: wx4f4bc4dec97d474b
	// second use is ErrInvalidCode: true
}

func ExampleClient_Code2Session() {
	emu, srv := newEmulator()
	defer srv.Close()
	// wx.login in the Mini Program hands the front end a js_code.
	lc, _ := emu.MintLoginCode(wxmock.LoginGrant{OpenID: "oGZUI0egBJY1zhBYw2KhdUfwVJJE", UnionID: "ocMvos6NjeKLIBqg5Mr9QjxrP1FA"})

	c, err := wxphone.New(wxphone.Config{AppID: "wx4f4bc4dec97d474b", Secret: "example-app-secret", BaseURL: srv.URL})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	s, err := c.Code2Session(context.Background(), lc.Code)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("openid:", s.OpenID)
	fmt.Println("unionid:", s.UnionID)
	fmt.Println("session_key prints as:", s.SessionKey)
	fmt.Println("session_key matches:", s.SessionKey.Reveal() == lc.SessionKey)
	// Output:
	// openid: oGZUI0egBJY1zhBYw2KhdUfwVJJE
	// unionid: ocMvos6NjeKLIBqg5Mr9QjxrP1FA
	// session_key prints as: [REDACTED]
	// session_key matches: true
}

func ExampleDecryptPhoneNumber() {
	// The legacy flow: encryptedData and iv from the button's callback,
	// session_key from Code2Session. These values are the reference's
	// synthetic test vector.
	const (
		sessionKey    = "tiihtNczf5v6AKRyjwEUhQ=="
		iv            = "r7BXXKkLb8qrSNn05n0qiA=="
		encryptedData = "xT8p8W6jIVdEWQ+ccHuD2bmG5RSiwg14VWRFw/UGVh6Aj+jDIadafJ4xdCIBQ/uxDiyw/MZWvpFyRn3pP3xxVfNQxFtzghvK+Pj5JQI7x41EpnirOxeUcm4HWRdmzGJla5bZSoGnOCbsXv5pRwGUkKrjqXN+ahUvXsHu7s3UO17Wm7voWb/tLcxrZfVTyk0rxntL3Fq2vaQdw+WIdarjGw=="
	)
	info, err := wxphone.DecryptPhoneNumber("wx4f4bc4dec97d474b", sessionKey, encryptedData, iv)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.PhoneNumber, info.CountryCode, info.Watermark.AppID, info.Watermark.Timestamp)

	// Another app's data is refused.
	_, err = wxphone.DecryptPhoneNumber("wx0000000000000000", sessionKey, encryptedData, iv)
	fmt.Println(errors.Is(err, wxphone.ErrWatermarkMismatch))
	// Output:
	// 135****6666 86 wx4f4bc4dec97d474b 1477314187
	// true
}

func ExampleTokenManager() {
	_, srv := newEmulator()
	defer srv.Close()

	m, err := wxphone.NewTokenManager(wxphone.TokenConfig{AppID: "wx4f4bc4dec97d474b", Secret: "example-app-secret", BaseURL: srv.URL})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close() // stops the background refresh

	ctx := context.Background()
	if err := m.Warm(ctx); err != nil { // fetch at startup, not on the first request
		log.Fatal(err)
	}
	tok, err := m.Token(ctx) // from memory; refreshed ahead of expiry in the background
	if err != nil {
		log.Fatal(err)
	}
	st := m.Status()
	fmt.Println("usable:", st.Usable)
	fmt.Println("same token:", st.Fingerprint == wxphone.Fingerprint(tok.Value))
	fmt.Println("life left > 1h:", tok.Remaining(time.Now()) > time.Hour)
	fmt.Println("prints without its value:", fmt.Sprint(tok)[:13]+"…")
	// Output:
	// usable: true
	// same token: true
	// life left > 1h: true
	// prints without its value: Token(sha256:…
}

// A central token service hands out tokens; a consumer reports one WeChat
// rejected. InvalidateReported checks with WeChat first, so a report about
// a token WeChat still accepts spends nothing.
func ExampleTokenManager_InvalidateReported() {
	emu, srv := newEmulator()
	defer srv.Close()

	m, err := wxphone.NewTokenManager(wxphone.TokenConfig{AppID: "wx4f4bc4dec97d474b", Secret: "example-app-secret", BaseURL: srv.URL})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	tok, err := m.Token(ctx)
	if err != nil {
		log.Fatal(err)
	}

	_, err = m.InvalidateReported(ctx, tok.Value) // WeChat still accepts it
	fmt.Println("still valid:", errors.Is(err, wxphone.ErrTokenStillValid))

	if _, err := emu.RevokeTokens("wx4f4bc4dec97d474b"); err != nil { // now WeChat rejects it
		log.Fatal(err)
	}
	fresh, err := m.InvalidateReported(ctx, tok.Value)
	fmt.Println("replaced:", err == nil && fresh.Value != tok.Value)
	fmt.Println("force refreshes spent:", emu.Stats().Endpoints.StableToken.Force)
	// Output:
	// still valid: true
	// replaced: true
	// force refreshes spent: 0
}

func ExampleMaskPhone() {
	for _, p := range []string{"13800138000", "+86 13800138000", "+852 51234567", "12345", ""} {
		fmt.Printf("%q\n", wxphone.MaskPhone(p))
	}
	// Output:
	// "138****8000"
	// "+86 138****8000"
	// "+852 51****67"
	// "****"
	// ""
}
