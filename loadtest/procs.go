package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// env is one run of the tool: the built binary and a scratch directory.
type env struct {
	o      *Options
	root   string // repository root
	tmp    string
	bin    string // the wxphone binary
	logDir string
	runID  string
	seq    int // processes started, for log names
}

func newEnv(ctx context.Context, o *Options) (*env, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	if o.Docs == "" {
		o.Docs = filepath.Join(root, "docs", "benchmarks.md")
	}
	tmp, err := os.MkdirTemp("", "wxphone-loadtest-")
	if err != nil {
		return nil, err
	}
	e := &env{o: o, root: root, tmp: tmp, bin: filepath.Join(tmp, "wxphone"), logDir: filepath.Join(tmp, "logs"), runID: randHex(4)}
	if err := os.MkdirAll(e.logDir, 0o755); err != nil {
		e.Close()
		return nil, err
	}
	fmt.Fprintf(o.Out, "building wxphone from %s ...\n", root)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", e.bin, "./cmd/wxphone")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		e.Close()
		return nil, fmt.Errorf("go build ./cmd/wxphone: %v\n%s", err, b)
	}
	return e, nil
}

// Close removes the scratch directory (the logs stay with -keep-logs).
func (e *env) Close() {
	if e.o.KeepLogs {
		_ = os.Remove(e.bin)
		return
	}
	_ = os.RemoveAll(e.tmp)
}

// repoRoot finds the directory of the main module's go.mod above the
// working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(b), []byte("module github.com/wxphone/wxphone\n")) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no github.com/wxphone/wxphone go.mod above %s: run from the repository or loadtest/", dir)
		}
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// proc is one child process.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error
}

func (e *env) start(name string, extraEnv []string, args ...string) (*proc, error) {
	e.seq++
	logPath := filepath.Join(e.logDir, fmt.Sprintf("%02d-%s.log", e.seq, name))
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(minimalEnv(), extraEnv...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: f, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

// minimalEnv passes the child what a Go program needs and nothing of the
// caller's wxphone settings.
func minimalEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "PATH" || k == "HOME" || k == "TMPDIR" || k == "GODEBUG" || k == "GOGC" || k == "GOMEMLIMIT" || k == "GOMAXPROCS" {
			out = append(out, kv)
		}
	}
	return out
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to grace, then kills.
func (p *proc) stop(grace time.Duration) {
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	_ = p.log.Close()
}

// waitHTTP polls url until it answers 200.
func waitHTTP(ctx context.Context, p *proc, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var last string
	for time.Now().Before(deadline) {
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited: %v (log %s)", p.name, p.err, p.log.Name())
		}
		resp, err := c.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready after %s: %s", url, timeout, last)
}

// app is one emulated Mini Program.
type app struct{ ID, Secret string }

// clusterSpec describes the processes of one scenario.
type clusterSpec struct {
	Apps          int
	Replicas      int
	Redis         bool
	H2CIn         bool          // the service accepts h2c
	RequestTO     time.Duration // 0: the service default
	ExchangeTO    time.Duration // 0: the service default
	WaitReady     bool          // wait for /readyz (a token held) on every replica
	PhoneLatency  time.Duration
	StableLatency time.Duration // a latency fault on stable_token, set before the replicas start
}

// cluster is the emulator, an optional Redis and the service replicas.
type cluster struct {
	e        *env
	apps     []app
	apiKey   string
	emu      *proc
	emuURL   string
	redis    *proc
	redisURL string
	svcs     []*proc
	svcURLs  []string
	pprofURL string // the first replica's, with -pprof
	windows  int    // load windows started, for unique code prefixes
}

func (e *env) startCluster(ctx context.Context, s clusterSpec) (*cluster, error) {
	c := &cluster{e: e, apiKey: "loadtest-key-" + randHex(12)}
	for i := range max(s.Apps, 1) {
		c.apps = append(c.apps, app{ID: fmt.Sprintf("wxload%s%02d", e.runID, i), Secret: "loadtest-secret-" + randHex(8)})
	}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	var appsEnv []string
	for _, a := range c.apps {
		appsEnv = append(appsEnv, a.ID+":"+a.Secret)
	}
	emuEnv := []string{"WXMOCK_ADDR=" + addr, "WXMOCK_APPS=" + strings.Join(appsEnv, ","), "WXMOCK_LOAD_PREFIX=load-", "WXMOCK_H2C=true"}
	if c.emu, err = e.start("emulator", emuEnv, e.bin, "mock"); err != nil {
		return nil, err
	}
	c.emuURL = "http://" + addr
	if err := waitHTTP(ctx, c.emu, c.emuURL+"/admin/stats", 20*time.Second); err != nil {
		return nil, err
	}
	if s.PhoneLatency > 0 {
		if err := c.addLatency("phone", s.PhoneLatency); err != nil {
			return nil, err
		}
	}
	if s.StableLatency > 0 {
		if err := c.addLatency("stable_token", s.StableLatency); err != nil {
			return nil, err
		}
	}
	if s.Redis {
		if err := c.startRedis(ctx); err != nil {
			return nil, err
		}
	}
	dataKey := make([]byte, 32)
	_, _ = rand.Read(dataKey)
	common := []string{
		"WX_API_BASE=" + c.emuURL,
		"WXPHONE_API_KEYS=" + c.apiKey,
		"WXPHONE_DATA_KEY=" + base64.StdEncoding.EncodeToString(dataKey),
		"WXPHONE_RATE_LIMIT=0",
		"WXPHONE_LOG_LEVEL=" + e.o.LogLevel,
		"WXPHONE_SHUTDOWN_TIMEOUT=10s",
		"WXPHONE_H2C=" + strconv.FormatBool(s.H2CIn),
		"WXPHONE_UPSTREAM_H2C=" + strconv.FormatBool(e.o.UpstreamProto == "h2c"),
	}
	if s.RequestTO > 0 {
		common = append(common, "WXPHONE_REQUEST_TIMEOUT="+s.RequestTO.String())
	}
	if s.ExchangeTO > 0 {
		common = append(common, "WXPHONE_EXCHANGE_TIMEOUT="+s.ExchangeTO.String())
	}
	if len(c.apps) == 1 {
		common = append(common, "WX_APPID="+c.apps[0].ID, "WX_SECRET="+c.apps[0].Secret)
	} else {
		type entry struct {
			AppID     string `json:"appid"`
			SecretEnv string `json:"secret_env"`
		}
		var f struct {
			Apps []entry `json:"apps"`
		}
		for i, a := range c.apps {
			name := fmt.Sprintf("LOADTEST_SECRET_%d", i)
			f.Apps = append(f.Apps, entry{AppID: a.ID, SecretEnv: name})
			common = append(common, name+"="+a.Secret)
		}
		b, _ := json.Marshal(f)
		path := filepath.Join(e.tmp, "apps-"+e.runID+".json")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, err
		}
		common = append(common, "WXPHONE_APPS_FILE="+path)
	}
	if c.redisURL != "" {
		common = append(common, "REDIS_URL="+c.redisURL)
	}
	for i := range max(s.Replicas, 1) {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		envv := append(append([]string(nil), common...), "WXPHONE_ADDR="+addr)
		if e.o.PprofDir != "" && i == 0 {
			pa, err := freeAddr()
			if err != nil {
				return nil, err
			}
			envv = append(envv, "WXPHONE_PPROF_ADDR="+pa)
			c.pprofURL = "http://" + pa
		}
		p, err := e.start(fmt.Sprintf("service%d", i), envv, e.bin, "serve")
		if err != nil {
			return nil, err
		}
		c.svcs = append(c.svcs, p)
		c.svcURLs = append(c.svcURLs, "http://"+addr)
	}
	for i, u := range c.svcURLs {
		path := "/healthz"
		if s.WaitReady {
			path = "/readyz"
		}
		if err := waitHTTP(ctx, c.svcs[i], u+path, 30*time.Second); err != nil {
			return nil, err
		}
	}
	ok = true
	return c, nil
}

func (c *cluster) addLatency(endpoint string, d time.Duration) error {
	body := fmt.Sprintf(`{"endpoint":%q,"kind":"latency","latency_ms":%d}`, endpoint, d.Milliseconds())
	return c.admin("POST", "/admin/faults", body, nil)
}

// admin calls the emulator's admin API.
func (c *cluster) admin(method, path, body string, out any) error {
	req, err := http.NewRequest(method, c.emuURL+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("emulator %s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// emuStats is the part of the emulator's /admin/stats the tool reads.
type emuStats struct {
	Endpoints struct {
		Phone struct {
			Calls int64 `json:"calls"`
		} `json:"phone"`
	} `json:"endpoints"`
	Codes map[string]struct {
		Calls int64 `json:"calls"`
	} `json:"codes"`
	Apps map[string]struct {
		TokenFetches int64 `json:"token_fetches"`
		StableNormal int64 `json:"stable_normal"`
		StableForce  int64 `json:"stable_force"`
	} `json:"apps"`
}

func (s *emuStats) fetches(appID string) int64 {
	a := s.Apps[appID]
	return a.TokenFetches + a.StableNormal + a.StableForce
}

func (c *cluster) stats() (*emuStats, error) {
	var s emuStats
	err := c.admin("GET", "/admin/stats", "", &s)
	return &s, err
}

func (c *cluster) resetStats() error { return c.admin("POST", "/admin/stats/reset", "", nil) }

// token fetches the current stable token of app a, as a direct caller of
// the emulator would (normal mode: it shares the service's token).
func (c *cluster) token(a app) (string, error) {
	body := fmt.Sprintf(`{"grant_type":"client_credential","appid":%q,"secret":%q}`, a.ID, a.Secret)
	resp, err := http.Post(c.emuURL+"/cgi-bin/stable_token", "application/json", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var t struct {
		AccessToken string `json:"access_token"`
		ErrCode     int    `json:"errcode"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&t); err != nil {
		return "", err
	}
	if t.AccessToken == "" {
		return "", fmt.Errorf("stable_token: errcode %d", t.ErrCode)
	}
	return t.AccessToken, nil
}

func (c *cluster) startRedis(ctx context.Context) error {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if u := os.Getenv("REDIS_URL"); u != "" {
			c.redisURL = u
			return nil
		}
		return errors.New("Redis needed: no redis-server binary and REDIS_URL is unset")
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(addr)
	dir := filepath.Join(c.e.tmp, "redis-"+port)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	c.redis, err = c.e.start("redis", nil, bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no", "--dir", dir, "--maxclients", "10000")
	if err != nil {
		return err
	}
	c.redisURL = "redis://" + addr + "/0"
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c.redis.exited() {
			return fmt.Errorf("redis-server exited: %v (log %s)", c.redis.err, c.redis.log.Name())
		}
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_, _ = conn.Write([]byte("PING\r\n"))
			line, _ := bufio.NewReader(conn).ReadString('\n')
			conn.Close()
			if strings.HasPrefix(line, "+PONG") {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("redis-server did not answer PING")
}

// Close stops the replicas, then Redis and the emulator.
func (c *cluster) Close() {
	for _, p := range c.svcs {
		p.stop(15 * time.Second)
	}
	if c.redis != nil {
		c.redis.stop(5 * time.Second)
	}
	if c.emu != nil {
		c.emu.stop(5 * time.Second)
	}
}

// procStatus is what /proc/<pid>/status says of memory.
type procStatus struct {
	RSS, HWM int64 // bytes
}

func readStatus(pid int) (procStatus, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procStatus{}, err
	}
	var s procStatus
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			s.RSS = n << 10
		case "VmHWM":
			s.HWM = n << 10
		}
	}
	return s, nil
}

// promSample is one parsed /metrics line.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

var scrapeClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// scrape reads a Prometheus text exposition.
func scrape(url string) ([]promSample, error) {
	resp, err := scrapeClient.Get(url + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("%s/metrics: %s", url, resp.Status)
	}
	var out []promSample
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		s := promSample{value: v, labels: map[string]string{}}
		head := line[:sp]
		if i := strings.IndexByte(head, '{'); i >= 0 {
			s.name = head[:i]
			for _, kv := range splitLabels(strings.TrimSuffix(head[i+1:], "}")) {
				k, val, _ := strings.Cut(kv, "=")
				s.labels[k] = strings.Trim(val, `"`)
			}
		} else {
			s.name = head
		}
		out = append(out, s)
	}
	return out, sc.Err()
}

func splitLabels(s string) []string {
	var out []string
	inQ, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			if i == 0 || s[i-1] != '\\' {
				inQ = !inQ
			}
		case ',':
			if !inQ {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// sum adds the samples of name whose labels include match.
func sum(samples []promSample, name string, match map[string]string) float64 {
	var t float64
	for _, s := range samples {
		if s.name != name {
			continue
		}
		ok := true
		for k, v := range match {
			if s.labels[k] != v {
				ok = false
				break
			}
		}
		if ok {
			t += s.value
		}
	}
	return t
}

// svcCounters are the service counters the report uses.
type svcCounters struct {
	Goroutines float64
	RSS        float64
	PhoneCalls float64 // wxphone_upstream_requests_total{endpoint="getuserphonenumber"}
	TokenFetch float64 // wxphone_token_fetches_total
	InFlight   float64 // wxphone_http_requests_in_flight
	StackInuse float64 // go_memstats_stack_inuse_bytes
	HeapInuse  float64 // go_memstats_heap_inuse_bytes
}

func readCounters(url string) (svcCounters, error) {
	s, err := scrape(url)
	if err != nil {
		return svcCounters{}, err
	}
	return svcCounters{
		Goroutines: sum(s, "go_goroutines", nil),
		RSS:        sum(s, "process_resident_memory_bytes", nil),
		PhoneCalls: sum(s, "wxphone_upstream_requests_total", map[string]string{"endpoint": "getuserphonenumber"}),
		TokenFetch: sum(s, "wxphone_token_fetches_total", nil),
		InFlight:   sum(s, "wxphone_http_requests_in_flight", nil),
		StackInuse: sum(s, "go_memstats_stack_inuse_bytes", nil),
		HeapInuse:  sum(s, "go_memstats_heap_inuse_bytes", nil),
	}, nil
}

// profile saves a pprof profile of the first replica (with -pprof).
func (c *cluster) profile(name, query, file string) error {
	if c.pprofURL == "" {
		return nil
	}
	if err := os.MkdirAll(c.e.o.PprofDir, 0o755); err != nil {
		return err
	}
	hc := &http.Client{Timeout: 5 * time.Minute}
	resp, err := hc.Get(c.pprofURL + "/debug/pprof/" + name + query)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(filepath.Join(c.e.o.PprofDir, file))
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}
