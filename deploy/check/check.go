// Package check holds the checks of wxphone's deployment files, in a module
// of its own so that the library does not depend on the Kubernetes API
// types or on Prometheus:
//
//   - the Helm chart (deploy/helm/wxphone), rendered by helm, is decoded
//     strictly into the Kubernetes API types (and the Prometheus Operator's),
//     so a misspelt or misplaced field fails, and checked against the
//     promises the chart makes (probes, shutdown, hardening, secrets as
//     files, a configuration wxphone serve accepts);
//   - every PromQL expression of the alerting rules
//     (deploy/prometheus/wxphone-rules.yml) and of the Grafana dashboard
//     (deploy/grafana/wxphone.json) parses and names only metrics that
//     wxphone exports, as listed by its real registry.
//
// Run it with `go test ./...` in this directory; .ci/run does, with helm
// installed.
package check

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"sort"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/promql/parser"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/wxphone/wxphone/metrics"
)

// Object is one decoded manifest.
type Object struct {
	// Kind is the manifest's kind ("Deployment", …).
	Kind string
	// Name is its metadata.name.
	Name string
	// Obj is the typed object (*appsv1.Deployment, …).
	Obj runtime.Object
}

// newDecoder returns a strict decoder knowing the kinds the chart may
// render: the core Kubernetes groups it uses and the Prometheus Operator's.
func newDecoder() (runtime.Decoder, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme,
		autoscalingv2.AddToScheme, networkingv1.AddToScheme, monitoringv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	// EnableStrict: unknown and duplicate fields are errors.
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer(), nil
}

// Decode splits a multi-document YAML stream (the output of helm template)
// and decodes each document strictly into its API type. A document of an
// unknown kind, with a field its type does not have, or with a field given
// twice is an error naming the document.
func Decode(manifests []byte) ([]Object, error) {
	dec, err := newDecoder()
	if err != nil {
		return nil, err
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifests)))
	var out []Object
	var errs []error
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, gvk, err := dec.Decode(doc, nil, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("document %d (%s): %w", i, source(doc), err))
			continue
		}
		name := ""
		if m, ok := obj.(interface{ GetName() string }); ok {
			name = m.GetName()
		}
		out = append(out, Object{Kind: gvk.Kind, Name: name, Obj: obj})
	}
	return out, errors.Join(errs...)
}

// stripComments drops whole-line comments (helm's "# Source:" lines).
func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] == '#' {
			continue
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// source returns the "# Source: …" template of a helm document, or "?".
func source(doc []byte) string {
	for _, line := range strings.Split(string(doc), "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "# Source: "); ok {
			return s
		}
	}
	return "?"
}

// Metric is one metric wxphone exports.
type Metric struct {
	// Name is the metric family's name.
	Name string
	// Suffixes are the suffixes of its series besides Name itself:
	// _bucket, _sum and _count for a histogram, _sum and _count for a
	// summary, none otherwise.
	Suffixes []string
}

var (
	fqNameRE          = regexp.MustCompile(`fqName: "([^"]+)"`)
	histogramSuffixes = []string{"_bucket", "_sum", "_count"}
	summarySuffixes   = []string{"_sum", "_count"}
)

// descNames returns the names of the descriptors c describes.
func descNames(c prometheus.Collector) ([]string, error) {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	var names []string
	var err error
	for d := range ch {
		if sm := fqNameRE.FindStringSubmatch(d.String()); sm != nil {
			names = append(names, sm[1])
		} else if err == nil {
			err = fmt.Errorf("cannot read the name of %s", d)
		}
	}
	return names, err
}

// ExportedMetrics lists the metric families registered in reg (every
// collector's Describe, so metric vectors with no series yet count) and
// tells histograms and summaries apart, from m's fields and from the
// families reg gathers now. m is the metric set reg belongs to (nil: none).
func ExportedMetrics(reg *prometheus.Registry, m *metrics.Metrics) ([]Metric, error) {
	names, err := descNames(reg)
	if err != nil {
		return nil, err
	}
	suffixes := map[string][]string{}
	for _, n := range names {
		suffixes[n] = nil
	}
	if m != nil {
		v := reflect.ValueOf(m).Elem()
		for i := range v.NumField() {
			var c prometheus.Collector
			var sfx []string
			switch f := v.Field(i).Interface().(type) {
			case *prometheus.HistogramVec:
				c, sfx = f, histogramSuffixes
			case *prometheus.SummaryVec:
				c, sfx = f, summarySuffixes
			default:
				continue
			}
			ns, err := descNames(c)
			if err != nil {
				return nil, err
			}
			for _, n := range ns {
				suffixes[n] = sfx
			}
		}
	}
	fams, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	for _, f := range fams {
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			suffixes[f.GetName()] = histogramSuffixes
		case dto.MetricType_SUMMARY:
			suffixes[f.GetName()] = summarySuffixes
		}
	}
	out := make([]Metric, 0, len(suffixes))
	for n, s := range suffixes {
		out = append(out, Metric{Name: n, Suffixes: s})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// SeriesNames returns every series name the metrics produce.
func SeriesNames(ms []Metric) map[string]bool {
	out := map[string]bool{}
	for _, m := range ms {
		out[m.Name] = true
		for _, s := range m.Suffixes {
			out[m.Name+s] = true
		}
	}
	return out
}

var grafanaVarRE = regexp.MustCompile(`\$(__[a-z_]+|\{[A-Za-z0-9_:]+\}|[A-Za-z0-9_]+)`)

// ExpandGrafana replaces Grafana's variables in a query by values PromQL
// accepts: $__rate_interval and the other built-in intervals by 5m, the
// dashboard's own variables ($appid, ${job}) by ".*" (they appear inside
// label matchers).
func ExpandGrafana(q string) string {
	return grafanaVarRE.ReplaceAllStringFunc(q, func(v string) string {
		if strings.HasPrefix(v, "$__") {
			return "5m"
		}
		return ".*"
	})
}

// MetricNames parses a PromQL expression and returns the metric names its
// selectors use. A selector with no literal metric name (a bare {…}
// selector, or a regexp on __name__) is an error: the expression would not
// say which metric it reads.
func MetricNames(expr string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	var bad error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == "__name__" && (name == "" || m.Value != name) {
				if m.Type.String() != "=" {
					bad = fmt.Errorf("selector %s matches metric names by %s", vs, m.Type)
					return nil
				}
				name = m.Value
			}
		}
		if name == "" {
			bad = fmt.Errorf("selector %s names no metric", vs)
			return nil
		}
		names = append(names, name)
		return nil
	})
	return names, bad
}
