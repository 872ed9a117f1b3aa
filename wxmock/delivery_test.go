package wxmock

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// protoServer starts s on a real listener speaking HTTP/1.1, or h2c with
// prior knowledge, and returns its URL and a client of that protocol.
func protoServer(t *testing.T, s *Server, h2c bool) (string, *http.Client) {
	t.Helper()
	srv := httptest.NewUnstartedServer(s)
	tr := &http.Transport{DisableKeepAlives: !h2c}
	if h2c {
		srv.Config.Protocols = new(http.Protocols)
		srv.Config.Protocols.SetHTTP1(true)
		srv.Config.Protocols.SetUnencryptedHTTP2(true)
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(tr.CloseIdleConnections)
	return srv.URL, &http.Client{Transport: tr}
}

// WeChat processes every request it has received: a client that hangs up
// while the answer is delayed has still used its code, over HTTP/1.1 as
// over HTTP/2, and the emulator records that the answer was not
// delivered.
func TestClientGoneDuringLatency(t *testing.T) {
	for _, h2c := range []bool{false, true} {
		name := map[bool]string{false: "http1", true: "h2c"}[h2c]
		t.Run(name, func(t *testing.T) {
			s := newTestServer(t, func(o *Options) { o.RecordCalls = true })
			tok := classicToken(t, s, appA, secretA)
			base, hc := protoServer(t, s, h2c)
			if _, err := s.AddFault(Fault{Endpoint: "phone", Kind: "latency", LatencyMS: 600000, Count: 1}); err != nil {
				t.Fatal(err)
			}
			code := mintPhone(t, s, appA, "13800138000")
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+phoneURL(tok), strings.NewReader(codeBody(code)))
			req.Header.Set("Content-Type", "application/json")
			if resp, err := hc.Do(req); err == nil {
				resp.Body.Close()
				t.Fatalf("got an answer %s during a 600 s latency", resp.Status)
			}
			// The emulator notices the client left and stops waiting.
			var st Stats
			for end := time.Now().Add(10 * time.Second); ; {
				st = s.Stats()
				if st.Endpoints.Phone.Canceled == 1 {
					break
				}
				if time.Now().After(end) {
					t.Fatalf("the emulator did not notice the client left: %+v", st.Endpoints.Phone)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if cs := st.Codes[code]; cs.Answered != 1 || cs.Delivered != 0 {
				t.Fatalf("code stats %+v, want answered and not delivered", cs)
			}
			if c := s.Calls(); len(c) != 1 || !c[0].Consumed || c[0].Result != CallGone || c[0].Delivered || c[0].LatencyMS != 600000 {
				t.Fatalf("call log %+v", c)
			}
			// It had received the request, so it used the code.
			if got := wx(t, s, http.MethodPost, phoneURL(tok), codeBody(code)).Errcode; got != 40029 {
				t.Fatalf("the code after the client left: errcode %d, want 40029 (used)", got)
			}
		})
	}
}

// The call log says, per request, what WeChat did and whether its answer
// reached the client.
func TestCallLog(t *testing.T) {
	s := newTestServer(t, func(o *Options) { o.RecordCalls = true })
	tok := classicToken(t, s, appA, secretA)
	base, hc := protoServer(t, s, false)
	type step struct {
		fault *Fault
		code  string // "" = a fresh code
		want  Call   // the fields compared
	}
	used := mintPhone(t, s, appA, "13800138001")
	steps := []step{
		{nil, "", Call{Processed: true, Consumed: true, Answered: true, Status: 200, Result: CallDelivered, Delivered: true}},
		{&Fault{Kind: FaultErrcode, Errcode: -1}, "", Call{Fault: "errcode", Errcode: -1, Status: 200, Result: CallDelivered, Delivered: true}},
		{&Fault{Kind: FaultErrcode, Errcode: -1, Consume: true}, "", Call{Fault: "errcode", Processed: true, Consumed: true, Errcode: -1, Status: 200, Result: CallDelivered, Delivered: true}},
		{&Fault{Kind: FaultHTTPStatus, Status: 502}, "", Call{Fault: "http_status", Status: 502, Result: CallDelivered, Delivered: true}},
		{&Fault{Kind: FaultHTTPStatus, Status: 503, Consume: true}, "", Call{Fault: "http_status", Processed: true, Consumed: true, Status: 503, Result: CallDelivered, Delivered: true}},
		{&Fault{Kind: FaultDropAfterConsume}, "", Call{Fault: "drop_after_consume", Processed: true, Consumed: true, Answered: true, Status: 200, Result: CallDropped}},
		{&Fault{Kind: FaultResetAfterConsume}, "", Call{Fault: "reset_after_consume", Processed: true, Consumed: true, Answered: true, Status: 200, Result: CallResetAfterConsume}},
		{&Fault{Kind: FaultResetBeforeRead}, "", Call{Fault: "reset_before_read", Result: CallResetBeforeRead}},
		{nil, used, Call{Processed: true, Consumed: true, Answered: true, Status: 200, Result: CallDelivered, Delivered: true}},
		{nil, used, Call{Processed: true, Errcode: 40029, Status: 200, Result: CallDelivered, Delivered: true}},
		{nil, strings.Repeat("ab", 32), Call{Processed: true, Errcode: 40029, Status: 200, Result: CallDelivered, Delivered: true}},
	}
	var codes []string
	for i, st := range steps {
		s.ClearFaults()
		if st.fault != nil {
			f := *st.fault
			f.Endpoint, f.Count = EndpointPhone, 1
			if _, err := s.AddFault(f); err != nil {
				t.Fatal(err)
			}
		}
		code := st.code
		if code == "" {
			code = mintPhone(t, s, appA, "13800138000")
		}
		codes = append(codes, code)
		resp, err := hc.Post(base+phoneURL(tok), "application/json", strings.NewReader(codeBody(code)))
		if err == nil {
			resp.Body.Close()
		}
		_ = i
	}
	// The emulator logs a call just after writing its answer.
	calls := s.Calls()
	for end := time.Now().Add(10 * time.Second); len(calls) < len(steps) && time.Now().Before(end); calls = s.Calls() {
		time.Sleep(5 * time.Millisecond)
	}
	if len(calls) != len(steps) {
		t.Fatalf("%d calls logged, want %d", len(calls), len(steps))
	}
	for i, c := range calls {
		w := steps[i].want
		if c.Seq != int64(i+1) || c.Code != codes[i] || c.Endpoint != "phone" || c.Proto != "HTTP/1.1" || c.Local == "" ||
			c.Received.IsZero() || c.Done.Before(c.Received) {
			t.Errorf("call %d: %+v", i, c)
		}
		c.Seq, c.Code, c.Endpoint, c.Proto, c.Local, c.Received, c.Done = 0, "", "", "", "", time.Time{}, time.Time{}
		if c != w {
			t.Errorf("call %d:\n got %+v\nwant %+v", i, c, w)
		}
	}
	// The admin API serves the same log, by code.
	var out struct {
		RecordCalls bool   `json:"record_calls"`
		Calls       []Call `json:"calls"`
	}
	if st := admin(t, s, http.MethodGet, "/admin/calls?code="+used, "", &out); st != 200 || !out.RecordCalls || len(out.Calls) != 2 || out.Calls[1].Errcode != 40029 {
		t.Fatalf("admin calls: %d %+v", st, out)
	}
	var cfg struct {
		RecordCalls bool `json:"record_calls"`
	}
	if admin(t, s, http.MethodPost, "/admin/config", `{"record_calls":false}`, &cfg); cfg.RecordCalls {
		t.Fatal("record_calls still on")
	}
	mintAndSend := mintPhone(t, s, appA, "13800138002")
	wx(t, s, http.MethodPost, phoneURL(tok), codeBody(mintAndSend))
	if n := len(s.Calls()); n != len(steps) {
		t.Fatalf("a call was logged while the log was off: %d", n)
	}
	s.ResetStats()
	if n := len(s.Calls()); n != 0 {
		t.Fatalf("ResetStats kept %d calls", n)
	}
}

// reset_after_consume uses the code and then resets: the TCP connection
// over HTTP/1, the stream over HTTP/2 (INTERNAL_ERROR from Go's server, or
// the code the fault names when the connection came through Listener).
func TestResetAfterConsume(t *testing.T) {
	tests := []struct {
		name     string
		h2c      bool
		listener bool
		h2Error  string
		wantErr  string // in the client's error
		wantSent string // Call.H2Error
	}{
		{"http1", false, false, "", "connection reset by peer", ""},
		{"h2c", true, false, "", "INTERNAL_ERROR", "INTERNAL_ERROR"},
		{"h2c protocol error without Listener", true, false, "PROTOCOL_ERROR", "INTERNAL_ERROR", "INTERNAL_ERROR"},
		{"h2c protocol error", true, true, "PROTOCOL_ERROR", "PROTOCOL_ERROR", "PROTOCOL_ERROR"},
		{"h2c cancel", true, true, "CANCEL", "CANCEL", "CANCEL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, func(o *Options) { o.RecordCalls = true })
			tok := classicToken(t, s, appA, secretA)
			srv := httptest.NewUnstartedServer(s)
			tr := &http.Transport{DisableKeepAlives: !tt.h2c}
			if tt.h2c {
				srv.Config.Protocols = new(http.Protocols)
				srv.Config.Protocols.SetHTTP1(true)
				srv.Config.Protocols.SetUnencryptedHTTP2(true)
				tr.Protocols = new(http.Protocols)
				tr.Protocols.SetUnencryptedHTTP2(true)
			}
			if tt.listener {
				srv.Listener = s.Listener(srv.Listener)
			}
			srv.Start()
			defer srv.Close()
			defer tr.CloseIdleConnections()
			if _, err := s.AddFault(Fault{Endpoint: "phone", Kind: "reset_after_consume", H2Error: tt.h2Error, Count: 1}); err != nil {
				t.Fatal(err)
			}
			code := mintPhone(t, s, appA, "13800138000")
			// A body without GetBody: the transport cannot resend it.
			req, _ := http.NewRequest(http.MethodPost, srv.URL+phoneURL(tok), io.MultiReader(strings.NewReader(codeBody(code))))
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("got an answer %s", resp.Status)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("client error %q, want %q in it", err, tt.wantErr)
			}
			calls := s.Calls()
			if len(calls) != 1 || !calls[0].Consumed || !calls[0].Answered || calls[0].Delivered ||
				calls[0].Result != CallResetAfterConsume || calls[0].H2Error != tt.wantSent {
				t.Fatalf("calls %+v", calls)
			}
			if st := s.Stats(); st.Endpoints.Phone.ResetAfterConsume != 1 || st.Codes[code].Answered != 1 || st.Codes[code].Delivered != 0 {
				t.Fatalf("stats %+v %+v", st.Endpoints.Phone, st.Codes[code])
			}
			if got := wx(t, s, http.MethodPost, phoneURL(tok), codeBody(code)).Errcode; got != 40029 {
				t.Fatalf("code after the reset: %d, want 40029 (used)", got)
			}
		})
	}
}

// Go's HTTP/2 transport resends a request whose stream was reset with
// PROTOCOL_ERROR when it can rewind the body (GetBody), although the
// server had processed it: WeChat then sees the code twice. This is the
// client behaviour the h2_error option exists to expose.
func TestResetAfterConsumeProtocolErrorIsResent(t *testing.T) {
	s := newTestServer(t, func(o *Options) { o.RecordCalls = true })
	tok := classicToken(t, s, appA, secretA)
	srv := httptest.NewUnstartedServer(s)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Listener = s.Listener(srv.Listener)
	srv.Start()
	defer srv.Close()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	if _, err := s.AddFault(Fault{Endpoint: "phone", Kind: "reset_after_consume", H2Error: "PROTOCOL_ERROR", Count: 1}); err != nil {
		t.Fatal(err)
	}
	code := mintPhone(t, s, appA, "13800138000")
	status, body, err := post(&http.Client{Transport: tr}, srv.URL+phoneURL(tok), codeBody(code))
	if err != nil || status != 200 || !strings.Contains(string(body), `"errcode":40029`) {
		t.Fatalf("got %d %q %v; want the resend's 40029", status, body, err)
	}
	calls := s.Calls()
	if len(calls) != 2 || !calls[0].Consumed || calls[0].H2Error != "PROTOCOL_ERROR" || calls[1].Errcode != 40029 {
		t.Fatalf("calls %+v", calls)
	}
}

// captureConn records what a resetConn writes.
type captureConn struct {
	net.Conn
	out bytes.Buffer
}

func (c *captureConn) Write(b []byte) (int, error) { return c.out.Write(b) }

func h2Frame(typ byte, stream uint32, payload []byte) []byte {
	f := []byte{byte(len(payload) >> 16), byte(len(payload) >> 8), byte(len(payload)), typ, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(f[5:], stream)
	return append(f, payload...)
}

// The frame rewriter changes exactly the queued RST_STREAM codes, however
// the server's writes split the frames.
func TestResetConnRewritesRSTStream(t *testing.T) {
	rst := func(stream, code uint32) []byte {
		p := make([]byte, 4)
		binary.BigEndian.PutUint32(p, code)
		return h2Frame(h2FrameRSTStream, stream, p)
	}
	var in, want []byte
	add := func(got, w []byte) { in = append(in, got...); want = append(want, w...) }
	add(h2Frame(0x4, 0, make([]byte, 18)), h2Frame(0x4, 0, make([]byte, 18)))                         // SETTINGS
	add(h2Frame(0x0, 1, bytes.Repeat([]byte{3}, 300)), h2Frame(0x0, 1, bytes.Repeat([]byte{3}, 300))) // DATA that looks like RST inside
	add(rst(3, h2ErrInternal), rst(3, 0x1))                                                           // rewritten to PROTOCOL_ERROR
	add(rst(5, 0x0), rst(5, 0x0))                                                                     // NO_ERROR: untouched
	add(rst(7, h2ErrInternal), rst(7, 0x8))                                                           // rewritten to CANCEL
	add(rst(9, h2ErrInternal), rst(9, h2ErrInternal))                                                 // nothing queued: untouched
	for _, chunk := range []int{1, 2, 5, 9, 13, 64, len(in)} {
		cc := &captureConn{}
		c := &resetConn{Conn: cc, s: &Server{}}
		c.queueReset(0x1)
		c.queueReset(0x8)
		orig := bytes.Clone(in)
		for off := 0; off < len(in); off += chunk {
			if n, err := c.Write(in[off:min(off+chunk, len(in))]); err != nil || n != min(chunk, len(in)-off) {
				t.Fatalf("chunk %d: Write = %d, %v", chunk, n, err)
			}
		}
		if !bytes.Equal(cc.out.Bytes(), want) {
			t.Errorf("chunk %d: output differs", chunk)
		}
		if !bytes.Equal(in, orig) {
			t.Fatalf("chunk %d: the caller's buffer was modified", chunk)
		}
	}
	// An HTTP/1 connection passes through untouched.
	cc := &captureConn{}
	c := &resetConn{Conn: cc, s: &Server{}}
	c.queueReset(0x1)
	h1 := append([]byte("HTTP/1.1 200 OK\r\n\r\n"), rst(1, h2ErrInternal)...)
	_, _ = c.Write(h1)
	if !bytes.Equal(cc.out.Bytes(), h1) {
		t.Fatal("HTTP/1 bytes changed")
	}
}
