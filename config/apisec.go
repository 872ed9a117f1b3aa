package config

import (
	"fmt"
	"strings"

	"github.com/wxphone/wxphone/apisec"
	"github.com/wxphone/wxphone/apisec/sm"
)

// apiSecEntry is one app's API security mode settings: in the apps file
// ("api_security"), or the WX_API_* variables of the single app. Every
// part is a file path or a key number; key material is read only from
// files.
type apiSecEntry struct {
	SymKeyFile       string `json:"sym_key_file"`
	SymSN            string `json:"sym_sn"`
	PrivateKeyFile   string `json:"private_key_file"`
	PrivateKeySN     string `json:"private_key_sn"`
	PlatformCertFile string `json:"platform_cert_file"`
	PlatformCertSN   string `json:"platform_cert_sn"`
}

// apiSecNames are the names of the parts, for messages: the variables of
// the single app, or the apps file's fields.
var (
	apiSecEnvNames  = [6]string{"WX_API_SYM_KEY_FILE", "WX_API_SYM_SN", "WX_API_PRIVATE_KEY_FILE", "WX_API_PRIVATE_KEY_SN", "WX_API_PLATFORM_CERT_FILE", "WX_API_PLATFORM_CERT_SN"}
	apiSecJSONNames = [6]string{"sym_key_file", "sym_sn", "private_key_file", "private_key_sn", "platform_cert_file", "platform_cert_sn"}
)

func (e *apiSecEntry) parts() [6]string {
	return [6]string{e.SymKeyFile, e.SymSN, e.PrivateKeyFile, e.PrivateKeySN, e.PlatformCertFile, e.PlatformCertSN}
}

// apiSecFromEnv reads the single app's WX_API_* settings.
func (l *loader) apiSecFromEnv() (*apiSecEntry, bool) {
	var v [6]string
	set := false
	for i, name := range apiSecEnvNames {
		v[i], _ = l.get(apiSecFlag(name))
		set = set || v[i] != ""
	}
	return &apiSecEntry{v[0], v[1], v[2], v[3], v[4], v[5]}, set
}

// apiSecFlag is the flag of a WX_API_* variable: WX_API_SYM_SN → api-sym-sn.
func apiSecFlag(env string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(env, "WX_")), "_", "-")
}

// load turns the settings into keys. All six parts switch the app to the
// mode; a partial set is an error naming what is missing. where names the
// app; names the parts.
func (e *apiSecEntry) load(appID, where string, names [6]string) (*apisec.Keys, error) {
	p := e.parts()
	var missing []string
	for i, v := range p {
		if strings.TrimSpace(v) == "" {
			missing = append(missing, names[i])
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("config: %s: the API security mode is partly configured; missing %s (set all six settings, or none)", where, strings.Join(missing, ", "))
	}
	sym, err := readFile(where+" "+names[0], e.SymKeyFile)
	if err != nil {
		return nil, err
	}
	priv, err := readFile(where+" "+names[2], e.PrivateKeyFile)
	if err != nil {
		return nil, err
	}
	certs, err := readFile(where+" "+names[4], e.PlatformCertFile)
	if err != nil {
		return nil, err
	}
	var sns []string
	for _, sn := range strings.Split(e.PlatformCertSN, ",") {
		sns = append(sns, strings.TrimSpace(sn))
	}
	k, err := apisec.Load(appID, apisec.Material{
		SymKey: sym, SymSN: strings.TrimSpace(e.SymSN),
		PrivateKeyPEM: priv, PrivateSN: strings.TrimSpace(e.PrivateKeySN),
		CertsPEM: certs, CertSNs: sns,
	}, keyExtension())
	clear(sym)
	clear(priv)
	if err != nil {
		return nil, fmt.Errorf("config: %s: API security mode: %w", where, err)
	}
	return k, nil
}

// keyExtension parses the national algorithms (SM4_GCM, SM2withSM3)
// besides AES256_GCM and RSAwithSHA256.
func keyExtension() apisec.Extension { return sm.Extension{} }
