package specs

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/internal/masterapi"
)

var testOpts = BuildOptions{
	DefaultImage:      "example.com/tcprepl:test",
	OperatorNamespace: "tcprepl-system",
	OperatorPodLabels: map[string]string{"app.kubernetes.io/name": "tcprepl", "app.kubernetes.io/component": "operator"},
}

// newMaster returns a master as the API server would store it: defaults
// filled in.
func newMaster(mut ...func(*replv1.ReplicationMaster)) *replv1.ReplicationMaster {
	m := &replv1.ReplicationMaster{
		ObjectMeta: metav1.ObjectMeta{Name: "m1", Namespace: "ns", UID: "uid-m1", Generation: 1},
		Spec: replv1.ReplicationMasterSpec{
			ServerName:      "matrix.example.org",
			ReplicationPort: 9092,
			HTTPPort:        9093,
			Storage:         replv1.StorageSpec{Size: ptr.To(resource.MustParse("1Gi"))},
			KeepAlive: replv1.KeepAliveSpec{
				PingInterval: &metav1.Duration{Duration: 5 * time.Second},
				PingTimeout:  &metav1.Duration{Duration: 25 * time.Second},
			},
			Limits: replv1.LimitsSpec{MaxPendingCommands: 10000, MaxLineLength: 16384},
		},
	}
	for _, f := range mut {
		f(m)
	}
	return m
}

func newWorker(mut ...func(*replv1.ReplicationWorker)) *replv1.ReplicationWorker {
	w := &replv1.ReplicationWorker{
		ObjectMeta: metav1.ObjectMeta{Name: "w1", Namespace: "ns", UID: "uid-w1", Generation: 1},
		Spec: replv1.ReplicationWorkerSpec{
			MasterRef:     replv1.MasterReference{Name: "m1"},
			Replicas:      ptr.To[int32](2),
			Streams:       []string{"ALL"},
			MaxLagSeconds: 30,
		},
	}
	for _, f := range mut {
		f(w)
	}
	return w
}

func TestRenderMasterConfigIsReadByTheMaster(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		master func(*replv1.ReplicationMaster)
		// want is the rendered file, byte for byte: a change to it rolls
		// every master pod, so it must be deliberate.
		want  string
		check func(t *testing.T, c masterapi.Config)
	}{
		"defaults": {
			master: func(*replv1.ReplicationMaster) {},
			want: `dataDir: /var/lib/tcprepl
limits:
  maxLineLength: 16384
  maxPendingCommands: 10000
  pingInterval: 5s
  pingTimeout: 25s
serverName: matrix.example.org
`,
			check: func(t *testing.T, c masterapi.Config) {
				if c.ServerName != "matrix.example.org" || c.DataDir != MasterDataDir {
					t.Errorf("serverName/dataDir = %q/%q", c.ServerName, c.DataDir)
				}
				if c.Limits.PingInterval.Duration != 5*time.Second || c.Limits.PingTimeout.Duration != 25*time.Second {
					t.Errorf("keep-alive = %v/%v", c.Limits.PingInterval, c.Limits.PingTimeout)
				}
				if c.Retention != nil || c.Federation || len(c.CustomStreams) != 0 {
					t.Errorf("unexpected streams/retention: %+v", c)
				}
			},
		},
		"streams and retention": {
			master: func(m *replv1.ReplicationMaster) {
				m.Spec.Streams = replv1.StreamsSpec{Federation: true, Custom: []replv1.CustomStream{{Name: "audit_log", Fields: ptr.To[int32](3)}, {Name: "metrics2"}}}
				m.Spec.Retention = replv1.RetentionSpec{
					MaxRows: ptr.To[int64](1000),
					MaxAge:  &metav1.Duration{Duration: 168 * time.Hour},
					Streams: []replv1.StreamRetention{{Name: "audit_log", MaxAge: &metav1.Duration{Duration: time.Hour}}, {Name: "federation", MaxRows: ptr.To[int64](10)}},
				}
				m.Spec.Limits = replv1.LimitsSpec{MaxPendingCommands: 500, MaxLineLength: 4096}
			},
			want: `customStreams:
- fields: 3
  name: audit_log
- name: metrics2
dataDir: /var/lib/tcprepl
federation: true
limits:
  maxLineLength: 4096
  maxPendingCommands: 500
  pingInterval: 5s
  pingTimeout: 25s
retention:
  '*':
    maxAge: 168h0m0s
    maxRows: 1000
  audit_log:
    maxAge: 1h0m0s
  federation:
    maxRows: 10
serverName: matrix.example.org
`,
			check: func(t *testing.T, c masterapi.Config) {
				if !c.Federation {
					t.Error("federation is off, want on")
				}
				if diff := cmp.Diff([]masterapi.CustomStream{{Name: "audit_log", Fields: 3}, {Name: "metrics2"}}, c.CustomStreams); diff != "" {
					t.Errorf("custom streams (-want +got):\n%s", diff)
				}
				if r := c.RetentionFor("events"); r.MaxRows != 1000 || r.MaxAge.Duration != 168*time.Hour {
					t.Errorf("default retention = %+v", r)
				}
				if r := c.RetentionFor("audit_log"); r.MaxRows != 0 || r.MaxAge.Duration != time.Hour {
					t.Errorf("audit_log retention = %+v", r)
				}
				if r := c.RetentionFor("federation"); r.MaxRows != 10 {
					t.Errorf("federation retention = %+v", r)
				}
				if c.Limits.MaxPendingCommands != 500 || c.Limits.MaxLineLength != 4096 {
					t.Errorf("limits = %+v", c.Limits)
				}
			},
		},
		"no limits or keep-alive set": {
			master: func(m *replv1.ReplicationMaster) {
				m.Spec.KeepAlive = replv1.KeepAliveSpec{}
				m.Spec.Limits = replv1.LimitsSpec{}
			},
			want: `dataDir: /var/lib/tcprepl
limits: {}
serverName: matrix.example.org
`,
			check: func(t *testing.T, c masterapi.Config) {
				if c.Limits != (masterapi.Limits{}) {
					t.Errorf("limits = %+v, want none (the master's defaults)", c.Limits)
				}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m := newMaster(tc.master)
			text, err := RenderMasterConfig(m)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, text); diff != "" {
				t.Errorf("rendered config changed (-want +got):\n%s", diff)
			}
			path := filepath.Join(t.TempDir(), "master.yaml")
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			// The master's strict loader refuses unknown keys, so this
			// catches any drift between the two structs.
			c, err := masterapi.LoadConfigFile(path)
			if err != nil {
				t.Fatalf("master cannot read the rendered config: %v\n%s", err, text)
			}
			if err := c.WithDefaults().Validate(); err != nil {
				t.Fatalf("master refuses the rendered config: %v\n%s", err, text)
			}
			tc.check(t, c)
		})
	}
}

func TestBuildMasterStatefulSet(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		master func(*replv1.ReplicationMaster)
		check  func(t *testing.T, pod corev1.PodSpec, claims []corev1.PersistentVolumeClaim)
	}{
		"persistent storage uses a claim": {
			master: func(m *replv1.ReplicationMaster) { m.Spec.Storage.StorageClassName = ptr.To("fast") },
			check: func(t *testing.T, pod corev1.PodSpec, claims []corev1.PersistentVolumeClaim) {
				if len(claims) != 1 || claims[0].Name != "data" {
					t.Fatalf("claims = %+v", claims)
				}
				if got := claims[0].Spec.Resources.Requests[corev1.ResourceStorage]; got.String() != "1Gi" {
					t.Errorf("claim size = %s", got.String())
				}
				if ptr.Deref(claims[0].Spec.StorageClassName, "") != "fast" {
					t.Errorf("storage class = %v", claims[0].Spec.StorageClassName)
				}
				if v := volume(pod, "data"); v != nil {
					t.Errorf("data is a pod volume too: %+v", v)
				}
			},
		},
		"ephemeral storage uses emptyDir": {
			master: func(m *replv1.ReplicationMaster) { m.Spec.Storage = replv1.StorageSpec{Ephemeral: true} },
			check: func(t *testing.T, pod corev1.PodSpec, claims []corev1.PersistentVolumeClaim) {
				if len(claims) != 0 {
					t.Errorf("claims = %+v", claims)
				}
				if v := volume(pod, "data"); v == nil || v.EmptyDir == nil {
					t.Errorf("data volume = %+v", v)
				}
			},
		},
		"command, ports and probes": {
			master: func(m *replv1.ReplicationMaster) { m.Spec.ReplicationPort, m.Spec.HTTPPort = 7000, 7001 },
			check: func(t *testing.T, pod corev1.PodSpec, _ []corev1.PersistentVolumeClaim) {
				c := pod.Containers[0]
				if !slices.Equal(c.Command, []string{"tcprepl"}) || c.Args[0] != "master" {
					t.Errorf("command = %v %v", c.Command, c.Args)
				}
				for _, want := range []string{"--config=/etc/tcprepl/master.yaml", "--server-name=matrix.example.org", "--replication-listen=[$(POD_IP)]:7000", "--http-listen=[$(POD_IP)]:7001", "--data-dir=/var/lib/tcprepl"} {
					if !slices.Contains(c.Args, want) {
						t.Errorf("args %v lack %s", c.Args, want)
					}
				}
				if c.Ports[0].ContainerPort != 7000 || c.Ports[1].ContainerPort != 7001 {
					t.Errorf("ports = %+v", c.Ports)
				}
				if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" {
					t.Errorf("probes: readiness %s liveness %s", c.ReadinessProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path)
				}
				if c.Image != testOpts.DefaultImage {
					t.Errorf("image = %s, want the operator's", c.Image)
				}
				if e := env(c, EnvPublishToken); e == nil || e.ValueFrom.SecretKeyRef.Name != "m1-publish-token" {
					t.Errorf("publish token env = %+v", e)
				}
			},
		},
		"hardened security": {
			master: func(*replv1.ReplicationMaster) {},
			check: func(t *testing.T, pod corev1.PodSpec, _ []corev1.PersistentVolumeClaim) {
				sc := pod.Containers[0].SecurityContext
				if !*sc.RunAsNonRoot || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation || *sc.Privileged {
					t.Errorf("container security = %+v", sc)
				}
				if !*pod.SecurityContext.RunAsNonRoot || *pod.AutomountServiceAccountToken {
					t.Errorf("pod security = %+v automount=%v", pod.SecurityContext, *pod.AutomountServiceAccountToken)
				}
			},
		},
		"overrides are applied but cannot replace operator labels": {
			master: func(m *replv1.ReplicationMaster) {
				m.Spec.Image = "mine:1"
				m.Spec.PodTemplate = &replv1.PodTemplateOverrides{
					Labels:       map[string]string{"team": "a", LabelInstance: "hijack"},
					NodeSelector: map[string]string{"disk": "ssd"},
				}
			},
			check: func(t *testing.T, pod corev1.PodSpec, _ []corev1.PersistentVolumeClaim) {
				if pod.Containers[0].Image != "mine:1" || pod.NodeSelector["disk"] != "ssd" {
					t.Errorf("image %s nodeSelector %v", pod.Containers[0].Image, pod.NodeSelector)
				}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m := newMaster(tc.master)
			sts := BuildMasterStatefulSet(m, testOpts, "abc")
			if *sts.Spec.Replicas != 1 || sts.Spec.ServiceName != "m1-headless" {
				t.Errorf("replicas %d serviceName %s", *sts.Spec.Replicas, sts.Spec.ServiceName)
			}
			if sts.Spec.Template.Annotations[AnnotationConfigHash] != "abc" {
				t.Errorf("config hash annotation = %v", sts.Spec.Template.Annotations)
			}
			for k, v := range sts.Spec.Selector.MatchLabels {
				if sts.Spec.Template.Labels[k] != v {
					t.Errorf("template label %s=%q does not match selector %q", k, sts.Spec.Template.Labels[k], v)
				}
			}
			tc.check(t, sts.Spec.Template.Spec, sts.Spec.VolumeClaimTemplates)
		})
	}
}

func TestConfigHashChangesWithConfigAndToken(t *testing.T) {
	t.Parallel()
	base := ConfigHash("a", "t")
	for name, h := range map[string]string{
		"config": ConfigHash("b", "t"), "token": ConfigHash("a", "u"), "boundary": ConfigHash("at", ""),
		"start-only value":          ConfigHash("a", "t", "postgres://u:p@db/app"),
		"start-only value boundary": ConfigHash("a", "", "t"),
	} {
		if h == base {
			t.Errorf("%s change kept hash %s", name, h)
		}
	}
	if ConfigHash("a", "t") != base {
		t.Error("hash is not deterministic")
	}
	// A rotated PostgreSQL password rolls the masters.
	if ConfigHash("a", "t", "postgres://u:p1@db/app") == ConfigHash("a", "t", "postgres://u:p2@db/app") {
		t.Error("a changed start-only value kept the hash")
	}
}

func TestBuildMasterServices(t *testing.T) {
	t.Parallel()
	m := newMaster()
	for name, svc := range map[string]*corev1.Service{"regular": BuildMasterService(m), "headless": BuildMasterHeadlessService(m)} {
		t.Run(name, func(t *testing.T) {
			if len(svc.Spec.Ports) != 2 || svc.Spec.Ports[0].Port != 9092 || svc.Spec.Ports[1].Port != 9093 {
				t.Errorf("ports = %+v", svc.Spec.Ports)
			}
			if svc.Spec.Selector[LabelComponent] != ComponentMaster || svc.Spec.Selector[LabelInstance] != "m1" {
				t.Errorf("selector = %v", svc.Spec.Selector)
			}
		})
	}
	if BuildMasterHeadlessService(m).Spec.ClusterIP != corev1.ClusterIPNone {
		t.Error("headless service has a cluster IP")
	}
	if got := MasterEndpoint(m); got != "m1.ns.svc:9092" {
		t.Errorf("endpoint = %s", got)
	}
}

func TestBuildMasterNetworkPolicy(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		opts     BuildOptions
		master   func(*replv1.ReplicationMaster)
		replPeer int
		httpPeer int
		check    func(t *testing.T, np *networkingv1.NetworkPolicy)
	}{
		"default admits workers and operator": {
			opts: testOpts, master: func(*replv1.ReplicationMaster) {}, replPeer: 2, httpPeer: 1,
			check: func(t *testing.T, np *networkingv1.NetworkPolicy) {
				workers := np.Spec.Ingress[0].From[0].PodSelector.MatchLabels
				if workers[LabelMaster] != "m1" || workers[LabelComponent] != ComponentWorker {
					t.Errorf("worker peer = %v", workers)
				}
				op := np.Spec.Ingress[0].From[1]
				if op.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "tcprepl-system" || op.PodSelector.MatchLabels[LabelComponent] != "operator" {
					t.Errorf("operator peer = %+v", op)
				}
			},
		},
		"extra peers": {
			opts: testOpts,
			master: func(m *replv1.ReplicationMaster) {
				m.Spec.NetworkPolicy.HTTPFrom = []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "producer"}}}}
				m.Spec.NetworkPolicy.ReplicationFrom = []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "synapse"}}}}
			},
			replPeer: 3, httpPeer: 2,
		},
		"operator namespace unknown admits any namespace": {
			opts: BuildOptions{OperatorPodLabels: testOpts.OperatorPodLabels}, master: func(*replv1.ReplicationMaster) {}, replPeer: 2, httpPeer: 1,
			check: func(t *testing.T, np *networkingv1.NetworkPolicy) {
				if ns := np.Spec.Ingress[1].From[0].NamespaceSelector; ns == nil || len(ns.MatchLabels) != 0 {
					t.Errorf("namespace selector = %+v", ns)
				}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			np := BuildMasterNetworkPolicy(newMaster(tc.master), tc.opts)
			if len(np.Spec.Ingress) != 2 {
				t.Fatalf("ingress rules = %d", len(np.Spec.Ingress))
			}
			if got := np.Spec.Ingress[0].Ports[0].Port.IntValue(); got != 9092 {
				t.Errorf("first rule port = %d", got)
			}
			if got := np.Spec.Ingress[1].Ports[0].Port.IntValue(); got != 9093 {
				t.Errorf("second rule port = %d", got)
			}
			if len(np.Spec.Ingress[0].From) != tc.replPeer || len(np.Spec.Ingress[1].From) != tc.httpPeer {
				t.Errorf("peers = %d/%d, want %d/%d", len(np.Spec.Ingress[0].From), len(np.Spec.Ingress[1].From), tc.replPeer, tc.httpPeer)
			}
			if tc.check != nil {
				tc.check(t, np)
			}
		})
	}
}

func TestBuildWorkerStatefulSet(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		worker      func(*replv1.ReplicationWorker)
		wantCommand []string
		wantArgs    []string
		wantImage   string
	}{
		"reference worker with defaults": {
			worker:      func(w *replv1.ReplicationWorker) {},
			wantCommand: []string{"tcprepl"},
			wantArgs:    []string{"worker", "--streams=ALL", "--sink=stdout", "--state-dir=" + WorkerStateDir, "--on-log-change=stop", "--metrics-listen=[$(POD_IP)]:8080"},
			wantImage:   testOpts.DefaultImage,
		},
		"reference worker with streams, sink and extra args": {
			worker: func(w *replv1.ReplicationWorker) {
				w.Spec.Streams = []string{"events", "caches"}
				w.Spec.Sink = "file:/data/rows.jsonl"
				w.Spec.Args = []string{"--from=0"}
			},
			wantCommand: []string{"tcprepl"},
			wantArgs:    []string{"worker", "--streams=events,caches", "--sink=file:/data/rows.jsonl", "--state-dir=" + WorkerStateDir, "--on-log-change=stop", "--metrics-listen=[$(POD_IP)]:8080", "--from=0"},
			wantImage:   testOpts.DefaultImage,
		},
		"custom program": {
			worker: func(w *replv1.ReplicationWorker) {
				w.Spec.Image = "me/worker:2"
				w.Spec.Command = []string{"/bin/myworker"}
				w.Spec.Args = []string{"-v"}
			},
			wantCommand: []string{"/bin/myworker"},
			wantArgs:    []string{"-v"},
			wantImage:   "me/worker:2",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			w := newWorker(tc.worker)
			d := BuildWorkerStatefulSet(w, newMaster(), testOpts)
			c := d.Spec.Template.Spec.Containers[0]
			if diff := cmp.Diff(tc.wantCommand, c.Command); diff != "" {
				t.Errorf("command (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantArgs, c.Args); diff != "" {
				t.Errorf("args (-want +got):\n%s", diff)
			}
			if c.Image != tc.wantImage {
				t.Errorf("image = %s, want %s", c.Image, tc.wantImage)
			}
			if *d.Spec.Replicas != 2 {
				t.Errorf("replicas = %d", *d.Spec.Replicas)
			}
			if e := env(c, EnvMasterAddress); e == nil || e.Value != "m1.ns.svc:9092" {
				t.Errorf("%s = %+v", EnvMasterAddress, e)
			}
			if e := env(c, EnvServerName); e == nil || e.Value != "matrix.example.org" {
				t.Errorf("%s = %+v", EnvServerName, e)
			}
			if e := env(c, EnvWorkerName); e == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
				t.Errorf("%s = %+v", EnvWorkerName, e)
			}
			if d.Spec.Template.Labels[LabelMaster] != "m1" {
				t.Errorf("pod labels %v lack the master label the NetworkPolicy admits by", d.Spec.Template.Labels)
			}
			if !*c.SecurityContext.ReadOnlyRootFilesystem || *c.SecurityContext.AllowPrivilegeEscalation {
				t.Errorf("security = %+v", c.SecurityContext)
			}
		})
	}
}

// Each worker pod keeps its positions on a claim of its own unless the spec
// asks for an emptyDir; the state dir is mounted from whichever it is.
func TestBuildWorkerStatefulSetStateVolume(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		state     replv1.WorkerStateSpec
		wantClaim bool
		wantSize  string
		wantClass *string
	}{
		"default: a 1Gi claim per pod":     {wantClaim: true, wantSize: "1Gi"},
		"size and class from the spec":     {state: replv1.WorkerStateSpec{Size: ptr.To(resource.MustParse("5Gi")), StorageClassName: ptr.To("fast")}, wantClaim: true, wantSize: "5Gi", wantClass: ptr.To("fast")},
		"ephemeral: an emptyDir, no claim": {state: replv1.WorkerStateSpec{Ephemeral: true}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			w := newWorker(func(w *replv1.ReplicationWorker) { w.Spec.State = tc.state })
			sts := BuildWorkerStatefulSet(w, newMaster(), testOpts)
			if sts.Name != w.Name {
				t.Errorf("StatefulSet name %s, want %s (pod names are the worker names)", sts.Name, w.Name)
			}
			v := volume(sts.Spec.Template.Spec, workerStateVolume)
			switch {
			case tc.wantClaim:
				if v != nil {
					t.Errorf("pod volume %+v would shadow the claim template", v)
				}
				if len(sts.Spec.VolumeClaimTemplates) != 1 {
					t.Fatalf("claim templates %+v, want one", sts.Spec.VolumeClaimTemplates)
				}
				c := sts.Spec.VolumeClaimTemplates[0]
				if c.Name != workerStateVolume {
					t.Errorf("claim template %s, want %s", c.Name, workerStateVolume)
				}
				if got := c.Spec.Resources.Requests[corev1.ResourceStorage]; got.String() != tc.wantSize {
					t.Errorf("claim size %s, want %s", got.String(), tc.wantSize)
				}
				if diff := cmp.Diff(tc.wantClass, c.Spec.StorageClassName); diff != "" {
					t.Errorf("storage class (-want +got):\n%s", diff)
				}
				if p := sts.Spec.PersistentVolumeClaimRetentionPolicy; p == nil || p.WhenDeleted != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
					t.Errorf("claim retention %+v, want claims kept when the worker is deleted", p)
				}
			default:
				if v == nil || v.EmptyDir == nil {
					t.Errorf("state volume %+v, want an emptyDir", v)
				}
				if len(sts.Spec.VolumeClaimTemplates) != 0 {
					t.Errorf("claim templates %+v, want none", sts.Spec.VolumeClaimTemplates)
				}
			}
			mounted := false
			for _, m := range sts.Spec.Template.Spec.Containers[0].VolumeMounts {
				mounted = mounted || (m.Name == workerStateVolume && m.MountPath == WorkerStateDir)
			}
			if !mounted {
				t.Errorf("state volume not mounted at %s", WorkerStateDir)
			}
		})
	}
}

// The reference worker resyncs by itself after an ephemeral master's
// restart (its log is new every time) and stops for a durable one, unless
// the spec says otherwise.
func TestWorkerOnLogChangeFlag(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		ephemeralMaster bool
		policy          replv1.LogChangePolicy
		want            string
	}{
		"durable master":               {want: "--on-log-change=stop"},
		"ephemeral master":             {ephemeralMaster: true, want: "--on-log-change=resync"},
		"durable master, Resync asked": {policy: replv1.LogChangeResync, want: "--on-log-change=resync"},
		"ephemeral master, Stop asked": {ephemeralMaster: true, policy: replv1.LogChangeStop, want: "--on-log-change=stop"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m := newMaster()
			m.Spec.Storage.Ephemeral = tc.ephemeralMaster
			w := newWorker(func(w *replv1.ReplicationWorker) { w.Spec.OnLogChange = tc.policy })
			args := BuildWorkerStatefulSet(w, m, testOpts).Spec.Template.Spec.Containers[0].Args
			if !slices.Contains(args, tc.want) {
				t.Errorf("args %v lack %s", args, tc.want)
			}
		})
	}
}

func TestWorkerUserEnvComesAfterInjected(t *testing.T) {
	t.Parallel()
	w := newWorker(func(w *replv1.ReplicationWorker) {
		w.Spec.Env = []corev1.EnvVar{{Name: "EXTRA", Value: "1"}}
	})
	c := BuildWorkerStatefulSet(w, newMaster(), testOpts).Spec.Template.Spec.Containers[0]
	last := c.Env[len(c.Env)-1]
	if last.Name != "EXTRA" || !strings.HasPrefix(c.Env[0].Name, "TCPREPL_") {
		t.Errorf("env order = %+v", c.Env)
	}
}

func volume(p corev1.PodSpec, name string) *corev1.Volume {
	for i := range p.Volumes {
		if p.Volumes[i].Name == name {
			return &p.Volumes[i]
		}
	}
	return nil
}

func env(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// TestPodIPListenAddress checks that the listen flags the builders write
// are valid host:port addresses once the kubelet has expanded $(POD_IP),
// for an IPv4 and an IPv6 pod IP alike, and that Go listens on a bracketed
// address of either family.
func TestPodIPListenAddress(t *testing.T) {
	t.Parallel()
	m := newMaster()
	sts := BuildMasterStatefulSet(m, testOpts, "h")
	d := BuildWorkerStatefulSet(newWorker(), m, testOpts)
	var flags []string
	for _, a := range append(slices.Clone(sts.Spec.Template.Spec.Containers[0].Args), d.Spec.Template.Spec.Containers[0].Args...) {
		if name, _, ok := strings.Cut(a, "="); ok && strings.HasSuffix(name, "-listen") {
			flags = append(flags, a)
		}
	}
	if len(flags) != 3 {
		t.Fatalf("listen flags %v, want --replication-listen, --http-listen and --metrics-listen", flags)
	}
	for _, podIP := range []string{"10.1.2.3", "fd00::1", "2001:db8:0:1::a"} {
		for _, f := range flags {
			name, v, _ := strings.Cut(f, "=")
			addr := strings.ReplaceAll(v, "$("+EnvPodIP+")", podIP)
			host, port, err := net.SplitHostPort(addr)
			if err != nil || host != podIP || port == "" {
				t.Errorf("%s with pod IP %s is %q: host %q port %q err %v, want host %s", name, podIP, addr, host, port, err, podIP)
			}
		}
	}
	// The unbracketed form is what this guards against.
	if _, _, err := net.SplitHostPort("fd00::1:9092"); err == nil {
		t.Error("SplitHostPort accepted an unbracketed IPv6 host:port; the brackets would not be needed")
	}

	for _, addr := range []string{"[127.0.0.1]:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			var op *net.OpError
			if addr == "[::1]:0" && errors.As(err, &op) {
				t.Logf("no IPv6 loopback here (%v); bracketed IPv6 listening not checked", err)
				continue
			}
			t.Fatalf("net.Listen(%q): %v", addr, err)
		}
		t.Logf("net.Listen(%q) listens on %s", addr, ln.Addr())
		_ = ln.Close()
	}
}
