package check

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"

	"github.com/wxphone/wxphone/config"
	"github.com/wxphone/wxphone/metrics"
	"github.com/wxphone/wxphone/replica"
	"github.com/wxphone/wxphone/wxmock"
)

// exported returns every series name wxphone serve exports: the real
// replica is wired as serve wires it (in memory, and in fleet mode on a
// private miniredis) against the emulator, and its registry lists what
// metrics.New registered and what was registered while wiring.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	emu, err := wxmock.New(wxmock.Options{Apps: []wxmock.App{{AppID: "wxcheckmetrics001", Secret: "check-secret-0123456789"}}})
	if err != nil {
		t.Fatal(err)
	}
	ets := httptest.NewServer(emu)
	t.Cleanup(ets.Close)
	all := map[string]bool{}
	for _, redisURL := range []string{"", "redis://" + miniredis.RunT(t).Addr() + "/0"} {
		env := map[string]string{
			"WX_APPID": "wxcheckmetrics001", "WX_SECRET": "check-secret-0123456789", "WX_API_BASE": ets.URL,
			"WXPHONE_API_KEYS": "check-api-key-0123456789",
		}
		if redisURL != "" {
			env["REDIS_URL"] = redisURL
			env["WXPHONE_DATA_KEY"] = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
		}
		cfg, err := config.Load(nil, func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		r, err := replica.Build(context.Background(), cfg, replica.Options{NoWarm: true})
		if err != nil {
			t.Fatal(err)
		}
		ms, err := ExportedMetrics(r.Metrics.Registry, r.Metrics)
		_ = r.Close()
		if err != nil {
			t.Fatal(err)
		}
		for n := range SeriesNames(ms) {
			all[n] = true
		}
	}
	return all
}

// TestExportedMetrics checks the list itself, so that the tests below
// cannot pass on an empty or wrong list.
func TestExportedMetrics(t *testing.T) {
	names := exported(t)
	for _, want := range []string{
		"wxphone_token_usable", "wxphone_token_remaining_seconds", "wxphone_http_requests_in_flight", // registered while wiring
		"wxphone_outcome_unknown_total", "wxphone_degraded", // vectors with no series yet
		"wxphone_upstream_duration_seconds_bucket", "wxphone_http_request_duration_seconds_count", // histogram series
		"process_resident_memory_bytes", "go_goroutines", "go_gc_duration_seconds_count", // a summary
		"wxphone_quota_daily_limit", "wxphone_quota_used", "wxphone_quota_remaining", "wxphone_force_refresh_remaining", // quota probe
	} {
		if !names[want] {
			t.Errorf("%s is missing from the exported names", want)
		}
	}
	for _, not := range []string{"wxphone_token_usable_bucket", "wxphone_degraded_count", "wxphone_exchanges_total_sum", "go_gc_duration_seconds_bucket"} {
		if names[not] {
			t.Errorf("%s is listed but no such series exists", not)
		}
	}
	// The list comes from the registry, not from a copy: a metric
	// registered on it appears.
	m := metrics.New()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "wxphone_check_probe", Help: "test"})
	m.Registry.MustRegister(g)
	ms, err := ExportedMetrics(m.Registry, m)
	if err != nil {
		t.Fatal(err)
	}
	if !SeriesNames(ms)["wxphone_check_probe"] {
		t.Error("a metric registered at run time is not listed")
	}
}

// TestMetricNames checks the PromQL walk on expressions of known content.
func TestMetricNames(t *testing.T) {
	tests := []struct {
		expr string
		want []string
		bad  bool
	}{
		{expr: `max without (instance) (wxphone_token_usable) == 0`, want: []string{"wxphone_token_usable"}},
		{expr: `sum(rate(a_total{x="1"}[5m])) / sum(rate(b_total[5m])) > 0.1 and c > 3`, want: []string{"a_total", "b_total", "c"}},
		{expr: `histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m])))`, want: []string{"h_bucket"}},
		{expr: `count(x == 0) or vector(0)`, want: []string{"x"}},
		{expr: `{__name__="y", job="j"}`, want: []string{"y"}},
		{expr: `{job="j"}`, bad: true},
		{expr: `{__name__=~"wxphone_.*"}`, bad: true},
		{expr: `sum(rate(x[5m])`, bad: true},
	}
	for _, tc := range tests {
		got, err := MetricNames(tc.expr)
		if tc.bad {
			if err == nil {
				t.Errorf("%s: no error", tc.expr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, %v; want %v", tc.expr, got, err, tc.want)
		}
	}
	if got := ExpandGrafana(`rate(x{appid=~"$appid", job=~"${job}"}[$__rate_interval])`); got != `rate(x{appid=~".*", job=~".*"}[5m])` {
		t.Errorf("ExpandGrafana: %s", got)
	}
}

// checkExprs fails for every expression that does not parse or names a
// metric wxphone does not export (one subtest per expression).
func checkExprs(t *testing.T, exprs map[string]string, names map[string]bool) {
	t.Helper()
	if len(exprs) == 0 {
		t.Fatal("no expression found")
	}
	for loc, e := range exprs {
		t.Run(loc, func(t *testing.T) {
			used, err := MetricNames(e)
			if err != nil {
				t.Fatal(err)
			}
			if len(used) == 0 {
				t.Errorf("%q reads no metric", e)
			}
			for _, n := range used {
				if !names[n] {
					t.Errorf("%q uses %s, which wxphone does not export", e, n)
				}
			}
		})
	}
}

// TestRulesNameOnlyExportedMetrics: every alert of the plain rules file
// (which the chart's PrometheusRule carries unchanged).
func TestRulesNameOnlyExportedMetrics(t *testing.T) {
	b, err := os.ReadFile("../prometheus/wxphone-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Record      string            `json:"record"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatal(err)
	}
	exprs := map[string]string{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			exprs[g.Name+"/"+r.Alert+r.Record] = r.Expr
			if r.Alert != "" && (r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "") {
				t.Errorf("alert %s needs a severity, a summary and a description", r.Alert)
			}
		}
	}
	checkExprs(t, exprs, exported(t))
}

// TestDashboardNamesOnlyExportedMetrics: every query of the Grafana
// dashboard, its panels' targets and its template variables.
func TestDashboardNamesOnlyExportedMetrics(t *testing.T) {
	b, err := os.ReadFile("../grafana/wxphone.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	exprs := map[string]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				exprs["panel "+p.Title+"/"+tg.RefID] = ExpandGrafana(tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		if m, ok := v.Query.(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		// label_values(selector, label): the selector is PromQL.
		inner, ok := strings.CutPrefix(q, "label_values(")
		i := strings.LastIndex(inner, ",")
		if !ok || i < 0 {
			t.Errorf("variable %s: query %q is not label_values(metric, label)", v.Name, q)
			continue
		}
		exprs["variable "+v.Name] = ExpandGrafana(inner[:i])
	}
	if len(exprs) < 20 {
		t.Errorf("only %d queries found in the dashboard", len(exprs))
	}
	checkExprs(t, exprs, exported(t))
}

type panel struct {
	Title   string `json:"title"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}
