// Package reliability holds wxphone's fault-matrix and soak tests: every
// fault of docs/reliability.md is injected into a fleet of replicas (in
// process through replica.Build, or real `wxphone serve` processes) that
// share a private redis-server, and each test checks from the emulator's
// side that no result WeChat gave was lost and that no code went to WeChat
// again after it may have been used.
//
// The package has test files only.
package reliability

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/logging"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/config"
	"github.com/wxphone/wxphone/internal/logtest"
	"github.com/wxphone/wxphone/redis"
	"github.com/wxphone/wxphone/replica"
	"github.com/wxphone/wxphone/service"
	"github.com/wxphone/wxphone/wxmock"
)

const (
	appID   = "wxre1iab1e00000001"
	secret  = "reliability-secret-0123456789"
	apiKey  = "reliability-api-key-0123456789"
	phonePx = "/wxa/business/getuserphonenumber"
)

var dataKey = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))

func TestMain(m *testing.M) {
	logging.Disable() // go-redis logs every failed dial; the outage tests cause many
	code := m.Run()
	binOnce.cleanup()
	os.Exit(code)
}

// ---------------------------------------------------------------------------
// A private redis-server that the test may kill, restart, pause and resume.
// The shared Redis on 6379 is never touched.

type redisProc struct {
	t      testing.TB
	bin    string
	port   int
	dir    string
	aof    bool
	mu     sync.Mutex
	cmd    *exec.Cmd
	paused bool
}

// needRedis returns the redis-server binary, or skips the test (fails under
// CI, which installs it).
func needRedis(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server not found (CI installs it)")
		}
		t.Skip("redis-server not found")
	}
	return bin
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// redisPort picks a free port for a redis-server that the test will stop
// and restart on the same port. It is taken below the kernel's ephemeral
// range, so that while the server is down no other test's listener on
// port 0 (nor any outgoing connection) can take it over; a restart would
// otherwise find an impostor answering on its port.
func redisPort(t testing.TB) int {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				lo = n
			}
		}
	}
	if lo <= 20000 {
		return freePort(t)
	}
	for range 100 {
		port := 10000 + mrand.IntN(lo-10000)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			ln.Close()
			return port
		}
	}
	return freePort(t)
}

// startRedis starts a private redis-server. With aof its data survives a
// restart (appendfsync always), as a production Redis with persistence.
func startRedis(t testing.TB, aof bool) *redisProc {
	t.Helper()
	r := &redisProc{t: t, bin: needRedis(t), port: redisPort(t), dir: t.TempDir(), aof: aof}
	r.start()
	t.Cleanup(r.kill)
	return r
}

func (r *redisProc) addr() string { return fmt.Sprintf("127.0.0.1:%d", r.port) }
func (r *redisProc) url() string  { return "redis://" + r.addr() + "/0" }

func (r *redisProc) start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return
	}
	args := []string{"--bind", "127.0.0.1", "--port", fmt.Sprint(r.port), "--save", "", "--dir", r.dir}
	if r.aof {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		cmd := exec.Command(r.bin, args...)
		if err = cmd.Start(); err != nil {
			r.t.Fatal(err)
		}
		c := goredis.NewClient(&goredis.Options{Addr: r.addr(), MaxRetries: -1})
		up := false
		for i := 0; i < 300; i++ {
			// The server answering must be this process, not another
			// test's server that took the port while ours was down.
			if info, err := c.Info(context.Background(), "server").Result(); err == nil {
				if !strings.Contains(info, fmt.Sprintf("process_id:%d\r", cmd.Process.Pid)) {
					c.Close()
					_ = cmd.Process.Kill()
					_ = cmd.Wait()
					r.t.Fatalf("another server answers on port %d", r.port)
				}
				up = true
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		c.Close()
		if up {
			r.cmd, r.paused = cmd, false
			return
		}
		// The port may still be held by the previous process's socket.
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		time.Sleep(50 * time.Millisecond)
	}
	r.t.Fatalf("redis-server did not start on %s", r.addr())
}

// stop kills the server (SIGKILL): connections break at once.
func (r *redisProc) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	if r.paused {
		_ = r.cmd.Process.Signal(syscall.SIGCONT)
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd, r.paused = nil, false
}

func (r *redisProc) kill() { r.stop() }

// pause freezes the server (SIGSTOP): connections stay open and nothing
// answers, as with a Redis stuck on a slow command or a saturated host.
func (r *redisProc) pause() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil && !r.paused {
		_ = r.cmd.Process.Signal(syscall.SIGSTOP)
		r.paused = true
	}
}

func (r *redisProc) resume() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil && r.paused {
		_ = r.cmd.Process.Signal(syscall.SIGCONT)
		r.paused = false
	}
}

// ---------------------------------------------------------------------------
// The emulator, behind a recorder of what reached WeChat.

// wireCall is one getuserphonenumber request that reached the emulator.
type wireCall struct {
	at      time.Time
	outcome string // "ok", "errcode:N", "http:S", "hijacked" (reset or drop) or "noanswer"
}

// mayHaveUsed reports whether, after this call, the code may have been used
// as far as the sender can tell (so it must never be sent again). WeChat's
// -1, token errors and 45011 leave the code unused.
func (c wireCall) mayHaveUsed() bool {
	switch c.outcome {
	case "errcode:-1", "errcode:40001", "errcode:40014", "errcode:42001", "errcode:41001", "errcode:45011", "errcode:40029", "errcode:40013":
		return false
	}
	return true
}

type wire struct {
	emu *wxmock.Server
	// hold, when set, is called after the emulator produced its answer
	// and before it is written (to kill a replica between the two).
	hold atomic.Pointer[func(code string)]
	// arrived, when set, is called as a request reaches the emulator.
	arrived atomic.Pointer[func(code string)]

	inflight atomic.Int64

	mu    sync.Mutex
	calls map[string][]wireCall
}

// waitIdle waits until no request has been at the emulator for a while.
func (w *wire) waitIdle(d time.Duration) {
	quiet := 0
	for end := time.Now().Add(d); time.Now().Before(end) && quiet < 5; {
		if w.inflight.Load() == 0 {
			quiet++
		} else {
			quiet = 0
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (w *wire) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	w.inflight.Add(1)
	defer w.inflight.Add(-1)
	if r.URL.Path != phonePx {
		w.emu.ServeHTTP(rw, r)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, wxmock.MaxBodyBytes))
	r.Body = io.NopCloser(bytes.NewReader(body))
	var pr struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(body, &pr)
	if f := w.arrived.Load(); f != nil {
		(*f)(pr.Code)
	}
	rec := &recWriter{header: http.Header{}, rw: rw}
	w.emu.ServeHTTP(rec, r)
	call := wireCall{at: time.Now()}
	switch {
	case rec.hijacked:
		call.outcome = "hijacked"
	case rec.status == 0:
		call.outcome = "noanswer"
	case rec.status != http.StatusOK:
		call.outcome = fmt.Sprintf("http:%d", rec.status)
	default:
		var env struct {
			Errcode int `json:"errcode"`
		}
		_ = json.Unmarshal(rec.body.Bytes(), &env)
		call.outcome = "ok"
		if env.Errcode != 0 {
			call.outcome = fmt.Sprintf("errcode:%d", env.Errcode)
		}
	}
	w.mu.Lock()
	w.calls[pr.Code] = append(w.calls[pr.Code], call)
	w.mu.Unlock()
	if rec.hijacked {
		return
	}
	if f := w.hold.Load(); f != nil && call.outcome == "ok" {
		(*f)(pr.Code)
	}
	if rec.status != 0 {
		for k, v := range rec.header {
			rw.Header()[k] = v
		}
		rw.WriteHeader(rec.status)
		_, _ = rw.Write(rec.body.Bytes())
	}
}

// callsOf returns the calls that reached WeChat with code.
func (w *wire) callsOf(code string) []wireCall {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]wireCall(nil), w.calls[code]...)
}

// resentAfterUse counts calls with code that followed one after which the
// code may have been used: sends that broke the rule.
func (w *wire) resentAfterUse(code string) int {
	n, used := 0, false
	for _, c := range w.callsOf(code) {
		if used {
			n++
		}
		used = used || c.mayHaveUsed()
	}
	return n
}

// recWriter buffers the emulator's answer so the wire can classify it, and
// passes a hijack (reset_before_read, drop_after_consume) through.
type recWriter struct {
	header   http.Header
	rw       http.ResponseWriter
	status   int
	body     bytes.Buffer
	hijacked bool
}

func (r *recWriter) Header() http.Header { return r.header }
func (r *recWriter) WriteHeader(s int) {
	if r.status == 0 {
		r.status = s
	}
}
func (r *recWriter) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
func (r *recWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	r.hijacked = true
	return r.rw.(http.Hijacker).Hijack()
}

// ---------------------------------------------------------------------------
// The ledger: what every client request received.

type result struct {
	replica  int
	status   int
	errCode  string // error.code of an error answer
	phone    string // phoneNumber of a 200
	replayed bool
	retryAft string
	start    time.Time
	end      time.Time
	err      error // transport error (no answer)
}

type ledger struct {
	mu    sync.Mutex
	want  map[string]string // code -> phone number WeChat holds for it
	got   map[string][]result
	order []string
}

func newLedger() *ledger {
	return &ledger{want: map[string]string{}, got: map[string][]result{}}
}

func (l *ledger) expect(code, phone string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.want[code]; !ok {
		l.order = append(l.order, code)
	}
	l.want[code] = phone
}

func (l *ledger) add(code string, r result) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.want[code]; !ok {
		l.want[code] = ""
		l.order = append(l.order, code)
	}
	l.got[code] = append(l.got[code], r)
}

func (l *ledger) results(code string) []result {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]result(nil), l.got[code]...)
}

// ledgerReport is the outcome of checking the ledger against the emulator.
type ledgerReport struct {
	codes, answered, delivered, excused int
	// undelivered counts codes WeChat answered with a number that never
	// left WeChat (drop_after_consume, reset_after_consume, a replica that
	// had hung up during a latency): no client can get it, so it is not
	// counted as lost.
	undelivered   int
	lost          []string // a number WeChat delivered that no client received, not excused
	wrong         []string // a 200 with another number
	resent        []string // sent again after it may have been used, not excused
	resentExcused int
}

// check compares the ledger with the emulator's counters and the wire: a
// number WeChat delivered (wxmock CodeStats.Delivered) must reach a client
// as a 200. excuseLoss and excuseResend name the documented reason a code
// may be lost or resent ("" = not excused).
func (l *ledger) check(emu *wxmock.Server, w *wire, excuseLoss, excuseResend func(code string, rs []result) string) ledgerReport {
	st := emu.Stats()
	l.mu.Lock()
	codes := append([]string(nil), l.order...)
	l.mu.Unlock()
	var rep ledgerReport
	for _, code := range codes {
		rep.codes++
		rs := l.results(code)
		l.mu.Lock()
		want := l.want[code]
		l.mu.Unlock()
		ok := false
		for _, r := range rs {
			if r.status == http.StatusOK {
				ok = true
				if want != "" && r.phone != want {
					rep.wrong = append(rep.wrong, code)
				}
			}
		}
		if ok {
			rep.delivered++
		}
		cs := st.Codes[code]
		if cs.Answered > 0 {
			rep.answered++
		}
		switch {
		case ok:
		case cs.Delivered > 0:
			if excuseLoss != nil && excuseLoss(code, rs) != "" {
				rep.excused++
			} else {
				rep.lost = append(rep.lost, code)
			}
		case cs.Answered > 0:
			rep.undelivered++
		}
		if w != nil && w.resentAfterUse(code) > 0 {
			if excuseResend != nil && excuseResend(code, rs) != "" {
				rep.resentExcused++
			} else {
				rep.resent = append(rep.resent, code)
			}
		}
	}
	return rep
}

func (rep ledgerReport) String() string {
	return fmt.Sprintf("codes=%d answered_by_wechat=%d undelivered_by_wechat=%d delivered=%d excused=%d lost=%d wrong_number=%d resent_after_use=%d (excused %d)",
		rep.codes, rep.answered, rep.undelivered, rep.delivered, rep.excused, len(rep.lost), len(rep.wrong), len(rep.resent), rep.resentExcused)
}

// mustHold fails t when the report shows a lost result, a wrong number or
// an unexcused resend.
func (rep ledgerReport) mustHold(t testing.TB, l *ledger, w *wire) {
	t.Helper()
	describe := func(codes []string) string {
		var b strings.Builder
		for i, c := range codes {
			if i == 5 {
				b.WriteString(" …")
				break
			}
			fmt.Fprintf(&b, "\n  %s…: wire %v, client %v", c[:min(len(c), 12)], w.callsOf(c), l.results(c))
		}
		return b.String()
	}
	if len(rep.lost) > 0 {
		t.Errorf("results WeChat gave and no client received: %d%s", len(rep.lost), describe(rep.lost))
	}
	if len(rep.wrong) > 0 {
		t.Errorf("200s with another code's number: %d%s", len(rep.wrong), describe(rep.wrong))
	}
	if len(rep.resent) > 0 {
		t.Errorf("codes sent to WeChat again after they may have been used: %d%s", len(rep.resent), describe(rep.resent))
	}
}

func (r result) String() string {
	if r.err != nil {
		return fmt.Sprintf("r%d:err(%v)", r.replica, r.err)
	}
	if r.status == http.StatusOK {
		s := fmt.Sprintf("r%d:200", r.replica)
		if r.replayed {
			s += "(replayed)"
		}
		return s
	}
	return fmt.Sprintf("r%d:%d %s", r.replica, r.status, r.errCode)
}

// ---------------------------------------------------------------------------
// The fleet.

type fleetOpts struct {
	replicas        int
	requestTimeout  time.Duration // default 3s
	exchangeTimeout time.Duration // default 5s
	token           wxphone.TokenOptions
	redis           redis.Options // default read/write timeouts 300 ms (see newFleet)
	defaultRedis    bool          // keep the redis package's short defaults
	aof             bool
	noRedis         bool
	httpClient      func() *http.Client
	emu             wxmock.Options
	logLevel        string // replica log level; logs are printed when the test fails
}

type member struct {
	r   *replica.Replica
	hs  *httptest.Server
	url string
	log *replicaLog
}

// replicaLog receives a replica's JSON log: it records when the replay
// store fell back to the local store and when Redis was back, and keeps
// the last lines at warn level and above for a failing test's report.
type replicaLog struct {
	mu      sync.Mutex
	windows [][2]time.Time // degraded from, to (zero: still degraded)
	recent  []string
}

func (l *replicaLog) Write(p []byte) (int, error) {
	line := string(p)
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	replay := strings.Contains(line, `"component":"replay"`)
	switch {
	case replay && strings.Contains(line, `"msg":"Redis unavailable`):
		l.windows = append(l.windows, [2]time.Time{now, {}})
	case replay && strings.Contains(line, `"msg":"Redis available again"`):
		if n := len(l.windows); n > 0 && l.windows[n-1][1].IsZero() {
			l.windows[n-1][1] = now
		}
	}
	if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
		if len(l.recent) >= 200 {
			l.recent = l.recent[1:]
		}
		l.recent = append(l.recent, strings.TrimSpace(line))
	}
	return len(p), nil
}

// degradedDuring reports whether the replica's replay store was on its
// local fallback at some time between from and to.
func (l *replicaLog) degradedDuring(from, to time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range l.windows {
		end := w[1]
		if end.IsZero() {
			end = time.Now()
		}
		if from.Before(end.Add(50*time.Millisecond)) && to.After(w[0]) {
			return true
		}
	}
	return false
}

func (l *replicaLog) degradations() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.windows)
}

// reset forgets closed windows; a window still open stays (a breaker
// closes only when a call probes Redis again).
func (l *replicaLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	var open [][2]time.Time
	for _, w := range l.windows {
		if w[1].IsZero() {
			open = append(open, w)
		}
	}
	l.windows, l.recent = open, nil
}

func (l *replicaLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.recent, "\n")
}

// degraded reports whether a replica that served one of rs was on its
// local replay store during that request: its claim may be invisible to
// the other replicas.
func (f *fleet) degraded(rs []result) bool {
	for _, r := range rs {
		if r.err == nil && f.members[r.replica].log.degradedDuring(r.start, r.end) {
			return true
		}
	}
	return false
}

type fleet struct {
	t       testing.TB
	emu     *wxmock.Server
	wire    *wire
	emuTS   *httptest.Server
	redis   *redisProc
	members []*member
	hc      *http.Client
	ledger  *ledger
	opts    fleetOpts
	prefix  string
}

func newEmulator(t testing.TB, o wxmock.Options) (*wxmock.Server, *wire, *httptest.Server) {
	t.Helper()
	o.Apps = []wxmock.App{{AppID: appID, Secret: secret}}
	emu, err := wxmock.New(o)
	if err != nil {
		t.Fatal(err)
	}
	w := &wire{emu: emu, calls: map[string][]wireCall{}}
	ts := httptest.NewServer(w)
	t.Cleanup(ts.Close)
	return emu, w, ts
}

func newFleet(t testing.TB, o fleetOpts) *fleet {
	t.Helper()
	if o.replicas == 0 {
		o.replicas = 3
	}
	if o.requestTimeout == 0 {
		o.requestTimeout = 3 * time.Second
	}
	if o.exchangeTimeout == 0 {
		o.exchangeTimeout = 5 * time.Second
	}
	if !o.defaultRedis {
		// Generous enough that a loaded CI machine running the race
		// detector does not trip the breaker by accident; the Redis-slow
		// row keeps the defaults.
		if o.redis.ReadTimeout == 0 {
			o.redis.ReadTimeout = 300 * time.Millisecond
		}
		if o.redis.WriteTimeout == 0 {
			o.redis.WriteTimeout = 300 * time.Millisecond
		}
	}
	f := &fleet{t: t, ledger: newLedger(), opts: o, prefix: fmt.Sprintf("rel%d", time.Now().UnixNano())}
	f.emu, f.wire, f.emuTS = newEmulator(t, o.emu)
	f.hc = &http.Client{Timeout: o.requestTimeout + 10*time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(f.hc.CloseIdleConnections)
	env := map[string]string{
		"WX_APPID": appID, "WX_SECRET": secret, "WX_API_BASE": f.emuTS.URL,
		"WXPHONE_API_KEYS": apiKey, "WXPHONE_DATA_KEY": dataKey, "WXPHONE_RATE_LIMIT": "0",
		"WXPHONE_REQUEST_TIMEOUT":  o.requestTimeout.String(),
		"WXPHONE_EXCHANGE_TIMEOUT": o.exchangeTimeout.String(),
		"WXPHONE_LOG_LEVEL":        "info",
	}
	if o.logLevel != "" {
		env["WXPHONE_LOG_LEVEL"] = o.logLevel
	}
	if !o.noRedis {
		f.redis = startRedis(t, o.aof)
		env["REDIS_URL"] = f.redis.url()
	}
	cfg, err := config.Load(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	for i := range o.replicas {
		logs := &replicaLog{}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("replica %d warnings (last 200):\n%s", i, logs.String())
			}
		})
		ro := replica.Options{NoWarm: true, RedisPrefix: f.prefix, Redis: o.redis, Token: o.token, LogOut: logs}
		if o.httpClient != nil {
			ro.HTTPClient = o.httpClient()
		}
		r, err := replica.Build(context.Background(), cfg, ro)
		if err != nil {
			t.Fatal(err)
		}
		m := &member{r: r, hs: httptest.NewServer(r.Server.Handler()), log: logs}
		m.url = m.hs.URL
		t.Cleanup(func() {
			m.hs.Close()
			_ = r.Close()
		})
		f.members = append(f.members, m)
	}
	return f
}

// mint mints a code for a fresh number and records it in the ledger.
func (f *fleet) mint() string {
	f.t.Helper()
	return mintCode(f.t, f.emu, f.ledger)
}

var phoneSeq atomic.Int64

func mintCode(t testing.TB, emu *wxmock.Server, l *ledger) string {
	t.Helper()
	phone := fmt.Sprintf("139%08d", phoneSeq.Add(1)%100_000_000)
	code, err := emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: phone})
	if err != nil {
		t.Fatal(err)
	}
	l.expect(code, phone)
	return code
}

// exchange posts code to replica i and records the answer.
func (f *fleet) exchange(i int, code string) result {
	return postCode(f.hc, f.members[i%len(f.members)].url, i%len(f.members), code, f.ledger)
}

func postCode(hc *http.Client, base string, idx int, code string, l *ledger) result {
	r := result{replica: idx, start: time.Now()}
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/phone-number", strings.NewReader(`{"code":"`+code+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := hc.Do(req)
	if err != nil {
		r.err, r.end = err, time.Now()
		l.add(code, r)
		return r
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	r.end, r.status, r.retryAft = time.Now(), resp.StatusCode, resp.Header.Get("Retry-After")
	var body struct {
		PhoneNumber string `json:"phoneNumber"`
		Replayed    bool   `json:"replayed"`
		Error       struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(b, &body)
	r.phone, r.replayed, r.errCode = body.PhoneNumber, body.Replayed, body.Error.Code
	l.add(code, r)
	return r
}

// until retries code on the given replicas (round robin) while the answer
// is "retry with the same code" (504 upstream_timeout), up to d.
func (f *fleet) until(d time.Duration, code string, replicas ...int) result {
	deadline := time.Now().Add(d)
	for k := 0; ; k++ {
		r := f.exchange(replicas[k%len(replicas)], code)
		if r.errCode != "upstream_timeout" || time.Now().After(deadline) {
			return r
		}
	}
}

func (f *fleet) phoneCalls() int64 { return f.emu.Stats().Endpoints.Phone.Calls }

func (f *fleet) stable() wxmock.StableTokenStats { return f.emu.Stats().Endpoints.StableToken }

func (f *fleet) fault(fl wxmock.Fault) string {
	f.t.Helper()
	id, err := f.emu.AddFault(fl)
	if err != nil {
		f.t.Fatal(err)
	}
	return id
}

// warm gives every replica a token, so a test's counts start from steady
// state.
func (f *fleet) warm() {
	f.t.Helper()
	for i, m := range f.members {
		if err := m.r.Service.Warm(context.Background()); err != nil {
			f.t.Fatalf("warm replica %d: %v", i, err)
		}
	}
}

// expectAnswer fails unless r is a 200 with code's number.
func (f *fleet) expectAnswer(r result, code string) {
	f.t.Helper()
	f.ledger.mu.Lock()
	want := f.ledger.want[code]
	f.ledger.mu.Unlock()
	if r.status != http.StatusOK || r.phone != want {
		f.t.Fatalf("want 200 with the code's number, got %v (phone %q, want %q)", r, r.phone, want)
	}
}

func expectError(t testing.TB, r result, status int, code string) {
	t.Helper()
	if r.status != status || r.errCode != code {
		t.Fatalf("want %d %s, got %v", status, code, r)
	}
}

// ---------------------------------------------------------------------------
// The wxphone binary, for the process-level tests.

type binBuild struct {
	once sync.Once
	dir  string
	path string
	err  error
}

var binOnce binBuild

func (b *binBuild) cleanup() {
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
}

// wxphoneBinary builds cmd/wxphone once per test run into a temp dir.
func wxphoneBinary(t testing.TB) string {
	t.Helper()
	binOnce.once.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		}
		binOnce.dir, binOnce.err = os.MkdirTemp("", "wxphone-reliability-")
		if binOnce.err != nil {
			return
		}
		binOnce.path = filepath.Join(binOnce.dir, "wxphone")
		cmd := exec.Command(goBin, "build", "-o", binOnce.path, "github.com/wxphone/wxphone/cmd/wxphone")
		out, err := cmd.CombinedOutput()
		if err != nil {
			binOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binOnce.err != nil {
		t.Fatal(binOnce.err)
	}
	return binOnce.path
}

// proc is one `wxphone serve` process.
type proc struct {
	t    testing.TB
	cmd  *exec.Cmd
	url  string
	addr string
	logs *logtest.Buffer
	done chan struct{}
	exit error
}

// startProc runs `wxphone serve` with env (plus PATH and HOME) on a free
// loopback port and waits until it serves /healthz.
func startProc(t testing.TB, env map[string]string) *proc {
	t.Helper()
	bin := wxphoneBinary(t)
	p := &proc{t: t, logs: &logtest.Buffer{}, done: make(chan struct{})}
	p.addr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p.url = "http://" + p.addr
	cmd := exec.Command(bin, "serve")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "WXPHONE_ADDR=" + p.addr}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.cmd = cmd
	go func() { p.exit = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("wxphone serve on %s logged:\n%s", p.addr, p.logs.String())
		}
	})
	hc := &http.Client{Timeout: time.Second}
	defer hc.CloseIdleConnections()
	for i := 0; ; i++ {
		resp, err := hc.Get(p.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("wxphone serve exited: %v\n%s", p.exit, p.logs.String())
		default:
		}
		if i > 1000 {
			t.Fatalf("wxphone serve never became healthy\n%s", p.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *proc) signal(sig os.Signal) { _ = p.cmd.Process.Signal(sig) }

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		p.t.Fatalf("process still running after %v\n%s", d, p.logs.String())
	}
	var ee *exec.ExitError
	if errors.As(p.exit, &ee) {
		return ee.ExitCode()
	}
	if p.exit != nil {
		return -1
	}
	return 0
}

// serviceReq is a direct service request for code (no HTTP).
func serviceReq(code string) service.Request {
	return service.Request{Code: wxphone.Secret(code), Caller: "reliability-test"}
}

// deliveredLocked is delivered with l.mu held.
func (l *ledger) deliveredLocked(code string) bool {
	for _, r := range l.got[code] {
		if r.status == http.StatusOK {
			return true
		}
	}
	return false
}
