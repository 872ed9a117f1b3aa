package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/internal/valid"
)

// appsFile is the format of WXPHONE_APPS_FILE.
type appsFile struct {
	Apps []appEntry `json:"apps"`
}

type appEntry struct {
	AppID      string          `json:"appid"`
	SecretEnv  string          `json:"secret_env"`
	SecretFile string          `json:"secret_file"`
	Secret     json.RawMessage `json:"secret"` // refused: never inline
	// APISecurity switches the app to the API security mode.
	APISecurity *apiSecEntry `json:"api_security"`
	// OpenIDBinding false stops openids from being sent to WeChat.
	OpenIDBinding *bool `json:"openid_binding"`
}

// apps builds the Mini Programs from the settings of the apps group (the
// single app's WX_APPID, WX_SECRET, WX_API_* and WX_OPENID_BINDING, and
// WXPHONE_APPS_FILE), in configuration order.
func (l *loader) apps() ([]App, error) {
	var apps []App
	seen := map[string]string{}
	add := func(a App, src string) error {
		if prev, dup := seen[a.AppID]; dup {
			return fmt.Errorf("config: %s: appid %s is configured twice (also in %s)", src, a.AppID, prev)
		}
		seen[a.AppID] = src
		apps = append(apps, a)
		return nil
	}
	a, src, err := l.singleApp()
	if err != nil {
		return nil, err
	}
	if a != nil {
		if err := add(*a, src); err != nil {
			return nil, err
		}
	}
	if err := l.appsFromFile(add); err != nil {
		return nil, err
	}
	if len(apps) == 0 {
		return nil, errors.New("config: no Mini Program configured: set WX_APPID with WX_SECRET (or WX_SECRET_FILE / --secret-file), or WXPHONE_APPS_FILE")
	}
	return apps, nil
}

// singleApp is the app of WX_APPID, if set, and the source naming it.
func (l *loader) singleApp() (*App, string, error) {
	id, idSrc := l.get("appid")
	secret, secSrc := l.get("secret-file")
	sec, secSet := l.apiSecFromEnv()
	switch {
	case id != "" && secret == "":
		return nil, "", fmt.Errorf("config: %s is set but its AppSecret is missing: set WX_SECRET, WX_SECRET_FILE or --secret-file", idSrc)
	case id == "" && secret != "":
		return nil, "", fmt.Errorf("config: %s is set but WX_APPID (--appid) is not", secSrc)
	case id == "" && secSet:
		return nil, "", errors.New("config: WX_API_* (API security mode) is set but WX_APPID is not; for the apps file use each app's \"api_security\"")
	case id == "":
		return nil, "", nil
	case !valid.AppID(id):
		return nil, "", fmt.Errorf("config: %s: the appid must be %s", idSrc, valid.AppIDRule)
	}
	if err := checkSecret(secSrc, secret); err != nil {
		return nil, "", err
	}
	a := &App{AppID: id, Secret: wxphone.Secret(secret)}
	var err error
	if secSet {
		if a.APISecurity, err = sec.load(id, idSrc, apiSecEnvNames); err != nil {
			return nil, "", err
		}
	}
	if v, src := l.get("openid-binding"); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return nil, "", fmt.Errorf("config: %s: want true or false", src)
		}
		a.NoOpenIDBinding = !on
	}
	return a, idSrc, nil
}

// appsFromFile adds the apps of WXPHONE_APPS_FILE, if set.
func (l *loader) appsFromFile(add func(App, string) error) error {
	path, src := l.get("apps-file")
	if path == "" {
		return nil
	}
	b, err := readFile(src, path)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	var f appsFile
	if err := dec.Decode(&f); err != nil {
		return fmt.Errorf("config: %s: %s: %s", src, path, scrubJSONError(err))
	}
	if dec.More() {
		return fmt.Errorf("config: %s: %s: trailing data after the JSON object", src, path)
	}
	if len(f.Apps) == 0 {
		return fmt.Errorf("config: %s: %s: \"apps\" lists no app", src, path)
	}
	for i, e := range f.Apps {
		where := fmt.Sprintf("%s: %s: app %d", src, path, i+1)
		a, err := l.fileApp(e, where)
		if err != nil {
			return err
		}
		if err := add(a, where+" ("+e.AppID+")"); err != nil {
			return err
		}
	}
	return nil
}

// fileApp is one app of the apps file; where names it in errors.
func (l *loader) fileApp(e appEntry, where string) (App, error) {
	if !valid.AppID(e.AppID) {
		return App{}, fmt.Errorf("config: %s: \"appid\" must be %s", where, valid.AppIDRule)
	}
	where += " (" + e.AppID + ")"
	if len(e.Secret) > 0 {
		return App{}, fmt.Errorf("config: %s: inline \"secret\" is not allowed; use \"secret_env\" (a variable name) or \"secret_file\" (a path)", where)
	}
	var sec string
	var err error
	switch {
	case e.SecretEnv != "" && e.SecretFile != "":
		return App{}, fmt.Errorf("config: %s: set one of \"secret_env\" and \"secret_file\", not both", where)
	case e.SecretEnv != "":
		if sec = strings.TrimSpace(l.getenv(e.SecretEnv)); sec == "" {
			return App{}, fmt.Errorf("config: %s: environment variable %s (secret_env) is unset or empty", where, e.SecretEnv)
		}
	case e.SecretFile != "":
		if sec, err = readSecretFile(where+" secret_file", e.SecretFile); err != nil {
			return App{}, err
		}
	default:
		return App{}, fmt.Errorf("config: %s: \"secret_env\" or \"secret_file\" is required", where)
	}
	if err := checkSecret(where, sec); err != nil {
		return App{}, err
	}
	a := App{AppID: e.AppID, Secret: wxphone.Secret(sec)}
	if e.APISecurity != nil {
		if a.APISecurity, err = e.APISecurity.load(e.AppID, where+" api_security", apiSecJSONNames); err != nil {
			return App{}, err
		}
	}
	if e.OpenIDBinding != nil {
		a.NoOpenIDBinding = !*e.OpenIDBinding
	}
	return a, nil
}

func checkSecret(src, secret string) error {
	if len(secret) > 256 || !valid.Printable(secret) {
		return fmt.Errorf("config: %s: the AppSecret must be at most 256 printable ASCII characters without spaces", src)
	}
	return nil
}

// scrubJSONError describes a decoding error of the apps file without
// quoting values (an unknown field's name is kept: it is a key, not a
// value).
func scrubJSONError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q has the wrong type", te.Field)
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return strings.TrimPrefix(err.Error(), "json: ") + " (allowed: apps, appid, secret_env, secret_file, api_security, openid_binding; in api_security: sym_key_file, sym_sn, private_key_file, private_key_sn, platform_cert_file, platform_cert_sn)"
	case errors.Is(err, io.EOF):
		return "empty file"
	}
	return "invalid JSON"
}
