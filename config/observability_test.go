package config

import (
	"strings"
	"testing"
	"time"

	"github.com/wxphone/wxphone/quota"
)

func TestObservabilitySettings(t *testing.T) {
	base := map[string]string{"WX_APPID": "wxobs", "WX_SECRET": "obs-secret-0123456789", "WXPHONE_API_KEYS": "obs-api-key-0123456789"}
	tests := []struct {
		env   map[string]string
		args  []string
		check func(*Config) bool
		err   string
	}{
		{check: func(c *Config) bool {
			return c.AdminAddr == "" && !c.AdminPprof && c.QuotaInterval == quota.DefaultInterval
		}},
		{env: map[string]string{"WXPHONE_ADMIN_ADDR": ":9090", "WXPHONE_ADMIN_PPROF": "true"}, check: func(c *Config) bool { return c.AdminAddr == ":9090" && c.AdminPprof }},
		{args: []string{"--admin-addr", "127.0.0.1:9091", "--quota-interval", "5m"}, check: func(c *Config) bool {
			return c.AdminAddr == "127.0.0.1:9091" && c.QuotaInterval == 5*time.Minute
		}},
		{env: map[string]string{"WXPHONE_QUOTA_INTERVAL": "0"}, check: func(c *Config) bool { return c.QuotaInterval == 0 }},
		{env: map[string]string{"WXPHONE_QUOTA_INTERVAL": "off"}, check: func(c *Config) bool { return c.QuotaInterval == 0 }},
		{env: map[string]string{"WXPHONE_QUOTA_INTERVAL": "3600"}, check: func(c *Config) bool { return c.QuotaInterval == time.Hour }},
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
		c, err := Load(tc.args, func(k string) string { return env[k] })
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
