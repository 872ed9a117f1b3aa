package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"go.opentelemetry.io/otel"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/config"
	"github.com/wxphone/wxphone/quota"
	"github.com/wxphone/wxphone/replica"
	"github.com/wxphone/wxphone/server"
	"github.com/wxphone/wxphone/tracing"
)

// setupTracing builds the tracer provider the OTEL_* variables ask for
// (package tracing); export errors go to the JSON log as warnings.
func setupTracing(ctx context.Context, cfg *config.Config, logOut io.Writer) (*tracing.Provider, error) {
	p, err := tracing.FromEnv(ctx, version())
	if err != nil || !p.Enabled() {
		return p, err
	}
	log := server.NewLogger(logOut, cfg.LogLevel)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("tracing: export failed", "err", err) }))
	log.Info("tracing: exporting spans over OTLP/HTTP")
	return p, nil
}

// stopTracing flushes the spans still queued, within five seconds.
func stopTracing(p *tracing.Provider) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = p.Shutdown(ctx)
}

// toolFlags are the flags of quota and rid that serve does not have; the
// remaining arguments are serve's flags, so both tools read exactly the
// configuration serve reads.
type toolFlags struct {
	json    bool
	verbose bool
	app     string
	args    []string // serve's flags
	rest    []string // positional arguments
}

func parseToolFlags(args []string, positional bool) (toolFlags, error) {
	var f toolFlags
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "="); {
		case !strings.HasPrefix(a, "-"):
			if !positional {
				return f, fmt.Errorf("unexpected argument %q", a)
			}
			f.rest = append(f.rest, a)
		case name == "json":
			f.json = true
		case name == "v":
			f.verbose = true
		case name == "app":
			switch {
			case hasVal:
				f.app = val
			case i+1 < len(args):
				i++
				f.app = args[i]
			default:
				return f, errors.New("--app needs an appid")
			}
		default:
			f.args = append(f.args, a)
			// a serve flag's value follows it unless given with =
			// (every serve flag takes a value)
			if !hasVal && name != "h" && name != "help" && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++
				f.args = append(f.args, args[i])
			}
		}
	}
	return f, nil
}

// openTool parses the flags of the tool name (check, if set, validates
// them; a mistake is reported with usage) and wires the apps as serve
// would (Redis-shared tokens included), without serving, warming or
// probing.
func openTool(ctx context.Context, name, usage string, args []string, positional bool, check func(toolFlags) error,
	stdout, stderr io.Writer, getenv func(string) string) (*replica.Replica, toolFlags, error) {
	f, err := parseToolFlags(args, positional)
	if err == nil && check != nil {
		err = check(f)
	}
	if err != nil {
		fmt.Fprintf(stderr, "wxphone %s: %v\n\n%s", name, err, usage)
		return nil, f, errUsage
	}
	r, err := buildTool(ctx, f, stdout, stderr, getenv, usage)
	return r, f, err
}

// buildTool wires the apps of serve's flags f.args for a tool.
func buildTool(ctx context.Context, f toolFlags, stdout, stderr io.Writer, getenv func(string) string, usage string) (*replica.Replica, error) {
	cfg, err := config.Load(f.args, getenv)
	if errors.Is(err, config.ErrHelp) {
		fmt.Fprint(stdout, usage)
		config.PrintUsage(stdout)
		return nil, flag.ErrHelp
	}
	if err != nil {
		return nil, err
	}
	cfg.QuotaInterval = 0
	logOut := io.Discard
	if f.verbose {
		logOut = stderr
	}
	return build(ctx, cfg, logOut, replica.Options{NoWarm: true})
}

const quotaUsage = `Usage: wxphone quota [--json] [-v] [serve's flags]

Prints, for every configured Mini Program, WeChat's daily quota of the APIs
wxphone calls (getuserphonenumber, stable_token) as POST
/cgi-bin/openapi/quota/get reports it: daily limit, used, remaining (WeChat's
day, UTC+8). It reads the configuration serve reads (environment and flags);
with REDIS_URL it uses the fleet's shared access token. Each line costs one
quota/get call, which has a daily quota of its own.

  --json   print JSON instead of a table
  -v       print the JSON log on stderr

`

type quotaRow struct {
	AppID      string `json:"appid"`
	API        string `json:"api"`
	CGIPath    string `json:"cgi_path"`
	DailyLimit int64  `json:"daily_limit"`
	Used       int64  `json:"used"`
	Remain     int64  `json:"remain"`
	Error      string `json:"error,omitempty"`
}

// quotaCmd runs `wxphone quota`.
func quotaCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	r, f, err := openTool(ctx, "quota", quotaUsage, args, false, nil, stdout, stderr, getenv)
	if err != nil {
		return err
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var rows []quotaRow
	failed := 0
	for _, id := range r.Service.Apps() {
		c, err := r.Service.Client(id)
		if err != nil {
			return err
		}
		for _, a := range quota.APIs {
			q, err := c.APIQuota(ctx, a.CGIPath)
			row := quotaRow{AppID: id, API: a.Name, CGIPath: a.CGIPath, DailyLimit: q.DailyLimit, Used: q.Used, Remain: q.Remain}
			if err != nil {
				row.Error = err.Error()
				failed++
			}
			rows = append(rows, row)
		}
	}
	if f.json {
		b, _ := json.MarshalIndent(rows, "", "  ")
		fmt.Fprintln(stdout, string(b))
	} else {
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "APPID\tAPI\tDAILY LIMIT\tUSED\tREMAINING")
		for _, row := range rows {
			if row.Error != "" {
				fmt.Fprintf(tw, "%s\t%s\terror: %s\t\t\n", row.AppID, row.API, row.Error)
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\n", row.AppID, row.API, row.DailyLimit, row.Used, row.Remain)
		}
		_ = tw.Flush()
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d quotas could not be read", failed, len(rows))
	}
	return nil
}

const ridUsage = `Usage: wxphone rid [--app APPID] [--json] [-v] [serve's flags] RID

Looks up a failed WeChat call by the rid at the end of its errmsg (logged as
"rid" and returned in error bodies) with POST /cgi-bin/openapi/rid/get, and
prints the request and answer WeChat recorded. Codes, tokens, secrets and
session keys are replaced by [REDACTED] and phone numbers masked
(138****5678). WeChat keeps rids for 7 days, answers only the app that made
the call, and cannot look up jscode2session calls. It reads the
configuration serve reads; with several apps, --app names the one.

  --app APPID  the app that made the call (required with several apps)
  --json       print JSON
  -v           print the JSON log on stderr

`

// ridCmd runs `wxphone rid`.
func ridCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	oneRID := func(f toolFlags) error {
		if len(f.rest) != 1 && !helpAsked(f.args) {
			return errors.New("want exactly one rid")
		}
		return nil
	}
	r, f, err := openTool(ctx, "rid", ridUsage, args, true, oneRID, stdout, stderr, getenv)
	if err != nil {
		return err
	}
	defer r.Close()
	c, err := r.Service.Client(f.app)
	if err != nil {
		return fmt.Errorf("--app %q: %w (configured: %s)", f.app, err, strings.Join(r.Service.Apps(), ", "))
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	info, err := c.RIDInfo(ctx, f.rest[0])
	if err != nil {
		return err
	}
	if f.json {
		b, _ := json.MarshalIndent(struct {
			AppID string `json:"appid"`
			*wxphone.RIDInfo
			CostMS int64 `json:"cost_ms"`
		}{c.AppID(), info, info.Cost.Milliseconds()}, "", "  ")
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	for _, kv := range [][2]string{
		{"rid", info.RID}, {"appid", c.AppID()},
		{"invoked at", info.InvokeTime.In(time.FixedZone("UTC+8", 8*3600)).Format(time.RFC3339)},
		{"cost", info.Cost.String()}, {"client ip", info.ClientIP},
		{"request url", info.RequestURL}, {"request body", info.RequestBody}, {"response body", info.ResponseBody},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
	}
	return tw.Flush()
}

func helpAsked(args []string) bool {
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" {
			return true
		}
	}
	return false
}
