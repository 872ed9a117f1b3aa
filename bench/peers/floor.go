package main

// The floor: the least a hand-written caller does for one exchange, so that
// every SDK's throughput and allocations can be read against it. One pooled
// *http.Client (the same tuned transport every SDK gets in tuned mode), a
// token fetched once before the measured cells and never refreshed, and per
// code one POST with the code in a JSON body, decoded into the two fields
// it needs. No retries, no token handling, no error classification: what
// an SDK adds to this is its own cost.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// sdkFloor labels the floor client in reports. It is not an SDK: it has no
// fault scenarios and no module version.
const sdkFloor = "floor"

// floorClient is the hand-written floor. phoneURL carries the token.
type floorClient struct {
	hc       *http.Client
	phoneURL string
}

// newFloorClient fetches a stable token once from base and returns a floor
// client that uses it for every exchange.
func newFloorClient(ctx context.Context, base, appid, secret string) (*floorClient, error) {
	hc := tunedClient()
	body, err := json.Marshal(map[string]string{"grant_type": "client_credential", "appid": appid, "secret": secret})
	if err != nil {
		return nil, err
	}
	var tok struct {
		AccessToken string `json:"access_token"`
		ErrCode     int    `json:"errcode"`
	}
	if err := floorPost(ctx, hc, base+"/cgi-bin/stable_token", body, &tok); err != nil {
		return nil, fmt.Errorf("floor token: %w", err)
	}
	if tok.ErrCode != 0 || tok.AccessToken == "" {
		return nil, fmt.Errorf("floor token: errcode %d", tok.ErrCode)
	}
	return &floorClient{hc: hc, phoneURL: base + "/wxa/business/getuserphonenumber?access_token=" + url.QueryEscape(tok.AccessToken)}, nil
}

type floorPhoneReq struct {
	Code string `json:"code"`
}

type floorPhoneResp struct {
	ErrCode   int `json:"errcode"`
	PhoneInfo struct {
		PurePhoneNumber string `json:"purePhoneNumber"`
	} `json:"phone_info"`
}

// exchange is one POST per code.
func (f *floorClient) exchange(ctx context.Context, code string) (string, error) {
	body, err := json.Marshal(floorPhoneReq{Code: code})
	if err != nil {
		return "", err
	}
	var r floorPhoneResp
	if err := floorPost(ctx, f.hc, f.phoneURL, body, &r); err != nil {
		return "", err
	}
	if r.ErrCode != 0 {
		return "", fmt.Errorf("errcode %d", r.ErrCode)
	}
	return r.PhoneInfo.PurePhoneNumber, nil
}

func floorPost(ctx context.Context, hc *http.Client, u string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return errors.New("undecodable answer")
	}
	// Drain what the decoder left so that the connection goes back to the pool.
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil
}

// newFloorInstance wraps the floor client as an instance of the matrix.
func (e *env) newFloorInstance(appid string) (*instance, error) {
	if err := e.emu.AddApp(appid); err != nil {
		return nil, err
	}
	f, err := newFloorClient(context.Background(), e.emu.URL, appid, secretFor(appid))
	if err != nil {
		return nil, err
	}
	return &instance{SDK: sdkFloor, Mode: modeDefault, AppID: appid, ctxAware: true,
		enter: func() {}, leave: func() {}, close: f.hc.CloseIdleConnections,
		exchange: f.exchange}, nil
}
