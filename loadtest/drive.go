package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// target is where a window sends its requests: the service replicas or
// the emulator's phone endpoint directly.
type target struct {
	direct bool
	urls   []string // service base URLs, or the emulator's phone URL with the token
	apps   []app    // app i%len(apps) names request i (service, several apps)
	apiKey string
	prefix string // code prefix, unique per window
	n      atomic.Uint64
}

// prefix returns a code prefix no other window of the run uses.
func (c *cluster) prefix(name string) string {
	c.windows++
	return fmt.Sprintf("load-%s-%s-%d-", c.e.runID, name, c.windows)
}

func (c *cluster) serviceTarget(name string) *target {
	apps := c.apps
	if len(apps) == 1 {
		apps = nil // a single app needs no appid
	}
	return &target{urls: c.svcURLs, apps: apps, apiKey: c.apiKey, prefix: c.prefix(name)}
}

func (c *cluster) directTarget(name string) (*target, error) {
	var urls []string
	for _, a := range c.apps {
		tok, err := c.token(a)
		if err != nil {
			return nil, err
		}
		urls = append(urls, c.emuURL+"/wxa/business/getuserphonenumber?access_token="+tok)
	}
	return &target{direct: true, urls: urls, prefix: c.prefix(name)}, nil
}

// next returns request i's URL, body and code.
func (t *target) next() (url string, body []byte, code string) {
	i := t.n.Add(1) - 1
	code = t.prefix + strconv.FormatUint(i, 36)
	if t.direct {
		return t.urls[int(i)%len(t.urls)], []byte(`{"code":"` + code + `"}`), code
	}
	b := `{"code":"` + code + `"`
	if len(t.apps) > 0 {
		b += `,"appid":"` + t.apps[int(i/uint64(len(t.urls)))%len(t.apps)].ID + `"`
	}
	return t.urls[int(i)%len(t.urls)] + "/v1/phone-number", []byte(b + "}"), code
}

func (t *target) header() http.Header {
	h := http.Header{"Content-Type": {"application/json"}}
	if !t.direct {
		h.Set("Authorization", "Bearer "+t.apiKey)
	}
	return h
}

// newClient returns the load tool's HTTP client: HTTP/1.1 with a
// connection per request in flight, or h2c with prior knowledge.
func newClient(proto string, conns int) *http.Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns + 16,
		MaxIdleConnsPerHost: conns + 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	if proto == "h2c" {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

// measurement is one window's client-side view.
type measurement struct {
	Label    string
	Requests int
	OK       int
	Errors   map[string]int
	Elapsed  time.Duration
	Lat      []time.Duration // every request's latency, sorted
	InFlight int64           // peak requests in flight (closed loop)
}

func (m *measurement) Throughput() float64 {
	if m.Elapsed <= 0 {
		return 0
	}
	return float64(m.OK) / m.Elapsed.Seconds()
}

// Pct returns the latency at quantile q (0..1), nearest rank.
func (m *measurement) Pct(q float64) time.Duration {
	if len(m.Lat) == 0 {
		return 0
	}
	i := int(q*float64(len(m.Lat))+0.5) - 1
	return m.Lat[min(max(i, 0), len(m.Lat)-1)]
}

func (m *measurement) Max() time.Duration {
	if len(m.Lat) == 0 {
		return 0
	}
	return m.Lat[len(m.Lat)-1]
}

func (m *measurement) ErrorCount() int { return m.Requests - m.OK }

// recorder collects results of one worker (or of the vegeta consumer).
type recorder struct {
	lat    []time.Duration
	ok     int
	errors map[string]int
}

func (r *recorder) add(d time.Duration, class string) {
	r.lat = append(r.lat, d)
	if class == "" {
		r.ok++
		return
	}
	if r.errors == nil {
		r.errors = map[string]int{}
	}
	r.errors[class]++
}

func merge(label string, elapsed time.Duration, rs []*recorder) *measurement {
	m := &measurement{Label: label, Elapsed: elapsed, Errors: map[string]int{}}
	for _, r := range rs {
		m.Lat = append(m.Lat, r.lat...)
		m.OK += r.ok
		for k, v := range r.errors {
			m.Errors[k] += v
		}
	}
	m.Requests = len(m.Lat)
	slices.Sort(m.Lat)
	return m
}

// classify returns "" for a successful answer, else its error class: the
// HTTP status with the service's error code or WeChat's errcode, or a
// transport failure.
func classify(direct bool, status int, body []byte, code string, err error) string {
	if err != nil {
		return "transport: " + transportClass(err)
	}
	if direct {
		var a struct {
			ErrCode   int `json:"errcode"`
			PhoneInfo *struct {
				PurePhoneNumber string `json:"purePhoneNumber"`
			} `json:"phone_info"`
		}
		if status != 200 {
			return strconv.Itoa(status)
		}
		if json.Unmarshal(body, &a) != nil {
			return "200 undecodable"
		}
		if a.ErrCode != 0 {
			return "200 errcode " + strconv.Itoa(a.ErrCode)
		}
		if code != "" && (a.PhoneInfo == nil || a.PhoneInfo.PurePhoneNumber != loadPhone(code)) {
			return "200 wrong number"
		}
		return ""
	}
	if status == 200 {
		var a struct {
			PurePhoneNumber string `json:"purePhoneNumber"`
			Replayed        bool   `json:"replayed"`
		}
		if json.Unmarshal(body, &a) != nil {
			return "200 undecodable"
		}
		if code != "" && a.PurePhoneNumber != loadPhone(code) {
			return "200 wrong number"
		}
		if a.Replayed {
			return "200 replayed"
		}
		return ""
	}
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Errcode int    `json:"errcode"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	c := strconv.Itoa(status)
	if e.Error.Code != "" {
		c += " " + e.Error.Code
	}
	if e.Error.Errcode != 0 {
		c += " errcode " + strconv.Itoa(e.Error.Errcode)
	}
	return c
}

func transportClass(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too many open files"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no local port"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	if len(s) > 40 {
		s = s[:40]
	}
	return s
}

// loadPhone is the number the emulator derives from a load-mode code
// (docs/emulator.md §7): "13" and 9 digits of the code's FNV-1a 64 hash.
func loadPhone(code string) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(code))
	n := h.Sum64() % 1_000_000_000
	return "13" + fmt.Sprintf("%09d", n)
}

// openLoop sends rate requests per second for d with vegeta's attacker and
// returns what came back. Successful answers are not checked against the
// code (vegeta does not hand the request back); the closed loop checks
// them.
func openLoop(ctx context.Context, t *target, proto string, rate int, d time.Duration, label string) *measurement {
	hc := newClient(proto, rate)
	defer hc.CloseIdleConnections()
	atk := vegeta.NewAttacker(vegeta.Client(hc), vegeta.Workers(64), vegeta.MaxBody(4096))
	hdr := t.header()
	tr := func(tg *vegeta.Target) error {
		url, body, _ := t.next()
		tg.Method, tg.URL, tg.Body, tg.Header = http.MethodPost, url, body, hdr
		return nil
	}
	rec := &recorder{lat: make([]time.Duration, 0, int(float64(rate)*d.Seconds())+16)}
	start := time.Now()
	stop := context.AfterFunc(ctx, func() { atk.Stop() })
	defer stop()
	for r := range atk.Attack(tr, vegeta.Rate{Freq: rate, Per: time.Second}, d, label) {
		var err error
		if r.Error != "" && r.Code == 0 {
			err = errors.New(r.Error)
		}
		rec.add(r.Latency, classify(t.direct, int(r.Code), r.Body, "", err))
	}
	return merge(label, time.Since(start), []*recorder{rec})
}

// send posts the target's next request and returns its latency and error
// class (see classify).
func (t *target) send(ctx context.Context, hc *http.Client, hdr http.Header) (time.Duration, string) {
	url, body, code := t.next()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	req.Header = hdr.Clone()
	s := time.Now()
	resp, err := hc.Do(req)
	var status int
	var b []byte
	if err == nil {
		status = resp.StatusCode
		b, err = io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
	}
	return time.Since(s), classify(t.direct, status, b, code, err)
}

// closedLoop runs conc workers that each send a request as soon as the
// previous one is answered, for d, or perWorker requests each when
// perWorker > 0. With a start barrier every worker's first request leaves
// at the same moment.
func closedLoop(ctx context.Context, t *target, proto string, conc int, d time.Duration, perWorker int, label string) *measurement {
	hc := newClient(proto, conc)
	defer hc.CloseIdleConnections()
	hdr := t.header()
	recs := make([]*recorder, conc)
	var inflight, peak atomic.Int64
	var wg sync.WaitGroup
	gate := make(chan struct{})
	deadline := time.Time{}
	for w := range conc {
		recs[w] = &recorder{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := recs[w]
			<-gate
			for n := 0; perWorker == 0 || n < perWorker; n++ {
				if ctx.Err() != nil || (perWorker == 0 && time.Now().After(deadline)) {
					return
				}
				if v := inflight.Add(1); v > peak.Load() {
					peak.Store(v) // racy maximum, good enough for a report
				}
				lat, class := t.send(ctx, hc, hdr)
				inflight.Add(-1)
				rec.add(lat, class)
			}
		}()
	}
	start := time.Now()
	deadline = start.Add(d)
	close(gate)
	wg.Wait()
	m := merge(label, time.Since(start), recs)
	m.InFlight = peak.Load()
	return m
}

// paced sends n requests at rate per second, each on its own goroutine,
// and waits for every answer: unlike vegeta it stops at a count, so all n
// can be in flight together.
func paced(ctx context.Context, t *target, proto string, n, rate int, label string) *measurement {
	hc := newClient(proto, n)
	defer hc.CloseIdleConnections()
	hdr := t.header()
	recs := make([]*recorder, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		if d := time.Until(start.Add(time.Duration(float64(i) / float64(rate) * float64(time.Second)))); d > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
		if ctx.Err() != nil {
			break
		}
		recs[i] = &recorder{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs[i].add(t.send(ctx, hc, hdr))
		}()
	}
	wg.Wait()
	var rs []*recorder
	for _, r := range recs {
		if r != nil {
			rs = append(rs, r)
		}
	}
	return merge(label, time.Since(start), rs)
}

// sampler watches the service processes during a window: RSS from /proc
// every 100 ms and goroutines from /metrics every 500 ms.
// Its fields are written by its goroutine only and read after Stop.
type sampler struct {
	stop     chan struct{}
	done     chan struct{}
	peakRSS  []int64
	peakGor  []float64
	peakStk  []float64  // go stack in use, sampled
	peakHeap []float64  // go heap in use, sampled
	peakIn   []float64  // requests in flight at the service, sampled
	series   []rssPoint // first replica's RSS over time
	start    time.Time
}

type rssPoint struct {
	T          time.Duration
	RSS        int64
	Goroutines float64
	InFlight   float64
	Stack      float64
	Heap       float64
	Scraped    bool // the /metrics values were read at this sample (else zero)
}

// atPeakIn returns the first replica's sample with the most requests in
// flight.
func (s *sampler) atPeakIn() rssPoint {
	var best, top rssPoint
	for _, p := range s.series {
		if p.InFlight > best.InFlight {
			best = p
		}
		if p.Scraped && p.RSS > top.RSS {
			top = p
		}
	}
	if best.InFlight == 0 {
		return top // a service without the in-flight gauge
	}
	return best
}

func (c *cluster) sample() *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{}), peakRSS: make([]int64, len(c.svcs)), peakGor: make([]float64, len(c.svcs)), peakStk: make([]float64, len(c.svcs)), peakHeap: make([]float64, len(c.svcs)), peakIn: make([]float64, len(c.svcs)), start: time.Now()}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			for i, p := range c.svcs {
				st, err := readStatus(p.pid())
				if err != nil {
					continue
				}
				sp := rssPoint{T: time.Since(s.start), RSS: st.RSS}
				if n%5 == 0 {
					if cs, err := readCounters(c.svcURLs[i]); err == nil {
						sp.Goroutines, sp.Stack, sp.Heap, sp.InFlight = cs.Goroutines, cs.StackInuse, cs.HeapInuse, cs.InFlight-1 // less the scrape
						sp.Scraped = true
					}
				}
				s.peakStk[i] = max(s.peakStk[i], sp.Stack)
				s.peakHeap[i] = max(s.peakHeap[i], sp.Heap)
				s.peakIn[i] = max(s.peakIn[i], sp.InFlight)
				s.peakRSS[i] = max(s.peakRSS[i], st.RSS)
				s.peakGor[i] = max(s.peakGor[i], sp.Goroutines)
				if i == 0 {
					s.series = append(s.series, sp)
				}
			}
		}
	}()
	return s
}

func (s *sampler) Stop() {
	close(s.stop)
	<-s.done
}

// goroutinesSettle polls a replica's goroutine count until it is at most
// limit or timeout passes, and returns the last count.
func goroutinesSettle(url string, limit float64, timeout time.Duration) float64 {
	deadline := time.Now().Add(timeout)
	last := -1.0
	for {
		if cs, err := readCounters(url); err == nil {
			last = cs.Goroutines
			if last <= limit {
				return last
			}
		}
		if time.Now().After(deadline) {
			return last
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// logf prints a progress line.
func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.o.Out, "    "+format+"\n", args...)
}
