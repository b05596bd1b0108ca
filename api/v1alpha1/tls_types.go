/*
Copyright 2026 The tcprepl Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package v1alpha1

// TLSClientAuth is what the master asks of replication clients' certificates.
type TLSClientAuth string

const (
	// ClientAuthNone asks for no client certificate: every client is
	// unauthenticated (traffic is still private and the master
	// authenticated).
	ClientAuthNone TLSClientAuth = "None"
	// ClientAuthVerifyIfGiven checks a certificate a client presents and
	// lets a client without one in, unauthenticated.
	ClientAuthVerifyIfGiven TLSClientAuth = "VerifyIfGiven"
	// ClientAuthRequire refuses a TLS client without a valid certificate at
	// the handshake.
	ClientAuthRequire TLSClientAuth = "Require"
)

// MasterTLSSpec turns on TLS on the master's replication and HTTP ports.
// The server certificate comes either from a Secret the user keeps
// (secretName) or from a cert-manager Certificate the operator creates
// (certManager). The Secret's ca.crt is both the CA clients check the
// master against and, unless clientAuth is None, the CA client
// certificates must chain to.
// +kubebuilder:validation:XValidation:rule="has(self.secretName) != has(self.certManager)",message="tls: give exactly one of secretName (a kubernetes.io/tls Secret you keep) or certManager (the operator asks cert-manager for one)"
// +kubebuilder:validation:XValidation:rule="!has(self.accessRules) || size(self.accessRules) == 0 || self.clientAuth != 'None'",message="tls.accessRules name client certificate identities: they need clientAuth VerifyIfGiven or Require (only the identity 'unauthenticated' matches without client certificates)"
// +kubebuilder:validation:XValidation:rule="!has(self.probeSecretName) || has(self.secretName)",message="tls.probeSecretName is for masters with tls.secretName; with certManager the operator has the probe's certificate issued"
type MasterTLSSpec struct {
	// SecretName names a kubernetes.io/tls Secret in the master's namespace
	// with tls.crt, tls.key and ca.crt. The certificate must carry the
	// name clients check (serverName). The operator only reads it; the
	// master re-reads the files when the Secret changes.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	SecretName string `json:"secretName,omitempty"`

	// CertManager has the operator create cert-manager Certificates: one
	// for the master (its Service DNS names), one for the operator's probe
	// and one per ReplicationWorker without tls.clientSecretName. Needs
	// cert-manager installed; without its CRD the TLSReady condition says
	// CertManagerNotInstalled.
	// +optional
	CertManager *CertManagerTLS `json:"certManager,omitempty"`

	// ClientAuth is what the master asks of replication clients: None,
	// VerifyIfGiven or Require (the default: a client without a valid
	// certificate cannot connect). The HTTP port never asks, so that
	// kubelet probes and Prometheus need no certificate.
	// +optional
	// +kubebuilder:default=Require
	// +kubebuilder:validation:Enum=None;VerifyIfGiven;Require
	ClientAuth TLSClientAuth `json:"clientAuth,omitempty"`

	// PlaintextReplicationPort, when set, also serves the replication
	// protocol without TLS on this port, for Synapse 2020 peers that cannot
	// speak TLS. Off by default: its clients are unauthenticated and may
	// do only what accessRules grant "unauthenticated".
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	PlaintextReplicationPort *int32 `json:"plaintextReplicationPort,omitempty"`

	// ServerName is the name workers and the probe check the master's
	// certificate for. Empty means <name>.<namespace>.svc, the Service's
	// name. The cert-manager Certificate always carries it.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	ServerName string `json:"serverName,omitempty"`

	// ProbeSecretName names a kubernetes.io/tls Secret holding the client
	// certificate of the operator's probe (tls.crt, tls.key), with
	// secretName. Required when clientAuth is Require: without it the
	// probe cannot connect.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	ProbeSecretName string `json:"probeSecretName,omitempty"`

	// AccessRules grant client certificate identities (a certificate's
	// subject CN, else its first DNS SAN, else its first URI SAN; "*" for
	// any authenticated client; "unauthenticated" for the rest) the
	// commands with effects and the streams they may REPLICATE. With rules,
	// whatever no rule grants is refused. Without rules an authenticated
	// client may do everything and an unauthenticated one only connect
	// (once client certificates are asked for). The operator's probe is
	// always granted what it needs.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	AccessRules []TLSAccessRule `json:"accessRules,omitempty"`
}

// CertManagerTLS configures the cert-manager Certificates the operator
// creates.
type CertManagerTLS struct {
	// IssuerRef names the cert-manager Issuer or ClusterIssuer that signs
	// the master's, the probe's and the workers' certificates. It must put
	// its CA in ca.crt (a CA issuer does): that CA checks both sides.
	IssuerRef IssuerReference `json:"issuerRef"`
}

// IssuerReference is cert-manager's issuerRef.
type IssuerReference struct {
	// Name of the issuer.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Kind of the issuer: Issuer (the default), ClusterIssuer, or an
	// external issuer's kind.
	// +optional
	// +kubebuilder:default=Issuer
	// +kubebuilder:validation:MaxLength=63
	Kind string `json:"kind,omitempty"`
	// Group of the issuer; cert-manager.io unless an external issuer.
	// +optional
	// +kubebuilder:default=cert-manager.io
	// +kubebuilder:validation:MaxLength=253
	Group string `json:"group,omitempty"`
}

// TLSAccessRule grants one client identity commands and streams. Rules add
// up: a client may do what any rule matching it allows.
type TLSAccessRule struct {
	// Identity is a certificate identity, "*" (any authenticated client)
	// or "unauthenticated". A ReplicationWorker's certificate issued by the
	// operator has the worker's name as identity.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Identity string `json:"identity"`
	// Commands with effects the identity may send, or "*".
	// +optional
	// +listType=set
	// +kubebuilder:validation:items:Enum=FEDERATION_ACK;REMOVE_PUSHER;USER_SYNC;USER_IP;INVALIDATE_CACHE;*
	Commands []string `json:"commands,omitempty"`
	// Streams the identity may REPLICATE, or "*".
	// +optional
	// +listType=set
	// +kubebuilder:validation:items:Pattern=`^(\*|[a-z][a-z0-9_]*)$`
	// +kubebuilder:validation:items:MaxLength=63
	Streams []string `json:"streams,omitempty"`
}

// WorkerTLSSpec is the worker side of the master's spec.tls.
type WorkerTLSSpec struct {
	// ClientSecretName names a kubernetes.io/tls Secret with the worker
	// pods' client certificate (tls.crt, tls.key). Empty: with a
	// cert-manager master the operator has one issued (identity: the
	// ReplicationWorker's name); with a Secret master and clientAuth
	// Require the workers cannot connect until one is given.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	ClientSecretName string `json:"clientSecretName,omitempty"`
}

// IsEnabled reports whether the master serves TLS.
func (t *MasterTLSSpec) IsEnabled() bool { return t != nil }

// ClientAuthMode is ClientAuth with the default applied.
func (t *MasterTLSSpec) ClientAuthMode() TLSClientAuth {
	if t == nil {
		return ClientAuthNone
	}
	if t.ClientAuth == "" {
		return ClientAuthRequire
	}
	return t.ClientAuth
}

// TLS condition type and reasons.
const (
	// ConditionTLSReady: the master's (or the workers') certificates are in
	// place. Only set when spec.tls is.
	ConditionTLSReady = "TLSReady"

	// ReasonCertificatesReady: every Secret TLS needs exists with its keys.
	ReasonCertificatesReady = "CertificatesReady"
	// ReasonTLSSecretMissing: a Secret spec.tls names (or the Secret a
	// cert-manager Certificate writes) does not exist yet.
	ReasonTLSSecretMissing = "TLSSecretMissing"
	// ReasonTLSSecretInvalid: a TLS Secret lacks tls.crt, tls.key or
	// ca.crt, or they do not parse.
	ReasonTLSSecretInvalid = "TLSSecretInvalid"
	// ReasonCertManagerNotInstalled: spec.tls.certManager is set but the
	// cluster has no certificates.cert-manager.io CRD.
	ReasonCertManagerNotInstalled = "CertManagerNotInstalled"
	// ReasonCertificatePending: the cert-manager Certificate exists but its
	// Secret is not written yet.
	ReasonCertificatePending = "CertificatePending"
	// ReasonClientCertificateMissing: client certificates are required but
	// nothing provides one (tls.probeSecretName on the master, or
	// tls.clientSecretName on a worker of a Secret master).
	ReasonClientCertificateMissing = "ClientCertificateMissing"
)
