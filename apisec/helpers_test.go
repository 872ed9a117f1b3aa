package apisec

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
)

func b64enc(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// x509MarshalPKCS8 re-encodes the app key of k as PKCS#8 PEM.
func x509MarshalPKCS8(k *Keys) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.App.signer.(*RSASigner).key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
