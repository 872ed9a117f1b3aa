package demo_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// findBrowser returns a Chromium or Chrome binary, or "".
func findBrowser() string {
	if p := os.Getenv("WXPHONE_BROWSER"); p != "" {
		return p
	}
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestDemoPageInBrowser drives the demo page in headless Chromium: tap the
// button, see the number (masked and full), replay the code, then inject a
// fault and see outcome_unknown.
func TestDemoPageInBrowser(t *testing.T) {
	browser := findBrowser()
	if browser == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("no Chromium found, and CI is set: .ci/run must install the chromium package")
		}
		t.Skip("no Chromium or Chrome binary found (apt-get install chromium); skipped outside CI")
	}
	info, _ := startDemo(t)

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(browser),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	// An upper bound so a broken page cannot hang the suite; no assertion
	// depends on elapsed time.
	ctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	defer cancel()

	waitFor := func(expr string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(30*time.Second))
	}
	waitText := func(id, want string) chromedp.Action[chromedp.Void] {
		return waitFor(`document.getElementById(` + jsString(id) + `).textContent === ` + jsString(want))
	}
	text := func(id string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
		if err != nil {
			t.Fatalf("text of #%s: %v", id, err)
		}
		return v
	}

	err := chromedp.Do(ctx,
		chromedp.Navigate(info.ServiceURL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`body[data-ready="true"]`)),
		chromedp.SetValue(chromedp.ID("pure"), "13966667777"),
		chromedp.Click(chromedp.ID("tap")),
		waitText("result-status", "200"),
	)
	if err != nil {
		t.Fatalf("first tap: %v", err)
	}
	if masked, full, replayed, raw, state := text("masked"), text("full"), text("replayed"), text("raw"), text("state"); masked != "139****7777" || full != "13966667777" || replayed != "false" || !strings.Contains(raw, `"purePhoneNumber": "13966667777"`) || state != "Signed in." {
		t.Errorf("after the tap: masked %q full %q replayed %q state %q raw %s", masked, full, replayed, state, raw)
	}

	// The same code again: a replay, and WeChat saw the code once.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("again")),
		waitText("replayed", "true"),
		waitText("seen", "1 call(s)"),
	); err != nil {
		t.Fatalf("replay: %v", err)
	}

	// WeChat uses the next code but answers -1; the retry gets 40029.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("fault-busy_consume")),
		waitFor(`document.getElementById("fault-state").textContent.includes("outcome_unknown")`),
		chromedp.Click(chromedp.ID("tap")),
		waitText("result-status", "502"),
	); err != nil {
		t.Fatalf("fault: %v", err)
	}
	if code, message, full := text("result-code"), text("message"), text("full"); code != "outcome_unknown" || !strings.Contains(message, "tap again") || full != "–" {
		t.Errorf("after the fault: code %q message %q full %q", code, message, full)
	}

	// The switch: the backend exchanges in the API security mode.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("fault-clear")),
		waitFor(`document.getElementById("fault-state").textContent.includes("cleared")`),
		chromedp.Click(chromedp.ID("secure")),
		chromedp.SetValue(chromedp.ID("pure"), "13955556666"),
		chromedp.Click(chromedp.ID("tap")),
		waitText("full", "13955556666"),
	); err != nil {
		t.Fatalf("security mode: %v", err)
	}
	if mode, status := text("mode"), text("result-status"); !strings.Contains(mode, "API security mode") || status != "200" {
		t.Errorf("security mode: mode %q status %q", mode, status)
	}
	// A badly signed success is refused.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("fault-bad_signature")),
		waitFor(`document.getElementById("fault-state").textContent.includes("signature")`),
		chromedp.Click(chromedp.ID("tap")),
		waitText("result-status", "502"),
	); err != nil {
		t.Fatalf("bad signature: %v", err)
	}
	if code, message := text("result-code"), text("message"); code != "outcome_unknown" || !strings.Contains(message, "failed verification") {
		t.Errorf("bad signature: code %q message %q", code, message)
	}

	if path := os.Getenv("WXPHONE_SCREENSHOT"); path != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// jsString quotes s as a JavaScript string literal (s is a test constant).
func jsString(s string) string {
	return `"` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `"`, `\"`) + `"`
}
