package k8s_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// kustomization is the part of kustomize's Kustomization these manifests
// use; decoding is strict, so a field outside it fails the test.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources"`
	Labels     []struct {
		Pairs map[string]string `json:"pairs"`
	} `json:"labels,omitempty"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
	} `json:"images,omitempty"`
	Replicas []struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
	} `json:"replicas,omitempty"`
	Patches []struct {
		Path string `json:"path"`
	} `json:"patches,omitempty"`
	ConfigMapGenerator []struct {
		Name    string   `json:"name"`
		Files   []string `json:"files"`
		Options struct {
			DisableNameSuffixHash bool              `json:"disableNameSuffixHash"`
			Labels                map[string]string `json:"labels"`
		} `json:"options"`
	} `json:"configMapGenerator,omitempty"`
}

// objects are the decoded manifests of one kustomization, by kind.
type objects struct {
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	pdbs        map[string]*policyv1.PodDisruptionBudget
	scaled      map[string]*kedav1alpha1.ScaledObject
	namespaces  map[string]*corev1.Namespace
}

func newObjects() *objects {
	return &objects{
		deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{},
		configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, scaled: map[string]*kedav1alpha1.ScaledObject{},
		namespaces: map[string]*corev1.Namespace{},
	}
}

// strict decodes one YAML document into out, refusing unknown fields.
func strict(t *testing.T, where string, doc []byte, out any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, out); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
}

// decodeFile decodes every document of a manifest file into its API type.
func (o *objects) decodeFile(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("%s #%d: %v", path, i, err)
		}
		where := path + " " + head.Kind
		switch head.APIVersion + " " + head.Kind {
		case "apps/v1 Deployment":
			var d appsv1.Deployment
			strict(t, where, doc, &d)
			o.deployments[d.Name] = &d
		case "v1 Service":
			var s corev1.Service
			strict(t, where, doc, &s)
			o.services[s.Name] = &s
		case "v1 ConfigMap":
			var c corev1.ConfigMap
			strict(t, where, doc, &c)
			o.configMaps[c.Name] = &c
		case "v1 Secret":
			var s corev1.Secret
			strict(t, where, doc, &s)
			o.secrets[s.Name] = &s
		case "v1 Namespace":
			var n corev1.Namespace
			strict(t, where, doc, &n)
			o.namespaces[n.Name] = &n
		case "policy/v1 PodDisruptionBudget":
			var p policyv1.PodDisruptionBudget
			strict(t, where, doc, &p)
			o.pdbs[p.Name] = &p
		case "keda.sh/v1alpha1 ScaledObject":
			var s kedav1alpha1.ScaledObject
			strict(t, where, doc, &s)
			o.scaled[s.Name] = &s
		default:
			t.Fatalf("%s #%d: no API type known for %s %s", path, i, head.APIVersion, head.Kind)
		}
	}
}

// loadKustomization decodes dir/kustomization.yaml, its resources (files,
// and directories as kustomizations of their own) and its patches, each
// into its API type.
func loadKustomization(t *testing.T, dir string) *objects {
	t.Helper()
	var k kustomization
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	strict(t, dir+"/kustomization.yaml", data, &k)
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Fatalf("%s: apiVersion %q kind %q", dir, k.APIVersion, k.Kind)
	}
	o := newObjects()
	for _, r := range k.Resources {
		p := filepath.Join(dir, r)
		if st, err := os.Stat(p); err != nil {
			t.Fatalf("%s: resource %s: %v", dir, r, err)
		} else if st.IsDir() {
			sub := loadKustomization(t, p)
			o.merge(sub)
			continue
		}
		o.decodeFile(t, p)
	}
	for _, g := range k.ConfigMapGenerator {
		for _, f := range g.Files {
			_, file, _ := strings.Cut(f, "=")
			if file == "" {
				file = f
			}
			raw, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil {
				t.Fatalf("%s: configMapGenerator %s: %v", dir, g.Name, err)
			}
			if strings.HasSuffix(file, ".json") && !json.Valid(raw) {
				t.Fatalf("%s: %s is not valid JSON", dir, file)
			}
		}
	}
	// Patches are partial objects of a kind the base has: each decodes
	// strictly and names an object of the resources.
	patched := newObjects()
	for _, p := range k.Patches {
		patched.decodeFile(t, filepath.Join(dir, p.Path))
	}
	for name := range patched.deployments {
		if o.deployments[name] == nil {
			t.Errorf("%s: a patch names Deployment %s, which no resource defines", dir, name)
		}
	}
	for name := range patched.scaled {
		if o.scaled[name] == nil {
			t.Errorf("%s: a patch names ScaledObject %s, which no resource defines", dir, name)
		}
	}
	for _, r := range k.Replicas {
		if o.deployments[r.Name] == nil {
			t.Errorf("%s: replicas names Deployment %s, which no resource defines", dir, r.Name)
		}
	}
	o.mergeScaled(patched)
	return o
}

func (o *objects) merge(p *objects) {
	for k, v := range p.deployments {
		o.deployments[k] = v
	}
	for k, v := range p.services {
		o.services[k] = v
	}
	for k, v := range p.configMaps {
		o.configMaps[k] = v
	}
	for k, v := range p.secrets {
		o.secrets[k] = v
	}
	for k, v := range p.pdbs {
		o.pdbs[k] = v
	}
	for k, v := range p.scaled {
		o.scaled[k] = v
	}
	for k, v := range p.namespaces {
		o.namespaces[k] = v
	}
}

// mergeScaled applies the triggers of patched ScaledObjects (a strategic
// merge of a CRD replaces lists), so the overlay's queries are checked too.
func (o *objects) mergeScaled(p *objects) {
	for name, s := range p.scaled {
		if base := o.scaled[name]; base != nil && len(s.Spec.Triggers) > 0 {
			c := *base
			c.Spec.Triggers = s.Spec.Triggers
			o.scaled[name] = &c
		}
	}
}

func TestBase(t *testing.T) {
	o := loadKustomization(t, "base")
	checkCluster(t, o)
}

func TestOverlays(t *testing.T) {
	dirs, err := filepath.Glob("overlays/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no overlays: %v", err)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			o := loadKustomization(t, dir)
			checkCluster(t, o)
		})
	}
}

// roles are the Deployments and the roles each runs.
var roles = map[string]string{
	"tasklane-gateway":     "gateway",
	"tasklane-dispatcher":  "dispatcher",
	"tasklane-notifier":    "notifier",
	"tasklane-coordinator": "controller,scheduler,triggers",
}

func checkCluster(t *testing.T, o *objects) {
	t.Helper()
	cfg := o.configMaps["tasklane-config"]
	if cfg == nil || cfg.Data["tasklane.yaml"] == "" {
		t.Fatal("ConfigMap tasklane-config with tasklane.yaml is missing")
	}
	var tc struct {
		Server struct {
			MetricsAddr string `json:"metrics_addr"`
		} `json:"server"`
		Dispatcher struct {
			DrainTimeout string `json:"drain_timeout"`
		} `json:"dispatcher"`
	}
	if err := yaml.Unmarshal([]byte(cfg.Data["tasklane.yaml"]), &tc); err != nil {
		t.Fatalf("tasklane.yaml: %v", err)
	}
	if !strings.HasSuffix(tc.Server.MetricsAddr, ":9090") {
		t.Errorf("server.metrics_addr = %q, the probes and Prometheus use :9090", tc.Server.MetricsAddr)
	}
	drain := 30 * time.Second // config.DrainTimeoutDefault
	if tc.Dispatcher.DrainTimeout != "" {
		var err error
		if drain, err = time.ParseDuration(tc.Dispatcher.DrainTimeout); err != nil {
			t.Fatalf("dispatcher.drain_timeout: %v", err)
		}
	}
	sec := o.secrets["tasklane-secrets"]
	if sec == nil {
		t.Fatal("Secret tasklane-secrets is missing")
	}

	seenRoles := map[string]bool{}
	for name, want := range roles {
		d := o.deployments[name]
		if d == nil {
			t.Errorf("Deployment %s is missing", name)
			continue
		}
		sel, err := metaSelector(d.Spec.Selector.MatchLabels)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("%s: the selector does not match the pod template", name)
		}
		pod := d.Spec.Template.Spec
		if len(pod.Containers) != 1 {
			t.Fatalf("%s: want one container", name)
		}
		c := pod.Containers[0]
		if i := slices.Index(c.Args, "--roles"); i < 0 || i+1 >= len(c.Args) || c.Args[i+1] != want {
			t.Errorf("%s: args %v, want --roles %s", name, c.Args, want)
		}
		for _, r := range strings.Split(want, ",") {
			seenRoles[r] = true
		}
		for what, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
			wantPath := map[string]string{"readiness": "/readyz", "liveness": "/healthz"}[what]
			if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != wantPath || p.HTTPGet.Port.String() != "metrics" {
				t.Errorf("%s: %s probe must GET %s on port metrics", name, what, wantPath)
			}
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
			t.Errorf("%s: resource requests (cpu, memory) are required", name)
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				ref := e.ValueFrom.SecretKeyRef
				if ref.Name != sec.Name {
					t.Errorf("%s: env %s reads Secret %s", name, e.Name, ref.Name)
				} else if _, ok := sec.StringData[ref.Key]; !ok {
					t.Errorf("%s: env %s reads key %s, which Secret %s lacks", name, e.Name, ref.Key, sec.Name)
				}
			}
		}
		mountsConfig := false
		for _, v := range pod.Volumes {
			if v.ConfigMap != nil && v.ConfigMap.Name == cfg.Name {
				mountsConfig = true
			}
		}
		if !mountsConfig {
			t.Errorf("%s: does not mount ConfigMap %s", name, cfg.Name)
		}
		// Every role has a PodDisruptionBudget selecting its pods.
		covered := false
		for _, pdb := range o.pdbs {
			s, err := metaSelector(pdb.Spec.Selector.MatchLabels)
			if err == nil && s.Matches(labels.Set(d.Spec.Template.Labels)) {
				covered = true
			}
		}
		if !covered {
			t.Errorf("%s: no PodDisruptionBudget selects its pods", name)
		}
		if name == "tasklane-coordinator" && (d.Spec.Replicas == nil || *d.Spec.Replicas < 2) {
			t.Errorf("%s: the elected roles run two replicas", name)
		}
	}
	for _, r := range []string{"gateway", "dispatcher", "notifier", "controller", "scheduler", "triggers"} {
		if !seenRoles[r] {
			t.Errorf("no Deployment runs role %s", r)
		}
	}

	// The dispatcher drains within its grace period, after a preStop pause.
	d := o.deployments["tasklane-dispatcher"]
	c := d.Spec.Template.Spec.Containers[0]
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
		t.Fatal("tasklane-dispatcher: preStop is required")
	}
	pause := time.Duration(0)
	if s := c.Lifecycle.PreStop.Sleep; s != nil {
		pause = time.Duration(s.Seconds) * time.Second
	}
	grace := d.Spec.Template.Spec.TerminationGracePeriodSeconds
	if grace == nil || time.Duration(*grace)*time.Second <= drain+pause {
		t.Errorf("tasklane-dispatcher: terminationGracePeriodSeconds must exceed drain_timeout (%s) plus the preStop pause (%s)", drain, pause)
	}

	// The gateway's Service selects the gateway's pods.
	svc := o.services["tasklane-gateway"]
	if svc == nil {
		t.Fatal("Service tasklane-gateway is missing")
	}
	if s, err := metaSelector(svc.Spec.Selector); err != nil || !s.Matches(labels.Set(o.deployments["tasklane-gateway"].Spec.Template.Labels)) {
		t.Error("Service tasklane-gateway does not select the gateway's pods")
	}

	// KEDA scales the dispatchers on metrics Tasklane exports.
	so := o.scaled["tasklane-dispatcher"]
	if so == nil {
		t.Fatal("ScaledObject tasklane-dispatcher is missing")
	}
	if so.Spec.ScaleTargetRef == nil || so.Spec.ScaleTargetRef.Name != "tasklane-dispatcher" {
		t.Error("the ScaledObject must target Deployment tasklane-dispatcher")
	}
	exported := exportedMetrics(t)
	var queried []string
	for _, tr := range so.Spec.Triggers {
		if tr.Type != "prometheus" {
			t.Errorf("trigger %s: type %s, want prometheus", tr.Name, tr.Type)
			continue
		}
		for _, key := range []string{"serverAddress", "query", "threshold"} {
			if tr.Metadata[key] == "" {
				t.Errorf("trigger %s: metadata.%s is required", tr.Name, key)
			}
		}
		for _, m := range metricNames(tr.Metadata["query"]) {
			if !exported[m] {
				t.Errorf("trigger %s: query names %s, which pkg/metrics does not export", tr.Name, m)
			}
			queried = append(queried, m)
		}
	}
	for _, want := range []string{"tasklane_backlog_tasks", "tasklane_oldest_task_age_seconds"} {
		if !slices.Contains(queried, want) {
			t.Errorf("the ScaledObject does not scale on %s", want)
		}
	}
}

func TestDashboard(t *testing.T) {
	data, err := os.ReadFile("base/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Panels) == 0 {
		t.Fatal("the dashboard has no panels")
	}
	exported := exportedMetrics(t)
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			names := metricNames(tg.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q: %q names no tasklane metric", p.Title, tg.Expr)
			}
			for _, m := range names {
				if !exported[m] {
					t.Errorf("panel %q: %s is not a metric pkg/metrics exports", p.Title, m)
				}
			}
		}
	}
}

var metricRe = regexp.MustCompile(`\btasklane_[a-z0-9_]+`)

// metricNames are the tasklane metrics a PromQL expression names, without
// the histogram series suffixes.
func metricNames(expr string) []string {
	var out []string
	for _, m := range metricRe.FindAllString(expr, -1) {
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if strings.HasSuffix(m, "_seconds"+suf) {
				m = strings.TrimSuffix(m, suf)
			}
		}
		out = append(out, m)
	}
	return out
}

// exportedMetrics reads the metric names pkg/metrics registers, from its
// source: names given to the factory (f.counter("name", ...)) and the
// cluster gauges' constants (Namespace + "_name").
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob("../../pkg/metrics/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("reading pkg/metrics: %v", err)
	}
	factory := regexp.MustCompile(`f\.(?:counter|gauge|histogram|histogramWith)\("([a-z0-9_]+)"`)
	constant := regexp.MustCompile(`Namespace \+ "(_[a-z0-9_]+)"`)
	out := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range factory.FindAllSubmatch(src, -1) {
			out["tasklane_"+string(m[1])] = true
		}
		for _, m := range constant.FindAllSubmatch(src, -1) {
			out["tasklane"+string(m[1])] = true
		}
	}
	for _, must := range []string{"tasklane_backlog_tasks", "tasklane_queue_wait_seconds", "tasklane_tasks_finished_total"} {
		if !out[must] {
			t.Fatalf("reading pkg/metrics found no %s: the patterns are stale", must)
		}
	}
	return out
}

func metaSelector(m map[string]string) (labels.Selector, error) {
	if len(m) == 0 {
		return nil, errors.New("empty selector")
	}
	return labels.SelectorFromValidatedSet(labels.Set(m)), nil
}

// stripComments drops comment lines, to tell an empty document.
func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line...)
		}
	}
	return out
}
