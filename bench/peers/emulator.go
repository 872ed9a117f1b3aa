package main

// The emulator runs in a child process (this same binary, re-executed with
// roleEnv set) so that its allocations never show up in the client-side
// runtime.MemStats deltas. The parent drives it through the admin API.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/wxphone/wxphone/wxmock"
)

const (
	roleEnv      = "WXPEERS_ROLE"
	roleEmulator = "emulator"
	loadPrefix   = "load-"
	bootAppID    = "wxbench0000000000"
	readyPrefix  = "WXPEERS_EMULATOR "
)

// maybeRunEmulator serves the emulator and exits when this process was
// started as the emulator child. It returns otherwise.
func maybeRunEmulator() {
	if os.Getenv(roleEnv) != roleEmulator {
		return
	}
	if err := serveEmulator(); err != nil {
		fmt.Fprintln(os.Stderr, "emulator:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func serveEmulator() error {
	s, err := wxmock.New(wxmock.Options{
		Apps:              []wxmock.App{{AppID: bootAppID, Secret: secretFor(bootAppID)}},
		LoadPrefix:        loadPrefix,
		ClassicDailyLimit: 1 << 30, // the benchmark makes many instances; quotas are not under test
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Printf("%shttp://%s\n", readyPrefix, ln.Addr())
	// The parent holds our stdin; EOF means it is gone or done.
	_, _ = io.Copy(io.Discard, os.Stdin)
	return srv.Close()
}

// secretFor derives a fixed 32-character secret from an appid.
func secretFor(appid string) string {
	const hex = "0123456789abcdef"
	b := make([]byte, 32)
	h := uint64(14695981039346656037)
	for i := range b {
		for j := 0; j < len(appid); j++ {
			h ^= uint64(appid[j])
			h *= 1099511628211
		}
		h ^= uint64(i)
		b[i] = hex[h%16]
	}
	return string(b)
}

// emulator is the parent's handle on the child process.
type emulator struct {
	URL   string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	admin *http.Client
}

func startEmulator() (*emulator, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), roleEnv+"="+roleEmulator)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	e := &emulator{cmd: cmd, stdin: stdin, admin: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{}}}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, readyPrefix) {
		e.Close()
		return nil, fmt.Errorf("emulator did not start (%q): %v", line, err)
	}
	e.URL = strings.TrimSpace(strings.TrimPrefix(line, readyPrefix))
	return e, nil
}

// CPU is the child's user+system CPU time so far (from /proc, in clock
// ticks of 10 ms; 0 where /proc is missing).
func (e *emulator) CPU() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", e.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name: state is field 3,
	// utime 14 and stime 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// Pid is the child's process id.
func (e *emulator) Pid() int { return e.cmd.Process.Pid }

func (e *emulator) Close() {
	_ = e.stdin.Close()
	done := make(chan struct{})
	go func() { _ = e.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = e.cmd.Process.Kill()
		<-done
	}
}

func (e *emulator) call(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.URL+path, body)
	if err != nil {
		return err
	}
	resp, err := e.admin.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("admin %s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func (e *emulator) AddApp(appid string) error {
	return e.call("POST", "/admin/apps", wxmock.App{AppID: appid, Secret: secretFor(appid)}, nil)
}

func (e *emulator) AddFault(f wxmock.Fault) error {
	return e.call("POST", "/admin/faults", f, nil)
}

func (e *emulator) ClearFaults() error { return e.call("DELETE", "/admin/faults", nil, nil) }

func (e *emulator) RevokeTokens(appid string) (int, error) {
	var out struct {
		Revoked int `json:"revoked"`
	}
	err := e.call("POST", "/admin/revoke-tokens", map[string]string{"appid": appid}, &out)
	return out.Revoked, err
}

func (e *emulator) Stats() (wxmock.Stats, error) {
	var st wxmock.Stats
	err := e.call("GET", "/admin/stats", nil, &st)
	return st, err
}

func (e *emulator) ResetStats() error { return e.call("POST", "/admin/stats/reset", nil, nil) }

// tokenFetches is the number of token-endpoint fetches the emulator served
// for appid (classic and stable, any mode).
func tokenFetches(st wxmock.Stats, appid string) int64 {
	a := st.Apps[appid]
	return a.TokenFetches + a.StableNormal + a.StableForce
}
