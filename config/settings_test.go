package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/wxphone/wxphone/config"
	"github.com/wxphone/wxphone/quota"
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

func TestObservabilitySettings(t *testing.T) {
	base := map[string]string{"WX_APPID": "wxobs", "WX_SECRET": "obs-secret-0123456789", "WXPHONE_API_KEYS": "obs-api-key-0123456789"}
	tests := []struct {
		env   map[string]string
		args  []string
		check func(*config.Config) bool
		err   string
	}{
		{check: func(c *config.Config) bool {
			return c.AdminAddr == "" && !c.AdminPprof && c.QuotaInterval == quota.DefaultInterval
		}},
		{env: map[string]string{"WXPHONE_ADMIN_ADDR": ":9090", "WXPHONE_ADMIN_PPROF": "true"}, check: func(c *config.Config) bool { return c.AdminAddr == ":9090" && c.AdminPprof }},
		{args: []string{"--admin-addr", "127.0.0.1:9091", "--quota-interval", "5m"}, check: func(c *config.Config) bool {
			return c.AdminAddr == "127.0.0.1:9091" && c.QuotaInterval == 5*time.Minute
		}},
		{env: map[string]string{"WXPHONE_QUOTA_INTERVAL": "0"}, check: func(c *config.Config) bool { return c.QuotaInterval == 0 }},
		{env: map[string]string{"WXPHONE_QUOTA_INTERVAL": "off"}, check: func(c *config.Config) bool { return c.QuotaInterval == 0 }},
		{env: map[string]string{"WXPHONE_QUOTA_INTERVAL": "3600"}, check: func(c *config.Config) bool { return c.QuotaInterval == time.Hour }},
		{env: map[string]string{"WXPHONE_QUOTA_INTERVAL": "30s"}, err: "WXPHONE_QUOTA_INTERVAL: want a duration between 1m and 24h"},
		{env: map[string]string{"WXPHONE_QUOTA_INTERVAL": "48h"}, err: "between 1m and 24h"},
		{env: map[string]string{"WXPHONE_QUOTA_INTERVAL": "soon"}, err: "WXPHONE_QUOTA_INTERVAL"},
		{env: map[string]string{"WXPHONE_ADMIN_ADDR": "9090"}, err: "WXPHONE_ADMIN_ADDR: want host:port"},
		{env: map[string]string{"WXPHONE_ADMIN_ADDR": ":8080"}, err: "must differ from the listen address"},
		{env: map[string]string{"WXPHONE_ADMIN_PPROF": "true"}, err: "needs WXPHONE_ADMIN_ADDR"},
		{env: map[string]string{"WXPHONE_ADMIN_ADDR": ":9090", "WXPHONE_ADMIN_PPROF": "yes please"}, err: "want true or false"},
	}
	for _, tc := range tests {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for k, v := range tc.env {
			env[k] = v
		}
		c, err := config.Load(tc.args, func(k string) string { return env[k] })
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v %v: err %v, want %q", tc.env, tc.args, err, tc.err)
			}
		case err != nil:
			t.Errorf("%v %v: %v", tc.env, tc.args, err)
		case !tc.check(c):
			t.Errorf("%v %v: %+v", tc.env, tc.args, c)
		}
	}
}
