package specs

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/internal/masterapi"
)

func withTLS(t replv1.MasterTLSSpec) func(*replv1.ReplicationMaster) {
	return func(m *replv1.ReplicationMaster) { m.Spec.TLS = &t }
}

// The rendered config of a TLS master is one the master accepts, with the
// mounted files and the client authentication asked for.
func TestRenderMasterConfigTLS(t *testing.T) {
	cases := map[string]struct {
		tls         replv1.MasterTLSSpec
		wantCA      bool
		wantAuth    string
		wantRules   int
		probeGrants bool
	}{
		"require by default": {tls: replv1.MasterTLSSpec{SecretName: "s"}, wantCA: true, wantAuth: masterapi.ClientAuthRequire},
		"verify if given":    {tls: replv1.MasterTLSSpec{SecretName: "s", ClientAuth: replv1.ClientAuthVerifyIfGiven}, wantCA: true, wantAuth: masterapi.ClientAuthOptional},
		"none":               {tls: replv1.MasterTLSSpec{SecretName: "s", ClientAuth: replv1.ClientAuthNone}},
		"rules grant the probe": {
			tls: replv1.MasterTLSSpec{SecretName: "s", AccessRules: []replv1.TLSAccessRule{
				{Identity: "w1", Streams: []string{"events"}, Commands: []string{"USER_SYNC"}},
				{Identity: "unauthenticated", Streams: []string{"caches"}},
			}},
			wantCA: true, wantAuth: masterapi.ClientAuthRequire, wantRules: 3, probeGrants: true,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			out, err := RenderMasterConfig(newMaster(withTLS(tc.tls)))
			if err != nil {
				t.Fatal(err)
			}
			var c masterapi.Config
			if err := yaml.UnmarshalStrict([]byte(out), &c); err != nil {
				t.Fatalf("the master cannot read its config: %v\n%s", err, out)
			}
			c.ReplicationListen, c.HTTPListen = "10.0.0.1:9092", "10.0.0.1:9093"
			if err := c.WithDefaults().Validate(); err != nil {
				t.Fatalf("the master refuses its config: %v\n%s", err, out)
			}
			if c.TLS.CertFile != MasterTLSDir+"/tls.crt" || c.TLS.KeyFile != MasterTLSDir+"/tls.key" {
				t.Errorf("tls = %+v", c.TLS)
			}
			if got := c.TLS.ClientCAFile != ""; got != tc.wantCA || c.TLS.ClientAuth != tc.wantAuth {
				t.Errorf("clientCAFile %q clientAuth %q, want CA %v auth %q", c.TLS.ClientCAFile, c.TLS.ClientAuth, tc.wantCA, tc.wantAuth)
			}
			if len(c.Access.Rules) != tc.wantRules {
				t.Fatalf("rules = %+v, want %d", c.Access.Rules, tc.wantRules)
			}
			if tc.probeGrants {
				last := c.Access.Rules[len(c.Access.Rules)-1]
				if last.Identity != ProbeIdentity || !slices.Equal(last.Streams, []string{"*"}) || !slices.Equal(last.Commands, []string{"INVALIDATE_CACHE"}) {
					t.Errorf("probe rule = %+v", last)
				}
			}
		})
	}
	// Without spec.tls nothing changes: an unchanged master must not roll.
	out, err := RenderMasterConfig(newMaster())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "tls") || strings.Contains(out, "access") {
		t.Errorf("config without spec.tls mentions TLS:\n%s", out)
	}
}

func TestMasterTLSPodServicesAndPolicy(t *testing.T) {
	m := newMaster(withTLS(replv1.MasterTLSSpec{SecretName: "my-tls", PlaintextReplicationPort: ptr.To[int32](9094)}))
	sts := BuildMasterStatefulSet(m, testOpts, "h")
	c := sts.Spec.Template.Spec.Containers[0]
	if !slices.ContainsFunc(sts.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.Name == tlsVolume && v.Secret != nil && v.Secret.SecretName == "my-tls"
	}) {
		t.Errorf("no volume of Secret my-tls: %+v", sts.Spec.Template.Spec.Volumes)
	}
	if !slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool {
		return vm.Name == tlsVolume && vm.MountPath == MasterTLSDir && vm.ReadOnly
	}) {
		t.Errorf("TLS volume not mounted read-only at %s: %+v", MasterTLSDir, c.VolumeMounts)
	}
	for _, p := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
		if p.HTTPGet.Scheme != corev1.URISchemeHTTPS {
			t.Errorf("probe %s scheme %q, want HTTPS", p.HTTPGet.Path, p.HTTPGet.Scheme)
		}
	}
	if !slices.Contains(c.Args, "--plaintext-replication-listen=[$(POD_IP)]:9094") {
		t.Errorf("args %v lack the plaintext listener", c.Args)
	}
	for _, svc := range []*corev1.Service{BuildMasterService(m), BuildMasterHeadlessService(m)} {
		if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == 9094 && p.TargetPort.StrVal == portNamePlaintext }) {
			t.Errorf("Service %s has no plaintext port: %+v", svc.Name, svc.Spec.Ports)
		}
	}
	np := BuildMasterNetworkPolicy(m, testOpts)
	if ports := np.Spec.Ingress[0].Ports; len(ports) != 2 || ports[1].Port.IntVal != 9094 {
		t.Errorf("replication ingress ports %+v, want the plaintext port too", ports)
	}
	if MasterHTTPEndpoint(m) != "https://m1.ns.svc:9093" {
		t.Errorf("HTTP endpoint %q", MasterHTTPEndpoint(m))
	}

	// Without a plaintext port nothing plaintext is opened.
	m = newMaster(withTLS(replv1.MasterTLSSpec{SecretName: "my-tls"}))
	if ports := BuildMasterService(m).Spec.Ports; len(ports) != 2 {
		t.Errorf("ports %+v", ports)
	}
	if args := BuildMasterStatefulSet(m, testOpts, "h").Spec.Template.Spec.Containers[0].Args; slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--plaintext") }) {
		t.Errorf("plaintext listener without plaintextReplicationPort: %v", args)
	}
}

func envValue(c corev1.Container, name string) (string, int) {
	for i, e := range c.Env {
		if e.Name == name {
			return e.Value, i
		}
	}
	return "", -1
}

func hasVolume(sts *appsv1.StatefulSet, secret string) bool {
	return slices.ContainsFunc(sts.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == secret })
}

func TestWorkerTLSPod(t *testing.T) {
	cmMaster := newMaster(withTLS(replv1.MasterTLSSpec{CertManager: &replv1.CertManagerTLS{IssuerRef: replv1.IssuerReference{Name: "ca"}}, ServerName: "master.example"}))
	secretMaster := newMaster(withTLS(replv1.MasterTLSSpec{SecretName: "m-tls"}))
	userEnv := func(w *replv1.ReplicationWorker) {
		w.Spec.Env = []corev1.EnvVar{{Name: EnvTLSServerName, Value: "override.example"}}
	}
	cases := map[string]struct {
		master     *replv1.ReplicationMaster
		worker     *replv1.ReplicationWorker
		caSecret   string
		client     string // client Secret mounted, "" for none
		serverName string
	}{
		"cert-manager master issues the client certificate": {
			master: cmMaster, worker: newWorker(), caSecret: "m1-master-tls", client: "w1-worker-tls", serverName: "master.example",
		},
		"user client Secret": {
			master: cmMaster, worker: newWorker(func(w *replv1.ReplicationWorker) { w.Spec.TLS = &replv1.WorkerTLSSpec{ClientSecretName: "mine"} }),
			caSecret: "m1-master-tls", client: "mine", serverName: "master.example",
		},
		"secret master, no client Secret": {
			master: secretMaster, worker: newWorker(), caSecret: "m-tls", serverName: "m1.ns.svc",
		},
		"the user's env wins": {
			master: secretMaster, worker: newWorker(userEnv), caSecret: "m-tls", serverName: "override.example",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			sts := BuildWorkerStatefulSet(tc.worker, tc.master, testOpts)
			c := sts.Spec.Template.Spec.Containers[0]
			if !hasVolume(sts, tc.caSecret) {
				t.Errorf("no CA volume of %s", tc.caSecret)
			}
			for _, v := range sts.Spec.Template.Spec.Volumes {
				if v.Secret != nil && v.Secret.SecretName == tc.caSecret && (len(v.Secret.Items) != 1 || v.Secret.Items[0].Key != TLSCAKey) {
					t.Errorf("the master's Secret is mounted with %+v: workers get only ca.crt, never the master's key", v.Secret.Items)
				}
			}
			if tc.client != "" && !hasVolume(sts, tc.client) {
				t.Errorf("no client volume of %s", tc.client)
			}
			if cert, _ := envValue(c, EnvTLSCertFile); (cert != "") != (tc.client != "") {
				t.Errorf("%s = %q with client Secret %q", EnvTLSCertFile, cert, tc.client)
			}
			// The last of duplicate variables is the one a process sees.
			var last string
			for _, e := range c.Env {
				if e.Name == EnvTLSServerName {
					last = e.Value
				}
			}
			if last != tc.serverName {
				t.Errorf("server name %q, want %q", last, tc.serverName)
			}
			if ca, _ := envValue(c, EnvTLSCAFile); ca != WorkerTLSCADir+"/ca.crt" {
				t.Errorf("CA file %q", ca)
			}
		})
	}
	if sts := BuildWorkerStatefulSet(newWorker(), newMaster(), testOpts); len(sts.Spec.Template.Spec.Volumes) != 1 {
		t.Errorf("a worker of a plaintext master has TLS volumes: %+v", sts.Spec.Template.Spec.Volumes)
	}
}

func TestCertificates(t *testing.T) {
	m := newMaster(withTLS(replv1.MasterTLSSpec{CertManager: &replv1.CertManagerTLS{IssuerRef: replv1.IssuerReference{Name: "ca"}}}))
	certs := BuildMasterCertificates(m)
	if len(certs) != 2 {
		t.Fatalf("%d Certificates, want the master's and the probe's", len(certs))
	}
	ref, _, _ := unstructured.NestedStringMap(certs[0].Object, "spec", "issuerRef")
	if ref["kind"] != "Issuer" || ref["group"] != "cert-manager.io" {
		t.Errorf("issuerRef defaults: %v", ref)
	}
	dns, _, _ := unstructured.NestedStringSlice(certs[0].Object, "spec", "dnsNames")
	if dns[0] != "m1.ns.svc" || !slices.Contains(dns, "m1.ns.svc.cluster.local") || !slices.Contains(dns, "m1-0.m1-headless.ns.svc") {
		t.Errorf("dnsNames %v", dns)
	}
	if lbl, _, _ := unstructured.NestedStringMap(certs[0].Object, "spec", "secretTemplate", "labels"); lbl[LabelManagedBy] != ManagedBy {
		t.Errorf("the Secret cert-manager writes is not labelled for the operator's cache: %v", lbl)
	}
	if BuildMasterCertificates(newMaster(withTLS(replv1.MasterTLSSpec{SecretName: "s"}))) != nil {
		t.Error("Certificates for a Secret master")
	}
	if BuildWorkerCertificate(newWorker(func(w *replv1.ReplicationWorker) { w.Spec.TLS = &replv1.WorkerTLSSpec{ClientSecretName: "x"} }), m) != nil {
		t.Error("a Certificate for a worker with its own client Secret")
	}
	wc := BuildWorkerCertificate(newWorker(), m)
	if cn, _, _ := unstructured.NestedString(wc.Object, "spec", "commonName"); cn != "w1" || wc.GetName() != "w1-worker-tls" {
		t.Errorf("worker Certificate %s CN %q", wc.GetName(), cn)
	}
}
