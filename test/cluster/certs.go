package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is the set of keys and certificates one cluster uses, generated in
// process so that nothing (openssl, cfssl) has to be installed.
type pki struct {
	caCertPEM     []byte
	servingCert   string // file paths, under the cluster dir
	servingKey    string
	caCert        string
	caKey         string
	adminCertPEM  []byte
	adminKeyPEM   []byte
	saKey         string // service-account signing key (RSA, PKCS#1)
	saPub         string
	kcmCertPEM    []byte
	kcmKeyPEM     []byte
	kubeletCertPM []byte
	kubeletKeyPEM []byte
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
}

func encodeECKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// generatePKI writes the CA, the API server's serving certificate, the
// service-account key pair, and returns client certificates for the admin
// (system:masters), the controller manager and the test kubelet.
func generatePKI(dir string) (*pki, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "tcprepl-test-cluster-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	p := &pki{
		caCertPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		caCert:      filepath.Join(dir, "ca.crt"),
		caKey:       filepath.Join(dir, "ca.key"),
		servingCert: filepath.Join(dir, "apiserver.crt"),
		servingKey:  filepath.Join(dir, "apiserver.key"),
		saKey:       filepath.Join(dir, "sa.key"),
		saPub:       filepath.Join(dir, "sa.pub"),
	}
	caKeyPEM, err := encodeECKey(caKey)
	if err != nil {
		return nil, fmt.Errorf("encode CA key: %w", err)
	}

	issue := func(cn string, orgs []string, server bool) (certPEM, keyPEM []byte, err error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, fmt.Errorf("generate key for %s: %w", cn, err)
		}
		serial, err := newSerial()
		if err != nil {
			return nil, nil, fmt.Errorf("generate serial: %w", err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial,
			Subject:      pkix.Name{CommonName: cn, Organization: orgs},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(7 * 24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if server {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			// The in-cluster names are included so that a client using the
			// "kubernetes" Service name would also verify.
			tmpl.DNSNames = []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(serviceClusterFirstIP)}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return nil, nil, fmt.Errorf("create certificate for %s: %w", cn, err)
		}
		keyPEM, err = encodeECKey(key)
		if err != nil {
			return nil, nil, fmt.Errorf("encode key for %s: %w", cn, err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
	}

	servingCertPEM, servingKeyPEM, err := issue("kube-apiserver", nil, true)
	if err != nil {
		return nil, err
	}
	if p.adminCertPEM, p.adminKeyPEM, err = issue("tcprepl-test-admin", []string{"system:masters"}, false); err != nil {
		return nil, err
	}
	// The controllers run with the controller manager's own identity
	// (--use-service-account-credentials=false), whose built-in role does
	// not cover them; system:masters does, and this is a test cluster.
	if p.kcmCertPEM, p.kcmKeyPEM, err = issue("system:kube-controller-manager", []string{"system:masters"}, false); err != nil {
		return nil, err
	}
	// The test kubelet is an admin: it acts as scheduler and proxy too, which
	// the Node authorizer's system:nodes identity may not do.
	if p.kubeletCertPM, p.kubeletKeyPEM, err = issue("system:node:tcprepl-test-kubelet", []string{"system:masters"}, false); err != nil {
		return nil, err
	}

	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate service-account key: %w", err)
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("encode service-account public key: %w", err)
	}

	files := map[string][]byte{
		p.caCert:      p.caCertPEM,
		p.caKey:       caKeyPEM,
		p.servingCert: servingCertPEM,
		p.servingKey:  servingKeyPEM,
		p.saKey:       pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}),
		p.saPub:       pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER}),
	}
	for path, data := range files {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", path, err)
		}
	}
	return p, nil
}
