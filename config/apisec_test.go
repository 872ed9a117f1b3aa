package config_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/wxphone/wxphone/config"
)

// apiSecFiles writes the official example's key material to files.
func apiSecFiles(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../apisec/testdata/official-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		AES struct {
			SN  string `json:"key_sn"`
			Key string `json:"key_base64"`
		} `json:"aes256_gcm"`
		RSA struct {
			SN  string `json:"key_sn"`
			PEM string `json:"app_private_key_pkcs1_pem"`
		} `json:"rsa"`
		Cert struct {
			SN  string `json:"serial_in_mp_console"`
			PEM string `json:"pem"`
		} `json:"platform_certificate"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"WX_API_SYM_KEY_FILE":       write(t, "sym", v.AES.Key+"\n"),
		"WX_API_SYM_SN":             v.AES.SN,
		"WX_API_PRIVATE_KEY_FILE":   write(t, "key.pem", v.RSA.PEM),
		"WX_API_PRIVATE_KEY_SN":     v.RSA.SN,
		"WX_API_PLATFORM_CERT_FILE": write(t, "certs.pem", v.Cert.PEM+"\n"+v.Cert.PEM),
		"WX_API_PLATFORM_CERT_SN":   v.Cert.SN + ", second-sn",
	}
}

func loadEnv(env map[string]string, args ...string) (*config.Config, error) {
	return config.Load(args, func(k string) string { return env[k] })
}

func TestAPISecuritySingleApp(t *testing.T) {
	files := apiSecFiles(t)
	env := base()
	for k, v := range files {
		env[k] = v
	}
	c, err := loadEnv(env)
	if err != nil {
		t.Fatal(err)
	}
	k := c.Apps[0].APISecurity
	if k == nil || k.AppID != "wx1111111111111111" || k.Sym.SN() != files["WX_API_SYM_SN"] || len(k.Platform) != 2 || k.Platform[1].SN() != "second-sn" {
		t.Fatalf("keys %+v", k)
	}
	// Printing the configuration never shows key material.
	s := fmt.Sprintf("%+v %#v", c.Apps[0], c.Apps[0])
	if strings.Contains(s, "otUpngOjU") || strings.Contains(s, "BEGIN") {
		t.Fatalf("config prints key material: %s", s)
	}
	// Without the settings the app is not in the mode.
	c, err = loadEnv(base())
	if err != nil || c.Apps[0].APISecurity != nil {
		t.Fatalf("%v %+v", err, c)
	}
}

// A partial set is a start-up error naming every missing setting.
func TestAPISecurityPartial(t *testing.T) {
	files := apiSecFiles(t)
	for _, drop := range [][]string{
		{"WX_API_SYM_SN"},
		{"WX_API_PRIVATE_KEY_FILE", "WX_API_PLATFORM_CERT_SN"},
		{"WX_API_SYM_KEY_FILE", "WX_API_SYM_SN", "WX_API_PRIVATE_KEY_FILE", "WX_API_PRIVATE_KEY_SN", "WX_API_PLATFORM_CERT_FILE"},
	} {
		env := base()
		for k, v := range files {
			env[k] = v
		}
		for _, d := range drop {
			delete(env, d)
		}
		_, err := loadEnv(env)
		if err == nil {
			t.Fatalf("without %v: no error", drop)
		}
		for _, d := range drop {
			if !strings.Contains(err.Error(), d) {
				t.Errorf("without %v: error %q does not name %s", drop, err, d)
			}
		}
	}
	// WX_API_* without WX_APPID.
	env := map[string]string{"WXPHONE_API_KEYS": key1, "WXPHONE_APPS_FILE": write(t, "apps.json", `{"apps":[{"appid":"wx2","secret_env":"S2"}]}`), "S2": secret}
	for k, v := range files {
		env[k] = v
	}
	if _, err := loadEnv(env); err == nil || !strings.Contains(err.Error(), "WX_APPID") {
		t.Fatalf("err = %v", err)
	}
}

// Bad key material is refused with a message naming the setting, never
// the material.
func TestAPISecurityBadMaterial(t *testing.T) {
	files := apiSecFiles(t)
	for _, tc := range []struct{ env, content, want string }{
		{"WX_API_SYM_KEY_FILE", "otUpngOjU+nVQaWJIC3D/yMLV17RKaP6t4Ot9t!!", "base64"},
		{"WX_API_PRIVATE_KEY_FILE", "otUpngOjU+nVQaWJIC3D", "not PEM"},
		{"WX_API_PLATFORM_CERT_FILE", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "cannot be parsed"},
	} {
		env := base()
		for k, v := range files {
			env[k] = v
		}
		env[tc.env] = write(t, "bad", tc.content)
		_, err := loadEnv(env)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "WX_APPID") {
			t.Fatalf("%s: err = %v", tc.env, err)
		}
		if strings.Contains(err.Error(), "otUpngOjU") {
			t.Fatalf("error quotes the key: %v", err)
		}
	}
	env := base()
	for k, v := range files {
		env[k] = v
	}
	env["WX_API_SYM_KEY_FILE"] = "/nonexistent/sym"
	if _, err := loadEnv(env); err == nil || !strings.Contains(err.Error(), "WX_API_SYM_KEY_FILE") {
		t.Fatalf("err = %v", err)
	}
}

func TestAPISecurityAppsFile(t *testing.T) {
	files := apiSecFiles(t)
	entry := map[string]any{
		"appid": "wx2222222222222222", "secret_env": "S2", "openid_binding": false,
		"api_security": map[string]string{
			"sym_key_file": files["WX_API_SYM_KEY_FILE"], "sym_sn": files["WX_API_SYM_SN"],
			"private_key_file": files["WX_API_PRIVATE_KEY_FILE"], "private_key_sn": files["WX_API_PRIVATE_KEY_SN"],
			"platform_cert_file": files["WX_API_PLATFORM_CERT_FILE"], "platform_cert_sn": files["WX_API_PLATFORM_CERT_SN"],
		},
	}
	b, _ := json.Marshal(map[string]any{"apps": []any{entry, map[string]any{"appid": "wx3", "secret_env": "S2"}}})
	env := map[string]string{"WXPHONE_API_KEYS": key1, "S2": secret, "WXPHONE_APPS_FILE": write(t, "apps.json", string(b))}
	c, err := loadEnv(env)
	if err != nil {
		t.Fatal(err)
	}
	if c.Apps[0].APISecurity == nil || !c.Apps[0].NoOpenIDBinding || c.Apps[1].APISecurity != nil || c.Apps[1].NoOpenIDBinding {
		t.Fatalf("apps %+v", c.Apps)
	}
	delete(entry["api_security"].(map[string]string), "private_key_sn")
	b, _ = json.Marshal(map[string]any{"apps": []any{entry}})
	env["WXPHONE_APPS_FILE"] = write(t, "apps2.json", string(b))
	if _, err := loadEnv(env); err == nil || !strings.Contains(err.Error(), "missing private_key_sn") {
		t.Fatalf("err = %v", err)
	}
}

func TestOpenIDBindingSwitch(t *testing.T) {
	for v, want := range map[string]bool{"": false, "true": false, "false": true, "0": true} {
		c, err := loadEnv(with(base(), "WX_OPENID_BINDING", v))
		if err != nil || c.Apps[0].NoOpenIDBinding != want {
			t.Fatalf("%q: %v %+v", v, err, c)
		}
	}
	if _, err := loadEnv(with(base(), "WX_OPENID_BINDING", "maybe")); err == nil {
		t.Fatal("accepted maybe")
	}
}
