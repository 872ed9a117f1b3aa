package main

// Adapters: each SDK's phone exchange behind one function, configured the way
// its README shows ("default") or with the same tuned transport as ours
// ("tuned"). Only public APIs of the peers are called; no peer code is copied.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"

	pwmini "github.com/ArtisanCloud/PowerWeChat/v3/src/miniProgram"
	cachegofile "github.com/faabiosr/cachego/file"
	cachegosync "github.com/faabiosr/cachego/sync"
	fastwego "github.com/fastwego/miniprogram"
	"github.com/medivhzhan/weapp/v3"
	weapplogger "github.com/medivhzhan/weapp/v3/logger"
	"github.com/medivhzhan/weapp/v3/phonenumber"
	silenceper "github.com/silenceper/wechat/v2"
	spcache "github.com/silenceper/wechat/v2/cache"
	spconfig "github.com/silenceper/wechat/v2/miniprogram/config"
	sputil "github.com/silenceper/wechat/v2/util"
	"github.com/sirupsen/logrus"

	"github.com/wxphone/wxphone"
)

// SDK names, in report order.
const (
	sdkOurs        = "wxphone"
	sdkSilenceper  = "silenceper"
	sdkPowerWeChat = "powerwechat"
	sdkWeapp       = "weapp"
	sdkFastwego    = "fastwego"
)

var allSDKs = []string{sdkOurs, sdkSilenceper, sdkPowerWeChat, sdkWeapp, sdkFastwego}

// Transport modes.
const (
	modeDefault = "default" // as the SDK's README configures it
	modeTuned   = "tuned"   // same tuned *http.Client / Transport as ours
)

var sdkModules = map[string]string{
	sdkOurs:        "github.com/wxphone/wxphone",
	sdkSilenceper:  "github.com/silenceper/wechat/v2",
	sdkPowerWeChat: "github.com/ArtisanCloud/PowerWeChat/v3",
	sdkWeapp:       "github.com/medivhzhan/weapp/v3",
	sdkFastwego:    "github.com/fastwego/miniprogram",
}

// sdkTokenKind is each SDK's default token endpoint, which we keep.
var sdkTokenKind = map[string]string{
	sdkOurs:        "stable",
	sdkSilenceper:  "classic",
	sdkPowerWeChat: "classic",
	sdkWeapp:       "stable",
	sdkFastwego:    "classic",
}

// transportDesc says which HTTP client each SDK gets in each mode.
var transportDesc = map[string]map[string]string{
	sdkOurs: {
		modeDefault: "own default (wxphone.NewHTTPClient: 512 idle/host, 30 s timeout)",
		modeTuned:   "same as default",
	},
	sdkSilenceper: {
		modeDefault: "http.DefaultTransport, no timeout (its util.DefaultHTTPClient = http.DefaultClient)",
		modeTuned:   "wxphone.NewHTTPClient() via util.DefaultHTTPClient",
	},
	sdkPowerWeChat: {
		modeDefault: "own http.Client over http.DefaultTransport, Timeout unset (= none)",
		modeTuned:   "Http.Transport = wxphone.NewHTTPClient().Transport, Http.Timeout 30 s",
	},
	sdkWeapp: {
		modeDefault: "http.DefaultTransport, no timeout (its default http.DefaultClient)",
		modeTuned:   "WithHttpClient(wxphone.NewHTTPClient())",
	},
	sdkFastwego: {
		modeDefault: "http.DefaultClient (not configurable), token cache = cachego file cache (its default, in a scratch dir)",
		modeTuned:   "http.DefaultClient swapped for wxphone.NewHTTPClient() during its runs, token cache = cachego sync map",
	},
}

func moduleVersion(path string) string {
	if path == sdkModules[sdkOurs] {
		return "(this tree)"
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "?"
	}
	for _, d := range bi.Deps {
		if d.Path == path {
			if d.Replace != nil {
				return d.Replace.Version
			}
			return d.Version
		}
	}
	return "?"
}

// instance is one configured SDK client.
type instance struct {
	SDK   string
	Mode  string
	AppID string
	// enter and leave bracket every use, for SDKs whose HTTP client is a
	// process-wide variable.
	enter, leave func()
	// exchange returns the purePhoneNumber for code.
	exchange func(ctx context.Context, code string) (string, error)
	close    func()
	// ctxAware reports whether the SDK takes a context on the phone call.
	ctxAware bool
}

func (in *instance) Label() string {
	if in.SDK == sdkOurs || in.SDK == sdkFloor {
		return in.SDK
	}
	return in.SDK + " (" + in.Mode + ")"
}

// env is the process-wide setup shared by all instances.
type env struct {
	emu     *emulator
	emuHost string
	scratch string // disposable dir: PowerWeChat HOME and logs, fastwego file cache
}

var globalsOnce sync.Once

// setupGlobals applies the process-wide settings some peers need. Called once.
func (e *env) setupGlobals() {
	globalsOnce.Do(func() {
		// silenceper switches logrus to Debug on stdout in init(); silence it.
		logrus.SetOutput(io.Discard)
		logrus.SetLevel(logrus.PanicLevel)
		// PowerWeChat's global cache writes ~/.ArtisanCloud/cache.
		_ = os.Setenv("HOME", filepath.Join(e.scratch, "home"))
		_ = os.MkdirAll(filepath.Join(e.scratch, "home"), 0o700)
		// fastwego has only a global base URL.
		fastwego.WXServerUrl = e.emu.URL
	})
}

// redirect sends requests for *.weixin.qq.com to the emulator. It rewrites
// the request's URL in place rather than cloning it: the peers build a fresh
// request per call and never look at it again, and an in-place rewrite costs
// no allocation, so the redirect does not bias their allocs/op.
type redirect struct {
	base http.RoundTripper
	host string
}

func (t *redirect) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Host, "weixin.qq.com") {
		r.URL.Scheme = "http"
		r.URL.Host = t.host
	}
	return t.base.RoundTrip(r)
}

// tunedClient is the transport every SDK gets in tuned mode: what ours uses
// by default, a fresh pool per instance.
func tunedClient() *http.Client { return wxphone.NewHTTPClient() }

func (e *env) newInstance(sdk, mode, appid string) (*instance, error) {
	e.setupGlobals()
	if err := e.emu.AddApp(appid); err != nil {
		return nil, err
	}
	secret := secretFor(appid)
	in := &instance{SDK: sdk, Mode: mode, AppID: appid, enter: func() {}, leave: func() {}, close: func() {}}
	switch sdk {
	case sdkOurs:
		c, err := wxphone.New(wxphone.Config{AppID: appid, Secret: wxphone.Secret(secret), BaseURL: e.emu.URL})
		if err != nil {
			return nil, err
		}
		in.ctxAware = true
		in.exchange = func(ctx context.Context, code string) (string, error) {
			info, err := c.PhoneNumber(ctx, code)
			if err != nil {
				return "", err
			}
			return string(info.PurePhoneNumber), nil
		}
		in.close = func() { _ = c.Close() }

	case sdkSilenceper:
		var hc *http.Client
		if mode == modeTuned {
			hc = tunedClient()
			hc.Transport = &redirect{base: hc.Transport, host: e.emuHost}
		} else {
			hc = &http.Client{Transport: &redirect{base: http.DefaultTransport, host: e.emuHost}}
		}
		mp := silenceper.NewWechat().GetMiniProgram(&spconfig.Config{AppID: appid, AppSecret: secret, Cache: spcache.NewMemory()})
		auth := mp.GetAuth()
		in.ctxAware = true
		// util.DefaultHTTPClient is process-wide: install ours per use.
		in.enter = func() { sputil.DefaultHTTPClient = hc }
		in.leave = func() { sputil.DefaultHTTPClient = http.DefaultClient }
		in.exchange = func(ctx context.Context, code string) (string, error) {
			res, err := auth.GetPhoneNumberContext(ctx, code)
			if err != nil {
				return "", err
			}
			return res.PhoneInfo.PurePhoneNumber, nil
		}

	case sdkPowerWeChat:
		dir := filepath.Join(e.scratch, "powerwechat", appid)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		cfg := &pwmini.UserConfig{
			AppID:  appid,
			Secret: secret,
			Log: pwmini.Log{
				Level: "error",
				File:  filepath.Join(dir, "info.log"),
				Error: filepath.Join(dir, "error.log"),
			},
			Http:      pwmini.Http{BaseURI: e.emu.URL + "/"},
			HttpDebug: false, // the README sets true (full request/response dumps); silenced here
		}
		if mode == modeTuned {
			cfg.Http.Transport = tunedClient().Transport
			cfg.Http.Timeout = 30
		}
		app, err := pwmini.NewMiniProgram(cfg)
		if err != nil {
			return nil, err
		}
		// The token URL is absolute and not covered by BaseURI (peers.md §8).
		app.AccessToken.EndpointToGetToken = e.emu.URL + "/cgi-bin/token"
		in.ctxAware = true
		in.exchange = func(ctx context.Context, code string) (string, error) {
			res, err := app.PhoneNumber.GetUserPhoneNumber(ctx, code)
			if err != nil {
				return "", err
			}
			// Business errors come back with err == nil.
			if res.ErrCode != 0 {
				return "", fmt.Errorf("errcode %d: %s", res.ErrCode, res.ErrMsg)
			}
			if res.PhoneInfo == nil {
				return "", errors.New("no phone_info")
			}
			return res.PhoneInfo.PurePhoneNumber, nil
		}

	case sdkWeapp:
		var hc *http.Client
		if mode == modeTuned {
			hc = tunedClient()
			hc.Transport = &redirect{base: hc.Transport, host: e.emuHost}
		} else {
			hc = &http.Client{Transport: &redirect{base: http.DefaultTransport, host: e.emuHost}}
		}
		cli := weapp.NewClient(appid, secret,
			weapp.WithHttpClient(hc),
			weapp.WithLogger(weapplogger.NewLogger(log.New(io.Discard, "", 0), weapplogger.Silent, false)))
		pn := cli.NewPhonenumber()
		in.exchange = func(_ context.Context, code string) (string, error) {
			res, err := pn.GetPhoneNumber(&phonenumber.GetPhoneNumberRequest{Code: code})
			if err != nil {
				return "", err
			}
			// Business errors come back with err == nil.
			if err := res.GetResponseError(); err != nil {
				return "", err
			}
			return res.Data.PurePhoneNumber, nil
		}

	case sdkFastwego:
		app := fastwego.New(fastwego.Config{Appid: appid, Secret: secret})
		app.Logger = nil // the default logger prints URLs with the token
		if mode == modeTuned {
			app.AccessToken.Cache = cachegosync.New()
			hc := tunedClient()
			var saved *http.Client
			in.enter = func() { saved = http.DefaultClient; http.DefaultClient = hc }
			in.leave = func() { http.DefaultClient = saved }
		} else {
			dir := filepath.Join(e.scratch, "fastwego", appid)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, err
			}
			app.AccessToken.Cache = cachegofile.New(dir) // its default, file.New(os.TempDir()), in a scratch dir
		}
		in.exchange = func(_ context.Context, code string) (string, error) {
			// No phone wrapper: the user builds the body and decodes the raw answer.
			body, err := json.Marshal(fastwegoPhoneReq{Code: code})
			if err != nil {
				return "", err
			}
			resp, err := app.Client.HTTPPost("/wxa/business/getuserphonenumber", bytes.NewReader(body), "application/json")
			if err != nil {
				return "", err
			}
			var r fastwegoPhoneResp
			if err := json.Unmarshal(resp, &r); err != nil {
				return "", err
			}
			if r.ErrCode != 0 {
				return "", fmt.Errorf("errcode %d", r.ErrCode)
			}
			return r.PhoneInfo.PurePhoneNumber, nil
		}

	default:
		return nil, fmt.Errorf("unknown sdk %q", sdk)
	}
	return in, nil
}

type fastwegoPhoneReq struct {
	Code string `json:"code"`
}

type fastwegoPhoneResp struct {
	ErrCode   int    `json:"errcode"`
	ErrMsg    string `json:"errmsg"`
	PhoneInfo struct {
		PhoneNumber     string `json:"phoneNumber"`
		PurePhoneNumber string `json:"purePhoneNumber"`
		CountryCode     string `json:"countryCode"`
	} `json:"phone_info"`
}

func hostOf(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	return u.Host
}
