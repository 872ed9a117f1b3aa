package redis

import (
	"context"
	"crypto/tls"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/wxphone/wxphone/internal/logtest"
)

const pw = "s3cr3t-P4ss"

func TestBuildOptionsStandalone(t *testing.T) {
	got, err := buildOptions("redis://app:"+pw+"@cache.example:6380/2", Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := got.(*goredis.Options)
	if o.Addr != "cache.example:6380" || o.DB != 2 || o.Username != "app" || o.Password != pw {
		t.Errorf("addr %q db %d user %q", o.Addr, o.DB, o.Username)
	}
	if o.DialTimeout != 250*time.Millisecond || o.ReadTimeout != 100*time.Millisecond ||
		o.WriteTimeout != 100*time.Millisecond || o.PoolTimeout != 200*time.Millisecond ||
		o.MaxRetries != 1 || o.DialerRetries != 1 || !o.ContextTimeoutEnabled {
		t.Errorf("defaults not applied: %+v", o)
	}
	if o.MaintNotificationsConfig == nil || o.MaintNotificationsConfig.Mode != maintnotifications.ModeDisabled {
		t.Error("maintenance notifications not disabled")
	}
	if o.TLSConfig != nil {
		t.Error("TLS on a redis:// URL")
	}

	// Defaults: no port, no path.
	got, err = buildOptions("redis://localhost", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if o := got.(*goredis.Options); o.Addr != "localhost:6379" || o.DB != 0 || o.Password != "" {
		t.Errorf("got %q db %d", o.Addr, o.DB)
	}

	// Options apply; the URL's query overrides them.
	got, err = buildOptions("redis://h/0?read_timeout=2s&max_retries=-1", Options{ReadTimeout: time.Second, WriteTimeout: 300 * time.Millisecond, MaxRetries: 3, PoolSize: 7})
	if err != nil {
		t.Fatal(err)
	}
	o = got.(*goredis.Options)
	if o.ReadTimeout != 2*time.Second || o.WriteTimeout != 300*time.Millisecond || o.MaxRetries != -1 || o.PoolSize != 7 {
		t.Errorf("read %v write %v retries %d pool %d", o.ReadTimeout, o.WriteTimeout, o.MaxRetries, o.PoolSize)
	}

	// Percent-encoded credentials.
	got, err = buildOptions("redis://:p%40ss%2Fw%3Ard@h", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if o := got.(*goredis.Options); o.Password != "p@ss/w:rd" || o.Username != "" {
		t.Errorf("password %q user %q", o.Password, o.Username)
	}
}

func TestBuildOptionsTLS(t *testing.T) {
	got, err := buildOptions("rediss://:"+pw+"@cache.example", Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := got.(*goredis.Options)
	if o.TLSConfig == nil || o.TLSConfig.InsecureSkipVerify || o.TLSConfig.MinVersion < tls.VersionTLS12 {
		t.Fatalf("TLS config %+v", o.TLSConfig)
	}
	custom := &tls.Config{ServerName: "redis.internal"}
	got, err = buildOptions("rediss://cache.example", Options{TLSConfig: custom})
	if err != nil {
		t.Fatal(err)
	}
	if c := got.(*goredis.Options).TLSConfig; c == custom || c.ServerName != "redis.internal" || c.MinVersion < tls.VersionTLS12 {
		t.Errorf("custom TLS config not cloned and kept: %+v", c)
	}

	for _, tc := range []struct {
		url  string
		opts Options
	}{
		{"rediss://h?skip_verify=true", Options{}},
		{"rediss://h?skip_verify=false", Options{}},
		{"rediss+cluster://h?skip_verify=1", Options{}},
		{"rediss://h", Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}}},
		{"redis://h", Options{TLSConfig: &tls.Config{}}},
	} {
		if _, err := buildOptions(tc.url, tc.opts); err == nil {
			t.Errorf("%s: accepted", tc.url)
		}
	}
}

func TestBuildOptionsCluster(t *testing.T) {
	got, err := buildOptions("rediss+cluster://u:"+pw+"@n1.example,n2.example:7001,[::1]:7002?read_timeout=150ms", Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := got.(*goredis.ClusterOptions)
	want := []string{"n1.example:6379", "n2.example:7001", "[::1]:7002"}
	if strings.Join(o.Addrs, " ") != strings.Join(want, " ") {
		t.Errorf("addrs %v", o.Addrs)
	}
	if o.Username != "u" || o.Password != pw || o.ReadTimeout != 150*time.Millisecond || o.DialTimeout != 250*time.Millisecond || o.MaxRetries != 1 {
		t.Errorf("options %+v", o)
	}
	if o.MaintNotificationsConfig == nil || o.MaintNotificationsConfig.Mode != maintnotifications.ModeDisabled {
		t.Error("maintenance notifications not disabled")
	}
	if o.TLSConfig == nil || o.TLSConfig.InsecureSkipVerify || o.TLSConfig.ServerName != "" {
		t.Errorf("TLS config %+v: want verification against each node's host", o.TLSConfig)
	}
	if _, err := buildOptions("redis+cluster://h/1", Options{}); err == nil {
		t.Error("cluster URL with a database accepted")
	}
}

func TestBuildOptionsSentinel(t *testing.T) {
	got, err := buildOptions("redis+sentinel://:"+pw+"@s1,s2:26380/mymaster/3?sentinel_password=sp&dial_timeout=1s", Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := got.(*goredis.FailoverOptions)
	if strings.Join(o.SentinelAddrs, " ") != "s1:26379 s2:26380" || o.MasterName != "mymaster" || o.DB != 3 {
		t.Errorf("sentinels %v master %q db %d", o.SentinelAddrs, o.MasterName, o.DB)
	}
	if o.Password != pw || o.SentinelPassword != "sp" || o.DialTimeout != time.Second || o.ReadTimeout != 100*time.Millisecond {
		t.Errorf("options %+v", o)
	}
	got, err = buildOptions("redis+sentinel://s1/mymaster", Options{SentinelUsername: "su", SentinelPassword: "sp2"})
	if err != nil {
		t.Fatal(err)
	}
	if o := got.(*goredis.FailoverOptions); o.SentinelUsername != "su" || o.SentinelPassword != "sp2" || o.DB != 0 {
		t.Errorf("options %+v", o)
	}
	for _, u := range []string{
		"redis+sentinel://s1",
		"redis+sentinel://s1/m/1/2",
		"redis+sentinel://s1/m?master_name=x",
		"redis+sentinel://s1/m?addr=s2:1",
	} {
		if _, err := buildOptions(u, Options{}); err == nil {
			t.Errorf("%s accepted", u)
		}
	}
}

func TestBadURLsNeverEchoThePassword(t *testing.T) {
	for _, u := range []string{
		"redis://u:" + pw + "@h:notaport",
		"redis://u:" + pw + "@h:6379/notadb",
		"redis://u:" + pw + "@h/0?nosuchoption=1",
		"redis://u:" + pw + "@h/0?read_timeout=soon",
		"redis://u:" + pw + "%zz@h",
		"redis://u:" + pw + "/x@h",
		"redis://u:" + pw + "#x@h",
		"redis://u:" + pw + "@h1,h2",
		"redis://u:" + pw + "@h/0?password=" + pw,
		"redis://u:" + pw + "@h/0?skip_verify=true",
		"redis://" + pw + "@h:0",
		"redis+sentinel://u:" + pw + "@s1/m?sentinel_password=" + pw + "&bad=1",
		"redis+cluster://u:" + pw + "@h1,,h2",
		"redis+cluster://u:" + pw + "@::1",
		"http://u:" + pw + "@h",
		"u:" + pw + "@h",
	} {
		_, err := Open(context.Background(), u, Options{Lazy: true})
		if err == nil {
			t.Errorf("%s accepted", RedactURL(u))
			continue
		}
		if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), "P4ss") {
			t.Errorf("error echoes the password: %v", err)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"redis://u:" + pw + "@h:6379/0":                       "redis://u:xxxxx@h:6379/0",
		"redis://:" + pw + "@h":                               "redis://:xxxxx@h",
		"redis://" + pw + "@h":                                "redis://xxxxx@h",
		"rediss://u:p@ss/w?rd@h/1?read_timeout=1s":            "rediss://u:xxxxx@h/1?read_timeout=1s",
		"redis+sentinel://s1,s2/m?sentinel_password=" + pw:    "redis+sentinel://s1,s2/m?sentinel_password=xxxxx",
		"redis://h/0?password=" + pw + "&dial_timeout=1s#frg": "redis://h/0?dial_timeout=1s&password=xxxxx",
		"redis://h:6379":                                      "redis://h:6379",
		"u:" + pw + "@h":                                      "REDACTED",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(…) = %q, want %q", got, want)
		}
	}
}

func TestOpenPingsAndFailsFast(t *testing.T) {
	start := time.Now()
	_, err := Open(context.Background(), "redis://u:"+pw+"@"+deadAddr(t)+"/0", Options{})
	if err == nil {
		t.Fatal("Open succeeded with nothing listening")
	}
	if strings.Contains(err.Error(), pw) {
		t.Errorf("error echoes the password: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Open took %v", d)
	}

	start = time.Now()
	if _, err := Open(context.Background(), "redis://"+silentAddr(t), Options{}); err == nil {
		t.Fatal("Open succeeded against a silent server")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Open took %v against a silent server", d)
	}

	// Wrong password.
	mr := miniredis.RunT(t)
	mr.RequireAuth("right-one")
	_, err = Open(context.Background(), "redis://:"+pw+"@"+mr.Addr(), Options{})
	if err == nil {
		t.Fatal("wrong password accepted")
	}
	if strings.Contains(err.Error(), pw) {
		t.Errorf("error echoes the password: %v", err)
	}
	c, err := Open(context.Background(), "redis://:right-one@"+mr.Addr(), envOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := Ping(context.Background(), c); err != nil {
		t.Fatal(err)
	}

	// Lazy: no connection attempted.
	c, err = Open(context.Background(), "redis://"+deadAddr(t), Options{Lazy: true})
	if err != nil {
		t.Fatal(err)
	}
	if Ping(context.Background(), c) == nil {
		t.Error("Ping succeeded with nothing listening")
	}
	_ = c.Close()
}

// The cluster form end to end, against miniredis posing as a one-node
// cluster (a real cluster: run the suite with REDIS_URL=redis+cluster://…).
func TestClusterURL(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	ctx := testCtx(t)
	c, err := Open(ctx, "redis+cluster://"+mr.Addr(), envOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*goredis.ClusterClient); !ok {
		t.Fatalf("got a %T", c)
	}
	if err := Ping(ctx, c); err != nil {
		t.Fatal(err)
	}
	s, _ := NewTokenStore(c, newKeyring(t), StoreOptions{})
	want := tok("TOKEN-cluster", time.Now().Add(time.Hour))
	if _, err := s.StoreToken(ctx, appA, want); err != nil {
		t.Fatal(err)
	}
	if got, err := s.LoadToken(ctx, appA); err != nil || got.Value != want.Value {
		t.Fatalf("LoadToken = %v, %v", got, err)
	}
	unlock, err := s.LockRefresh(ctx, appA, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if !mr.Exists("wxphone:{" + appA + "}:token") {
		t.Error("token key not under the documented name")
	}
}

func TestSetLogger(t *testing.T) {
	var buf logtest.Buffer
	SetLogger(slog.New(slog.NewTextHandler(&buf, nil)))
	defer SetLogger(nil)
	c, err := Open(context.Background(), "redis://:"+pw+"@"+deadAddr(t), Options{Lazy: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.Ping(context.Background()).Err()
	out := buf.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "go-redis") {
		t.Errorf("go-redis diagnostics not routed: %q", out)
	}
	if strings.Contains(out, pw) {
		t.Error("go-redis logged the password")
	}
}
