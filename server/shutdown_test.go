package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/internal/logtest"
	"github.com/wxphone/wxphone/metrics"
	"github.com/wxphone/wxphone/server"
	"github.com/wxphone/wxphone/service"
	"github.com/wxphone/wxphone/wxmock"
)

// TestGracefulShutdown: a request in flight when shutdown starts completes,
// new connections are refused, Run leaves the service to its owner (it
// neither warms nor closes it), and once the owner closed it no goroutine
// is left behind.
func TestGracefulShutdown(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	emu, err := wxmock.New(wxmock.Options{Apps: []wxmock.App{{AppID: appA, Secret: secretA}}})
	if err != nil {
		t.Fatal(err)
	}
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	emuTS := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wxa/business/getuserphonenumber" {
			arrived <- struct{}{}
			<-release
		}
		emu.ServeHTTP(w, r)
	}))
	defer emuTS.Close()
	up := &http.Client{Transport: &http.Transport{}}
	defer up.CloseIdleConnections()

	logs := &logtest.Buffer{}
	logger := server.NewLogger(logs, slog.LevelDebug)
	m := metrics.New()
	client, err := wxphone.New(wxphone.Config{AppID: appA, Secret: secretA, BaseURL: emuTS.URL, HTTPClient: up, Logger: logger, Hooks: m.Hooks()})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := service.New(service.Config{Clients: []*wxphone.Client{client}, Metrics: m, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Service: svc, APIKeys: []wxphone.Secret{keyPhone}, Metrics: m, Logger: logger, ShutdownTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// The owner warms the tokens: Run does not.
	if err := svc.Warm(context.Background()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- srv.Run(ctx, ln) }()

	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	for i := 0; ; i++ {
		resp, err := hc.Get("http://" + addr + server.PathReadyz)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if i > 500 {
			t.Fatal("never ready")
		}
		time.Sleep(10 * time.Millisecond)
	}

	code, err := emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: "13933334444"})
	if err != nil {
		t.Fatal(err)
	}
	type answer struct {
		status int
		body   string
		err    error
	}
	done := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest("POST", "http://"+addr+server.PathPhoneNumber, strings.NewReader(`{"code":"`+code+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+keyPhone)
		resp, err := hc.Do(req)
		if err != nil {
			done <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- answer{status: resp.StatusCode, body: string(b)}
	}()
	<-arrived // the exchange is at WeChat

	cancel() // SIGTERM
	// New connections are refused once the listener is closed.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if i > 500 {
			t.Fatal("still accepting connections after shutdown began")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case a := <-done:
		t.Fatalf("the in-flight request ended before WeChat answered: %+v", a)
	default:
	}
	// A request still reaching the handler (an open keep-alive connection)
	// is turned away, and /readyz says so.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", server.PathPhoneNumber, strings.NewReader(`{"code":"abc"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+keyPhone)
	srv.Handler().ServeHTTP(rec, req)
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), `"shutting_down"`) {
		t.Errorf("request during shutdown: %d %s", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", server.PathReadyz, nil))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), `"status":"shutting_down"`) {
		t.Errorf("readyz during shutdown: %d %s", rec.Code, rec.Body)
	}
	close(release)
	a := <-done
	if a.err != nil || a.status != 200 || !strings.Contains(a.body, "13933334444") {
		t.Fatalf("in-flight request: %+v", a)
	}
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	// Run left the service open; its owner closes it.
	if _, err := svc.AccessToken(context.Background(), appA); err != nil {
		t.Errorf("after Run AccessToken: %v, want the service still open", err)
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.AccessToken(context.Background(), appA); !errors.Is(err, wxphone.ErrClosed) {
		t.Errorf("after Close AccessToken: %v, want ErrClosed", err)
	}
	if !strings.Contains(logs.String(), `"msg":"stopped"`) {
		t.Errorf("no stop log line")
	}
	emuTS.Close()
	up.CloseIdleConnections()
	hc.CloseIdleConnections()
}

func TestRunTwice(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	ln1, _ := net.Listen("tcp", "127.0.0.1:0")
	errc := make(chan error, 1)
	go func() { errc <- e.srv.Run(ctx, ln1) }()
	for i := 0; ; i++ { // wait until the first Run serves
		resp, err := e.hc.Get("http://" + ln1.Addr().String() + server.PathHealthz)
		if err == nil {
			resp.Body.Close()
			break
		}
		if i > 500 {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := e.srv.Run(ctx, ln2); err == nil {
		t.Error("second Run succeeded")
	}
	cancel()
	if err := <-errc; err != nil {
		t.Error(err)
	}
}
