package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/wxphone/wxphone/server"
)

// healthcheck probes GET /healthz of a running `wxphone serve` and
// returns nil on 200: it is the HEALTHCHECK of an image that has no curl.
// The address is serve's (WXPHONE_ADDR or --addr); a listen address with
// no host or an unspecified one (":8080", "0.0.0.0:8080", "[::]:8080") is
// probed on loopback.
func healthcheck(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := newFlags("healthcheck", "Usage: wxphone healthcheck [flags]\n\nProbes GET /healthz of wxphone serve; exits 0 when it answers 200, 1 otherwise.\nFor a container HEALTHCHECK or a supervisor: the image needs no curl.", stdout)
	addr := fs.String("addr", envOr(getenv, "WXPHONE_ADDR", server.DefaultAddr), "address of wxphone serve (env WXPHONE_ADDR)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	quiet := fs.Bool("q", false, "print nothing on success")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "wxphone healthcheck: unexpected argument", fs.Arg(0))
		return errUsage
	}
	url, err := healthURL(*addr)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	// A client of its own: no proxy from the environment, no redirects.
	c := &http.Client{
		Transport:     &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %s: %w", url, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %s", url, resp.Status)
	}
	if !*quiet {
		fmt.Fprintln(stdout, "ok", url)
	}
	return nil
}

// healthURL returns the /healthz URL of the listen address addr.
func healthURL(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return "", fmt.Errorf("address %q: want host:port or :port", addr)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return "http://" + net.JoinHostPort(host, port) + server.PathHealthz, nil
}
