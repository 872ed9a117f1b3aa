package config

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// observability loads the admin address and the quota probe settings.
func (l *loader) observability(c *Config) error {
	aa, src := l.plain("admin-addr", "WXPHONE_ADMIN_ADDR")
	if aa != "" {
		if _, port, err := net.SplitHostPort(aa); err != nil || port == "" {
			return fmt.Errorf("config: %s: want host:port or :port, e.g. :9090", src)
		}
		if aa == c.Addr {
			return fmt.Errorf("config: %s: the admin address must differ from the listen address", src)
		}
		c.AdminAddr = aa
	}
	ap, src := l.plain("admin-pprof", "WXPHONE_ADMIN_PPROF")
	if ap != "" {
		var err error
		if c.AdminPprof, err = strconv.ParseBool(ap); err != nil {
			return fmt.Errorf("config: %s: want true or false", src)
		}
		if c.AdminPprof && c.AdminAddr == "" {
			return fmt.Errorf("config: %s needs WXPHONE_ADMIN_ADDR: the profiler is never served on the API address", src)
		}
	}
	qi, src := l.plain("quota-interval", "WXPHONE_QUOTA_INTERVAL")
	c.QuotaInterval = DefaultQuotaInterval
	if qi != "" {
		d, err := parseQuotaInterval(qi)
		if err != nil {
			return fmt.Errorf("config: %s: %w", src, err)
		}
		c.QuotaInterval = d
	}
	return nil
}

// parseQuotaInterval accepts 0 or "off" (disabled), or a duration between
// one minute and a day (a Go duration or whole seconds).
func parseQuotaInterval(s string) (time.Duration, error) {
	if s == "0" || strings.EqualFold(s, "off") {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		n, nerr := strconv.Atoi(s)
		if nerr != nil {
			return 0, errors.New("want a duration such as 10m, or 0 (or off) to disable")
		}
		d = time.Duration(n) * time.Second
	}
	if d < time.Minute || d > 24*time.Hour {
		return 0, errors.New("want a duration between 1m and 24h, or 0 (or off) to disable (quota/get has a daily quota of its own)")
	}
	return d, nil
}
