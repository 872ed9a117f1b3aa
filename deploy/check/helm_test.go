package check

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/wxphone/wxphone/config"
)

const chartDir = "../helm/wxphone"

// helmBin finds helm: $HELM, else PATH. Outside CI a missing helm skips
// the chart tests; in CI (CI set) it fails them.
func helmBin(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	h, err := exec.LookPath("helm")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("helm is not installed (.ci/run installs it)")
		}
		t.Skip("helm is not installed; .ci/run installs it (go install helm.sh/helm/v4/cmd/helm)")
	}
	return h
}

// render runs helm template on the chart with the given extra arguments.
func render(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), append([]string{"template", "rel", chartDir, "--namespace", "payments"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, &renderError{err: err, stderr: stderr.String()}
	}
	return out, nil
}

type renderError struct {
	err    error
	stderr string
}

func (e *renderError) Error() string { return e.err.Error() + ": " + e.stderr }

// chartCase is one set of values the chart is rendered with.
type chartCase struct {
	name  string
	args  []string
	kinds []string // the kinds expected, sorted
	redis bool
}

var chartCases = []chartCase{
	{
		name:  "defaults",
		kinds: []string{"ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "Service", "ServiceAccount"},
	},
	{
		name:  "metrics on the API port",
		args:  []string{"--set", "metrics.adminPort=0", "--set", "serviceMonitor.enabled=true", "--set", "networkPolicy.enabled=true"},
		kinds: []string{"ConfigMap", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Service", "ServiceAccount", "ServiceMonitor"},
	},
	{
		name: "every optional part",
		args: []string{"-f", chartDir + "/ci/all-values.yaml"},
		kinds: []string{"ConfigMap", "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "NetworkPolicy",
			"PodDisruptionBudget", "PrometheusRule", "Service", "Service", "ServiceAccount", "ServiceMonitor"},
		redis: true,
	},
}

// TestChart renders the chart with the default values and with every
// optional part on, decodes the manifests strictly and checks what the
// chart promises.
func TestChart(t *testing.T) {
	for _, tc := range chartCases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := render(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := Decode(out)
			if err != nil {
				t.Fatalf("strict decoding: %v", err)
			}
			var kinds []string
			for _, o := range objs {
				kinds = append(kinds, o.Kind)
			}
			slices.Sort(kinds)
			if !slices.Equal(kinds, tc.kinds) {
				t.Errorf("kinds %v, want %v", kinds, tc.kinds)
			}
			checkManifests(t, objs, tc.redis)
		})
	}
}

func find[T any](objs []Object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.Obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func checkManifests(t *testing.T, objs []Object, redis bool) {
	deps := find[*appsv1.Deployment](objs)
	if len(deps) != 1 {
		t.Fatalf("%d Deployments, want 1", len(deps))
	}
	d := deps[0]
	pod := d.Spec.Template.Spec
	podLabels := d.Spec.Template.Labels
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]

	// Hardening.
	psc, csc := pod.SecurityContext, c.SecurityContext
	switch {
	case psc == nil || csc == nil:
		t.Fatal("no security context")
	case psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot, csc.RunAsNonRoot == nil || !*csc.RunAsNonRoot:
		t.Error("runAsNonRoot is not set")
	case psc.RunAsUser == nil || *psc.RunAsUser == 0:
		t.Error("the pod runs as root")
	case csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem:
		t.Error("the root filesystem is writable")
	case csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation:
		t.Error("privilege escalation is allowed")
	case csc.Capabilities == nil || !slices.Equal(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(csc.Capabilities.Add) > 0:
		t.Errorf("capabilities %+v, want all dropped and none added", csc.Capabilities)
	case psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Error("no RuntimeDefault seccomp profile")
	case pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken:
		t.Error("the service account token is mounted")
	}

	// Probes and shutdown.
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness probe %+v, want GET /readyz", p)
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" {
		t.Errorf("liveness probe %+v, want GET /healthz", p)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if _, dup := env[e.Name]; dup {
			t.Errorf("variable %s is set twice", e.Name)
		}
		env[e.Name] = e.Value
	}
	shutdown, err := time.ParseDuration(env["WXPHONE_SHUTDOWN_TIMEOUT"])
	if err != nil {
		t.Fatalf("WXPHONE_SHUTDOWN_TIMEOUT %q: %v", env["WXPHONE_SHUTDOWN_TIMEOUT"], err)
	}
	var preStop time.Duration
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil || c.Lifecycle.PreStop.Sleep.Seconds <= 0 {
		t.Error("no preStop pause")
	} else {
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	if g := pod.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= preStop+shutdown {
		t.Errorf("terminationGracePeriodSeconds %v is not above the preStop pause (%v) + WXPHONE_SHUTDOWN_TIMEOUT (%v)", g, preStop, shutdown)
	}

	// Resources.
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := c.Resources.Requests[r]; !ok || q.IsZero() {
			t.Errorf("no %s request", r)
		}
	}
	if q, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok || q.IsZero() {
		t.Error("no memory limit")
	}

	// Variables: every one is a setting wxphone knows (a misspelt name
	// would be ignored silently), and no secret is given as a value.
	known := map[string]config.Setting{}
	for _, s := range config.Settings() {
		known[s.Env] = s
		if s.FileEnv != "" {
			known[s.FileEnv] = s
		}
	}
	for _, e := range c.Env {
		s, ok := known[e.Name]
		switch {
		case !ok && e.Name != "GOMEMLIMIT" && !strings.HasPrefix(e.Name, "OTEL_"):
			t.Errorf("variable %s is not a wxphone setting (config.Settings)", e.Name)
		case ok && s.Secret && e.Name == s.Env:
			t.Errorf("secret %s is given as a value; the chart must use %s", e.Name, s.FileEnv)
		}
	}

	// Secrets come from one Secret volume, read-only, owner-only or
	// group-only, and every *_FILE and apps-file path lies in a mount.
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
		if !m.ReadOnly {
			t.Errorf("volume %s is mounted writable", m.Name)
		}
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	sec := vols["secrets"].Secret
	if sec == nil || sec.DefaultMode == nil || *sec.DefaultMode&0o007 != 0 {
		t.Fatalf("secret volume %+v: want a Secret with no access for others", sec)
	}
	cmName := ""
	if cm := vols["config"].ConfigMap; cm != nil {
		cmName = cm.Name
	}
	files := fakeMounts(t, objs, mounts, sec, cmName)
	getenv := func(k string) string {
		v := env[k]
		for dir, local := range files {
			if strings.HasPrefix(v, dir+"/") {
				v = local + strings.TrimPrefix(v, dir)
			}
		}
		return v
	}
	cfg, err := config.Load(nil, getenv)
	if err != nil {
		t.Fatalf("wxphone serve would refuse this configuration: %v", err)
	}
	if got := cfg.RedisURL != ""; got != redis {
		t.Errorf("fleet mode %v, want %v", got, redis)
	}
	if len(cfg.Apps) == 0 {
		t.Error("no app configured")
	}

	// Selectors and ports line up.
	cports := map[string]bool{}
	for _, p := range c.Ports {
		cports[p.Name] = true
	}
	for _, p := range []string{c.ReadinessProbe.HTTPGet.Port.StrVal, c.LivenessProbe.HTTPGet.Port.StrVal} {
		if !cports[p] {
			t.Errorf("probe port %q is not a container port", p)
		}
	}
	matches := func(sel map[string]string) bool {
		for k, v := range sel {
			if podLabels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	if !matches(d.Spec.Selector.MatchLabels) {
		t.Error("the Deployment's selector does not match its pods")
	}
	// With an admin address, /metrics is served there only, and the API's
	// Service does not expose that port.
	admin := env["WXPHONE_ADMIN_ADDR"] != ""
	if admin != cports["admin"] {
		t.Errorf("WXPHONE_ADMIN_ADDR %q but container port admin %v", env["WXPHONE_ADMIN_ADDR"], cports["admin"])
	}
	services := find[*corev1.Service](objs)
	for _, s := range services {
		if !matches(s.Spec.Selector) {
			t.Errorf("Service %s selects no pod of the Deployment", s.Name)
		}
		for _, p := range s.Spec.Ports {
			if !cports[p.TargetPort.StrVal] {
				t.Errorf("Service port %s targets %q, not a container port", p.Name, p.TargetPort.StrVal)
			}
			if p.TargetPort.StrVal == "admin" && s.Labels["app.kubernetes.io/component"] != "metrics" {
				t.Errorf("Service %s exposes the admin port", s.Name)
			}
		}
	}
	for _, p := range find[*policyv1.PodDisruptionBudget](objs) {
		if p.Spec.Selector == nil || !matches(p.Spec.Selector.MatchLabels) {
			t.Error("the PodDisruptionBudget selects no pod")
		}
	}
	for _, h := range find[*autoscalingv2.HorizontalPodAutoscaler](objs) {
		if h.Spec.ScaleTargetRef.Kind != "Deployment" || h.Spec.ScaleTargetRef.Name != d.Name {
			t.Errorf("the HPA scales %+v, not the Deployment", h.Spec.ScaleTargetRef)
		}
		if d.Spec.Replicas != nil {
			t.Error("the Deployment sets replicas although an HPA scales it")
		}
	}
	for _, n := range find[*networkingv1.NetworkPolicy](objs) {
		if !matches(n.Spec.PodSelector.MatchLabels) {
			t.Error("the NetworkPolicy selects no pod")
		}
		for _, r := range n.Spec.Ingress {
			for _, p := range r.Ports {
				if p.Port == nil || !cports[p.Port.StrVal] {
					t.Errorf("NetworkPolicy ingress port %v is not a container port", p.Port)
				}
			}
		}
	}
	for _, sm := range find[*monitoringv1.ServiceMonitor](objs) {
		var selected []*corev1.Service
		for _, s := range services {
			ok := len(sm.Spec.Selector.MatchLabels) > 0
			for k, v := range sm.Spec.Selector.MatchLabels {
				ok = ok && s.Labels[k] == v
			}
			if ok {
				selected = append(selected, s)
			}
		}
		if len(selected) != 1 {
			t.Fatalf("the ServiceMonitor selects %d Services, want 1", len(selected))
		}
		want := "http"
		if admin {
			want = "admin"
		}
		for _, e := range sm.Spec.Endpoints {
			if e.Port != want || e.Path != "/metrics" || !slices.ContainsFunc(selected[0].Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == e.Port }) {
				t.Errorf("ServiceMonitor endpoint %s%s on Service %s: want port %s of that Service, /metrics", e.Port, e.Path, selected[0].Name, want)
			}
		}
	}
	checkShippedFiles(t, objs)
}

// fakeMounts lays out, in a temporary directory, the files the pod would
// see: each item of the secret volume (a fake value of the right shape) and
// the chart's ConfigMap, with the apps file's paths pointed into it. It
// returns mount path -> local directory.
func fakeMounts(t *testing.T, objs []Object, mounts map[string]corev1.VolumeMount, sec *corev1.SecretVolumeSource, cmName string) map[string]string {
	t.Helper()
	root := t.TempDir()
	out := map[string]string{}
	secDir := filepath.Join(root, "secrets")
	cfgDir := filepath.Join(root, "config")
	for _, d := range []string{secDir, cfgDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	out[mounts["secrets"].MountPath] = secDir
	out[mounts["config"].MountPath] = cfgDir
	fake := func(key string) string {
		switch {
		case strings.Contains(key, "redis"):
			return "redis://redis.payments.svc:6379/0"
		case strings.Contains(key, "data-key"):
			return "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // 32 bytes, base64
		case strings.Contains(key, "api-keys"):
			return "fake-api-key-0123456789-" + key
		}
		return "fake-app-secret-" + key
	}
	for _, it := range sec.Items {
		if err := os.WriteFile(filepath.Join(secDir, it.Path), []byte(fake(it.Key)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, cm := range find[*corev1.ConfigMap](objs) {
		if cm.Name != cmName {
			continue
		}
		for name, data := range cm.Data {
			data = strings.ReplaceAll(data, mounts["secrets"].MountPath+"/", secDir+"/")
			if err := os.WriteFile(filepath.Join(cfgDir, name), []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	return out
}

// checkShippedFiles: the PrometheusRule carries the plain rules file and
// the dashboard ConfigMap the dashboard file, unchanged.
func checkShippedFiles(t *testing.T, objs []Object) {
	t.Helper()
	for _, r := range find[*monitoringv1.PrometheusRule](objs) {
		b, err := os.ReadFile("../prometheus/wxphone-rules.yml")
		if err != nil {
			t.Fatal(err)
		}
		var plain monitoringv1.PrometheusRuleSpec
		if err := yaml.UnmarshalStrict(b, &plain); err != nil {
			t.Fatalf("wxphone-rules.yml: %v", err)
		}
		if !reflect.DeepEqual(plain, r.Spec) {
			t.Error("the PrometheusRule differs from deploy/prometheus/wxphone-rules.yml")
		}
		if len(r.Spec.Groups) == 0 || len(r.Spec.Groups[0].Rules) == 0 {
			t.Error("the PrometheusRule has no rule")
		}
	}
	for _, cm := range find[*corev1.ConfigMap](objs) {
		data, ok := cm.Data["wxphone.json"]
		if !ok {
			continue
		}
		b, err := os.ReadFile("../grafana/wxphone.json")
		if err != nil {
			t.Fatal(err)
		}
		var a, want any
		if err := json.Unmarshal([]byte(data), &a); err != nil {
			t.Fatalf("dashboard ConfigMap: %v", err)
		}
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, want) {
			t.Error("the dashboard ConfigMap differs from deploy/grafana/wxphone.json")
		}
	}
}

// TestStrictDecodingRejectsMisspeltFields: the same rendered manifests
// with one field misspelt, misplaced or repeated no longer decode, and the
// error names the field.
func TestStrictDecodingRejectsMisspeltFields(t *testing.T) {
	out, err := render(t, "-f", chartDir+"/ci/all-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(out); err != nil {
		t.Fatalf("the unchanged manifests do not decode: %v", err)
	}
	tests := []struct {
		name, old, new, want string
	}{
		{"container field", "readOnlyRootFilesystem: true", "readOnlyRootFilesytem: true", "readOnlyRootFilesytem"},
		{"probe field", "failureThreshold: 2", "failureTreshold: 2", "failureTreshold"},
		{"pod spec field", "terminationGracePeriodSeconds:", "terminationGracePeriod:", "terminationGracePeriod"},
		{"misplaced field", "      automountServiceAccountToken: false", "      automountServiceAccountToken: false\n      readOnlyRootFilesystem: true", "readOnlyRootFilesystem"},
		{"repeated field", "      enableServiceLinks: false", "      enableServiceLinks: false\n      enableServiceLinks: true", "enableServiceLinks"},
		{"Service field", "targetPort: http", "targetPorts: http", "targetPorts"},
		{"PodDisruptionBudget field", "maxUnavailable: 1\n  selector:", "maxUnavailble: 1\n  selector:", "maxUnavailble"},
		{"HPA field", "stabilizationWindowSeconds:", "stabilisationWindowSeconds:", "stabilisationWindowSeconds"},
		{"NetworkPolicy field", "policyTypes:", "policyType:", "policyType"},
		{"ServiceMonitor field", "honorLabels: true", "honourLabels: true", "honourLabels"},
		{"PrometheusRule field", "          for: 2m", "          fro: 2m", "fro"},
		{"unknown kind", "kind: PodDisruptionBudget", "kind: PodDisruptionBudjet", "PodDisruptionBudjet"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(string(out), tc.old) {
				t.Fatalf("the manifests have no %q", tc.old)
			}
			bad := strings.Replace(string(out), tc.old, tc.new, 1)
			_, err := Decode([]byte(bad))
			if err == nil {
				t.Fatalf("decoding succeeded with %q", tc.new)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %q", err, tc.want)
			}
			t.Log(err)
		})
	}
}

// TestChartRefusesUnsafeValues: values that would break the promise or
// the start-up fail at render time with a message saying why.
func TestChartRefusesUnsafeValues(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"two replicas without Redis", []string{"--set", "replicaCount=2"}, "needs redis.enabled"},
		{"autoscaling without Redis", []string{"--set", "autoscaling.enabled=true"}, "needs redis.enabled"},
		{"Redis without a data key", []string{"--set", "redis.enabled=true"}, "needs secret.keys.dataKey"},
		{"no API key", []string{"--set", "secret.keys.apiKeys="}, "secret.keys.apiKeys is required"},
		{"no app", []string{"--set", "apps=null"}, "at least one Mini Program"},
		{"bad appid", []string{"--set", "apps[0].appid=wx 1", "--set", "apps[0].secretKey=s"}, "want 1..64 characters"},
		{"app without secret key", []string{"--set", "apps[0].appid=wx1", "--set", "apps[0].secretKey="}, "needs appid and secretKey"},
		{"misspelt value (values.schema.json)", []string{"--set", "redis.enable=true"}, "additional properties 'enable' not allowed"},
		{"misspelt nested value", []string{"--set", "secret.keys.apikeys=k"}, "additional properties 'apikeys' not allowed"},
		{"bad duration", []string{"--set", "config.requestTimeout=soon"}, "/config/requestTimeout"},
		{"metrics on the API port", []string{"--set", "metrics.adminPort=8080"}, "/metrics/adminPort"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(t, tc.args...)
			if err == nil {
				t.Fatal("helm template succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}
