package controllers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/probe"
)

// The operator reads the TLS Secrets (users' Secrets carry no label of
// the operator, so they are read past the cache) and writes cert-manager
// Certificates (as unstructured objects: cert-manager is optional).
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates,verbs=get;create;update;delete

// tlsRetry is how soon a master or worker whose TLS material is not there
// yet is looked at again: users' Secrets and cert-manager's are not
// watched.
const tlsRetry = 5 * time.Second

// tlsResync is how often a master with TLS is looked at anyway, so that a
// renewed probe certificate reaches the probe.
const tlsResync = 5 * time.Minute

// ProbeTLS is the TLS material of the operator's probe for one master, as
// PEM strings so that a ProbeTarget stays comparable: a renewed
// certificate is a new target, and the probe is remade with it.
type ProbeTLS struct {
	// Enabled: the master has spec.tls.
	Enabled bool
	// ServerName is the name the master's certificate must carry.
	ServerName string
	// CA is the master Secret's ca.crt; empty while the Secret is missing.
	CA string
	// Cert and Key are the probe's client certificate; empty without one.
	Cert, Key string
}

// ConfigureTLS makes the probe dial the master, and read its HTTP API,
// over TLS when the target asks for it.
func (t ProbeTarget) ConfigureTLS(cfg *probe.Config) error {
	if !t.TLS.Enabled {
		return nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.TLS.ServerName}
	if t.TLS.CA != "" {
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM([]byte(t.TLS.CA)) {
			return fmt.Errorf("probe TLS: the master's ca.crt holds no PEM certificate")
		}
	}
	if t.TLS.Cert != "" {
		pair, err := tls.X509KeyPair([]byte(t.TLS.Cert), []byte(t.TLS.Key))
		if err != nil {
			return fmt.Errorf("probe TLS: client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}, Config: tc}
	cfg.Dial = d.DialContext
	cfg.HTTPClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc.Clone()}}
	return nil
}

// tlsState is what the TLS phase found: the TLSReady condition and the
// probe's material.
type tlsState struct {
	enabled bool
	ready   bool
	reason  string
	message string
	probe   ProbeTLS
	// retry: something TLS needs is not there yet; look again soon.
	retry bool
}

func tlsProblem(st tlsState, reason, format string, args ...any) tlsState {
	st.ready, st.reason, st.message, st.retry = false, reason, fmt.Sprintf(format, args...), true
	return st
}

// reconcileTLS creates the cert-manager Certificates a master asks for and
// checks the Secrets its pod and probe need. A missing or broken Secret is
// a condition and an Event, not an error: the rest of the master is still
// reconciled (its pod waits for the Secret), and the phase runs again in
// tlsRetry. Only API failures are errors.
func (r *ReplicationMasterReconciler) reconcileTLS(ctx context.Context, m *replv1.ReplicationMaster) (tlsState, error) {
	if m.Spec.TLS == nil {
		r.tlsChecks.forget(client.ObjectKeyFromObject(m))
		// TLS was on when status was last written: its Certificates go.
		if meta.FindStatusCondition(m.Status.Conditions, replv1.ConditionTLSReady) != nil {
			if err := deleteCertificates(ctx, &r.ReconcilerBase, m, specs.MasterCertificateNames(m)...); err != nil {
				// Keep TLSReady, so that the next reconcile tries again.
				return tlsState{enabled: true, reason: replv1.ReasonReconcileFailed, message: err.Error(), retry: true}, err
			}
		}
		return tlsState{}, nil
	}
	key, version, now := client.ObjectKeyFromObject(m), strconv.FormatInt(m.Generation, 10), r.now()
	if st, ok := r.tlsChecks.recent(key, version, now); ok {
		return st, nil
	}
	st, err := r.checkTLS(ctx, m)
	if err == nil {
		r.tlsChecks.record(key, version, now, st)
	}
	return st, err
}

// checkTLS is one look at a master's TLS (see reconcileTLS).
func (r *ReplicationMasterReconciler) checkTLS(ctx context.Context, m *replv1.ReplicationMaster) (tlsState, error) {
	t := m.Spec.TLS
	st := tlsState{enabled: true, probe: ProbeTLS{Enabled: true, ServerName: specs.MasterTLSServerName(m)}}
	if t.CertManager == nil {
		// Moved from cert-manager to a Secret: the Certificates go.
		if err := deleteCertificates(ctx, &r.ReconcilerBase, m, specs.MasterCertificateNames(m)...); err != nil {
			return st, err
		}
	} else {
		for _, c := range specs.BuildMasterCertificates(m) {
			switch err := ensureCertificate(ctx, &r.ReconcilerBase, m, c); {
			case meta.IsNoMatchError(err):
				return r.tlsEvent(m, tlsProblem(st, replv1.ReasonCertManagerNotInstalled,
					"spec.tls.certManager is set but the cluster has no certificates.cert-manager.io CRD: install cert-manager, or use spec.tls.secretName")), nil
			case err != nil:
				return st, err
			}
		}
	}
	secret, problem, err := r.readTLSSecret(ctx, m, specs.MasterTLSSecretName(m), true)
	if err != nil {
		return st, err
	}
	if problem != nil {
		return r.tlsEvent(m, tlsProblem(st, problem.reason, "%s", problem.message)), nil
	}
	st.probe.CA = string(secret.Data[specs.TLSCAKey])

	probeSecret := specs.ProbeTLSSecretName(m)
	if probeSecret == "" {
		if clientCertNeeded(t) {
			return r.tlsEvent(m, tlsProblem(st, replv1.ReasonClientCertificateMissing,
				"spec.tls.clientAuth is %s but the operator's probe has no client certificate, so the master lets it do nothing but connect: set spec.tls.probeSecretName (a kubernetes.io/tls Secret whose certificate's CN is %q)", t.ClientAuthMode(), specs.ProbeIdentity)), nil
		}
	} else if t.ClientAuthMode() != replv1.ClientAuthNone {
		ps, problem, err := r.readTLSSecret(ctx, m, probeSecret, false)
		if err != nil {
			return st, err
		}
		if problem != nil {
			return r.tlsEvent(m, tlsProblem(st, problem.reason, "probe certificate: %s", problem.message)), nil
		}
		st.probe.Cert, st.probe.Key = string(ps.Data[specs.TLSCertKey]), string(ps.Data[specs.TLSKeyKey])
	}
	st.ready, st.reason = true, replv1.ReasonCertificatesReady
	st.message = fmt.Sprintf("the master serves the certificate of Secret %s for %s", specs.MasterTLSSecretName(m), specs.MasterTLSServerName(m))
	return st, nil
}

// tlsEvent records a Warning when the TLS problem is new (the condition
// did not already say it), so a Secret that stays missing is not an Event
// every tlsRetry.
func (r *ReplicationMasterReconciler) tlsEvent(m *replv1.ReplicationMaster, st tlsState) tlsState {
	if c := meta.FindStatusCondition(m.Status.Conditions, replv1.ConditionTLSReady); c == nil || c.Reason != st.reason || c.Message != st.message {
		emit(r.Recorder, m, corev1.EventTypeWarning, st.reason, "TLS", st.message)
	}
	return st
}

// clientCertNeeded says whether a client without a certificate is useless
// to the master: Require refuses it at the handshake, and VerifyIfGiven
// lets it do nothing but connect unless a rule grants "unauthenticated"
// something.
func clientCertNeeded(t *replv1.MasterTLSSpec) bool {
	switch t.ClientAuthMode() {
	case replv1.ClientAuthRequire:
		return true
	case replv1.ClientAuthVerifyIfGiven:
		return !slices.ContainsFunc(t.AccessRules, func(r replv1.TLSAccessRule) bool { return r.Identity == masterapi.IdentityUnauthenticated })
	}
	return false
}

type secretProblem struct{ reason, message string }

// readTLSSecret reads a TLS Secret past the cache and checks its keys:
// tls.crt and tls.key as a pair, and ca.crt when needCA.
func (r *ReplicationMasterReconciler) readTLSSecret(ctx context.Context, m *replv1.ReplicationMaster, name string, needCA bool) (*corev1.Secret, *secretProblem, error) {
	return readTLSSecret(ctx, &r.ReconcilerBase, m.Namespace, name, needCA, m.Spec.TLS.CertManager != nil)
}

func readTLSSecret(ctx context.Context, b *ReconcilerBase, namespace, name string, needCA, certManager bool) (*corev1.Secret, *secretProblem, error) {
	var s corev1.Secret
	key := types.NamespacedName{Namespace: namespace, Name: name}
	switch err := b.reader().Get(ctx, key, &s); {
	case apierrors.IsNotFound(err):
		if certManager {
			return nil, &secretProblem{replv1.ReasonCertificatePending, fmt.Sprintf("waiting for cert-manager to write Secret %s (see `kubectl describe certificate %s`)", key, name)}, nil
		}
		return nil, &secretProblem{replv1.ReasonTLSSecretMissing, fmt.Sprintf("Secret %s does not exist: create it (type kubernetes.io/tls, keys tls.crt, tls.key and ca.crt)", key)}, nil
	case err != nil:
		return nil, nil, fmt.Errorf("get TLS Secret %s: %w", key, err)
	}
	if err := checkTLSSecret(&s, needCA); err != nil {
		return nil, &secretProblem{replv1.ReasonTLSSecretInvalid, fmt.Sprintf("Secret %s: %v", key, err)}, nil
	}
	return &s, nil, nil
}

// checkTLSSecret says what is wrong with a TLS Secret's keys, if anything.
func checkTLSSecret(s *corev1.Secret, needCA bool) error {
	var missing []string
	for _, k := range []string{specs.TLSCertKey, specs.TLSKeyKey, specs.TLSCAKey} {
		if len(s.Data[k]) == 0 && (k != specs.TLSCAKey || needCA) {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("has no %v: a TLS Secret needs tls.crt and tls.key, and the master's ca.crt (the CA clients check it against)", missing)
	}
	if _, err := tls.X509KeyPair(s.Data[specs.TLSCertKey], s.Data[specs.TLSKeyKey]); err != nil {
		return fmt.Errorf("tls.crt and tls.key do not load as a pair: %w", err)
	}
	if needCA && !x509.NewCertPool().AppendCertsFromPEM(s.Data[specs.TLSCAKey]) {
		return errors.New("ca.crt holds no PEM certificate")
	}
	return nil
}

// reader reads past the cache when it can.
func (b *ReconcilerBase) reader() client.Reader {
	if b.APIReader != nil {
		return b.APIReader
	}
	return b.Client
}

// ensureCertificate creates or updates a cert-manager Certificate owned by
// owner. A Certificate of that name that owner does not control is an
// error, never adopted. Without cert-manager's CRD the error is a
// NoKindMatch (meta.IsNoMatchError).
func ensureCertificate(ctx context.Context, b *ReconcilerBase, owner client.Object, desired *unstructured.Unstructured) error {
	key := client.ObjectKeyFromObject(desired)
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(specs.CertificateGVK)
	err := b.reader().Get(ctx, key, live)
	switch {
	case apierrors.IsNotFound(err):
		if err := ctrl.SetControllerReference(owner, desired, b.Scheme); err != nil {
			return fmt.Errorf("set owner of Certificate %s: %w", key, err)
		}
		if err := b.Create(ctx, desired); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create cert-manager Certificate %s: %w", key, err)
		}
		emit(b.Recorder, owner, corev1.EventTypeNormal, "Created", "Create", "created cert-manager Certificate "+key.Name)
		return nil
	case err != nil:
		return fmt.Errorf("get cert-manager Certificate %s: %w", key, err)
	}
	if !metav1.IsControlledBy(live, owner) {
		return fmt.Errorf("the Certificate %s exists and is not controlled by %s: delete or rename it so the operator can create its own", key, owner.GetName())
	}
	if equality.Semantic.DeepDerivative(desired.Object["spec"], live.Object["spec"]) {
		return nil
	}
	live.Object["spec"] = desired.Object["spec"]
	if err := b.Update(ctx, live); err != nil {
		return fmt.Errorf("update cert-manager Certificate %s: %w", key, err)
	}
	emit(b.Recorder, owner, corev1.EventTypeNormal, "Updated", "Update", "updated cert-manager Certificate "+key.Name)
	return nil
}

// deleteCertificates deletes the named cert-manager Certificates that owner
// controls. Others of those names are left alone, and so is a cluster
// without cert-manager (nothing to delete).
func deleteCertificates(ctx context.Context, b *ReconcilerBase, owner client.Object, names ...string) error {
	for _, name := range names {
		key := types.NamespacedName{Namespace: owner.GetNamespace(), Name: name}
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(specs.CertificateGVK)
		switch err := b.reader().Get(ctx, key, live); {
		case meta.IsNoMatchError(err):
			return nil
		case apierrors.IsNotFound(err):
			continue
		case err != nil:
			return fmt.Errorf("get cert-manager Certificate %s: %w", key, err)
		}
		if !metav1.IsControlledBy(live, owner) {
			continue
		}
		if err := b.Delete(ctx, live); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete cert-manager Certificate %s (no longer asked for): %w", key, err)
		}
		emit(b.Recorder, owner, corev1.EventTypeNormal, "Deleted", "Delete", "deleted cert-manager Certificate "+name+": spec.tls no longer asks for it")
	}
	return nil
}

// withTLSCondition sets the TLSReady condition from the TLS phase, or
// removes it from a master without spec.tls.
func withTLSCondition(st replv1.ReplicationMasterStatus, tl tlsState, gen int64) replv1.ReplicationMasterStatus {
	setTLSCondition(&st.Conditions, tl, gen)
	return st
}

// withWorkerTLSCondition is withTLSCondition for a worker.
func withWorkerTLSCondition(st replv1.ReplicationWorkerStatus, tl tlsState, gen int64) replv1.ReplicationWorkerStatus {
	setTLSCondition(&st.Conditions, tl, gen)
	return st
}

func setTLSCondition(conds *[]metav1.Condition, tl tlsState, gen int64) {
	if !tl.enabled {
		meta.RemoveStatusCondition(conds, replv1.ConditionTLSReady)
		return
	}
	status := metav1.ConditionFalse
	if tl.ready {
		status = metav1.ConditionTrue
	}
	meta.SetStatusCondition(conds, metav1.Condition{
		Type: replv1.ConditionTLSReady, Status: status, Reason: tl.reason, Message: tl.message, ObservedGeneration: gen,
	})
}

// tlsRequeue is when a master's TLS wants another look.
func tlsRequeue(tl tlsState) time.Duration {
	switch {
	case !tl.enabled:
		return 0
	case tl.retry:
		return tlsRetry
	}
	return tlsResync
}

// reconcileWorkerTLS has the client certificate of a worker of a
// cert-manager master issued, and checks the client Secret its pods mount
// (they wait for it). Like the master's, a problem is a condition and an
// Event, not an error.
func (r *ReplicationWorkerReconciler) reconcileWorkerTLS(ctx context.Context, w *replv1.ReplicationWorker, m *replv1.ReplicationMaster) (tlsState, error) {
	if m.Spec.TLS == nil {
		r.tlsChecks.forget(client.ObjectKeyFromObject(w))
		if meta.FindStatusCondition(w.Status.Conditions, replv1.ConditionTLSReady) != nil {
			if err := deleteCertificates(ctx, &r.ReconcilerBase, w, specs.WorkerCertificateName(w)); err != nil {
				return tlsState{enabled: true, reason: replv1.ReasonReconcileFailed, message: err.Error(), retry: true}, err
			}
		}
		return tlsState{}, nil
	}
	// The worker's TLS depends on its master's spec too.
	key, now := client.ObjectKeyFromObject(w), r.now()
	version := fmt.Sprintf("%d/%s/%d", w.Generation, m.UID, m.Generation)
	if st, ok := r.tlsChecks.recent(key, version, now); ok {
		return st, nil
	}
	st, err := r.checkWorkerTLS(ctx, w, m)
	if err == nil {
		r.tlsChecks.record(key, version, now, st)
	}
	return st, err
}

// checkWorkerTLS is one look at a worker's TLS (see reconcileWorkerTLS).
func (r *ReplicationWorkerReconciler) checkWorkerTLS(ctx context.Context, w *replv1.ReplicationWorker, m *replv1.ReplicationMaster) (tlsState, error) {
	t := m.Spec.TLS
	st := tlsState{enabled: true}
	problem := func(reason, format string, args ...any) (tlsState, error) {
		st = tlsProblem(st, reason, format, args...)
		if c := meta.FindStatusCondition(w.Status.Conditions, replv1.ConditionTLSReady); c == nil || c.Reason != st.reason || c.Message != st.message {
			emit(r.Recorder, w, corev1.EventTypeWarning, st.reason, "TLS", st.message)
		}
		return st, nil
	}
	if c := specs.BuildWorkerCertificate(w, m); c == nil {
		if err := deleteCertificates(ctx, &r.ReconcilerBase, w, specs.WorkerCertificateName(w)); err != nil {
			return st, err
		}
	} else {
		switch err := ensureCertificate(ctx, &r.ReconcilerBase, w, c); {
		case meta.IsNoMatchError(err):
			return problem(replv1.ReasonCertManagerNotInstalled,
				"master %s asks cert-manager for certificates but the cluster has no certificates.cert-manager.io CRD: install cert-manager, or set spec.tls.clientSecretName", m.Name)
		case err != nil:
			return st, err
		}
	}
	name := specs.WorkerClientSecretName(w, m)
	switch {
	case name != "":
		issued := t.CertManager != nil && (w.Spec.TLS == nil || w.Spec.TLS.ClientSecretName == "")
		_, p, err := readTLSSecret(ctx, &r.ReconcilerBase, w.Namespace, name, false, issued)
		if err != nil {
			return st, err
		}
		if p != nil {
			return problem(p.reason, "client certificate: %s", p.message)
		}
	case clientCertNeeded(t):
		return problem(replv1.ReasonClientCertificateMissing,
			"master %s has spec.tls.clientAuth %s and no access rule for \"unauthenticated\": without a client certificate the pods can do nothing but connect; set spec.tls.clientSecretName to a kubernetes.io/tls Secret signed by the master's CA", m.Name, t.ClientAuthMode())
	}
	st.ready, st.reason = true, replv1.ReasonCertificatesReady
	st.message = fmt.Sprintf("the pods dial master %s over TLS", m.Name)
	if name != "" {
		st.message += " with the client certificate of Secret " + name
	}
	return st, nil
}

// tlsChecks remembers each resource's last TLS check, so that the Secrets
// and Certificates are read (past the cache) once per tlsRetry while
// something is missing and once per tlsResync when all is in place, not on
// every reconcile: a master reconciles at every probe change, and with
// many masters unthrottled reads would use up the operator's API rate.
// A new generation of the resource (or of its master) checks at once.
type tlsChecks struct {
	mu      sync.Mutex
	entries map[types.NamespacedName]tlsCheck
}

type tlsCheck struct {
	version string // generations the check was made for
	at      time.Time
	state   tlsState
}

// recent returns the state of a check made for version that is still
// fresh at now.
func (c *tlsChecks) recent(key types.NamespacedName, version string, now time.Time) (tlsState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || e.version != version || now.Sub(e.at) >= tlsRequeue(e.state) || now.Before(e.at) {
		return tlsState{}, false
	}
	return e.state, true
}

func (c *tlsChecks) record(key types.NamespacedName, version string, now time.Time, st tlsState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[types.NamespacedName]tlsCheck{}
	}
	c.entries[key] = tlsCheck{version: version, at: now, state: st}
}

func (c *tlsChecks) forget(key types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, key)
}
