package reliability

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wxphone/wxphone/internal/faultproxy"
	"github.com/wxphone/wxphone/wxmock"
)

// TestCampaign is the fault campaign (docs/reliability.md, "Fault
// campaign"): 3 real `wxphone serve` replicas, a private redis-server
// behind a TCP fault proxy, the emulator, clients that behave like real
// backends, and seeded random faults on WeChat, Redis and the replicas.
// Afterwards the checker verifies the invariants I1–I5 for every code.
//
//	WXPHONE_CAMPAIGN=<duration> WXPHONE_CAMPAIGN_SEED=<n> go test -run TestCampaign -timeout 20m ./internal/reliability
//
// The seed is printed first (a random one when WXPHONE_CAMPAIGN_SEED is
// unset); the last line is "campaign: N codes, M faults, K violations",
// and the test fails when K > 0. go test shows a passing test's output
// only with -v.
func TestCampaign(t *testing.T) {
	v := os.Getenv("WXPHONE_CAMPAIGN")
	if v == "" {
		t.Skip("set WXPHONE_CAMPAIGN=<duration> (and optionally WXPHONE_CAMPAIGN_SEED) to run the fault campaign")
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("WXPHONE_CAMPAIGN=%q: want a positive Go duration such as 2m", v)
	}
	var seed uint64
	if s := os.Getenv("WXPHONE_CAMPAIGN_SEED"); s != "" {
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("WXPHONE_CAMPAIGN_SEED=%q: want an unsigned integer", s)
		}
	} else {
		var b [8]byte
		_, _ = crand.Read(b[:])
		seed = binary.LittleEndian.Uint64(b[:]) >> 1
	}
	// go test's -timeout must cover the run, its wind-down and the build.
	timeout := max(20*time.Minute, (d + 10*time.Minute).Round(time.Minute))
	fmt.Printf("campaign: seed %d (replay: WXPHONE_CAMPAIGN=%v WXPHONE_CAMPAIGN_SEED=%d go test -run TestCampaign -timeout %v ./internal/reliability)\n", seed, d, seed, timeout)
	needRedis(t)

	c := newCampaign(t, seed, defaultCampaignConfig())
	c.run(d)
	h, faults := c.finish()
	res := h.check()
	c.printSummary(h, res)
	if len(res.violations) > 0 {
		fmt.Print(h.report(res))
	}
	fmt.Printf("campaign: %d codes, %d faults, %d violations\n", len(h.order), faults, len(res.violations))
	if len(res.violations) > 0 {
		t.Fail()
	}
}

// campaignConfig sizes a campaign.
type campaignConfig struct {
	replicas int
	h2c      []bool // per replica: WXPHONE_UPSTREAM_H2C
	clients  int
	budget   time.Duration // a client gives up on a code after this
	params   campaignParams
}

func defaultCampaignConfig() campaignConfig {
	return campaignConfig{
		replicas: 3,
		h2c:      []bool{false, true, true},
		clients:  8,
		// The code lives 5 minutes; clients give up sooner to bound the
		// run, but never before a claim's lease (exchange timeout + 5 s)
		// has passed twice.
		budget: 60 * time.Second,
		params: campaignParams{
			requestTimeout: 3 * time.Second,
			// Above Go's transport's 10 s ResponseHeaderTimeout in
			// NewHTTPClient, so that "latency-10s" tells whether an
			// exchange lives until its own timeout (issue 10, item 1).
			exchangeTimeout: 12 * time.Second,
			slack:           2 * time.Second,
			redisWindow:     3 * time.Second,
			killGrace:       500 * time.Millisecond,
			goroutineSlack:  10,
		},
	}
}

// redisTimeout is the replicas' Redis read and write timeout; proxy delays
// below redisSlowMax keep a round trip within it, delays from
// redisStallMin make it time out.
const (
	redisTimeout  = 300 * time.Millisecond
	redisSlowMax  = 100 * time.Millisecond
	redisStallMin = 200 * time.Millisecond
)

type campaign struct {
	t    *testing.T
	seed uint64
	cfg  campaignConfig

	emu       *wxmock.Server
	emuSrv    []*http.Server
	emuURL    []string // per replica
	outside   string   // the campaign's own way in (pre-use)
	slotOf    map[string]int
	emuActive atomic.Int64

	redis *redisProc
	proxy *faultproxy.Proxy
	reps  []*campReplica
	hc    *http.Client

	phoneSeq atomic.Int64

	mu        sync.Mutex
	hist      *history
	faultKind map[string]int
	nFaults   int
	statuses  map[string]int
	gaveUp    int
}

func newCampaign(t *testing.T, seed uint64, cfg campaignConfig) *campaign {
	t.Helper()
	wxphoneBinary(t)
	c := &campaign{t: t, seed: seed, cfg: cfg, slotOf: map[string]int{},
		hist: newHistory(seed, cfg.params), faultKind: map[string]int{}, statuses: map[string]int{}}

	// The emulator: one listener per replica, so that every call says
	// which replica made it, and one for the campaign itself.
	emu, err := wxmock.New(wxmock.Options{Apps: []wxmock.App{{AppID: appID, Secret: secret}}, RecordCalls: true})
	if err != nil {
		t.Fatal(err)
	}
	c.emu = emu
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.emuActive.Add(1)
		defer c.emuActive.Add(-1)
		emu.ServeHTTP(w, r)
	})
	for i := 0; i <= cfg.replicas; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, Protocols: new(http.Protocols),
			HTTP2: &http.HTTP2Config{MaxConcurrentStreams: 1000}}
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
		go func() { _ = srv.Serve(emu.Listener(ln)) }()
		t.Cleanup(func() { _ = srv.Close() })
		c.emuSrv = append(c.emuSrv, srv)
		addr := ln.Addr().String()
		if i < cfg.replicas {
			c.slotOf[addr] = i
			c.emuURL = append(c.emuURL, "http://"+addr)
		} else {
			c.slotOf[addr] = -1
			c.outside = "http://" + addr
		}
	}

	// Redis, without persistence, behind the fault proxy.
	c.redis = startRedis(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for try := 0; ; try++ {
		c.proxy, err = faultproxy.New(ctx, fmt.Sprintf("127.0.0.1:%d", redisPort(t)), c.redis.addr())
		if err == nil || try > 20 {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.proxy.Close() })

	c.hc = &http.Client{
		Timeout:   cfg.params.requestTimeout + 2*cfg.params.slack,
		Transport: &http.Transport{MaxIdleConnsPerHost: 32},
	}
	t.Cleanup(c.hc.CloseIdleConnections)

	for i := range cfg.replicas {
		r := &campReplica{c: c, slot: i, h2c: cfg.h2c[i%len(cfg.h2c)]}
		r.addr = fmt.Sprintf("127.0.0.1:%d", redisPort(t))
		r.url = "http://" + r.addr
		c.reps = append(c.reps, r)
		t.Cleanup(r.kill)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(c.reps))
	for i, r := range c.reps {
		wg.Go(func() { errs[i] = r.start() })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// ---------------------------------------------------------------------------
// Replicas: `wxphone serve` processes restarted on the same port.

type campReplica struct {
	c    *campaign
	slot int
	addr string
	url  string
	h2c  bool

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	logs     *ringLog
	starts   int
	baseline int
}

func (r *campReplica) env() []string {
	p := r.c.cfg.params
	env := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"WXPHONE_ADDR=" + r.addr,
		"WX_APPID=" + appID, "WX_SECRET=" + secret, "WX_API_BASE=" + r.c.emuURL[r.slot],
		"WXPHONE_API_KEYS=" + apiKey, "WXPHONE_DATA_KEY=" + dataKey, "WXPHONE_RATE_LIMIT=0",
		"REDIS_URL=redis://" + r.c.proxy.Addr() + "/0?read_timeout=" + redisTimeout.String() + "&write_timeout=" + redisTimeout.String(),
		"WXPHONE_REQUEST_TIMEOUT=" + p.requestTimeout.String(),
		"WXPHONE_EXCHANGE_TIMEOUT=" + p.exchangeTimeout.String(),
		"WXPHONE_SHUTDOWN_TIMEOUT=20s",
		"WXPHONE_LOG_LEVEL=info", // "Redis available again" is logged at info
	}
	if r.h2c {
		env = append(env, "WXPHONE_UPSTREAM_H2C=true")
	}
	return env
}

// start runs the replica and waits until it serves /healthz, then (up to
// 20 s) until /readyz says it has a token. A replica that is not ready in
// time still runs: clients get 503s from it and go elsewhere.
func (r *campReplica) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return nil
	}
	if r.logs == nil {
		r.logs = newRingLog(2000)
	}
	var last error
	for attempt := 0; attempt < 20; attempt++ {
		cmd := exec.Command(wxphoneBinary(r.c.t), "serve")
		cmd.Env = r.env()
		cmd.Stdout, cmd.Stderr = r.logs, r.logs
		if err := cmd.Start(); err != nil {
			return err
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		if err := waitServing(r.url, done, 20*time.Second); err != nil {
			last = err
			_ = cmd.Process.Kill()
			<-done
			time.Sleep(100 * time.Millisecond) // the port may still be held
			continue
		}
		r.cmd, r.done = cmd, done
		r.starts++
		return nil
	}
	return fmt.Errorf("replica %d did not start on %s: %v\n%s", r.slot, r.addr, last, r.logs.tail(30))
}

// waitServing waits for /healthz, then for /readyz (best effort).
func waitServing(url string, done <-chan struct{}, readyWithin time.Duration) error {
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(path string) int {
		resp, err := hc.Get(url + path)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := 0; get("/healthz") != http.StatusOK; i++ {
		select {
		case <-done:
			return errors.New("exited")
		default:
		}
		if i > 1000 {
			return errors.New("not healthy after 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for end := time.Now().Add(readyWithin); get("/readyz") != http.StatusOK && time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// stop signals the replica and waits for it to exit.
func (r *campReplica) stop(sig syscall.Signal, within time.Duration) {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(within):
		_ = cmd.Process.Kill()
		<-done
	}
	r.logs.mu.Lock()
	r.logs.closeWindow(time.Now())
	r.logs.mu.Unlock()
	r.mu.Lock()
	r.cmd, r.done = nil, nil
	r.mu.Unlock()
}

func (r *campReplica) kill() { r.stop(syscall.SIGKILL, 10*time.Second) }

func (r *campReplica) running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cmd != nil
}

// goroutines scrapes go_goroutines from the replica's /metrics.
func (r *campReplica) goroutines() (int, error) {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get(r.url + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(f), err
		}
	}
	return 0, errors.New("no go_goroutines in /metrics")
}

// ringLog reads a replica's JSON log, across its restarts: it keeps the
// last lines at warn level and above, and the windows during which the
// replica's replay store was on its local fallback ("Redis unavailable"
// until "Redis available again", or until the process ended).
type ringLog struct {
	mu      sync.Mutex
	max     int
	lines   []string
	part    []byte
	windows [][2]time.Time // degraded from, to (zero: still degraded)
}

func newRingLog(max int) *ringLog { return &ringLog{max: max} }

// logTime returns the time a JSON log line was written (its "time"
// field), or now.
func logTime(line string, now time.Time) time.Time {
	_, rest, ok := strings.Cut(line, `"time":"`)
	if !ok {
		return now
	}
	v, _, ok := strings.Cut(rest, `"`)
	if !ok {
		return now
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return now
	}
	return t
}

func (l *ringLog) Write(p []byte) (int, error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.part = append(l.part, p...)
	for {
		i := strings.IndexByte(string(l.part), '\n')
		if i < 0 {
			break
		}
		line := string(l.part[:i])
		l.part = l.part[i+1:]
		replay := strings.Contains(line, `"component":"replay"`)
		switch {
		case replay && strings.Contains(line, `"msg":"Redis unavailable`):
			if n := len(l.windows); n == 0 || !l.windows[n-1][1].IsZero() {
				l.windows = append(l.windows, [2]time.Time{logTime(line, now), {}})
			}
		case replay && strings.Contains(line, `"msg":"Redis available again"`):
			l.closeWindow(logTime(line, now))
		}
		if strings.Contains(line, `"level":"INFO"`) || strings.Contains(line, `"level":"DEBUG"`) {
			continue
		}
		if len(l.lines) >= l.max {
			l.lines = l.lines[1:]
		}
		l.lines = append(l.lines, line)
	}
	return len(p), nil
}

// closeWindow ends an open degraded window (Redis back, or the process
// gone).
func (l *ringLog) closeWindow(at time.Time) {
	if n := len(l.windows); n > 0 && l.windows[n-1][1].IsZero() {
		l.windows[n-1][1] = at
	}
}

func (l *ringLog) degradedWindows() [][2]time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append([][2]time.Time(nil), l.windows...)
	if n := len(out); n > 0 && out[n-1][1].IsZero() {
		out[n-1][1] = time.Now()
	}
	return out
}

func (l *ringLog) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines[max(0, len(l.lines)-n):], "\n")
}

// ---------------------------------------------------------------------------
// Recording.

func (c *campaign) addObs(o obs) {
	c.mu.Lock()
	c.hist.obs[o.code] = append(c.hist.obs[o.code], o)
	c.statuses[answerClass(o)]++
	c.mu.Unlock()
}

// answerClass names what an attempt was told: its status and error code,
// or its transport error.
func answerClass(o obs) string {
	k := strconv.Itoa(o.status)
	if o.err != "" {
		k = "transport error"
		if strings.Contains(o.err, "Client.Timeout") {
			k = "client timeout"
		}
	} else if o.errCode != "" {
		k += " " + o.errCode
	}
	return k
}

func (c *campaign) addCode(rec *codeRec) {
	c.mu.Lock()
	c.hist.addCode(rec)
	c.mu.Unlock()
}

// addFault records a fault event and returns its index (to set its end).
func (c *campaign) addFault(f faultEvent) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hist.faults = append(c.hist.faults, f)
	c.faultKind[f.kind]++
	c.nFaults++
	return len(c.hist.faults) - 1
}

func (c *campaign) endFault(i int) {
	c.mu.Lock()
	c.hist.faults[i].end = time.Now()
	c.mu.Unlock()
}

// ---------------------------------------------------------------------------
// Clients.

func (c *campaign) mint(kind string) *codeRec {
	phone := fmt.Sprintf("139%08d", c.phoneSeq.Add(1)%100_000_000)
	code, err := c.emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: phone})
	if err != nil {
		c.t.Error(err)
		return nil
	}
	rec := &codeRec{code: code, kind: kind, phone: phone, minted: time.Now()}
	c.addCode(rec)
	return rec
}

// preUse spends a code at WeChat before any client sends it, as another
// backend (or an attacker replaying it) would.
func (c *campaign) preUse(code string) {
	toks := c.emu.ValidTokens(appID)
	if len(toks) == 0 {
		return
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Post(c.outside+phonePx+"?access_token="+toks[0], "application/json", strings.NewReader(`{"code":"`+code+`"}`))
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// post sends one attempt for code to replica i.
func (c *campaign) post(client, attempt, i int, code string) obs {
	o := obs{code: code, client: client, attempt: attempt, replica: i, sent: time.Now()}
	req, _ := http.NewRequest(http.MethodPost, c.reps[i].url+"/v1/phone-number", strings.NewReader(`{"code":"`+code+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := c.hc.Do(req)
	if err != nil {
		o.done, o.err = time.Now(), err.Error()
		return o
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	o.done, o.status = time.Now(), resp.StatusCode
	if err != nil {
		o.err = "reading the answer: " + err.Error()
		return o
	}
	var body struct {
		PhoneNumber string `json:"phoneNumber"`
		Replayed    bool   `json:"replayed"`
		Error       struct {
			Code    string `json:"code"`
			Errcode int    `json:"errcode"`
		} `json:"error"`
	}
	_ = json.Unmarshal(b, &body)
	o.phone, o.replayed, o.errCode, o.errno = body.PhoneNumber, body.Replayed, body.Error.Code, body.Error.Errcode
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if n, err := strconv.Atoi(ra); err == nil {
			o.retryAfter = time.Duration(n) * time.Second
		}
	}
	return o
}

// send is a backend with one code: it sends it to replica first and, after
// a timeout, a connection error or a 5xx, retries the same code on another
// replica, until a final answer or its budget ends.
func (c *campaign) send(client int, rng *rand.Rand, rec *codeRec, first int) {
	n := len(c.reps)
	start := time.Now()
	i := first
	for attempt := 1; ; attempt++ {
		o := c.post(client, attempt, i, rec.code)
		c.addObs(o)
		if o.final() {
			return
		}
		if time.Since(start) > c.cfg.budget {
			c.mu.Lock()
			rec.gaveUp = true
			c.gaveUp++
			c.mu.Unlock()
			return
		}
		wait := time.Duration(50+rng.IntN(200)) * time.Millisecond
		if o.retryAfter > 0 {
			wait = min(o.retryAfter, 3*time.Second)
		}
		time.Sleep(wait)
		i = (i + 1 + rng.IntN(n-1)) % n
	}
}

// client runs one backend until the deadline: fresh codes mostly, some
// sent twice at once (a double tap), some WeChat never issued, some used
// elsewhere first.
func (c *campaign) client(id int, rng *rand.Rand, until time.Time) {
	n := len(c.reps)
	for time.Now().Before(until) {
		first := rng.IntN(n)
		switch p := rng.IntN(100); {
		case p < 78:
			if rec := c.mint(codeValid); rec != nil {
				c.send(id, rng, rec, first)
			}
		case p < 86:
			if rec := c.mint(codeDup); rec != nil {
				r2 := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
				var wg sync.WaitGroup
				wg.Go(func() { c.send(id, rng, rec, first) })
				wg.Go(func() { c.send(id+100, r2, rec, (first+1)%n) })
				wg.Wait()
			}
		case p < 93:
			var b [32]byte
			for k := range b {
				b[k] = byte(rng.Uint32())
			}
			rec := &codeRec{code: hex.EncodeToString(b[:]), kind: codeGarbage, minted: time.Now()}
			c.addCode(rec)
			c.send(id, rng, rec, first)
		default:
			if rec := c.mint(codePreUsed); rec != nil {
				c.preUse(rec.code)
				c.send(id, rng, rec, first)
			}
		}
		time.Sleep(time.Duration(50+rng.IntN(250)) * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// Faults.

func sleepUntil(stop <-chan struct{}, d time.Duration) bool {
	select {
	case <-stop:
		return false
	case <-time.After(d):
		return true
	}
}

func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}

// emulatorFaults injects WeChat's faults until stop.
func (c *campaign) emulatorFaults(rng *rand.Rand, stop <-chan struct{}) {
	p := c.cfg.params
	for sleepUntil(stop, between(rng, time.Second, 3*time.Second)) {
		var f wxmock.Fault
		var kind, detail string
		count := 1 + rng.IntN(3)
		ms := func(d time.Duration) int { return int(d / time.Millisecond) }
		switch k := rng.IntN(100); {
		case k < 12:
			kind = "latency-short"
			f = wxmock.Fault{Kind: wxmock.FaultLatency, LatencyMS: ms(between(rng, 100*time.Millisecond, 1500*time.Millisecond)), Count: count}
		case k < 22:
			kind = "latency-deadline" // past the request deadline, within the exchange timeout
			f = wxmock.Fault{Kind: wxmock.FaultLatency, LatencyMS: ms(between(rng, p.requestTimeout+time.Second, 9*time.Second)), Count: count}
		case k < 30:
			kind = "latency-10s" // past Go's 10 s response-header timeout, within the exchange timeout
			f = wxmock.Fault{Kind: wxmock.FaultLatency, LatencyMS: ms(between(rng, 10500*time.Millisecond, p.exchangeTimeout-700*time.Millisecond)), Count: 1}
		case k < 38:
			kind = "latency-beyond" // past every timeout
			f = wxmock.Fault{Kind: wxmock.FaultLatency, LatencyMS: ms(between(rng, p.exchangeTimeout+time.Second, p.exchangeTimeout+4*time.Second)), Count: 1}
		case k < 48:
			kind = "errcode-1"
			f = wxmock.Fault{Kind: wxmock.FaultErrcode, Errcode: -1, Count: count}
		case k < 55:
			kind = "errcode-1-consume"
			f = wxmock.Fault{Kind: wxmock.FaultErrcode, Errcode: -1, Consume: true, Count: 1}
		case k < 61:
			kind = "errcode-45011"
			f = wxmock.Fault{Kind: wxmock.FaultErrcode, Errcode: 45011, Count: count}
		case k < 66:
			kind = "http-5xx"
			f = wxmock.Fault{Kind: wxmock.FaultHTTPStatus, Status: 500 + rng.IntN(5), Count: 1}
		case k < 71:
			kind = "http-5xx-consume"
			f = wxmock.Fault{Kind: wxmock.FaultHTTPStatus, Status: 500 + rng.IntN(5), Consume: true, Count: 1}
		case k < 77:
			kind = "drop-after-consume"
			f = wxmock.Fault{Kind: wxmock.FaultDropAfterConsume, Count: 1}
		case k < 83:
			kind = "rst-after-consume-protocol" // RST_STREAM(PROTOCOL_ERROR) on h2c, TCP RST on HTTP/1
			f = wxmock.Fault{Kind: wxmock.FaultResetAfterConsume, H2Error: "PROTOCOL_ERROR", Count: 1}
		case k < 87:
			kind = "rst-after-consume-internal"
			f = wxmock.Fault{Kind: wxmock.FaultResetAfterConsume, Count: 1}
		case k < 90:
			kind = "reset-before-read"
			f = wxmock.Fault{Kind: wxmock.FaultResetBeforeRead, Count: 1}
		case k < 92:
			kind = "errcode-40001" // WeChat rejects a token it still holds valid
			f = wxmock.Fault{Kind: wxmock.FaultErrcode, Errcode: 40001, Count: 1}
		case k < 97:
			kind = "token-revoke"
		default:
			kind = "token-fetch-refused"
			ec := 40164
			if rng.IntN(4) == 0 {
				ec = 45009
			}
			detail = fmt.Sprintf("errcode %d, then revoke", ec)
			for _, ep := range []string{wxmock.EndpointStableToken, wxmock.EndpointToken} {
				if _, err := c.emu.AddFault(wxmock.Fault{Endpoint: ep, Kind: wxmock.FaultErrcode, Errcode: ec, Count: 1}); err != nil {
					c.t.Error(err)
				}
			}
		}
		if kind == "token-revoke" || kind == "token-fetch-refused" {
			if _, err := c.emu.RevokeTokens(appID); err != nil {
				c.t.Error(err)
			}
		} else {
			f.Endpoint = wxmock.EndpointPhone
			if _, err := c.emu.AddFault(f); err != nil {
				c.t.Error(err)
				continue
			}
			detail = describeFault(f)
		}
		c.addFault(faultEvent{class: faultEmulator, kind: kind, detail: detail, replica: -1, start: time.Now()})
	}
}

func describeFault(f wxmock.Fault) string {
	var b strings.Builder
	switch f.Kind {
	case wxmock.FaultLatency:
		fmt.Fprintf(&b, "%d ms", f.LatencyMS)
	case wxmock.FaultErrcode:
		fmt.Fprintf(&b, "errcode %d", f.Errcode)
	case wxmock.FaultHTTPStatus:
		fmt.Fprintf(&b, "HTTP %d", f.Status)
	}
	if f.Consume {
		b.WriteString(" after using the code")
	}
	if f.H2Error != "" {
		b.WriteString(" " + f.H2Error)
	}
	fmt.Fprintf(&b, " ×%d", f.Count)
	return strings.TrimSpace(b.String())
}

// infraFaults breaks Redis and the replicas until stop.
func (c *campaign) infraFaults(rng *rand.Rand, stop <-chan struct{}) {
	for sleepUntil(stop, between(rng, 2*time.Second, 6*time.Second)) {
		hold := between(rng, 200*time.Millisecond, 2*time.Second)
		switch k := rng.IntN(100); {
		case k < 10:
			d := between(rng, 20*time.Millisecond, redisSlowMax)
			i := c.addFault(faultEvent{class: faultRedisLow, kind: "redis-slow", detail: fmt.Sprintf("%v per chunk", d), replica: -1, start: time.Now()})
			c.check(c.proxy.Delay(d))
			sleepUntil(stop, between(rng, time.Second, 4*time.Second))
			c.check(c.proxy.Pass())
			c.endFault(i)
		case k < 20:
			d := between(rng, redisStallMin, 600*time.Millisecond)
			i := c.addFault(faultEvent{class: faultRedis, kind: "redis-stall", detail: fmt.Sprintf("%v per chunk", d), replica: -1, start: time.Now()})
			c.check(c.proxy.Delay(d))
			sleepUntil(stop, between(rng, time.Second, 4*time.Second))
			c.check(c.proxy.Pass())
			c.endFault(i)
		case k < 32:
			i := c.addFault(faultEvent{class: faultRedis, kind: "redis-pause", detail: hold.String(), replica: -1, start: time.Now()})
			c.check(c.proxy.Pause())
			sleepUntil(stop, hold)
			c.check(c.proxy.Pass())
			c.endFault(i)
		case k < 42:
			hold = between(rng, 300*time.Millisecond, 3*time.Second)
			i := c.addFault(faultEvent{class: faultRedis, kind: "redis-cut", detail: hold.String(), replica: -1, start: time.Now()})
			c.check(c.proxy.Cut())
			sleepUntil(stop, hold)
			c.check(c.proxy.Pass())
			c.endFault(i)
		case k < 50:
			c.addFault(faultEvent{class: faultRedis, kind: "redis-reset", replica: -1, start: time.Now()})
			c.proxy.Reset()
		case k < 60:
			i := c.addFault(faultEvent{class: faultRedis, kind: "redis-sigstop", detail: hold.String(), replica: -1, start: time.Now()})
			c.redis.pause()
			sleepUntil(stop, hold)
			c.redis.resume()
			c.endFault(i)
		case k < 70:
			i := c.addFault(faultEvent{class: faultWipe, kind: "redis-restart-empty", detail: "SIGKILL, down " + hold.String(), replica: -1, start: time.Now()})
			c.redis.stop()
			sleepUntil(stop, hold)
			c.redis.start()
			c.endFault(i)
		case k < 85:
			r := c.reps[rng.IntN(len(c.reps))]
			i := c.addFault(faultEvent{class: faultKill, kind: "replica-sigkill", detail: fmt.Sprintf("replica %d", r.slot), replica: r.slot, start: time.Now()})
			r.stop(syscall.SIGKILL, 10*time.Second)
			sleepUntil(stop, between(rng, 500*time.Millisecond, 3*time.Second))
			c.check(r.start())
			c.endFault(i)
		default:
			r := c.reps[rng.IntN(len(c.reps))]
			i := c.addFault(faultEvent{class: faultTerm, kind: "replica-sigterm", detail: fmt.Sprintf("replica %d", r.slot), replica: r.slot, start: time.Now()})
			r.stop(syscall.SIGTERM, 30*time.Second)
			sleepUntil(stop, between(rng, 500*time.Millisecond, 2*time.Second))
			c.check(r.start())
			c.endFault(i)
		}
	}
}

func (c *campaign) check(err error) {
	if err != nil {
		c.t.Error(err)
	}
}

// heal ends every fault: emulator faults cleared, the proxy passing,
// Redis running, every replica up.
func (c *campaign) heal() {
	c.emu.ClearFaults()
	c.check(c.proxy.Pass())
	c.redis.resume()
	c.redis.start()
	for _, r := range c.reps {
		if !r.running() {
			c.check(r.start())
		}
	}
}

// ---------------------------------------------------------------------------
// The run.

// settle closes idle connections on both sides of the replicas, so that
// goroutine counts compare like with like.
func (c *campaign) settle() {
	c.hc.CloseIdleConnections()
	for _, s := range c.emuSrv {
		s.SetKeepAlivesEnabled(false) // closes idle HTTP/1 connections
		s.SetKeepAlivesEnabled(true)
	}
}

// measure returns replica r's goroutine count once it is at most want
// (or after 15 s of settling, its lowest count).
func (c *campaign) measure(r *campReplica, want int) (int, error) {
	best := -1
	var err error
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); {
		c.settle()
		time.Sleep(300 * time.Millisecond)
		var g int
		if g, err = r.goroutines(); err != nil {
			continue
		}
		if best < 0 || g < best {
			best = g
		}
		if want >= 0 && best <= want {
			break
		}
		if want < 0 && time.Until(end) < 13*time.Second {
			break // a baseline: the lowest of a few scrapes
		}
	}
	if best < 0 {
		return 0, err
	}
	return best, nil
}

func (c *campaign) run(d time.Duration) {
	// Warm up: a few codes through every replica (tokens, connections),
	// then the goroutine baselines.
	for i := range c.reps {
		for range 3 {
			if rec := c.mint(codeValid); rec != nil {
				c.send(0, rand.New(rand.NewPCG(c.seed, uint64(i))), rec, i)
			}
		}
	}
	for _, r := range c.reps {
		g, err := c.measure(r, -1)
		if err != nil {
			c.t.Fatalf("replica %d: /metrics: %v", r.slot, err)
		}
		r.baseline = g
	}

	stop := make(chan struct{})
	var faults sync.WaitGroup
	faults.Go(func() { c.emulatorFaults(rand.New(rand.NewPCG(c.seed, 1)), stop) })
	faults.Go(func() { c.infraFaults(rand.New(rand.NewPCG(c.seed, 2)), stop) })
	until := time.Now().Add(d)
	var clients sync.WaitGroup
	for id := 1; id <= c.cfg.clients; id++ {
		rng := rand.New(rand.NewPCG(c.seed, 100+uint64(id)))
		clients.Go(func() { c.client(id, rng, until) })
	}
	time.Sleep(time.Until(until))
	// The faults stop; clients finish the codes they hold.
	close(stop)
	faults.Wait()
	c.heal()
	clients.Wait()
}

// finish waits until the fleet is quiet, measures the goroutines and
// returns the history.
func (c *campaign) finish() (*history, int) {
	p := c.cfg.params
	// Detached exchanges end within the exchange timeout; claims within
	// their lease.
	quiet := 0
	for end := time.Now().Add(p.exchangeTimeout + 10*time.Second); time.Now().Before(end) && quiet < 10; {
		if c.emuActive.Load() == 0 {
			quiet++
		} else {
			quiet = 0
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	var gor []goroutineCheck
	for _, r := range c.reps {
		g, err := c.measure(r, r.baseline+p.goroutineSlack)
		gc := goroutineCheck{replica: r.slot, baseline: r.baseline, after: g}
		if err != nil {
			gc.err = err.Error()
		}
		gor = append(gor, gc)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.hist
	h.gor = gor
	for _, r := range c.reps {
		h.degraded[r.slot] = r.logs.degradedWindows()
	}
	for _, cl := range c.emu.Calls() {
		if cl.Endpoint != wxmock.EndpointPhone {
			continue
		}
		slot, ok := c.slotOf[cl.Local]
		if !ok {
			slot = -2
		}
		h.calls[cl.Code] = append(h.calls[cl.Code], call{Call: cl, replica: slot})
	}
	return h, c.nFaults
}

// printSummary prints what ran: traffic, answers, faults, exemptions.
func (c *campaign) printSummary(h *history, res checkResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	kinds := map[string]int{}
	attempts := 0
	for _, code := range h.order {
		kinds[h.codes[code].kind]++
		attempts += len(h.obs[code])
	}
	ncalls, delivered := 0, 0
	for _, cs := range h.calls {
		for _, cl := range cs {
			ncalls++
			if cl.Answered && cl.Delivered && cl.replica >= 0 {
				delivered++
			}
		}
	}
	fmt.Printf("campaign: %d replicas (upstream h2c: %v), %d clients, request timeout %v, exchange timeout %v, Redis timeouts %v\n",
		len(c.reps), c.cfg.h2c, c.cfg.clients, h.params.requestTimeout, h.params.exchangeTimeout, redisTimeout)
	fmt.Printf("campaign: codes by kind: %s; client attempts %d; gave up (budget %v) %d\n", sortedCounts(kinds), attempts, c.cfg.budget, c.gaveUp)
	fmt.Printf("campaign: answers: %s\n", sortedCounts(c.statuses))
	if c.gaveUp > 0 {
		// What kept them from a final answer (every attempt counted).
		given := map[string]int{}
		for _, code := range h.order {
			if h.codes[code].gaveUp {
				for _, o := range h.obs[code] {
					given[answerClass(o)]++
				}
			}
		}
		fmt.Printf("campaign: answers to the codes given up: %s\n", sortedCounts(given))
	}
	fmt.Printf("campaign: WeChat calls %d, numbers delivered to replicas %d\n", ncalls, delivered)
	fmt.Printf("campaign: faults by kind: %s\n", sortedCounts(c.faultKind))
	ex := map[string]int{}
	for _, e := range res.exempt {
		ex[e.reason]++
	}
	fmt.Printf("campaign: exempt: %s; second sends excused by a Redis outage: %d; resends after a -1 that had used the code (documented): %d\n",
		sortedCounts(ex), res.excusedResends, res.resendsAfterBusy)
	for _, g := range h.gor {
		fmt.Printf("campaign: replica %d: goroutines baseline %d, after %d; replay store on its local fallback %d times (from its log)\n",
			g.replica, g.baseline, g.after, len(h.degraded[g.replica]))
	}
	byInv := map[string]int{}
	for _, v := range res.violations {
		byInv[v.inv]++
	}
	fmt.Printf("campaign: violations by invariant: %s\n", sortedCounts(byInv))
}

func sortedCounts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
