package controllers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	sigsyaml "sigs.k8s.io/yaml"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/testenv/testcerts"
)

const certManagerCRD = "certificates.cert-manager.io"

// certManagerCRDPath is the fixture standing in for cert-manager's CRD.
var certManagerCRDPath = filepath.Join("testdata", "certmanager")

// uninstallCertManagerCRD removes the fixture CRD and waits until the API
// server no longer serves the kind, so that every test starts without it.
func uninstallCertManagerCRD(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	crd := &unstructured.Unstructured{}
	crd.SetAPIVersion("apiextensions.k8s.io/v1")
	crd.SetKind("CustomResourceDefinition")
	crd.SetName(certManagerCRD)
	if err := k8s.Delete(ctx, crd); err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("delete %s: %v", certManagerCRD, err)
	}
	eventually(t, waitFor, "cert-manager CRD gone", func() error {
		err := k8s.Get(ctx, types.NamespacedName{Name: certManagerCRD}, crd)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("cannot tell: %w", err)
		}
		return errors.New("still there")
	})
}

func workerTLSCondition(ctx context.Context, key types.NamespacedName, status, reason string) error {
	var live replv1.ReplicationWorker
	if err := k8s.Get(ctx, key, &live); err != nil {
		return err
	}
	return conditionIs(live.Status.Conditions, replv1.ConditionTLSReady, status, reason)
}

// tlsCondition checks the master's TLSReady condition; status "" means it
// must be absent.
func tlsCondition(ctx context.Context, key types.NamespacedName, status, reason string) error {
	var live replv1.ReplicationMaster
	if err := k8s.Get(ctx, key, &live); err != nil {
		return err
	}
	if status == "" {
		if c := meta.FindStatusCondition(live.Status.Conditions, replv1.ConditionTLSReady); c != nil {
			return fmt.Errorf("TLSReady still set: %+v", *c)
		}
		return nil
	}
	return conditionIs(live.Status.Conditions, replv1.ConditionTLSReady, status, reason)
}

func getCertificate(ctx context.Context, ns, name string) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(specs.CertificateGVK)
	return u, k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, u)
}

func tlsSecret(ns, name string, p testcerts.Pair, ca []byte) *corev1.Secret {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{specs.TLSCertKey: p.Cert, specs.TLSKeyKey: p.Key},
	}
	if ca != nil {
		s.Data[specs.TLSCAKey] = ca
	}
	return s
}

// TestCertManagerTLS: a master that asks for cert-manager certificates
// says CertManagerNotInstalled until the Certificate CRD exists, then gets
// a Certificate for its Service names and one for the probe, its workers
// one each, and once the Secrets are written (as cert-manager would) its
// pod mounts the certificate, its config turns TLS on, and its probe and
// workers dial with TLS.
func TestCertManagerTLS(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	uninstallCertManagerCRD(t)
	t.Cleanup(func() { uninstallCertManagerCRD(t) })
	ns := newNamespace(t)
	fp := newFakeProbes()
	startOperator(t, ns, OperatorOptions{Observer: fp, ProbeController: fp})

	m := minimalMaster(ns, "cm")
	m.Spec.TLS = &replv1.MasterTLSSpec{CertManager: &replv1.CertManagerTLS{IssuerRef: replv1.IssuerReference{Name: "ca-issuer", Kind: "ClusterIssuer"}}}
	if err := k8s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(m)
	eventually(t, waitFor, "TLSReady CertManagerNotInstalled", func() error {
		return tlsCondition(ctx, key, "False", replv1.ReasonCertManagerNotInstalled)
	})
	eventually(t, waitFor, "CertManagerNotInstalled event", func() error {
		return hasEvent(ctx, ns, "ReplicationMaster", "cm", corev1.EventTypeWarning, replv1.ReasonCertManagerNotInstalled)
	})
	// Without cert-manager the rest of the master is still reconciled.
	eventually(t, waitFor, "master StatefulSet without cert-manager", func() error {
		return get(ctx, ns, "cm", &appsv1.StatefulSet{})
	})

	if _, err := envtest.InstallCRDs(testCfg, envtest.CRDInstallOptions{Paths: []string{certManagerCRDPath}, ErrorIfPathMissing: true}); err != nil {
		t.Fatalf("install the cert-manager CRD fixture: %v", err)
	}

	var masterCert, probeCert *unstructured.Unstructured
	eventually(t, waitFor, "master and probe Certificates", func() error {
		var err error
		if masterCert, err = getCertificate(ctx, ns, "cm-master-tls"); err != nil {
			return err
		}
		if probeCert, err = getCertificate(ctx, ns, "cm-probe-tls"); err != nil {
			return err
		}
		return errors.Join(controlledBy(masterCert, m), controlledBy(probeCert, m))
	})
	dns, _, _ := unstructured.NestedStringSlice(masterCert.Object, "spec", "dnsNames")
	for _, want := range []string{"cm." + ns + ".svc", "cm." + ns + ".svc.cluster.local", "cm-0.cm-headless." + ns + ".svc"} {
		if !slices.Contains(dns, want) {
			t.Errorf("master Certificate dnsNames %v lack %q", dns, want)
		}
	}
	if issuer, _, _ := unstructured.NestedStringMap(masterCert.Object, "spec", "issuerRef"); issuer["name"] != "ca-issuer" || issuer["kind"] != "ClusterIssuer" || issuer["group"] != "cert-manager.io" {
		t.Errorf("issuerRef = %v", issuer)
	}
	if s, _, _ := unstructured.NestedString(masterCert.Object, "spec", "secretName"); s != "cm-master-tls" {
		t.Errorf("master Certificate secretName = %q", s)
	}
	if cn, _, _ := unstructured.NestedString(probeCert.Object, "spec", "commonName"); cn != specs.ProbeIdentity {
		t.Errorf("probe Certificate commonName = %q, want %q", cn, specs.ProbeIdentity)
	}
	if u, _, _ := unstructured.NestedStringSlice(probeCert.Object, "spec", "usages"); !slices.Contains(u, "client auth") {
		t.Errorf("probe Certificate usages %v lack client auth", u)
	}
	eventually(t, waitFor, "TLSReady CertificatePending", func() error {
		return tlsCondition(ctx, key, "False", replv1.ReasonCertificatePending)
	})

	// A worker of the master gets its own client Certificate, its name as
	// identity, and its pods dial with TLS.
	w := minimalWorker(ns, "wk", "cm")
	if err := k8s.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "worker Certificate", func() error {
		c, err := getCertificate(ctx, ns, "wk-worker-tls")
		if err != nil {
			return err
		}
		if cn, _, _ := unstructured.NestedString(c.Object, "spec", "commonName"); cn != "wk" {
			return fmt.Errorf("worker Certificate commonName = %q, want wk", cn)
		}
		return controlledBy(c, w)
	})
	eventually(t, waitFor, "worker pods dial with TLS", func() error {
		var sts appsv1.StatefulSet
		if err := get(ctx, ns, "wk", &sts); err != nil {
			return err
		}
		c := sts.Spec.Template.Spec.Containers[0]
		for name, want := range map[string]string{
			specs.EnvTLSCAFile:     specs.WorkerTLSCADir + "/ca.crt",
			specs.EnvTLSCertFile:   specs.WorkerTLSClientDir + "/tls.crt",
			specs.EnvTLSServerName: "cm." + ns + ".svc",
		} {
			if e := env(c, name); e == nil || e.Value != want {
				return fmt.Errorf("env %s = %v, want %q", name, e, want)
			}
		}
		return nil
	})

	wkey := client.ObjectKeyFromObject(w)
	eventually(t, waitFor, "worker TLSReady CertificatePending", func() error {
		return workerTLSCondition(ctx, wkey, "False", replv1.ReasonCertificatePending)
	})

	// cert-manager writes the Secrets.
	ca, err := testcerts.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Server(dns...)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.Client(specs.ProbeIdentity)
	if err != nil {
		t.Fatal(err)
	}
	wcli, err := ca.Client("wk")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*corev1.Secret{tlsSecret(ns, "cm-master-tls", srv, ca.PEM), tlsSecret(ns, "cm-probe-tls", cli, ca.PEM), tlsSecret(ns, "wk-worker-tls", wcli, ca.PEM)} {
		if err := k8s.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, waitFor, "TLSReady CertificatesReady", func() error {
		return tlsCondition(ctx, key, "True", replv1.ReasonCertificatesReady)
	})
	eventually(t, waitFor, "worker TLSReady CertificatesReady", func() error {
		return workerTLSCondition(ctx, wkey, "True", replv1.ReasonCertificatesReady)
	})
	eventually(t, waitFor, "probe target with TLS", func() error {
		tg, ok := fp.target(key)
		if !ok || !tg.TLS.Enabled || tg.TLS.CA != string(ca.PEM) || tg.TLS.Cert != string(cli.Cert) || tg.TLS.ServerName != "cm."+ns+".svc" {
			return fmt.Errorf("probe target %+v", tg)
		}
		if !strings.HasPrefix(tg.HTTPURL, "https://") {
			return fmt.Errorf("probe HTTP URL %q is not https", tg.HTTPURL)
		}
		return nil
	})
	var cm corev1.ConfigMap
	if err := get(ctx, ns, "cm-config", &cm); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"certFile: " + specs.MasterTLSDir + "/tls.crt", "clientCAFile: " + specs.MasterTLSDir + "/ca.crt", "clientAuth: " + masterapi.ClientAuthRequire} {
		if !strings.Contains(cm.Data[specs.MasterConfigFile], want) {
			t.Errorf("master config lacks %q:\n%s", want, cm.Data[specs.MasterConfigFile])
		}
	}
	var sts appsv1.StatefulSet
	if err := get(ctx, ns, "cm", &sts); err != nil {
		t.Fatal(err)
	}
	pod := sts.Spec.Template.Spec
	if !slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == "cm-master-tls" }) {
		t.Errorf("master pod does not mount Secret cm-master-tls: %+v", pod.Volumes)
	}
	if s := pod.Containers[0].ReadinessProbe.HTTPGet.Scheme; s != corev1.URISchemeHTTPS {
		t.Errorf("readiness probe scheme %q, want HTTPS (the HTTP port speaks TLS)", s)
	}
	var live replv1.ReplicationMaster
	if err := k8s.Get(ctx, key, &live); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(live.Status.HTTPEndpoint, "https://") {
		t.Errorf("status.httpEndpoint %q is not https", live.Status.HTTPEndpoint)
	}

	// Certificates no longer asked for are deleted: the worker's once it
	// names its own Secret, the master's once TLS is off.
	certGone := func(name string) func() error {
		return func() error {
			_, err := getCertificate(ctx, ns, name)
			switch {
			case apierrors.IsNotFound(err):
				return nil
			case err != nil:
				return fmt.Errorf("get Certificate %s: %w", name, err)
			}
			return fmt.Errorf("certificate %s still there", name)
		}
	}
	var lw replv1.ReplicationWorker
	if err := updateRetrying(ctx, wkey, &lw, func() {
		lw.Spec.TLS = &replv1.WorkerTLSSpec{ClientSecretName: "wk-worker-tls"}
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "worker Certificate deleted", certGone("wk-worker-tls"))
	if err := get(ctx, ns, "cm-master-tls", &unstructured.Unstructured{Object: map[string]any{"apiVersion": "cert-manager.io/v1", "kind": "Certificate"}}); err != nil {
		t.Fatalf("the master's Certificate went with the worker's: %v", err)
	}
	if err := updateRetrying(ctx, key, &live, func() {
		live.Spec.TLS = nil
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "master Certificates deleted", func() error {
		return errors.Join(certGone("cm-master-tls")(), certGone("cm-probe-tls")())
	})
	eventually(t, waitFor, "TLSReady removed from the master", func() error {
		return tlsCondition(ctx, key, "", "")
	})
}

// TestTLSSecretMissing: a Secret spec.tls names that does not exist (or
// lacks a key) is a TLSReady reason and an Event, never a crash or a
// failed reconcile; the master's other objects are still made, and the
// condition follows the Secret once it appears.
func TestTLSSecretMissing(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	fp := newFakeProbes()
	startOperator(t, ns, OperatorOptions{Observer: fp, ProbeController: fp})

	m := minimalMaster(ns, "sec")
	m.Spec.TLS = &replv1.MasterTLSSpec{SecretName: "sec-tls", ProbeSecretName: "sec-probe"}
	if err := k8s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(m)
	eventually(t, waitFor, "TLSReady TLSSecretMissing", func() error {
		return tlsCondition(ctx, key, "False", replv1.ReasonTLSSecretMissing)
	})
	eventually(t, waitFor, "TLSSecretMissing event", func() error {
		return hasEvent(ctx, ns, "ReplicationMaster", "sec", corev1.EventTypeWarning, replv1.ReasonTLSSecretMissing)
	})
	eventually(t, waitFor, "StatefulSet made anyway", func() error { return get(ctx, ns, "sec", &appsv1.StatefulSet{}) })
	var live replv1.ReplicationMaster
	if err := k8s.Get(ctx, key, &live); err != nil {
		t.Fatal(err)
	}
	if err := conditionIs(live.Status.Conditions, replv1.ConditionDegraded, "True", replv1.ReasonReconcileFailed); err == nil {
		t.Errorf("a missing TLS Secret failed the reconcile: %+v", live.Status.Conditions)
	}

	ca, err := testcerts.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Server(specs.MasterDNSNames(m)...)
	if err != nil {
		t.Fatal(err)
	}
	// Without ca.crt the workers cannot check the master.
	noCA := tlsSecret(ns, "sec-tls", srv, nil)
	if err := k8s.Create(ctx, noCA); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "TLSReady TLSSecretInvalid", func() error {
		return tlsCondition(ctx, key, "False", replv1.ReasonTLSSecretInvalid)
	})
	noCA.Data[specs.TLSCAKey] = ca.PEM
	if err := k8s.Update(ctx, noCA); err != nil {
		t.Fatal(err)
	}
	// The probe's Secret is still missing.
	eventually(t, waitFor, "TLSReady TLSSecretMissing for the probe", func() error {
		if err := tlsCondition(ctx, key, "False", replv1.ReasonTLSSecretMissing); err != nil {
			return err
		}
		var live replv1.ReplicationMaster
		if err := k8s.Get(ctx, key, &live); err != nil {
			return err
		}
		if c := live.Status.Conditions; !slices.ContainsFunc(c, func(c metav1.Condition) bool {
			return c.Type == replv1.ConditionTLSReady && strings.Contains(c.Message, "sec-probe")
		}) {
			return fmt.Errorf("TLSReady does not name sec-probe: %+v", c)
		}
		return nil
	})
	cli, err := ca.Client(specs.ProbeIdentity)
	if err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, tlsSecret(ns, "sec-probe", cli, nil)); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "TLSReady CertificatesReady", func() error {
		return tlsCondition(ctx, key, "True", replv1.ReasonCertificatesReady)
	})

	// Require without a probe certificate: the probe cannot connect; the
	// condition says why.
	m2 := minimalMaster(ns, "noprobe")
	m2.Spec.TLS = &replv1.MasterTLSSpec{SecretName: "sec-tls"}
	if err := k8s.Create(ctx, m2); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "TLSReady ClientCertificateMissing", func() error {
		return tlsCondition(ctx, client.ObjectKeyFromObject(m2), "False", replv1.ReasonClientCertificateMissing)
	})

	// Workers of a master that requires client certificates: one without
	// a client Secret, one whose Secret does not exist.
	noCert := minimalWorker(ns, "nocert", "noprobe")
	missing := minimalWorker(ns, "missing", "noprobe")
	missing.Spec.TLS = &replv1.WorkerTLSSpec{ClientSecretName: "missing-cert"}
	for _, w := range []*replv1.ReplicationWorker{noCert, missing} {
		if err := k8s.Create(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, waitFor, "worker TLSReady ClientCertificateMissing", func() error {
		return workerTLSCondition(ctx, client.ObjectKeyFromObject(noCert), "False", replv1.ReasonClientCertificateMissing)
	})
	eventually(t, waitFor, "worker TLSReady TLSSecretMissing", func() error {
		return workerTLSCondition(ctx, client.ObjectKeyFromObject(missing), "False", replv1.ReasonTLSSecretMissing)
	})
	eventually(t, waitFor, "worker TLSSecretMissing event", func() error {
		return hasEvent(ctx, ns, "ReplicationWorker", "missing", corev1.EventTypeWarning, replv1.ReasonTLSSecretMissing)
	})
	wcli, err := ca.Client("missing")
	if err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, tlsSecret(ns, "missing-cert", wcli, nil)); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "worker TLSReady once its Secret exists", func() error {
		return workerTLSCondition(ctx, client.ObjectKeyFromObject(missing), "True", replv1.ReasonCertificatesReady)
	})

	// Turning TLS off removes the condition.
	if err := updateRetrying(ctx, key, &live, func() {
		live.Spec.TLS = nil
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "TLSReady removed", func() error {
		var l replv1.ReplicationMaster
		if err := k8s.Get(ctx, key, &l); err != nil {
			return err
		}
		if slices.ContainsFunc(l.Status.Conditions, func(c metav1.Condition) bool { return c.Type == replv1.ConditionTLSReady }) {
			return errors.New("TLSReady still set")
		}
		return nil
	})
}

// TestTLSValidation: the API server refuses spec.tls that cannot work.
func TestTLSValidation(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	cmIssuer := &replv1.CertManagerTLS{IssuerRef: replv1.IssuerReference{Name: "ca"}}
	cases := map[string]struct {
		tls  replv1.MasterTLSSpec
		want string // "" means accepted
	}{
		"secret":                  {tls: replv1.MasterTLSSpec{SecretName: "s"}},
		"cert-manager":            {tls: replv1.MasterTLSSpec{CertManager: cmIssuer}},
		"neither":                 {tls: replv1.MasterTLSSpec{}, want: "exactly one of secretName"},
		"both":                    {tls: replv1.MasterTLSSpec{SecretName: "s", CertManager: cmIssuer}, want: "exactly one of secretName"},
		"bad client auth":         {tls: replv1.MasterTLSSpec{SecretName: "s", ClientAuth: "Sometimes"}, want: "spec.tls.clientAuth"},
		"rules without client CA": {tls: replv1.MasterTLSSpec{SecretName: "s", ClientAuth: replv1.ClientAuthNone, AccessRules: []replv1.TLSAccessRule{{Identity: "w", Streams: []string{"*"}}}}, want: "accessRules name client certificate identities"},
		"probe secret with cert-manager": {
			tls: replv1.MasterTLSSpec{CertManager: cmIssuer, ProbeSecretName: "p"}, want: "probeSecretName is for masters with tls.secretName",
		},
		"plaintext on the replication port": {
			tls: replv1.MasterTLSSpec{SecretName: "s", PlaintextReplicationPort: ptr.To[int32](9092)}, want: "plaintextReplicationPort must differ",
		},
		"plaintext port": {tls: replv1.MasterTLSSpec{SecretName: "s", PlaintextReplicationPort: ptr.To[int32](9094)}},
		"unknown command": {
			tls: replv1.MasterTLSSpec{SecretName: "s", AccessRules: []replv1.TLSAccessRule{{Identity: "w", Commands: []string{"NAME"}}}}, want: "spec.tls.accessRules[0].commands[0]",
		},
		"rules": {
			tls: replv1.MasterTLSSpec{SecretName: "s", AccessRules: []replv1.TLSAccessRule{{Identity: "w", Commands: []string{"USER_SYNC", "*"}, Streams: []string{"events", "*"}}}},
		},
		"bad stream in rule": {
			tls: replv1.MasterTLSSpec{SecretName: "s", AccessRules: []replv1.TLSAccessRule{{Identity: "w", Streams: []string{"Events"}}}}, want: "spec.tls.accessRules[0].streams[0]",
		},
		"empty issuer name": {
			tls: replv1.MasterTLSSpec{CertManager: &replv1.CertManagerTLS{}}, want: "spec.tls.certManager.issuerRef.name",
		},
	}
	i := 0
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			i++
			m := minimalMaster(ns, fmt.Sprintf("tls%d", i))
			m.Spec.TLS = tc.tls.DeepCopy()
			err := k8s.Create(ctx, m)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				var live replv1.ReplicationMaster
				if err := k8s.Get(ctx, client.ObjectKeyFromObject(m), &live); err != nil {
					t.Fatal(err)
				}
				if tc.tls.ClientAuth == "" && live.Spec.TLS.ClientAuth != replv1.ClientAuthRequire {
					t.Errorf("clientAuth defaulted to %q, want Require", live.Spec.TLS.ClientAuth)
				}
				return
			}
			expectInvalid(t, err, tc.want)
		})
	}
}

// TestTLSSampleAccepted: config/samples/replicationmaster_tls.yaml (not in
// the kustomization: it needs cert-manager) is accepted by the API server,
// and its access rules render into a config the master accepts.
func TestTLSSampleAccepted(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	b, err := os.ReadFile(filepath.Join("..", "config", "samples", "replicationmaster_tls.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, doc := range strings.Split(string(b), "\n---\n") {
		u := &unstructured.Unstructured{}
		if err := sigsyaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatalf("parse sample: %v", err)
		}
		u.SetNamespace(ns)
		if err := k8s.Create(ctx, u); err != nil {
			t.Fatalf("the API server refuses the sample's %s: %v", u.GetKind(), err)
		}
		kinds = append(kinds, u.GetKind())
	}
	if !slices.Equal(kinds, []string{"ReplicationMaster", "ReplicationWorker"}) {
		t.Fatalf("sample holds %v, want a master and a worker", kinds)
	}
	var m replv1.ReplicationMaster
	if err := get(ctx, ns, "synapse-tls", &m); err != nil {
		t.Fatal(err)
	}
	out, err := specs.RenderMasterConfig(&m)
	if err != nil {
		t.Fatal(err)
	}
	var c masterapi.Config
	if err := sigsyaml.UnmarshalStrict([]byte(out), &c); err != nil {
		t.Fatal(err)
	}
	c.ReplicationListen, c.HTTPListen = "10.0.0.1:9092", "10.0.0.1:9093"
	if err := c.WithDefaults().Validate(); err != nil {
		t.Fatalf("the master refuses the sample's config: %v\n%s", err, out)
	}
}
