package wxphone_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/apisec"
	"github.com/wxphone/wxphone/wxmock"
)

// ExampleClient_Exchange passes the user's openid: WeChat then checks that
// the code belongs to that user.
func ExampleClient_Exchange() {
	emu, srv := newEmulator()
	defer srv.Close()
	code, _ := emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: "13800138000", OpenID: "oUser1"})

	c, err := wxphone.New(wxphone.Config{AppID: "wx4f4bc4dec97d474b", Secret: wxphone.Secret("example-app-secret"), BaseURL: srv.URL})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, err = c.Exchange(ctx, wxphone.PhoneRequest{Code: wxphone.Secret(code), OpenID: "oSomeoneElse"})
	var ae *wxphone.APIError
	if errors.As(err, &ae) {
		fmt.Println("refused by WeChat, errcode", ae.ErrCode)
	}
	info, err := c.Exchange(ctx, wxphone.PhoneRequest{Code: wxphone.Secret(code), OpenID: "oUser1"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.PhoneNumber)
	// Output:
	// refused by WeChat, errcode 40003
	// 138****8000
}

// ExampleConfig_apiSecurity exchanges a code in WeChat's API security
// mode: the keys come from the MP console (API安全), loaded with
// apisec.Load. Here the emulator plays the console and WeChat.
func ExampleConfig_apiSecurity() {
	emu, srv := newEmulator()
	defer srv.Close()

	// What the developer downloads from the console: the symmetric key
	// (base64), the app private key (PEM), the platform certificate.
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKCS8PrivateKey(rk)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	symB64 := base64.StdEncoding.EncodeToString(raw)
	sym, _ := apisec.NewAESKey("sym-sn", raw)
	signer, _ := apisec.NewRSASigner(rk)
	cert, err := emu.SetAPISecurity("wx4f4bc4dec97d474b", wxmock.APISecurity{SymKey: sym, AppKeySN: "app-sn", AppKey: signer.Verifier()})
	if err != nil {
		log.Fatal(err)
	}

	keys, err := apisec.Load("wx4f4bc4dec97d474b", apisec.Material{
		SymKey: []byte(symB64), SymSN: "sym-sn",
		PrivateKeyPEM: keyPEM, PrivateSN: "app-sn",
		CertsPEM: []byte(cert.PEM), CertSNs: []string{cert.SN},
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	c, err := wxphone.New(wxphone.Config{AppID: "wx4f4bc4dec97d474b", Secret: wxphone.Secret("example-app-secret"), BaseURL: srv.URL, APISecurity: keys})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, _ := emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: "13800138000"})
	info, err := c.PhoneNumber(ctx, code)
	switch {
	case errors.Is(err, wxphone.ErrAnswerUnverified):
		fmt.Println("the answer failed verification: outcome unknown, ask the user to tap again")
	case errors.Is(err, wxphone.ErrAPISecurityConfig):
		var ae *wxphone.APIError
		errors.As(err, &ae)
		fmt.Println("misconfigured:", wxphone.APISecuritySettings(ae.ErrCode))
	case err != nil:
		fmt.Println("failed:", err)
	default:
		fmt.Println(info.PhoneNumber)
	}
	// Output: 138****8000
}
