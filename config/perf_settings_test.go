package config_test

import (
	"strings"
	"testing"

	"github.com/wxphone/wxphone/config"
)

// TestPerformanceSettings: WXPHONE_H2C, WXPHONE_UPSTREAM_H2C and
// WXPHONE_PPROF_ADDR (and their flags) default off and are validated.
func TestPerformanceSettings(t *testing.T) {
	emu := "http://127.0.0.1:8081"
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
		h2c     bool
		up      bool
		pprof   string
	}{
		{name: "defaults off", env: base()},
		{name: "env", env: with(base(), "WXPHONE_H2C", "true", "WXPHONE_UPSTREAM_H2C", "1", "WX_API_BASE", emu, "WXPHONE_PPROF_ADDR", "127.0.0.1:6060"), h2c: true, up: true, pprof: "127.0.0.1:6060"},
		{name: "flags win", args: []string{"--h2c=false", "--upstream-h2c", "true", "--pprof-addr", "[::1]:6061"}, env: with(base(), "WXPHONE_H2C", "true", "WX_API_BASE", emu), up: true, pprof: "[::1]:6061"},
		{name: "localhost pprof", env: with(base(), "WXPHONE_PPROF_ADDR", "localhost:6060"), pprof: "localhost:6060"},
		{name: "bad bool", env: with(base(), "WXPHONE_H2C", "yes please"), wantErr: "WXPHONE_H2C: want true or false"},
		{name: "upstream h2c needs http", env: with(base(), "WXPHONE_UPSTREAM_H2C", "true"), wantErr: "needs a plain http://"},
		{name: "pprof on the network", env: with(base(), "WXPHONE_PPROF_ADDR", "0.0.0.0:6060"), wantErr: "loopback"},
		{name: "pprof without port", env: with(base(), "WXPHONE_PPROF_ADDR", "127.0.0.1"), wantErr: "host:port"},
		{name: "pprof any interface", env: with(base(), "WXPHONE_PPROF_ADDR", ":6060"), wantErr: "loopback"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := config.Load(tc.args, func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.H2C != tc.h2c || c.UpstreamH2C != tc.up || c.PprofAddr != tc.pprof {
				t.Fatalf("H2C %v UpstreamH2C %v PprofAddr %q", c.H2C, c.UpstreamH2C, c.PprofAddr)
			}
		})
	}
}
